"""Tests of the vault (transforms/crypto/vault.py) and its files (pipelines/io/vault_files.py)."""

from __future__ import annotations

import os
import pickle

import pyarrow as pa
import pyarrow.compute as pc
import pytest
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from tests.support.rows import CANARY_ADDRESS, CANARY_NAME, CANARY_NUMBER
from tests.support.vault_rows import RECORD, flip_first, replace_row, value_row, without_row
from transforms.crypto.keyset import Keyset
from transforms.crypto.vault import AuthenticationFailed, UnknownLine, Vault, VaultError, VaultUnreadable
from transforms.crypto.vault_format import _record_fields
from pipelines.io.vault_files import read_table, read_vault, write_table, write_vault

CANARIES = (CANARY_NAME, CANARY_NUMBER, CANARY_ADDRESS)
LINES = ["L1", "L2", "L3"]
COLUMNS = {
    "name": [CANARY_NAME, "张三", None],
    "doc_number": [CANARY_NUMBER, "110105194912310021", None],
    "address": [CANARY_ADDRESS, None, None],
    "doc_type": ["RESIDENT_ID", "RESIDENT_ID", None],
}
# format 3: one value row (the line's record) per line with any value
WITH_VALUE = [line for i, line in enumerate(LINES) if any(v[i] is not None for v in COLUMNS.values())]


@pytest.fixture
def keyset():
    return Keyset.generate()


@pytest.fixture
def sealed(keyset):
    return Vault(keyset).seal(LINES, COLUMNS)


def assert_no_canary(text: str) -> None:
    for canary in CANARIES:
        assert canary not in text


def test_seal_open_round_trip(keyset, sealed):
    keys, values = sealed
    vault = Vault(keyset)
    assert keys.num_rows == 3 and sorted(keys["line_id"].to_pylist()) == LINES
    # one record per line with a value (nulls are not sealed; L3 has none), its field RECORD
    assert sorted(values["line_id"].to_pylist()) == WITH_VALUE == ["L1", "L2"]
    assert set(values["field"].to_pylist()) == {RECORD}
    assert vault.open(keys, values, "L1") == {
        "name": CANARY_NAME,
        "doc_number": CANARY_NUMBER,
        "address": CANARY_ADDRESS,
        "doc_type": "RESIDENT_ID",
    }
    assert vault.open(keys, values, "L2", ["name", "address"]) == {"name": "张三"}
    assert vault.open(keys, values, "L3") == {}
    assert set(keys["vault_key_version"].to_pylist()) == {"v1"}
    assert len(set(keys["dek_id"].to_pylist())) == 3 and len(set(keys["wrapped_dek"].to_pylist())) == 3
    assert len(set(values["nonce"].to_pylist())) == len(WITH_VALUE)
    assert all(len(n) == 12 for n in values["nonce"].to_pylist())


def test_no_plaintext_in_tables_or_files(sealed, tmp_path):
    keys, values = sealed
    write_vault(str(tmp_path / "vault"), keys, values)
    for folder, _, files in os.walk(tmp_path / "vault"):
        for name in files:
            data = open(os.path.join(folder, name), "rb").read()
            for canary in CANARIES:
                assert canary.encode("utf-8") not in data
    for table in (keys, values):
        for column in table.columns:
            assert_no_canary(str(column.to_pylist()))


def test_a_record_moved_to_another_line_fails(keyset, sealed):
    keys, values = sealed
    vault = Vault(keyset)
    l1 = value_row(values, "L1").to_pylist()[0]
    moved = replace_row(values, "L2", None, nonce=l1["nonce"], ciphertext=l1["ciphertext"])  # in L2's record row
    with pytest.raises(AuthenticationFailed, match="vault record of line L2 failed authentication"):
        vault.open(keys, moved, "L2")
    relabelled = replace_row(values, "L1", None, line_id="L3")  # the whole row, dek_id included
    with pytest.raises(AuthenticationFailed):
        vault.open(keys, relabelled, "L3")
    l2_dek = keys.filter(pc.equal(keys["line_id"], "L2"))["dek_id"][0].as_py()
    forged = replace_row(without_row(values, "L2"), "L1", None, line_id="L2", dek_id=l2_dek)
    with pytest.raises(AuthenticationFailed, match="vault record of line L2 failed authentication"):
        vault.open(keys, forged, "L2")


