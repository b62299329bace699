"""The merge of registration events into the base: event checks and winners, the per-bucket merge
(Beam-free), Pub/Sub message parsing and the streaming merge's per-window work, re-tokenization, and
the composite transforms ``MergeCompletedRegistrations`` and ``MergeStreamWindows``."""
