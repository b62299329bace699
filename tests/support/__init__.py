"""Helpers shared by the tests, one module per job; no tests here.

* ``rows``       -- raw subscriber-base rows and batches, the test constants (AS_OF, CTX, SALT, RUNNER, CANARY_*)
* ``scan``       -- the classifier run on a batch of row dicts
* ``notify``     -- campaigns, classified lines, history and receipt tables for the notify tests
* ``compliance`` -- a small merged site built with the ``backfill`` CLI (retention, incident, self-inspection)
* ``pubsub``     -- fixtures over the real Pub/Sub emulator (registered for every test by tests/conftest.py)
* ``dataflow``   -- Dataflow dry runs of the launchers (the child process is ``dataflow_child.py``); ``leaky_job``
  is the pipeline that pickles a salt and a key, the control of tests/test_graph_secrets.py
* ``split_reads`` -- files read in byte ranges in this process, and a ReadSplitFn that counts splits per worker
"""
