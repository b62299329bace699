"""Vault formats (transforms/crypto/vault.py, vault_format.py): format 3 seals one record per line; format 2
vaults (one value row per field) are still read, line by line, and a line is re-sealed as format 3 when it
registers again.

tests/data/vault_format2/ is a real format 2 vault, written by the code before format 3: ``keys.json`` (its
keyset), ``keys.parquet``, ``values.parquet``. Lines: L1 (registration E1, four fields), L2 (a base's
identity, three fields), L3 (no value).
"""

from __future__ import annotations

import os
import shutil

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from pipelines import keys as keys_cli
from pipelines import reveal as reveal_cli
from pipelines.io.vault_files import read_vault, write_vault
from tests.support.merge import event, merged_base, run
from tests.support.rows import person
from tests.support.vault_rows import RECORD, flip_first, replace_row, value_row, without_row
from transforms.crypto.keyset import Keyset
from transforms.crypto.vault import AuthenticationFailed, Vault, drop_lines

DATA = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data", "vault_format2")
EXPECTED = {
    "L1": {
        "name": "测试甲",
        "doc_number": "11010519491231002X",
        "address": "北京市海淀区测试路1号",
        "doc_type": "RESIDENT_ID",
    },
    "L2": {"name": "张三", "doc_number": "110105194912310021", "doc_type": "RESIDENT_ID"},
    "L3": {},
}
NEW_L2 = {"name": "王五", "doc_number": "110105194912310021", "doc_type": "RESIDENT_ID"}


@pytest.fixture
def old(tmp_path):
    """The format 2 vault: (keys.json copy, keyset, key rows, value rows). The keyset loader refuses a file
    others can read: the copy is 0600."""
    keys_path = str(tmp_path / "secure" / "keys.json")
    os.makedirs(os.path.dirname(keys_path))
    shutil.copyfile(os.path.join(DATA, "keys.json"), keys_path)
    os.chmod(keys_path, 0o600)
    keys, values = (pq.read_table(os.path.join(DATA, f"{kind}.parquet")) for kind in ("keys", "values"))
    return keys_path, Keyset.load(keys_path), keys, values


def of_line(table: pa.Table, line_id: str) -> pa.Table:
    return table.filter(pc.equal(table["line_id"], line_id))


def opened(vault: Vault, keys: pa.Table, values: pa.Table, fields=None) -> set:
    table = vault.open_many(keys, values, fields)
    return set(zip(*(table[c].to_pylist() for c in ("line_id", "field", "value"))))


def triples(expected: dict) -> set:
    return {(line, field, value) for line, row in expected.items() for field, value in row.items()}


def reseal_l2(keyset, keys: pa.Table, values: pa.Table) -> tuple[pa.Table, pa.Table, pa.Table, pa.Table]:
    """A daily merge over the vault: L2 registers again (E2), its data key reused; the other lines' rows
    carried as they are (transforms/merge/bucket.py). -> (new key rows, new value rows, merged keys, merged values)."""
    new_keys, new_values = Vault(keyset).seal(
        ["L2"], {f: [v] for f, v in NEW_L2.items()}, existing_keys=keys, registrations=["E2"]
    )
    merged_keys = pa.concat_tables([new_keys, drop_lines(keys, ["L2"]).cast(new_keys.schema)])
    merged_values = pa.concat_tables([new_values, drop_lines(values, ["L2"]).cast(new_values.schema)])
    return new_keys, new_values, merged_keys, merged_values


def test_a_format_2_vault_still_opens(old):
    _, keyset, keys, values = old
    vault = Vault(keyset)
    assert RECORD not in values["field"].to_pylist()  # one row per field: format 2
    sealed = {r["line_id"]: r["sealed_fields"] for r in keys.to_pylist()}
    assert values.num_rows == sum(len(f) for f in sealed.values())
    assert {line: sorted(row) for line, row in EXPECTED.items()} == sealed
    Vault.check_seals(keys, values)  # each line's rows are one per sealed field
    for line, row in EXPECTED.items():
        assert vault.open(keys, values, line) == row
    assert vault.open(keys, values, "L1", ["name", "address"]) == {k: EXPECTED["L1"][k] for k in ("name", "address")}
    assert opened(vault, keys, values) == triples(EXPECTED)
    assert opened(vault, keys, values, ["doc_number"]) == {
        (line, "doc_number", row["doc_number"]) for line, row in EXPECTED.items() if "doc_number" in row
    }