def test_a_value_cannot_move_to_another_field(keyset):
    """The field names are inside the authenticated record: AES-GCM's counter mode would let a bit flip swap
    two same-length field names (the layout is known: the key row lists the fields), the tag refuses it."""
    vault = Vault(keyset)
    keys, values = vault.seal(["L1"], {"name": ["张三"], "city": ["北京"]})
    assert keys["sealed_fields"].to_pylist() == [["city", "name"]]  # record = lp(city) lp(北京) lp(name) lp(张三)
    city_at, name_at = 4, 4 + len("city") + 4 + len("北京".encode()) + 4
    mask = bytearray(len(values["ciphertext"][0].as_py()))
    for at, old, new in ((city_at, b"city", b"name"), (name_at, b"name", b"city")):
        mask[at : at + 4] = bytes(a ^ b for a, b in zip(old, new))
    swapped = bytes(a ^ b for a, b in zip(values["ciphertext"][0].as_py(), mask))
    # the control: without the tag (GCM's counter mode alone, counter 2 on) the edit swaps the two values
    dek, nonce = vault._unwrap(keys.to_pylist()[0]), values["nonce"][0].as_py()
    ctr = Cipher(algorithms.AES(dek), modes.CTR(nonce + (2).to_bytes(4, "big"))).decryptor()
    assert _record_fields(ctr.update(swapped[:-16]) + ctr.finalize()) == [("name", "北京"), ("city", "张三")]
    with pytest.raises(AuthenticationFailed, match="vault record of line L1 failed authentication"):
        vault.open(keys, replace_row(values, "L1", None, ciphertext=swapped), "L1")
    assert vault.open(keys, values, "L1") == {"name": "张三", "city": "北京"}


def test_a_record_row_relabelled_as_a_field_or_beside_a_field_row_fails(keyset, sealed):
    """A row's ``field`` is not in a record's associated data: the seal check refuses a record relabelled as
    one field of several, and a format 2 per-field row beside a record; the associated data's label refuses a
    record relabelled as the one field of its line."""
    keys, values = sealed
    vault = Vault(keyset)
    relabelled = replace_row(values, "L1", None, field="name")
    with pytest.raises(AuthenticationFailed, match="line L1 do not match its seal: field address is missing"):
        vault.open(keys, relabelled, "L1")
    beside = pa.concat_tables([values, replace_row(value_row(values, "L1"), "L1", None, field="name")])
    for check in (
        lambda: Vault.check_seals(keys, beside),
        lambda: vault.open(keys, beside, "L1", ["doc_number"]),
        lambda: vault.open_many(keys, beside),
    ):
        with pytest.raises(AuthenticationFailed, match="line L1 do not match its seal: field name was not sealed"):
            check()
    # a line sealed with one field: its record relabelled as that field is the row a format 2 line would have,
    # but a record's associated data (vault-line/3) is not a format 2 value's (vault-value/2 ... lp(field))
    one_keys, one_values = vault.seal(["L9"], {"name": ["张三"]})
    as_field = replace_row(one_values, "L9", None, field="name")
    Vault.check_seals(one_keys, as_field)
    with pytest.raises(AuthenticationFailed, match="vault record of line L9, field name failed authentication"):
        vault.open(one_keys, as_field, "L9")


@pytest.mark.parametrize(
    "damage",
    [
        lambda ct: ct[:-1],
        lambda ct: ct[:8],
        lambda ct: b"",
        lambda ct: bytes([ct[0] ^ 1]) + ct[1:],
    ],
)
def test_truncated_or_tampered_ciphertext_fails(keyset, sealed, damage):
    keys, values = sealed
    row = value_row(values, "L1").to_pylist()[0]
    broken = replace_row(values, "L1", None, ciphertext=damage(row["ciphertext"]))
    with pytest.raises(AuthenticationFailed, match="vault record of line L1 failed authentication") as raised:
        Vault(keyset).open(keys, broken, "L1")
    assert_no_canary(str(raised.value))
    with pytest.raises(AuthenticationFailed):  # every field is in the one record: none opens
        Vault(keyset).open(keys, broken, "L1", ["doc_type"])
    assert Vault(keyset).open(keys, broken, "L2")["name"] == "张三"  # the other lines still open


