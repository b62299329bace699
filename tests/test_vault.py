"""Tests of the vault (transforms/crypto/vault.py) and its files (pipelines/io/vault_files.py)."""

from __future__ import annotations

import os
import pickle

import pyarrow as pa
import pyarrow.compute as pc
import pytest

from tests.support.rows import CANARY_ADDRESS, CANARY_NAME, CANARY_NUMBER
from transforms.crypto.keyset import Keyset
from transforms.crypto.vault import AuthenticationFailed, UnknownLine, Vault, VaultError, VaultUnreadable
from pipelines.io.vault_files import read_table, read_vault, write_table, write_vault

CANARIES = (CANARY_NAME, CANARY_NUMBER, CANARY_ADDRESS)
LINES = ["L1", "L2", "L3"]
COLUMNS = {
    "name": [CANARY_NAME, "张三", None],
    "doc_number": [CANARY_NUMBER, "110105194912310021", None],
    "address": [CANARY_ADDRESS, None, None],
    "doc_type": ["RESIDENT_ID", "RESIDENT_ID", None],
}


@pytest.fixture
def keyset():
    return Keyset.generate()


@pytest.fixture
def sealed(keyset):
    return Vault(keyset).seal(LINES, COLUMNS)


def replace_rows(values: pa.Table, at_line: str, at_field: str, /, **changes) -> pa.Table:
    """``values`` with the (line, field) row changed: a forged vault record."""
    rows = values.to_pylist()
    for row in rows:
        if row["line_id"] == at_line and row["field"] == at_field:
            row.update(changes)
    return pa.Table.from_pylist(rows, schema=values.schema)


def without(values: pa.Table, line_id: str, field: str) -> pa.Table:
    hit = pc.and_(pc.equal(values["line_id"], line_id), pc.equal(values["field"], field))
    return values.filter(pc.invert(hit))


def assert_no_canary(text: str) -> None:
    for canary in CANARIES:
        assert canary not in text


def test_seal_open_round_trip(keyset, sealed):
    keys, values = sealed
    vault = Vault(keyset)
    assert keys.num_rows == 3 and sorted(keys["line_id"].to_pylist()) == LINES
    assert values.num_rows == 7  # nulls are not sealed
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
    assert len(set(values["nonce"].to_pylist())) == 7
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
    l1 = next(r for r in values.to_pylist() if r["line_id"] == "L1" and r["field"] == "name")
    moved = replace_rows(values, "L2", "name", nonce=l1["nonce"], ciphertext=l1["ciphertext"])
    with pytest.raises(AuthenticationFailed, match="line L2, field name failed authentication"):
        vault.open(keys, moved, "L2")
    relabelled = replace_rows(values, "L1", "name", line_id="L3")  # the whole row, dek_id included
    with pytest.raises(AuthenticationFailed):
        vault.open(keys, relabelled, "L3")
    l2_dek = keys.filter(pc.equal(keys["line_id"], "L2"))["dek_id"][0].as_py()
    forged = replace_rows(without(values, "L2", "name"), "L1", "name", line_id="L2", dek_id=l2_dek)
    with pytest.raises(AuthenticationFailed):
        vault.open(keys, forged, "L2")


def test_a_record_moved_to_another_field_fails(keyset, sealed):
    keys, values = sealed
    name = next(r for r in values.to_pylist() if r["line_id"] == "L1" and r["field"] == "name")
    moved = replace_rows(values, "L1", "address", nonce=name["nonce"], ciphertext=name["ciphertext"])
    with pytest.raises(AuthenticationFailed, match="line L1, field address failed authentication"):
        Vault(keyset).open(keys, moved, "L1")
    swapped = replace_rows(without(values, "L1", "address"), "L1", "name", field="address")  # name is gone now
    with pytest.raises(AuthenticationFailed, match="line L1 do not match its seal: field name is missing"):
        Vault(keyset).open(keys, swapped, "L1")


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
    row = next(r for r in values.to_pylist() if r["line_id"] == "L1" and r["field"] == "doc_number")
    broken = replace_rows(values, "L1", "doc_number", ciphertext=damage(row["ciphertext"]))
    with pytest.raises(AuthenticationFailed) as raised:
        Vault(keyset).open(keys, broken, "L1")
    assert_no_canary(str(raised.value))


