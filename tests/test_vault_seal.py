"""Vault rows cannot be rolled back or dropped (issue 11 item 7), through every path that seals or opens.

A line keeps its data key when it registers again (transforms/merge/bucket.py),
so before the seal (the line's registration and its set of sealed fields,
bound into every value's associated data: transforms/crypto/vault.py) a value
row of an older vault copy swapped into a newer one revealed the old identity,
and a deleted value row revealed fewer fields, audited as ``revealed``. A line's
value row is its record (vault format 3: every sealed field in one ciphertext,
``field`` ``*``), found by tests/support/vault_rows.py. Here
the batch merge's bucket step, the streaming merge's windows and fold,
retokenize and ``backfill reveal`` all meet the seal; the last test runs the
real ``backfill merge`` twice and then again.
"""

from __future__ import annotations

import json
import os
import shutil

import pyarrow as pa
import pyarrow.compute as pc
import pytest

from pipelines import keys as keys_cli
from pipelines import reveal as reveal_cli
from pipelines.io.vault_files import read_table, write_table, write_vault
from tests.support.rows import AS_OF, CANARY_ADDRESS, CANARY_NAME, CANARY_NUMBER, person
from tests.support.merge import event, merged_base, run
from tests.support.vault_rows import RECORD, value_row, without_row
from transforms.crypto.keyset import Keyset
from transforms.crypto.vault import AuthenticationFailed, Vault

CANARIES = (CANARY_NAME, CANARY_NUMBER, CANARY_ADDRESS)
OLD_NAME, NEW_NAME = CANARY_NAME, "王五"


@pytest.fixture
def site(tmp_path):
    keys = str(tmp_path / "secure" / "keys.json")
    assert keys_cli.main(["init", "--keys", keys]) == 0
    return {"keys": keys, "keyset": Keyset.load(keys), "tmp": tmp_path}


def two_days(site, policy):
    """Day 1: L1 registered (E1, the canaries), L2 from the base. Day 2: L1 registered again (E2, a new name)."""
    day1, _, _ = run([person(line_id="L1"), person(line_id="L2")], [event()], site["keyset"], policy)
    day2, counts, dead = run(
        [],
        [event(event_id="E2", name=NEW_NAME, registered_at="2026-11-25T10:00:00")],
        site["keyset"],
        policy,
        kind="merged",
        base=merged_base(day1.base),
        vault_keys=day1.vault_keys,
        vault_values=day1.vault_values,
    )
    assert counts["events"]["applied"] == 1 and dead.num_rows == 0
    return day1, day2


def rows_of(table: pa.Table, line_id: str) -> pa.Table:
    return table.filter(pc.equal(table["line_id"], line_id))


def save(site, name: str, result) -> str:
    folder = str(site["tmp"] / name / "vault")
    write_vault(folder, result.vault_keys, result.vault_values)
    keys_cli.register_vault(site["keys"], folder, by="test")
    return folder


def reveal(site, vault: str, line_id: str) -> int:
    return reveal_cli.main(["--keys", site["keys"], "--vault", vault, "--line-id", line_id, "--purpose", "check"])


def audit(vault: str) -> list[dict]:
    log = os.path.join(os.path.dirname(vault), "audit", "reveal.jsonl")
    with open(log, encoding="utf-8") as handle:
        return [json.loads(line) for line in handle]


def test_the_batch_merge_seals_each_line_with_its_registration_and_fields(site, policy):
    day1, day2 = two_days(site, policy)
    keys1 = {r["line_id"]: r for r in day1.vault_keys.to_pylist()}
    keys2 = {r["line_id"]: r for r in day2.vault_keys.to_pylist()}
    bases = {r["line_id"]: r for r in day2.base.to_pylist()}
    assert keys1["L1"]["registration_event_id"] == "E1" and keys1["L2"]["registration_event_id"] is None
    assert keys2["L1"]["registration_event_id"] == bases["L1"]["registration_event_id"] == "E2"
    assert keys2["L1"]["dek_id"] == keys1["L1"]["dek_id"]  # the same data key: the seal tells the rows apart
    assert rows_of(day2.vault_values, "L1")["field"].to_pylist() == [RECORD]  # one record, its fields inside
    assert sorted(Vault(site["keyset"]).open(day2.vault_keys, day2.vault_values, "L1")) == keys2["L1"]["sealed_fields"]
    assert keys2["L2"] == keys1["L2"]  # a line without a new registration keeps its row


