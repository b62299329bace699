"""Micro-benchmark of the crypto core against the bare primitive loops.

    .venv/bin/python -m bench.crypto [--n 500000]

Prints values/s of:

* the bare loop: a pre-keyed HMAC-SHA256 copied per value, digests kept;
* ``Tokenizer.tokens`` on the same values, all distinct (document numbers),
  normalisation and formatting included, and on values drawn from 2,000
  names (dictionary encoding MACs each name once);
* the bare loop: AES-256-GCM, one pre-built AESGCM, one ``encrypt`` per value;
* the bare loop of the calls ``Vault.seal`` makes for n lines x 3 fields:
  per line an AESGCM object for a fresh DEK, one ``encrypt`` to wrap it and
  one ``encrypt`` of the line's record (its values together; nonces, DEKs
  and records pre-built);
* ``Vault.seal`` itself on the same lines, per value and per line.

A benchmark, not a test: numbers vary with the machine.

    .venv/bin/python -m bench.crypto --bare BASE.parquet

is the merge benchmark's yardstick (:func:`bare_crypto`): the merge's
cryptographic calls over every identity value of the base in a plain loop;
prints one JSON line (seconds of the loop alone, counts).
"""

from __future__ import annotations

import argparse
import json
import os
import time

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from cryptography.hazmat.primitives import hashes, hmac
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

__all__ = ["bench_primitives", "bare_crypto"]

_IDENTITY = ("doc_type", "doc_number", "name", "address", "handler_doc_type", "handler_doc_number", "handler_name")
_TOKENIZED = ("doc_number", "name", "address", "handler_doc_number", "handler_name")


def _rate(n: int, fn) -> float:
    started = time.perf_counter()
    fn()
    return n / (time.perf_counter() - started)


def _inputs(n: int, seed: int = 7) -> tuple[pa.Array, pa.Array, pa.Array]:
    rng = np.random.default_rng(seed)
    days = rng.integers(0, 999_999, n)
    numbers = pa.array([f"110105{19000101 + int(d):08d}{i % 1000:03d}X" for i, d in enumerate(days)])
    pool = [f"测试{chr(0x4E00 + i)}{chr(0x4E00 + i * 7 % 20000)}" for i in range(2_000)]
    names = pa.array([pool[i] for i in rng.integers(0, len(pool), n)])
    addresses = pa.array([f"北京市海淀区某某路{i}号" for i in range(n)])
    return numbers, names, addresses


def bench_primitives(n: int = 200_000) -> dict[str, float]:
    """Values per second of the tokenizer and the vault beside the bare loops."""
    from transforms.crypto.keyset import Keyset
    from transforms.crypto.tokenize import Tokenizer
    from transforms.crypto.vault import Vault

    keyset = Keyset.generate()
    numbers, names, addresses = _inputs(n)
    raw = numbers.cast(pa.binary()).to_pylist()

    base = hmac.HMAC(os.urandom(32), hashes.SHA256())

    def bare_hmac():
        copy, out = base.copy, []
        for value in raw:
            mac = copy()
            mac.update(value)
            out.append(mac.finalize())

    aead, nonces = AESGCM(os.urandom(32)), os.urandom(12 * n)

    def bare_gcm():
        encrypt, out = aead.encrypt, []
        for i, value in enumerate(raw):
            out.append(encrypt(nonces[12 * i : 12 * i + 12], value, b"line|field|dek|keyset"))

    columns = [raw, names.cast(pa.binary()).to_pylist(), addresses.cast(pa.binary()).to_pylist()]
    records = [b"".join(_lp(v) for v in values) for values in zip(*columns)]
    deks, kek = os.urandom(32 * n), AESGCM(os.urandom(32))

    def bare_seal_calls():
        wrap, out = kek.encrypt, []
        for i in range(n):
            dek = deks[32 * i : 32 * i + 32]
            out.append(wrap(nonces[12 * i : 12 * i + 12], dek, b"keyset|line|dek|v1"))
            out.append(AESGCM(dek).encrypt(nonces[12 * i : 12 * i + 12], records[i], b"keyset|line|dek|seal"))

    tokenizer, vault = Tokenizer(keyset), Vault(keyset)
    line_ids = pa.array([f"L{i:09d}" for i in range(n)])
    seal_rate = _rate(3 * n, lambda: vault.seal(line_ids, {"doc_number": numbers, "name": names, "address": addresses}))
    return {
        "bare_hmac_copy_per_s": _rate(n, bare_hmac),
        "tokens_distinct_per_s": _rate(n, lambda: tokenizer.tokens("doc_number", numbers)),
        "tokens_names_2000_distinct_per_s": _rate(n, lambda: tokenizer.tokens("name", names)),
        "bare_aesgcm_per_s": _rate(n, bare_gcm),
        "bare_seal_calls_values_per_s": _rate(3 * n, bare_seal_calls),
        "seal_values_per_s": seal_rate,
        "seal_lines_per_s": seal_rate / 3,
    }


def _lp(value: bytes) -> bytes:
    return len(value).to_bytes(4, "big") + value


def bare_crypto(base_path: str) -> dict:
    """The merge's cryptographic calls over the base's values in a plain loop; returns seconds and counts.

    Per line with an identity value: one AES-GCM key setup for a fresh data key, one wrap and one AES-GCM
    of the line's record (its values, length-prefixed, built before the clock starts); one pre-keyed
    HMAC-SHA256 copied per tokenized value.
    """
    table = pq.read_table(base_path, columns=list(_IDENTITY))
    columns = {}
    for f in _IDENTITY:
        trimmed = pc.utf8_trim_whitespace(table[f])
        columns[f] = (
            pc.if_else(pc.equal(trimmed, ""), pa.scalar(None, pa.string()), table[f]).cast(pa.binary()).to_pylist()
        )
    n = table.num_rows
    rows = [[c[i] for c in columns.values() if c[i] is not None] for i in range(n)]
    records = [b"".join(_lp(v) for v in r) for r in rows]
    tokenized = [v for f in _TOKENIZED for v in columns[f] if v is not None]
    mac = hmac.HMAC(os.urandom(32), hashes.SHA256())
    kek = AESGCM(os.urandom(32))
    lines = sum(1 for r in rows if r)
    values = sum(len(r) for r in rows)
    deks, nonces = os.urandom(32 * lines), os.urandom(24 * lines)
    started, cpu = time.perf_counter(), time.process_time()
    copy = mac.copy
    for value in tokenized:
        m = copy()
        m.update(value)
        m.finalize()
    hmac_seconds = time.perf_counter() - started
    wrap, k, at = kek.encrypt, 0, 0
    for record in records:
        if not record:
            continue
        dek = deks[32 * k : 32 * k + 32]
        k += 1
        wrap(nonces[at : at + 12], dek, b"keyset|line|dek|v1")
        AESGCM(dek).encrypt(nonces[at + 12 : at + 24], record, b"keyset|line|dek|seal")
        at += 24
    total = time.perf_counter() - started
    return {
        "seconds": total,
        "cpu_seconds": time.process_time() - cpu,
        "hmac_seconds": hmac_seconds,
        "aead_seconds": total - hmac_seconds,
        "lines": lines,
        "values_sealed": values,
        "values_tokenized": len(tokenized),
    }


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="bench.crypto", description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=200_000, help="values per measurement")
    p.add_argument("--bare", metavar="BASE", help="the merge's calls over this base's values; one JSON line")
    args = p.parse_args(argv)
    if args.bare:
        print(json.dumps(bare_crypto(args.bare)))
        return 0
    for name, rate in bench_primitives(args.n).items():
        print(f"{name:<36} {rate:>12,.0f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
