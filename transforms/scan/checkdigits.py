"""Check-character algorithms of the Chinese identity documents, vectorised.

Each function takes a ``uint8`` matrix of ASCII codes, one row per value
(see :func:`char_matrix`), and returns the expected check character of every
row as a ``uint8`` vector, so a whole Arrow batch is checked in a few numpy
operations. Scalar wrappers (``*_char``) serve the generator and the tests.

Sources (``docs/regulation.md``):
  * MOD 11-2 (ISO 7064), citizen numbers and permits: §2.1
  * GB 32100 mod-31 check of the unified social credit code: §2.4
  * GB 11714 organisation-code check: §2.5
  * ISO 7064 MOD 11,10 of the legacy business registration number: §2.6
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

__all__ = [
    "char_matrix",
    "mod11_2",
    "uscc_mod31",
    "gb11714",
    "mod11_10",
    "mod11_2_char",
    "uscc_char",
    "gb11714_char",
    "mod11_10_char",
    "USCC_CHARSET",
]

# W[i] = 2^(17-i) mod 11 (docs/regulation.md §2.1).
_W_MOD11_2 = np.array([7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2], np.int64)
_MOD11_2_CHARS = np.frombuffer(b"10X98765432", np.uint8)

USCC_CHARSET = "0123456789ABCDEFGHJKLMNPQRTUWXY"  # 31 characters: no I O Z S V
_W_USCC = np.array([pow(3, i, 31) for i in range(17)], np.int64)
_USCC_CHARS = np.frombuffer(USCC_CHARSET.encode(), np.uint8)

_W_GB11714 = np.array([3, 7, 9, 10, 5, 8, 4, 2], np.int64)


def _lookup(table: dict[int, int]) -> np.ndarray:
    out = np.full(256, -1, np.int64)
    for code, value in table.items():
        out[code] = value
    return out


# Face values: digits 0-9, letters A=10 .. Z=35 (GB 11714 and MOD 11-2's X).
_ALNUM_VALUE = _lookup({**{48 + d: d for d in range(10)}, **{65 + i: 10 + i for i in range(26)}})
_USCC_VALUE = _lookup({ord(c): i for i, c in enumerate(USCC_CHARSET)})


def char_matrix(values: pa.Array, width: int, order: str = "C") -> tuple[np.ndarray, np.ndarray]:
    """Bytes of the values that are exactly ``width`` bytes long.

    Returns ``(matrix, fits)``: ``matrix`` is ``(len(values), width)`` uint8
    with the value's bytes in rows where ``fits`` is true and zeros elsewhere
    (nulls and other lengths). ``order="F"`` lays each position's bytes out
    contiguously (faster per-position work). The bytes are gathered with numpy
    straight from the Arrow buffers.
    """
    values = values.combine_chunks() if isinstance(values, pa.ChunkedArray) else values
    if values.type != pa.string() and values.type != pa.binary():
        values = values.cast(pa.binary())
    n = len(values)
    lengths = pc.fill_null(pc.binary_length(values), -1).to_numpy()
    fits = lengths == width
    matrix = np.zeros((width, n), np.uint8).T if order == "F" else np.zeros((n, width), np.uint8)
    rows = np.flatnonzero(fits)
    if len(rows):
        offsets = np.frombuffer(values.buffers()[1], np.int32)[values.offset : values.offset + n + 1]
        buf = np.frombuffer(values.buffers()[2], np.uint8)
        if len(rows) == n:
            matrix[:] = buf[offsets[0] : offsets[0] + n * width].reshape(n, width)
        elif 2 * len(rows) > n:  # mostly fitting: Arrow packs them into one fixed-width buffer
            fixed = values.filter(pa.array(fits)).cast(pa.binary()).cast(pa.binary(width))
            start = fixed.offset * width
            packed = np.frombuffer(fixed.buffers()[1], np.uint8)[start : start + len(rows) * width]
            matrix[rows] = packed.reshape(-1, width)
        else:  # a few rows: gathered one position at a time
            starts = offsets[rows]
            for j in range(width):
                matrix[rows, j] = buf[starts + j]
    return matrix, fits


def alnum_values(matrix: np.ndarray) -> np.ndarray:
    """Face values (0-9, A=10..Z=35; -1 for anything else) of each byte."""
    return _ALNUM_VALUE[matrix]


def mod11_2(body17: np.ndarray) -> np.ndarray:
    """Expected 18th character (ASCII code) of a citizen number body of 17 digits."""
    digits = body17.astype(np.int64) - 48
    return _MOD11_2_CHARS[(digits @ _W_MOD11_2) % 11]


def uscc_mod31(body17: np.ndarray) -> np.ndarray:
    """Expected 18th character of a unified social credit code (GB 32100).

    Characters outside the 31-character set count as 0; callers check the set.
    """
    values = np.maximum(_USCC_VALUE[body17], 0)
    return _USCC_CHARS[(31 - (values @ _W_USCC) % 31) % 31]


def gb11714(body8: np.ndarray) -> np.ndarray:
    """Expected 9th character of an organisation code (GB 11714, A=10..Z=35).

    C9 = 11 - (sum mod 11); 10 is written X and 11 is written 0.
    """
    values = np.maximum(alnum_values(body8), 0)
    c9 = 11 - (values @ _W_GB11714) % 11
    return np.where(c9 == 10, ord("X"), np.where(c9 == 11, ord("0"), 48 + c9)).astype(np.uint8)


def mod11_10(body14: np.ndarray) -> np.ndarray:
    """Expected 15th digit of a legacy business registration number (ISO 7064 MOD 11,10)."""
    digits = body14.astype(np.int64) - 48
    p = np.full(len(body14), 10, np.int64)
    for i in range(body14.shape[1]):
        s = (p + digits[:, i]) % 10
        s = np.where(s == 0, 10, s)
        p = (2 * s) % 11
    return (48 + (11 - p) % 10).astype(np.uint8)


def _scalar(fn, body: str, width: int) -> str:
    if len(body) != width or not body.isascii():
        raise ValueError(f"expected {width} ASCII characters")
    return chr(fn(np.frombuffer(body.encode(), np.uint8).reshape(1, width))[0])


def mod11_2_char(body17: str) -> str:
    return _scalar(mod11_2, body17, 17)


def uscc_char(body17: str) -> str:
    return _scalar(uscc_mod31, body17, 17)


def gb11714_char(body8: str) -> str:
    return _scalar(gb11714, body8, 8)


def mod11_10_char(body14: str) -> str:
    return _scalar(mod11_10, body14, 14)