def test_tampered_nonce_or_wrapped_key_fails(keyset, sealed):
    keys, values = sealed
    vault = Vault(keyset)
    with pytest.raises(AuthenticationFailed):
        vault.open(keys, replace_rows(values, "L1", "name", nonce=b"\0" * 12), "L1")
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
    assert all_keys.num_rows == 3 and all_values.num_rows == 7
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
        lambda: vault.open(keys, replace_rows(values, "L1", "name", ciphertext=b"x" * 20), "L1"),
        lambda: vault.open(keys, replace_rows(values, "L1", "address", field="name"), "L1"),
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
    old_name = values1.filter(pc.and_(pc.equal(values1["line_id"], "L1"), pc.equal(values1["field"], "name")))
    rolled_back = pa.concat_tables([without(values2, "L1", "name"), old_name])
    assert old_name["dek_id"][0].as_py() == keys2.filter(pc.equal(keys2["line_id"], "L1"))["dek_id"][0].as_py()
    with pytest.raises(AuthenticationFailed, match="line L1, field name failed authentication") as raised:
        vault.open(keys2, rolled_back, "L1")
    assert_no_canary(str(raised.value))
    with pytest.raises(AuthenticationFailed):
        vault.open_many(keys2, rolled_back)
    assert vault.open(keys2, rolled_back, "L2") == {"name": "张三"}  # the other line is untouched
    # a second registration with the same fields but another event: the rows of the first do not open either
    keys3, values3 = reseal(keyset, keys2, "E3", "赵六")
    swapped = pa.concat_tables(
        [
            without(values3, "L1", "name"),
            values2.filter(pc.and_(pc.equal(values2["line_id"], "L1"), pc.equal(values2["field"], "name"))),
        ]
    )
    with pytest.raises(AuthenticationFailed, match="field name failed authentication"):
        vault.open(keys3, swapped, "L1")


@pytest.mark.parametrize("how", ["dropped", "added", "repeated"])
def test_a_dropped_added_or_repeated_value_row_fails(keyset, sealed, how):
    """Before the seal bound the field set, a deleted row revealed fewer fields as if nothing were wrong."""
    keys, values = sealed
    vault = Vault(keyset)
    l1 = pc.equal(values["line_id"], "L1")
    if how == "dropped":
        changed, match = without(values, "L1", "address"), "field address is missing"
    elif how == "added":  # an address row for L2, whose seal has none (its address was null)
        l2_dek = keys.filter(pc.equal(keys["line_id"], "L2"))["dek_id"][0].as_py()
        address = values.filter(pc.and_(l1, pc.equal(values["field"], "address")))
        extra = replace_rows(address, "L1", "address", line_id="L2", dek_id=l2_dek)
        changed, match = pa.concat_tables([values, extra]), "line L2 do not match its seal: field address was not"
    else:
        changed, match = pa.concat_tables([values, values.filter(l1).slice(0, 1)]), "is there twice"
    line = "L2" if how == "added" else "L1"
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
    for column, forged, rows_now in (
        ("sealed_fields", ["address", "doc_type", "name"], without(values, "L1", "doc_number")),
        ("registration_event_id", "E0", values),
    ):
        rows = keys.to_pylist()
        for row in rows:
            if row["line_id"] == "L1":
                row[column] = forged
        with pytest.raises(AuthenticationFailed, match="data key of line L1 failed authentication"):
            Vault(keyset).open(pa.Table.from_pylist(rows, schema=keys.schema), rows_now, "L1")


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
    """The bulk seal (transforms/crypto/vault_seal.py) over more lines than one chunk, fields present or not
    line by line: one value row per present value, every nonce drawn once, every line opens to its values."""
    n = 2_600  # more than two chunks of AESGCM objects
    names = [f"名{i}" if i % 3 else None for i in range(n)]
    numbers = [f"N{i:06d}" if i % 5 else None for i in range(n)]
    ids = [f"L{i}" for i in range(n)]
    vault = Vault(keyset)
    keys, values = vault.seal(ids, {"name": names, "doc_number": numbers}, registrations=[None, "E1"] * (n // 2))
    present = sum(v is not None for v in names) + sum(v is not None for v in numbers)
    assert values.num_rows == present and keys.num_rows == n
    nonces = values["nonce"].to_pylist() + [w[:12] for w in keys["wrapped_dek"].to_pylist()]
    assert len(set(nonces)) == len(nonces) and {len(x) for x in nonces} == {12}
    assert len(set(keys["dek_id"].to_pylist())) == n
    opened = vault.open_many(keys, values)
    got = {(line, field): value for line, field, value in zip(*(opened[c].to_pylist() for c in opened.column_names))}
    expected = {(ids[i], f): v for i in range(n) for f, v in (("name", names[i]), ("doc_number", numbers[i])) if v}
    assert got == expected
