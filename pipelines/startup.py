"""What every launcher does first: pyarrow's allocator told to keep what it frees, and pyarrow kept from
importing pandas for nothing.

Arrow's allocator (mimalloc in pyarrow's wheels) gives freed pages back to the system 10 ms after they are
freed, and the next batch takes them again, each page a fault in the kernel: a merge of 2M lines spent about
3 of its 39 CPU seconds there. :func:`keep_freed_memory` (before pyarrow is imported) turns that return off
(``MIMALLOC_PURGE_DELAY=-1``; a value already in the environment wins): the memory a step holds is what its
busiest moment held, which the steps keep flat in the base's size.

The first time pyarrow builds an array it asks whether pandas is installed, to recognise pandas objects, and
answering means importing pandas: about half a second of one core at the start of every command (and in
every test), for objects our steps never give it (apache/arrow issue 34994). :func:`skip_pandas_probe` lets
that first question find no pandas. pandas itself stays importable, and pyarrow's own conversions
(``to_pandas``, ``Table.from_pandas``) import it when they are called; only ``pa.array`` of a pandas object
would then be read as a plain sequence, so code here hands pyarrow numpy arrays, never pandas objects
(``pipelines/io/receipts.py`` parses times with pandas and passes pyarrow a numpy array).
"""

from __future__ import annotations

import os
import sys

__all__ = ["keep_freed_memory", "skip_pandas_probe"]


def keep_freed_memory() -> None:
    """Arrow's mimalloc keeps the pages it frees for the next allocation (no effect once pyarrow is loaded)."""
    os.environ.setdefault("MIMALLOC_PURGE_DELAY", "-1")


class _NoPandas:
    """A finder that refuses pandas while pyarrow probes for it."""

    def find_spec(self, name, path=None, target=None):
        if name == "pandas" or name.startswith("pandas."):
            raise ImportError("pandas is not probed by pyarrow in this process")
        return None


def skip_pandas_probe() -> None:
    """Make pyarrow's first-array probe for pandas find none (a no-op once pandas or an array came first)."""
    if "pandas" in sys.modules:
        return
    finder = _NoPandas()
    sys.meta_path.insert(0, finder)
    try:
        import pyarrow as pa

        pa.array([], pa.int8())  # the probe of pandas objects, answered once for this process
        pa.array([0])  # and type inference's (pandas' NA and NaT), also asked once
    finally:
        sys.meta_path.remove(finder)
