"""The product's transforms: a Beam-free domain of Arrow tables under a thin Beam layer.

Sub-packages, by capability: :mod:`transforms.core` (what every step shares),
:mod:`transforms.scan`, :mod:`transforms.crypto`, :mod:`transforms.merge`,
:mod:`transforms.notify` and :mod:`transforms.compliance`. The public surface
below is the composite Beam transforms the pipelines apply; they are imported
on first use (PEP 562), so importing a Beam-free module such as
``transforms.scan.checkdigits`` or ``transforms.compliance.report`` does not
import Apache Beam.

    from transforms import ClassifyRegistrationCompleteness
"""

from __future__ import annotations

import importlib

__all__ = [
    "ClassifyRegistrationCompleteness",
    "MergeCompletedRegistrations",
    "MergeStreamWindows",
    "BuildNotificationJobs",
    "SummariseJobs",
]

# name -> the module that defines it
_LAZY = {
    "ClassifyRegistrationCompleteness": "transforms.scan.composite",
    "MergeCompletedRegistrations": "transforms.merge.composite",
    "MergeStreamWindows": "transforms.merge.stream_composite",
    "BuildNotificationJobs": "transforms.notify.composite",
    "SummariseJobs": "transforms.notify.summary",
}


def __getattr__(name: str):
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later look-ups skip __getattr__
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
