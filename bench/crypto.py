"""Micro-benchmark of the crypto core against the bare primitive loops.

    .venv/bin/python -m bench.crypto [--n 500000]

Prints values/s of:

* the bare loop: a pre-keyed HMAC-SHA256 copied per value, digests kept;
* ``Tokenizer.tokens`` on the same values, all distinct (document numbers),
  normalisation and formatting included, and on values drawn from 2,000
  names (dictionary encoding MACs each name once);
* the bare loop: AES-256-GCM, one pre-built AESGCM, one ``encrypt`` per value;
* the bare loop of the calls ``Vault.seal`` makes for n lines x 3 fields:
  per line an AESGCM object for a fresh DEK and one ``encrypt`` to wrap it,
  per value one ``encrypt`` (nonces and DEKs pre-drawn);
* ``Vault.seal`` itself on the same lines, per value and per line.

A benchmark, not a test: numbers vary with the machine.
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np
import pyarrow as pa
from cryptography.hazmat.primitives import hashes, hmac
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from transforms.crypto.keyset import Keyset
from transforms.crypto.tokenize import Tokenizer
from transforms.crypto.vault import Vault

__all__ = ["bench_primitives"]


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
    deks, kek = os.urandom(32 * n), AESGCM(os.urandom(32))

    def bare_seal_calls():
        wrap, out = kek.encrypt, []
        for i in range(n):
            dek = deks[32 * i : 32 * i + 32]
            out.append(wrap(nonces[12 * i : 12 * i + 12], dek, b"keyset|line|dek|v1"))
            encrypt = AESGCM(dek).encrypt
            for column in columns:
                out.append(encrypt(nonces[12 * i : 12 * i + 12], column[i], b"keyset|line|dek|field"))

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


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="bench.crypto", description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=200_000, help="values per measurement")
    args = p.parse_args(argv)
    for name, rate in bench_primitives(args.n).items():
        print(f"{name:<36} {rate:>12,.0f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