def test_a_value_row_rolled_back_from_an_older_vault_fails_and_is_audited(site, policy, capsys):
    day1, day2 = two_days(site, policy)
    older, newer = save(site, "day1", day1), save(site, "day2", day2)
    assert reveal(site, newer, "L1") == 0
    assert f"name: {NEW_NAME}" in capsys.readouterr().out
    values = read_table(newer, "values")
    rolled_back = pa.concat_tables([without_row(values, "L1"), value_row(read_table(older, "values"), "L1")])
    write_table(newer, "values", rolled_back)
    assert reveal(site, newer, "L1") == 1
    captured = capsys.readouterr()
    assert captured.out == "" and OLD_NAME not in captured.err
    assert "vault record of line L1 failed authentication" in captured.err
    assert [r["outcome"] for r in audit(newer)] == ["revealed", "failed_authentication"]
    assert reveal(site, newer, "L2") == 0  # every other line still opens
    assert reveal(site, older, "L1") == 0 and f"name: {OLD_NAME}" in capsys.readouterr().out  # the old copy is whole


def test_a_deleted_value_row_fails_and_is_audited(site, policy, capsys):
    _, day2 = two_days(site, policy)
    vault = save(site, "day2", day2)
    write_table(vault, "values", without_row(read_table(vault, "values"), "L1"))
    assert reveal(site, vault, "L1") == 1
    captured = capsys.readouterr()
    assert captured.out == "" and "line L1 do not match its seal: its record is missing" in captured.err
    assert [r["outcome"] for r in audit(vault)] == ["failed_authentication"]
    assert not any(c in json.dumps(audit(vault), ensure_ascii=False) for c in CANARIES)


def test_running_the_same_merge_again_still_opens(site, policy):
    day1, day2 = two_days(site, policy)
    _, again = two_days(site, policy)  # the same inputs, the same keys: a re-run
    vault = Vault(site["keyset"])
    for result in (day2, again):
        assert vault.open(result.vault_keys, result.vault_values, "L1")["name"] == NEW_NAME
    # the rows of the two runs are interchangeable (same line, data key, registration and fields)...
    day2b, _, _ = run(
        [],
        [event(event_id="E2", name=NEW_NAME, registered_at="2026-11-25T10:00:00")],
        site["keyset"],
        policy,
        kind="merged",
        base=merged_base(day1.base),
        vault_keys=day1.vault_keys,
        vault_values=day1.vault_values,
    )
    mixed = pa.concat_tables([without_row(day2.vault_values, "L1"), value_row(day2b.vault_values, "L1")])
    assert value_row(mixed, "L1")["nonce"].equals(value_row(day2b.vault_values, "L1")["nonce"])  # day2b's record
    assert vault.open(day2.vault_keys, mixed, "L1")["name"] == NEW_NAME
    # ...while day 1's are not
    with pytest.raises(AuthenticationFailed, match="vault record of line L1 failed authentication"):
        vault.open(
            day2.vault_keys, pa.concat_tables([without_row(mixed, "L1"), value_row(day1.vault_values, "L1")]), "L1"
        )


def test_retokenize_reports_a_rolled_back_row(site, policy):
    from transforms.crypto.tokenize import Tokenizer
    from transforms.merge.retokenize import retokenize_bucket

    day1, day2 = two_days(site, policy)
    keyset = site["keyset"]
    keyset.rotate_join()
    rolled = pa.concat_tables([without_row(day2.vault_values, "L1"), value_row(day1.vault_values, "L1")])
    _, failures, counts = retokenize_bucket(
        day2.base, day2.vault_keys, rolled, Tokenizer(keyset), Vault(keyset), keyset
    )
    assert failures.to_pylist() == [{"line_id": "L1", "reason": "VAULT_AUTH_FAILED", "field": None}]
    assert counts["retokenized"] == 1  # L2


