"""Tests of join tokens and masks (transforms/crypto/tokenize.py)."""

from __future__ import annotations

import base64
import json
import random
import re

import pyarrow as pa
import pytest
from cryptography.hazmat.primitives import hashes, hmac
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from tests.support.rows import CANARY_ADDRESS, CANARY_NAME, CANARY_NUMBER
from transforms.crypto.keyset import Keyset, KeysetError
from transforms.crypto.tokenize import FIELD_KINDS, Tokenizer, masks, normalize

TOKEN = re.compile(r"^j\d+:[A-Za-z0-9_-]{24}$")
NUMBER_VARIANTS = [
    "11010519491231002X",
    "11010519491231002x",  # lower-case x
    "１１０１０５１９４９１２３１００２Ｘ",  # full width
    "１１０１０５１９４９１２３１００２ｘ",
    "\u200b11010519491231002X\ufeff",  # zero-width and BOM
    " 110105-19491231-002x ",  # spaces and hyphens
    "110105 19491231 002X",
]


@pytest.fixture
def keyfile(tmp_path):
    path = tmp_path / "keys.json"
    Keyset.generate().save(str(path))
    return path


@pytest.fixture
def tokenizer(keyfile):
    return Tokenizer(Keyset.load(str(keyfile)))


def test_token_is_the_documented_hmac_of_the_normalised_value(keyfile, tokenizer):
    doc = json.loads(keyfile.read_text())
    j1 = base64.b64decode(next(k["material"] for k in doc["keys"] if k["version"] == "j1"))
    subkey = HKDF(hashes.SHA256(), 32, salt=None, info=b"subscriber-backfill/token/1/doc_number").derive(j1)
    mac = hmac.HMAC(subkey, hashes.SHA256())
    mac.update(CANARY_NUMBER.encode())
    expected = "j1:" + base64.urlsafe_b64encode(mac.finalize()[:18]).decode()
    assert tokenizer.token("doc_number", CANARY_NUMBER) == expected


def test_tokens_are_deterministic_per_key_version(keyfile, tokenizer):
    values = [CANARY_NUMBER, "110105194912310021", None]
    first = tokenizer.tokens("doc_number", values).to_pylist()
    again = Tokenizer(Keyset.load(str(keyfile))).tokens("doc_number", pa.chunked_array([values[:1], values[1:]]))
    assert again.to_pylist() == first
    assert all(TOKEN.match(t) for t in first[:2]) and first[2] is None
    assert first[0] != first[1]
    other_keyset = Tokenizer(Keyset.generate()).tokens("doc_number", values).to_pylist()
    assert other_keyset[0] != first[0]


def test_variants_of_one_number_give_one_token(tokenizer):
    tokens = tokenizer.tokens("doc_number", NUMBER_VARIANTS).to_pylist()
    assert len(set(tokens)) == 1
    assert tokens[0] == tokenizer.token("doc_number", CANARY_NUMBER)


def test_variants_of_one_name_and_address_give_one_token(tokenizer):
    names = [CANARY_NAME, f" {CANARY_NAME}\u200b", "\u3000" + CANARY_NAME]
    assert len(set(tokenizer.tokens("name", names).to_pylist())) == 1
    dots = ["阿卜杜•热合曼", "阿卜杜·热合曼", "阿卜杜・热合曼", "阿卜杜.热合曼"]  # middle-dot look-alikes
    assert len(set(tokenizer.tokens("name", dots).to_pylist())) == 1
    addresses = [CANARY_ADDRESS, "北京市海淀区金丝雀路９９号", f" {CANARY_ADDRESS}\u200b\u3000"]
    assert len(set(tokenizer.tokens("address", addresses).to_pylist())) == 1


def test_kinds_never_share_a_token(tokenizer):
    value = "11010519491231002X"
    tokens = {kind: tokenizer.token(kind, value) for kind in FIELD_KINDS}
    assert len(set(tokens.values())) == 3


def test_join_versions_give_different_tokens(keyfile):
    keyset = Keyset.load(str(keyfile))
    j1 = Tokenizer(keyset).tokens("name", [CANARY_NAME])[0].as_py()
    keyset.rotate_join()
    tokenizer = Tokenizer(keyset)
    assert tokenizer.version == "j2"
    j2 = tokenizer.tokens("name", [CANARY_NAME])[0].as_py()
    assert j2.startswith("j2:") and j1.startswith("j1:") and j1[3:] != j2[3:]
    assert tokenizer.tokens_with_version("name", [CANARY_NAME], "j1")[0].as_py() == j1
    assert Tokenizer(keyset, "j1").token("name", CANARY_NAME) == j1
    keyset.retire("j1")
    with pytest.raises(KeysetError, match="retired"):
        Tokenizer(keyset).tokens_with_version("name", [CANARY_NAME], "j1")


