"""A/B template variants: registrations per variant, the 95 % confidence interval of the conversion, significance.

    table = variants_table(wave_variant_fact, {1: [("A", 50), ("B", 50)]})

Per wave that names variants (the notify manifests' ``variants``, in their
order; a variant found only in the history comes after them), per variant:
lines sent a job carrying it, those whose registration is credited to the wave
(``report_funnel.py``), the conversion and its **Wilson score interval** at
95 % (it stays inside [0, 1] and is sound for small counts and rates near 0
or 1, where the normal approximation is not). The first variant of a wave is
the control; every other one is compared with it by the **two-sided
two-proportion z-test** (pooled standard error), and is **significant** when
its p-value is below 0.05 divided by the number of comparisons in the wave
(Bonferroni: with three variants, each of the two comparisons needs p < 0.025).
"""

from __future__ import annotations

import math
from typing import Mapping, Sequence

import numpy as np
import pyarrow as pa

__all__ = ["wilson_interval", "wilson_low", "two_proportion_p", "variants_table", "VARIANT_SCHEMA", "ALPHA", "Z95"]

ALPHA = 0.05
Z95 = 1.959963984540054  # the standard normal's 97.5th percentile

VARIANT_SCHEMA = pa.schema(
    [
        ("wave", pa.int32()),
        ("variant", pa.string()),
        ("weight", pa.float64()),
        ("control", pa.bool_()),
        ("sent", pa.int64()),
        ("registered_after", pa.int64()),
        ("conversion", pa.float64()),
        ("ci_low", pa.float64()),
        ("ci_high", pa.float64()),
        ("difference", pa.float64()),
        ("p_value", pa.float64()),
        ("significant", pa.bool_()),
    ]
)


def wilson_interval(k: int, n: int, z: float = Z95) -> tuple[float | None, float | None]:
    """The Wilson score interval of ``k`` successes in ``n`` trials (None, None without trials)."""
    if n <= 0:
        return None, None
    p = k / n
    denominator = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denominator
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denominator
    return max(0.0, centre - half), min(1.0, centre + half)


def wilson_low(k: np.ndarray, n: np.ndarray, z: float = Z95) -> np.ndarray:
    """The lower end of the Wilson score interval, per element (0 where ``n`` is 0)."""
    k, n = np.asarray(k, np.float64), np.asarray(n, np.float64)
    safe = np.where(n > 0, n, 1.0)
    p = k / safe
    denominator = 1 + z * z / safe
    centre = (p + z * z / (2 * safe)) / denominator
    half = z * np.sqrt(p * (1 - p) / safe + z * z / (4 * safe * safe)) / denominator
    return np.where(n > 0, np.maximum(0.0, centre - half), 0.0)


def two_proportion_p(k1: int, n1: int, k2: int, n2: int) -> float | None:
    """Two-sided p-value of the pooled two-proportion z-test (None when a side has no trials)."""
    if n1 <= 0 or n2 <= 0:
        return None
    pooled = (k1 + k2) / (n1 + n2)
    se = math.sqrt(pooled * (1 - pooled) * (1 / n1 + 1 / n2))
    if se == 0:
        return 1.0  # both rates 0 or both 1: no difference to find
    z = (k1 / n1 - k2 / n2) / se
    return math.erfc(abs(z) / math.sqrt(2))


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 6)


def _wave_rows(wave: int, names: list[str], weights: Mapping[str, float], counted: Mapping) -> list[dict]:
    rows, comparisons = [], max(1, len(names) - 1)
    control = counted.get(names[0], {})
    k0, n0 = control.get("registered_after", 0), control.get("sent", 0)
    for i, name in enumerate(names):
        c = counted.get(name, {})
        k, n = c.get("registered_after", 0), c.get("sent", 0)
        low, high = wilson_interval(k, n)
        p = None if i == 0 else two_proportion_p(k, n, k0, n0)
        rows.append(
            {
                "wave": wave,
                "variant": name,
                "weight": weights.get(name),
                "control": i == 0,
                "sent": n,
                "registered_after": k,
                "conversion": _round(k / n) if n else None,
                "ci_low": _round(low),
                "ci_high": _round(high),
                "difference": _round(k / n - k0 / n0) if i and n and n0 else None,
                "p_value": p,
                "significant": None if p is None else p < ALPHA / comparisons,
            }
        )
    return rows


def variants_table(fact: pa.Table, planned: Mapping[int, Sequence[tuple[str, float]]]) -> pa.Table:
    """The ``by_variant`` table: a row per wave and variant, the control first."""
    counted: dict[int, dict[str, dict]] = {}
    for r in fact.to_pylist():
        counted.setdefault(r["wave"], {})[r["variant"]] = r
    rows = []
    for wave in sorted(set(counted) | {int(w) for w, v in planned.items() if v}):
        listed = [str(name) for name, _ in planned.get(wave, ())]
        names = listed + sorted(set(counted.get(wave, {})) - set(listed))
        weights = {str(name): float(weight) for name, weight in planned.get(wave, ())}
        rows += _wave_rows(wave, names, weights, counted.get(wave, {}))
    return pa.Table.from_pylist(rows, schema=VARIANT_SCHEMA)