def test_tampered_nonce_or_wrapped_key_fails(keyset, sealed):
    keys, values = sealed
    vault = Vault(keyset)
    with pytest.raises(AuthenticationFailed):
        vault.open(keys, replace_row(values, "L1", None, nonce=b"\0" * 12), "L1")
    with pytest.raises(AuthenticationFailed):
        vault.open(
            keys, replace_row(values, "L1", None, nonce=flip_first(value_row(values, "L1")["nonce"][0].as_py())), "L1"
        )
    with pytest.raises(AuthenticationFailed):
        vault.open(keys, replace_row(values, "L1", None, nonce=value_row(values, "L1")["nonce"][0].as_py()[:8]), "L1")
    rows = keys.to_pylist()
    rows[0]["wrapped_dek"] = rows[0]["wrapped_dek"][:-2]
    with pytest.raises(AuthenticationFailed, match="data key of line"):
        vault.open(pa.Table.from_pylist(rows, schema=keys.schema), values, rows[0]["line_id"])
    rows = keys.to_pylist()  # a wrapped key moved to another line
    by_line = {r["line_id"]: r for r in rows}
    by_line["L2"]["wrapped_dek"], by_line["L2"]["dek_id"] = by_line["L1"]["wrapped_dek"], by_line["L1"]["dek_id"]
    with pytest.raises(AuthenticationFailed, match="data key of line L2"):
        vault.open(pa.Table.from_pylist(rows, schema=keys.schema), values, "L2")


def test_wrong_keyset_fails(sealed):
    keys, values = sealed
    other = Keyset.generate()
    with pytest.raises(VaultError, match="belongs to keyset"):
        Vault(other).open(keys, values, "L1")
    forged = keys.set_column(
        keys.schema.get_field_index("keyset_id"), "keyset_id", pa.array([other.keyset_id] * keys.num_rows)
    )
    with pytest.raises(AuthenticationFailed):
        Vault(other).open(forged, values, "L1")


def test_unknown_and_duplicate_lines(keyset, sealed):
    keys, values = sealed
    with pytest.raises(UnknownLine, match="not in the vault"):
        Vault(keyset).open(keys, values, "L404")
    with pytest.raises(VaultError, match="unique"):
        Vault(keyset).seal(["L1", "L1"], {"name": [CANARY_NAME, CANARY_NAME]})
    with pytest.raises(VaultError, match="2 data keys"):
        Vault(keyset).open(pa.concat_tables([keys, keys]), values, "L1")


def test_rewrap_keeps_every_line_openable_and_values_untouched(keyset, sealed):
    keys, values = sealed
    vault = Vault(keyset)
    before = {line: vault.open(keys, values, line) for line in LINES}
    keyset.rotate_vault()
    rewrapped = vault.rewrap(keys)
    assert set(rewrapped["vault_key_version"].to_pylist()) == {"v2"}
    assert set(rewrapped["dek_id"].to_pylist()) == set(keys["dek_id"].to_pylist())
    assert set(rewrapped["wrapped_dek"].to_pylist()).isdisjoint(keys["wrapped_dek"].to_pylist())
    assert {line: vault.open(rewrapped, values, line) for line in LINES} == before
    again = vault.rewrap(rewrapped)  # nothing left to re-wrap
    assert again["wrapped_dek"].to_pylist() == rewrapped["wrapped_dek"].to_pylist()
    keyset.retire("v1")  # only v2 is needed now
    assert {line: Vault(keyset).open(rewrapped, values, line) for line in LINES} == before
    with pytest.raises(VaultError, match="retired"):
        Vault(keyset).open(keys, values, "L1")  # the pre-rotation key table


def test_seal_reuses_existing_data_keys(keyset, sealed):
    keys, values = sealed
    vault = Vault(keyset)
    keyset.rotate_vault()
    new_keys, new_values = vault.seal(["L1", "L9"], {"name": ["金丝雀测试乙", "赵六"]}, existing_keys=keys)
    by_line = {r["line_id"]: r for r in new_keys.to_pylist()}
    old_l1 = keys.filter(pc.equal(keys["line_id"], "L1")).to_pylist()[0]
    for same in ("dek_id", "created_at", "keyset_id"):
        assert by_line["L1"][same] == old_l1[same]  # the line keeps its data key
    assert by_line["L1"]["sealed_fields"] == ["name"] and old_l1["sealed_fields"] == sorted(COLUMNS)
    assert by_line["L1"]["wrapped_dek"] != old_l1["wrapped_dek"]  # wrapped anew: the seal is in its AD
    assert by_line["L1"]["vault_key_version"] == by_line["L9"]["vault_key_version"] == "v2"
    assert vault.open(new_keys, new_values, "L1") == {"name": "金丝雀测试乙"}
    assert vault.open(new_keys, new_values, "L9") == {"name": "赵六"}