def test_absent_values_stay_null_and_batches_agree_with_single_values(tokenizer):
    rng = random.Random(3)
    pool = [CANARY_NAME, "张三", "李四", "王五", None, "", "  ", "\u3000"]
    values = [rng.choice(pool) for _ in range(5_000)]
    tokens = tokenizer.tokens("name", values).to_pylist()
    assert len(tokens) == len(values)
    single = {v: tokenizer.token("name", v) for v in pool}
    assert tokens == [single[v] for v in values]
    assert all(single[v] is None for v in (None, "", "  ", "\u3000"))
    assert tokenizer.tokens("name", pa.array([], pa.string())).to_pylist() == []


def test_large_batches_of_distinct_values_agree_with_single_values(tokenizer):
    values = [f"1101051949{i:08d}" for i in range(20_000)]  # no repeats: the dictionary pass is skipped
    values[7], values[8], values[19_999] = None, " ", NUMBER_VARIANTS[2]
    tokens = tokenizer.tokens("doc_number", values).to_pylist()
    assert tokens[7] is None and tokens[8] is None
    assert tokens[19_999] == tokenizer.token("doc_number", CANARY_NUMBER)
    assert [tokens[i] for i in (0, 4_321, 19_998)] == [
        tokenizer.token("doc_number", values[i]) for i in (0, 4_321, 19_998)
    ]
    assert len(set(tokens)) == 19_998 + 1  # distinct values, distinct tokens (and one None)


def test_unknown_kind_is_refused_without_values(tokenizer):
    with pytest.raises(ValueError) as raised:
        tokenizer.tokens("msisdn", [CANARY_NUMBER])
    assert CANARY_NUMBER not in str(raised.value)


@pytest.mark.parametrize(
    "value, mask",
    [
        (CANARY_NAME, "金**"),
        ("张三", "张**"),
        ("欧阳娜娜", "欧**"),
        ("张", "**"),
        (" 张三\u200b", "张**"),
        (None, None),
        ("   ", None),
    ],
)
def test_name_masks(value, mask):
    assert masks("name", [value]).to_pylist() == [mask]


@pytest.mark.parametrize(
    "value, mask",
    [
        (CANARY_NUMBER, "110****2X"),
        ("１１０１０５１９４９１２３１００２ｘ", "110****2X"),
        ("1234567890", "123****90"),
        ("E12345678", "E****8"),
        ("1234", "1****4"),
        ("ABC", "A****"),
        ("AB", "A****"),
        ("A", "****"),
        (None, None),
    ],
)
def test_doc_number_masks(value, mask):
    assert masks("doc_number", [value]).to_pylist() == [mask]


@pytest.mark.parametrize(
    "value, mask",
    [
        (CANARY_ADDRESS, "北京市海淀区****"),
        ("北京市海淀区中关村大街", "北京****"),  # 11 characters
        ("北京市海淀区中关村大街1", "北京市海淀区****"),
        ("北京市朝阳区88号", "北京****"),
        ("北京市区", "北京****"),
        ("北京市", "****"),
        (None, None),
    ],
)
def test_address_masks(value, mask):
    assert masks("address", [value]).to_pylist() == [mask]


@pytest.mark.parametrize("kind", FIELD_KINDS)
def test_a_mask_never_shows_more_than_half_a_value(kind):
    rng = random.Random(kind)
    alphabet = "0123456789ABCX张王李金丝雀北京市区路号"
    values = ["".join(rng.choice(alphabet) for _ in range(rng.randint(1, 30))) for _ in range(2_000)]
    normalised = normalize(kind, values).to_pylist()
    for value, mask in zip(normalised, masks(kind, values).to_pylist()):
        shown = mask.replace("*", "")
        assert mask != value and value not in mask
        assert len(shown) <= len(value) // 2
        assert mask.count("*") in (2, 4)  # a fixed run: the length is not told


def test_tokens_and_masks_never_hold_a_canary(tokenizer):
    for kind, value in (("name", CANARY_NAME), ("doc_number", CANARY_NUMBER), ("address", CANARY_ADDRESS)):
        out = tokenizer.tokens(kind, [value]).to_pylist() + masks(kind, [value]).to_pylist()
        assert not any(value in text for text in out)


def test_the_micro_benchmark_runs():
    from bench.crypto import bench_primitives

    rates = bench_primitives(2_000)  # a benchmark, not a timed test: only that it measures
    assert set(rates) >= {"bare_hmac_copy_per_s", "tokens_distinct_per_s", "bare_aesgcm_per_s", "seal_values_per_s"}
    assert all(rate > 0 for rate in rates.values())