def test_a_format_2_vault_folder_reveals_and_rewraps(old, tmp_path, capsys):
    """Through its files and the ``backfill`` commands: a reveal opens a format 2 line; a vault key rotation
    re-wraps its data keys and leaves its value rows as they are."""
    keys_path, keyset, keys, values = old
    folder = str(tmp_path / "merge" / "vault")
    write_vault(folder, keys, values)
    keys_cli.register_vault(keys_path, folder, by="test")
    argv = ["--keys", keys_path, "--vault", folder, "--line-id", "L2", "--purpose", "format 2 check"]
    assert reveal_cli.main(argv) == 0
    assert sorted(capsys.readouterr().out.splitlines()) == sorted(f"{f}: {v}" for f, v in EXPECTED["L2"].items())
    assert keys_cli.main(["rotate", "--keys", keys_path, "--vault", "--vault-dir", folder]) == 0
    new_keys, new_values = read_vault(folder)
    assert set(new_keys["vault_key_version"].to_pylist()) == {"v2"} and new_values.equals(values)
    assert opened(Vault(Keyset.load(keys_path)), new_keys, new_values) == triples(EXPECTED)


@pytest.mark.parametrize("how", ["dropped", "repeated", "moved", "tampered", "nonce"])
def test_a_changed_per_field_row_of_a_format_2_line_fails(old, how):
    _, keyset, keys, values = old
    name = value_row(values, "L2", "name").to_pylist()[0]
    if how == "dropped":
        changed, match = without_row(values, "L1", "address"), "line L1 do not match its seal: field address is missing"
    elif how == "repeated":
        changed, match = pa.concat_tables([values, value_row(values, "L2", "name")]), "field name is there twice"
    elif how == "moved":  # L2's name in L2's doc_number row: the field is in a format 2 row's associated data
        changed = replace_row(values, "L2", "doc_number", nonce=name["nonce"], ciphertext=name["ciphertext"])
        match = "vault record of line L2, field doc_number failed authentication"
    elif how == "tampered":
        changed = replace_row(values, "L2", "name", ciphertext=flip_first(name["ciphertext"]))
        match = "vault record of line L2, field name failed authentication"
    else:
        changed = replace_row(values, "L2", "name", nonce=flip_first(name["nonce"]))
        match = "vault record of line L2, field name failed authentication"
    line = "L1" if how == "dropped" else "L2"
    with pytest.raises(AuthenticationFailed, match=match) as raised:
        Vault(keyset).open(keys, changed, line)
    assert not any(v in str(raised.value) for v in EXPECTED[line].values())
    with pytest.raises(AuthenticationFailed):
        Vault(keyset).open_many(keys, changed)
    other = "L2" if line == "L1" else "L1"
    assert Vault(keyset).open(keys, changed, other) == EXPECTED[other]  # the other line is untouched


def test_a_line_registering_again_is_resealed_as_a_record_beside_format_2_lines(old):
    """The daily merge over a format 2 vault: the re-registered line gets a format 3 record (its data key
    kept), the others keep their format 2 rows, and the mixed vault opens line by line."""
    _, keyset, keys, values = old
    new_keys, new_values, merged_keys, merged_values = reseal_l2(keyset, keys, values)
    assert new_values["line_id"].to_pylist() == ["L2"] and new_values["field"].to_pylist() == [RECORD]
    l2_old, l2_new = of_line(keys, "L2").to_pylist()[0], new_keys.to_pylist()[0]
    assert l2_new["dek_id"] == l2_old["dek_id"] and l2_new["created_at"] == l2_old["created_at"]
    assert (l2_new["registration_event_id"], l2_new["sealed_fields"]) == ("E2", sorted(NEW_L2))
    for line in ("L1", "L3"):  # carried as they are
        assert of_line(merged_values, line).equals(of_line(values, line))
        assert of_line(merged_keys, line).equals(of_line(keys, line))
    Vault.check_seals(merged_keys, merged_values)
    vault = Vault(keyset)
    assert {line: vault.open(merged_keys, merged_values, line) for line in EXPECTED} == {**EXPECTED, "L2": NEW_L2}
    assert opened(vault, merged_keys, merged_values) == triples({**EXPECTED, "L2": NEW_L2})
    assert opened(vault, merged_keys, merged_values, ["name"]) == {("L1", "name", "测试甲"), ("L2", "name", "王五")}


def test_a_line_with_both_a_record_and_per_field_rows_fails(old):
    _, keyset, keys, values = old
    _, _, merged_keys, merged_values = reseal_l2(keyset, keys, values)
    vault = Vault(keyset)
    both = pa.concat_tables([merged_values, of_line(values, "L2")])  # L2's format 2 rows beside its record
    for attempt in (
        lambda: Vault.check_seals(merged_keys, both),
        lambda: vault.open(merged_keys, both, "L2"),
        lambda: vault.open(merged_keys, both, "L2", ["name"]),
        lambda: vault.open_many(merged_keys, both),
    ):
        with pytest.raises(AuthenticationFailed, match="line L2 do not match its seal: field doc_number was not"):
            attempt()
    assert vault.open(merged_keys, both, "L1") == EXPECTED["L1"]  # the other lines are untouched