def test_shred_makes_a_line_unopenable_even_from_an_older_values_copy(keyset, sealed):
    keys, values = sealed
    old_values = values  # an older copy of the values table
    vault = Vault(keyset)
    current = vault.shred(keys, ["L1"])
    assert current.num_rows == 2
    with pytest.raises(UnknownLine, match="shredded"):
        vault.open(current, old_values, "L1")
    assert vault.open(current, old_values, "L2") == {
        "name": "张三",
        "doc_number": "110105194912310021",
        "doc_type": "RESIDENT_ID",
    }
    assert "L1" not in vault.open_many(current, old_values)["line_id"].to_pylist()


def test_open_many_returns_every_value(keyset, sealed):
    keys, values = sealed
    opened = Vault(keyset).open_many(keys, values, ["name", "doc_number"])
    got = {(r["line_id"], r["field"]): r["value"] for r in opened.to_pylist()}
    assert got == {
        ("L1", "name"): CANARY_NAME,
        ("L1", "doc_number"): CANARY_NUMBER,
        ("L2", "name"): "张三",
        ("L2", "doc_number"): "110105194912310021",
    }


def test_vault_refuses_pickling(keyset):
    with pytest.raises(TypeError):
        pickle.dumps(Vault(keyset))


def test_files_round_trip_and_read_only_some_lines(keyset, sealed, tmp_path):
    keys, values = sealed
    folder = str(tmp_path / "vault")
    write_vault(folder, keys, values)
    some_keys, some_values = read_vault(folder, ["L2"])
    assert some_keys["line_id"].to_pylist() == ["L2"] and set(some_values["line_id"].to_pylist()) == {"L2"}
    all_keys, all_values = read_vault(folder)
    assert all_keys.num_rows == 3 and all_values.num_rows == len(WITH_VALUE)
    assert all_keys.equals(keys) and all_values.equals(values)
    assert Vault(keyset).open(all_keys, all_values, "L1")["name"] == CANARY_NAME


def test_readers_take_the_newest_complete_generation(keyset, sealed, tmp_path):
    keys, values = sealed
    folder = str(tmp_path / "vault")
    write_vault(folder, keys, values)
    write_table(folder, "keys", keys.slice(0, 1), rows_per_file=1)
    assert os.listdir(tmp_path / "vault" / "keys") == ["keys-g000002-00000-of-00001.parquet"]
    half = tmp_path / "vault" / "keys" / "keys-g000003-00000-of-00002.parquet"  # a crashed write
    half.write_bytes(b"PAR1 not finished")
    assert read_table(folder, "keys").num_rows == 1
    write_table(folder, "keys", keys, rows_per_file=2)
    assert sorted(os.listdir(tmp_path / "vault" / "keys")) == [
        "keys-g000004-00000-of-00002.parquet",
        "keys-g000004-00001-of-00002.parquet",
    ]
    assert read_table(folder, "keys").num_rows == 3
    with pytest.raises(VaultError, match="no vault"):
        read_table(str(tmp_path / "elsewhere"), "keys")


def test_errors_never_carry_values(keyset, sealed):
    keys, values = sealed
    vault = Vault(keyset)
    messages = []
    for attempt in (
        lambda: vault.open(keys, replace_row(values, "L1", None, ciphertext=b"x" * 20), "L1"),
        lambda: vault.open(keys, replace_row(values, "L1", None, field="name"), "L1"),
        lambda: Vault(Keyset.generate()).open(keys, values, "L1"),
        lambda: vault.seal(["L1", "L1"], {"name": [CANARY_NAME, CANARY_NAME]}),
        lambda: vault.seal(["L1"], {"name": [CANARY_NAME, CANARY_ADDRESS]}),
    ):
        with pytest.raises(VaultError) as raised:
            attempt()
        messages.append(str(raised.value))
    assert len(messages) == 5
    assert_no_canary(" ".join(messages))


