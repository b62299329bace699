"""The scan: normalisation, document-number, name, address and date checks, the identity policy, the
per-batch classifier and the cross-record checks (Beam-free, over Arrow), and the composite transform
``ClassifyRegistrationCompleteness`` that runs them in a pipeline."""