def test_the_streaming_merge_seals_each_window_and_its_fold_checks(site, policy):
    from tests.support.stream import CTX, SALT, base_rows, fold_two_windows, message, window
    from tests.support.stream import event as stream_event
    from tests.support.rows import raw_table
    from transforms.merge.stream import LineIndex, SeenKeys

    keyset = site["keyset"]
    index, _ = LineIndex.from_raw(raw_table(base_rows()), policy, AS_OF, CTX, SALT)
    seen = SeenKeys()
    w1 = window([message(stream_event("E1", "L1", "2026-11-30T10:00:00"))], index, seen, keyset, policy)
    seen.add(w1.new_keys)
    w2 = window([message(stream_event("E3", "L1", "2026-11-30T11:00:00", name=NEW_NAME))], index, seen, keyset, policy)
    assert [r["registration_event_id"] for r in w2.vault_keys.to_pylist()] == ["E3"]
    _, keys, values, _ = fold_two_windows(base_rows(), w1, w2, keyset, policy)
    vault = Vault(keyset)
    assert vault.open(keys, values, "L1")["name"] == NEW_NAME
    with pytest.raises(AuthenticationFailed, match="line L1 do not match its seal: its record is missing"):
        vault.open(keys, without_row(values, "L1"), "L1")
    older = pa.concat_tables([without_row(values, "L1"), value_row(w1.vault_values, "L1")])
    with pytest.raises(AuthenticationFailed, match="vault record of line L1 failed authentication"):
        vault.open(keys, older, "L1")


@pytest.mark.e2e
def test_backfill_merge_day2_rollback_deletion_and_a_rerun(tmp_path, capsys):
    """The real ``backfill merge``: day 1 from a raw base, day 2 re-registers a line, then day 2 again."""
    from tests.support.compliance import build, run as cli

    s = build(tmp_path)  # keys init + merge (A02 registered by E01)
    day2_events = tmp_path / "day2.jsonl"
    day2_events.write_text(
        json.dumps(
            {
                "event_id": "E02",
                "line_id": "A02",
                "doc_type": "身份证",
                "doc_number": "110101199003070011",
                "name": NEW_NAME,
                "address": "北京市朝阳区建国路88号",
                "channel": "STORE",
                "agent_id": "AG00777",
                "verified_by": "ID_CARD_READER",
                "registered_at": "2026-11-25T10:00:00",
            },
            ensure_ascii=False,
        )
        + "\n",
        encoding="utf-8",
    )
    day2 = str(tmp_path / "day2")
    args = ["merge", "--base", s["base"], "--vault", s["vault"], "--registrations", str(day2_events)]
    cli(*args, "--keys", s["keys"], "--out", day2, "--as-of", "2026-11-30")
    vault2 = os.path.join(day2, "vault")
    good = {k: read_table(vault2, k) for k in ("keys", "values")}
    assert reveal({"keys": s["keys"]}, vault2, "A02") == 0 and f"name: {NEW_NAME}" in capsys.readouterr().out
    old_row = value_row(read_table(s["vault"], "values"), "A02")
    assert old_row["dek_id"][0].as_py() == rows_of(good["keys"], "A02")["dek_id"][0].as_py()
    write_table(vault2, "values", pa.concat_tables([without_row(good["values"], "A02"), old_row]))
    assert reveal({"keys": s["keys"]}, vault2, "A02") == 1
    assert "vault record of line A02 failed authentication" in capsys.readouterr().err
    write_table(vault2, "values", without_row(good["values"], "A01"))
    assert reveal({"keys": s["keys"]}, vault2, "A01") == 1
    assert "line A01 do not match its seal: its record is missing" in capsys.readouterr().err
    assert [r["outcome"] for r in audit(vault2)] == ["revealed", "failed_authentication", "failed_authentication"]
    shutil.copytree(os.path.join(day2, "audit"), tmp_path / "audit-before-rerun")
    cli(*args, "--keys", s["keys"], "--out", day2, "--as-of", "2026-11-30")  # the same merge again
    for line_id in ("A01", "A02"):
        assert reveal({"keys": s["keys"]}, vault2, line_id) == 0
    out = capsys.readouterr().out
    assert f"name: {NEW_NAME}" in out and f"address: {CANARY_ADDRESS}" in out
    assert [r["outcome"] for r in audit(vault2)][-2:] == ["revealed", "revealed"]  # the log went on