def test_the_format_2_rows_of_a_line_resealed_since_fail(old):
    """Rollback across formats: L2's format 2 rows (an older vault copy's) put back in place of the record
    it was re-sealed with. They are one row per sealed field, as a format 2 line's would be, but were sealed
    under the older registration: the seal in their associated data refuses them."""
    _, keyset, keys, values = old
    _, _, merged_keys, merged_values = reseal_l2(keyset, keys, values)
    assert of_line(merged_keys, "L2")["sealed_fields"].to_pylist() == [
        sorted(of_line(values, "L2")["field"].to_pylist())
    ]
    rolled_back = pa.concat_tables([without_row(merged_values, "L2"), of_line(values, "L2")])
    Vault.check_seals(merged_keys, rolled_back)  # the right rows for the field set...
    with pytest.raises(AuthenticationFailed, match="vault record of line L2, field .* failed authentication") as raised:
        Vault(keyset).open(merged_keys, rolled_back, "L2")  # ...of another registration
    assert not any(v in str(raised.value) for v in EXPECTED["L2"].values())


def test_the_batch_merge_over_a_format_2_vault_reseals_only_the_registered_line(old, policy):
    """The real bucket merge (transforms/merge/bucket.py) over the format 2 vault: L2 registered again."""
    _, keyset, keys, values = old
    base = [person(line_id="L1", **EXPECTED["L1"]), person(line_id="L2", **EXPECTED["L2"], address=None)]
    empty = {f: None for f in ("doc_type", "doc_number", "name", "address")}
    day1, _, _ = run([*base, person(line_id="L3", **empty)], [], keyset, policy)
    day2, counts, dead = run(
        [],
        [event(event_id="E2", line_id="L2", name=NEW_L2["name"])],  # the event's own number, type and address
        keyset,
        policy,
        kind="merged",
        base=merged_base(day1.base),
        vault_keys=keys,
        vault_values=values,
    )
    assert counts["events"]["applied"] == 1 and dead.num_rows == 0
    sealed = of_line(day2.vault_keys, "L2")["sealed_fields"][0].as_py()
    assert counts["vault"] == {
        "lines_sealed": 1,
        "values_sealed": len(sealed),  # values, not rows
        "keys_copied": keys.num_rows - 1,
        "values_copied": values.num_rows - of_line(values, "L2").num_rows,  # L1's format 2 rows, as they are
    }
    assert of_line(day2.vault_values, "L2")["field"].to_pylist() == [RECORD]
    assert of_line(day2.vault_values, "L1").equals(of_line(values, "L1"))
    vault = Vault(keyset)
    assert vault.open(day2.vault_keys, day2.vault_values, "L1") == EXPECTED["L1"]
    l2 = vault.open(day2.vault_keys, day2.vault_values, "L2")
    assert sorted(l2) == sealed and l2["name"] == NEW_L2["name"]
    assert vault.open(day2.vault_keys, day2.vault_values, "L3") == {}


# -- format 3: one record per line, exactly its sealed fields ---------------------------------------------------


def test_a_line_sealed_with_n_fields_is_one_row_that_opens_to_exactly_them():
    keyset = Keyset.generate()
    fields = ["address", "doc_number", "doc_type", "handler_name", "name"]
    lines = [f"M{i}" for i in range(2 ** len(fields))]  # every subset of the fields, the empty one too
    columns = {f: [f"{f}-{i}" if i >> j & 1 else None for i in range(len(lines))] for j, f in enumerate(fields)}
    keys, values = Vault(keyset).seal(lines, columns)
    vault = Vault(keyset)
    for i, line in enumerate(lines):
        present = {f: columns[f][i] for f in fields if columns[f][i] is not None}
        rows = of_line(values, line)
        assert rows.num_rows == (1 if present else 0) and set(rows["field"].to_pylist()) <= {RECORD}
        assert of_line(keys, line)["sealed_fields"].to_pylist() == [sorted(present)]
        assert vault.open(keys, values, line) == present
        if present:  # one AES-GCM encryption of lp(field) lp(value) ... : the record's bytes and one 16-byte tag
            record = sum(8 + len(f.encode()) + len(v.encode()) for f, v in present.items())
            assert len(rows["ciphertext"][0].as_py()) == record + 16
    assert values.num_rows == sum(any(columns[f][i] is not None for f in fields) for i in range(len(lines)))
    every = sum(v is not None for column in columns.values() for v in column)
    assert (
        vault.open_many(keys, values).num_rows == every == pc.sum(pc.list_value_length(keys["sealed_fields"])).as_py()
    )