# -- the seal: a line's registration and its set of sealed fields (issue 11 item 7) ------------------------------


def reseal(keyset, keys, registration: str, name: str):
    """L1 registered again (``registration``) with a new name and number; the other lines kept."""
    new_keys, new_values = Vault(keyset).seal(
        ["L1"], {"name": [name], "doc_number": ["110105194912310021"]}, keys, registrations=[registration]
    )
    return (
        pa.concat_tables([new_keys, keys.filter(pc.not_equal(keys["line_id"], "L1"))]),
        new_values,
    )


def test_the_seal_is_in_the_key_row(keyset):
    keys, _ = Vault(keyset).seal(
        ["L1", "L2"], {"name": ["张三", None], "address": ["北京", "上海"]}, registrations=["E7", None]
    )
    rows = {r["line_id"]: r for r in keys.to_pylist()}
    assert (rows["L1"]["registration_event_id"], rows["L1"]["sealed_fields"]) == ("E7", ["address", "name"])
    assert (rows["L2"]["registration_event_id"], rows["L2"]["sealed_fields"]) == (None, ["address"])


def test_a_value_row_of_an_older_registration_fails(keyset):
    """Rollback: the line keeps its data key when it registers again, so before the seal bound the
    registration an older copy's row swapped in opened the old identity without an error."""
    vault = Vault(keyset)
    keys1, values1 = vault.seal(["L1", "L2"], {"name": [CANARY_NAME, "张三"], "doc_number": [CANARY_NUMBER, None]})
    keys2, values2 = reseal(keyset, keys1, "E2", "王五")
    values2 = pa.concat_tables([values2, values1.filter(pc.equal(values1["line_id"], "L2"))])
    assert vault.open(keys2, values2, "L1") == {"name": "王五", "doc_number": "110105194912310021"}
    old_record = value_row(values1, "L1")  # the same fields (name, doc_number), the same data key
    rolled_back = pa.concat_tables([without_row(values2, "L1"), old_record])
    assert old_record["dek_id"][0].as_py() == keys2.filter(pc.equal(keys2["line_id"], "L1"))["dek_id"][0].as_py()
    with pytest.raises(AuthenticationFailed, match="vault record of line L1 failed authentication") as raised:
        vault.open(keys2, rolled_back, "L1")
    assert_no_canary(str(raised.value))
    with pytest.raises(AuthenticationFailed):
        vault.open_many(keys2, rolled_back)
    assert vault.open(keys2, rolled_back, "L2") == {"name": "张三"}  # the other line is untouched
    # a second registration with the same fields but another event: the rows of the first do not open either
    keys3, values3 = reseal(keyset, keys2, "E3", "赵六")
    swapped = pa.concat_tables([without_row(values3, "L1"), value_row(values2, "L1")])
    with pytest.raises(AuthenticationFailed, match="vault record of line L1 failed authentication"):
        vault.open(keys3, swapped, "L1")


@pytest.mark.parametrize("how", ["dropped", "added", "repeated"])
def test_a_dropped_added_or_repeated_value_row_fails(keyset, sealed, how):
    """Before the seal bound the field set, a deleted row revealed fewer fields as if nothing were wrong.
    (A dropped record leaves no row to tell the format by: the check names the first sealed field missing.)"""
    keys, values = sealed
    vault = Vault(keyset)
    if how == "dropped":
        changed, match = without_row(values, "L1"), "line L1 do not match its seal: its record is missing"
    elif how == "added":  # a record for L3, whose seal has no field (it had no value)
        l3_dek = keys.filter(pc.equal(keys["line_id"], "L3"))["dek_id"][0].as_py()
        extra = replace_row(value_row(values, "L1"), "L1", None, line_id="L3", dek_id=l3_dek)
        changed, match = pa.concat_tables([values, extra]), "line L3 do not match its seal: its record was not"
    else:
        changed, match = pa.concat_tables([values, value_row(values, "L1")]), "line L1 .* its record is there twice"
    line = "L3" if how == "added" else "L1"
    with pytest.raises(AuthenticationFailed, match=match) as raised:
        vault.open(keys, changed, line)
    assert_no_canary(str(raised.value))
    with pytest.raises(AuthenticationFailed):
        vault.open(keys, changed, line, ["name"])  # whichever fields are asked for
    with pytest.raises(AuthenticationFailed):
        vault.open_many(keys, changed, ["name"])


