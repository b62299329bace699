"""Vectorised building blocks of the synthetic base (``dev.generate``).

Draws by share (in 1/65536 steps), row picks, random digit matrices, uint8
byte matrices to Arrow strings, and :class:`Col`, a string column built as
base values plus row patches and taken once at the end. Everything takes the
block's numpy RNG, so the order of calls is the order of draws.
"""

from __future__ import annotations

import functools

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

__all__ = ["strs", "draw", "pick", "choose", "join", "digits", "strings", "text", "other", "Col"]

strs = functools.partial(pa.array, type=pa.string())  # a list of str (or None) as an Arrow string array


@functools.lru_cache(maxsize=None)
def _lut(weights: tuple) -> np.ndarray:
    cum = np.cumsum(weights)
    return np.searchsorted(cum / cum[-1], (np.arange(1 << 16) + 0.5) / (1 << 16), side="right")


def draw(rng: np.random.Generator, n: int, shares) -> np.ndarray:
    """Category index per row, by share (a dict of shares or a sequence of weights), in 1/65536 steps."""
    return _lut(tuple(shares.values()) if isinstance(shares, dict) else tuple(shares))[rng.integers(0, 1 << 16, n)]


def pick(rng: np.random.Generator, n: int, share: float, within: np.ndarray | None = None) -> np.ndarray:
    """About ``share`` of the rows (of ``within`` if given), distinct and sorted."""
    pool = n if within is None else len(within)
    if share >= 0.01 or not pool:
        rows = np.flatnonzero(rng.random(pool) < share)
    else:  # a few rows: cheaper than a mask over all of them
        rows = np.unique(rng.integers(0, pool, rng.binomial(pool, share)))
    return rows if within is None else within[rows]


def choose(rng: np.random.Generator, values, k: int) -> pa.Array:
    """``k`` values drawn (with replacement) from ``values``."""
    values = values if isinstance(values, pa.Array) else strs(values)
    return values.take(rng.integers(0, len(values), k))


def join(*parts) -> pa.Array:
    """Element-wise concatenation of string arrays and scalars."""
    return pc.binary_join_element_wise(*parts, "")


def digits(rng: np.random.Generator, k: int, w: int) -> np.ndarray:
    """A k x w matrix of random ASCII digits."""
    return rng.integers(48, 58, (k, w), dtype=np.uint8)


def strings(mat: np.ndarray, lens: np.ndarray | None = None) -> pa.Array:
    """ASCII rows of a uint8 matrix (the first ``lens[i]`` bytes of row i) as strings."""
    n, w = mat.shape
    offsets = np.arange(n + 1, dtype=np.int32) * w if lens is None else np.concatenate([[0], np.cumsum(lens)])
    data = np.ascontiguousarray(mat) if lens is None else np.ascontiguousarray(mat[np.arange(w) < lens[:, None]])
    return pa.Array.from_buffers(pa.string(), n, [None, pa.py_buffer(offsets.astype(np.int32)), pa.py_buffer(data)])


def text(mat: np.ndarray, lens: np.ndarray) -> "Col":
    """Like ``strings``, as a column: the commonest length for all rows, the other rows patched."""
    common = int(np.bincount(lens).argmax())
    col, other_rows = Col(strings(mat[:, :common])), np.flatnonzero(lens != common)
    col.put(other_rows, strings(mat[other_rows], lens[other_rows]))
    return col


def other(rng: np.random.Generator, chars: np.ndarray, alphabet: np.ndarray) -> np.ndarray:
    """A character of ``alphabet`` other than each of ``chars`` (a wrong check character)."""
    pos = np.argmax(alphabet[None, :] == chars[:, None], axis=1)
    return alphabet[(pos + rng.integers(1, len(alphabet), len(chars))) % len(alphabet)]


class Col:
    """A string column under construction: values[idx] plus row patches; one ``take`` at the end."""

    def __init__(self, values: pa.Array, idx: np.ndarray | None = None) -> None:
        self.parts, self.size = [values], len(values)
        self.idx = np.arange(len(values)) if idx is None else idx

    def put(self, rows: np.ndarray, values: pa.Array) -> None:
        if len(rows):
            self.idx[rows] = self.size + np.arange(len(rows))
            self.parts.append(values)
            self.size += len(values)

    def get(self, rows: np.ndarray) -> pa.Array:
        idx = self.idx[rows]
        if not len(idx) or idx.max() < len(self.parts[0]):  # all from the base: no concatenation
            return self.parts[0].take(idx)
        return pa.chunked_array(self.parts, pa.string()).take(idx).combine_chunks()

    def done(self, rowmap: np.ndarray) -> pa.Array:
        return (pa.concat_arrays(self.parts) if len(self.parts) > 1 else self.parts[0]).take(self.idx[rowmap])