def test_the_seal_in_the_key_row_cannot_be_edited(keyset, sealed):
    """The key row states the seal; the wrap's associated data authenticates it."""
    keys, values = sealed
    for column, forged in (("sealed_fields", ["address", "doc_type", "name"]), ("registration_event_id", "E0")):
        rows = keys.to_pylist()
        for row in rows:
            if row["line_id"] == "L1":
                row[column] = forged
        with pytest.raises(AuthenticationFailed, match="data key of line L1 failed authentication"):
            Vault(keyset).open(pa.Table.from_pylist(rows, schema=keys.schema), values, "L1")


def test_a_rewrap_keeps_the_seal(keyset, sealed):
    keys, values = sealed
    keyset.rotate_vault()
    rewrapped = Vault(keyset).rewrap(keys)
    assert (
        rewrapped.select(["line_id", "registration_event_id", "sealed_fields"])
        .sort_by("line_id")
        .equals(keys.select(["line_id", "registration_event_id", "sealed_fields"]).sort_by("line_id"))
    )
    assert Vault(keyset).open(rewrapped, values, "L1")["name"] == CANARY_NAME


def test_an_older_vault_format_is_refused_in_one_line(sealed, tmp_path):
    import pyarrow.parquet as pq

    keys, values = sealed
    folder = tmp_path / "vault"
    write_vault(str(folder), keys, values)
    (path,) = (folder / "keys").iterdir()
    pq.write_table(keys.drop_columns(["registration_event_id", "sealed_fields"]), path)  # format 1's columns
    for read in (lambda: read_table(str(folder), "keys"), lambda: read_vault(str(folder), ["L1"])):
        with pytest.raises(VaultUnreadable, match="older format .* no registration_event_id column"):
            read()
    from pipelines.io.vault_files import table_files

    with pytest.raises(VaultUnreadable, match="older format"):
        table_files(str(folder), "keys")


def test_a_truncated_vault_file_is_one_line(sealed, tmp_path):
    keys, values = sealed
    folder = tmp_path / "vault"
    write_vault(str(folder), keys, values)
    (path,) = (folder / "values").iterdir()
    path.write_bytes(path.read_bytes()[:-40])
    with pytest.raises(VaultUnreadable, match="cannot be read .*damaged or truncated") as raised:
        read_vault(str(folder), ["L1"])
    assert len(str(raised.value).splitlines()) == 1


def test_a_batch_of_mixed_lines_seals_each_present_value_once_under_fresh_nonces(keyset):
    """The bulk seal (transforms/crypto/vault_seal.py) over many lines, fields present or not line by line: one
    record per line with a value (none for a line without), every nonce drawn once, every line opens to its
    values."""
    n = 2_600
    names = [f"名{i}" if i % 3 else None for i in range(n)]
    numbers = [f"N{i:06d}" if i % 5 else None for i in range(n)]
    ids = [f"L{i}" for i in range(n)]
    vault = Vault(keyset)
    keys, values = vault.seal(ids, {"name": names, "doc_number": numbers}, registrations=[None, "E1"] * (n // 2))
    with_value = [ids[i] for i in range(n) if names[i] is not None or numbers[i] is not None]
    assert len(with_value) < n  # some lines have no value (i % 15 == 0)
    assert values["line_id"].to_pylist() == with_value and keys.num_rows == n
    assert set(values["field"].to_pylist()) == {RECORD}
    nonces = values["nonce"].to_pylist() + [w[:12] for w in keys["wrapped_dek"].to_pylist()]
    assert len(set(nonces)) == len(nonces) and {len(x) for x in nonces} == {12}
    assert len(set(keys["dek_id"].to_pylist())) == n
    opened = vault.open_many(keys, values)
    got = {(line, field): value for line, field, value in zip(*(opened[c].to_pylist() for c in opened.column_names))}
    expected = {(ids[i], f): v for i in range(n) for f, v in (("name", names[i]), ("doc_number", numbers[i])) if v}
    assert got == expected
