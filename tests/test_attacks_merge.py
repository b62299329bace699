"""The merge, the vault, reveal and the keys under attack, through the real ``backfill`` command (each case
failed before its fix).

(a) A keyset given as a symbolic link: its lock and registry were made beside the link (a second registry: the
    vaults a merge registered there were unknown to a shred through the real path), and ``keys rotate``
    replaced the link with a second keyset file, leaving the real one without the new key. Now refused.
(b) ``reveal --purpose "... NAME ..."`` or ``--actor ADDRESS`` kept the line's own name or address in the
    audit log in clear; now refused after opening (recorded as withheld, nothing shown). A document number or a
    name typed as ``--line-id`` was quoted on stderr and kept in the log; a newline in it split the error line.
(c) ``keys shred --reason`` and ``--actor`` with a document number were kept in the shred and keys logs; an
    unknown ``--line-id`` typed as a document number was quoted back; a newline in ``--key-version`` split the
    error line.
(d) An event whose event_id or line_id held a name, an address or a document number (a shifted column, a
    careless publisher's attributes) had it quoted in its dead letter, in the batch and the streaming merge.
(e) On the Pub/Sub emulator a message over 4 MiB (Pub/Sub allows 10 MB) failed every pull with
    ResourceExhausted: the streaming merge stopped, and again at each restart. Now a MESSAGE_TOO_LARGE dead
    letter like any body over ``--max-message-bytes``.
"""

from __future__ import annotations

import glob
import json
import os

import pytest

from tests.support.attacks import AS_OF, CANARIES, canary_csv, canary_event, no_canary, refused, run
from tests.support.rows import CANARY_ADDRESS, CANARY_NAME, CANARY_NUMBER

pytestmark = pytest.mark.e2e

IDS = ["L0001", "L0002", "L0003"]


def one_line_error(proc, prog: str, *expected: str) -> str:
    assert proc.stdout == "", proc.stdout
    return refused(proc, prog, 1, *expected)


def write_jsonl(path, rows: list[dict]) -> str:
    with open(path, "w", encoding="utf-8") as handle:
        handle.writelines(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
    return str(path)


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> dict:
    """A canary base of three lines, a keyset and a merge registering L0001."""
    root = tmp_path_factory.mktemp("merge-attacks")
    keys = str(root / "secure" / "keys.json")
    assert run("keys", "init", "--keys", keys).returncode == 0
    base = canary_csv(root / "base.csv", IDS)
    events = write_jsonl(root / "events.jsonl", [canary_event()])
    merged = str(root / "merge")
    argv = ["--base", str(base), "--registrations", events, "--keys", keys, "--out", merged, "--as-of", AS_OF]
    proc = run("merge", *argv, "--progress-seconds", "0")
    assert proc.returncode == 0, proc.stderr
    return {"root": root, "keys": keys, "base": str(base), "merged": merged}


def audit_records(site) -> list[dict]:
    path = os.path.join(site["merged"], "audit", "reveal.jsonl")
    if not os.path.exists(path):
        return []
    with open(path, encoding="utf-8") as handle:
        return [json.loads(line) for line in handle]


# (a) a keyset given as a symbolic link ------------------------------------------------------------------------


def test_a_keyset_that_is_a_symbolic_link_is_refused_and_stays_a_link(site, tmp_path):
    import shutil

    real = tmp_path / "secure" / "keys.json"
    shutil.copytree(os.path.dirname(site["keys"]), real.parent)
    before = real.read_bytes()
    (tmp_path / "elsewhere").mkdir()
    link = tmp_path / "elsewhere" / "keys.json"
    link.symlink_to(real)
    where = f"keyset {link} is a symbolic link to {real}"
    one_line_error(run("keys", "rotate", "--keys", str(link), "--vault-key"), "backfill keys", where)
    one_line_error(run("keys", "init", "--keys", str(link), "--force"), "backfill keys", "is a symbolic link")
    out = tmp_path / "merge"
    events = write_jsonl(tmp_path / "events.jsonl", [canary_event()])
    argv = ["--base", site["base"], "--registrations", events, "--keys", str(link), "--out", str(out)]
    one_line_error(run("merge", *argv), "backfill merge", where)
    argv = ["--keys", str(link), "--merged", site["merged"], "--line-id", "L0001", "--purpose", "ticket 7"]
    one_line_error(run("reveal", *argv), "backfill reveal", where)
    # the link is still a link, the keyset unchanged, and nothing was made beside the link
    assert link.is_symlink() and real.read_bytes() == before and not out.exists()
    assert sorted(os.listdir(link.parent)) == ["keys.json"]
    # the file itself still works
    assert run("keys", "rotate", "--keys", str(real), "--vault-key").returncode == 0


# (b) reveal: identity values typed into what the audit log keeps -----------------------------------------------


@pytest.mark.parametrize(
    "extra",
    [
        ["--purpose", f"holder {CANARY_NAME} asked by phone"],
        ["--purpose", f"letter to {CANARY_ADDRESS.replace('区', '区 ')}"],  # spaces do not hide it
        ["--purpose", "ticket 7", "--actor", CANARY_NAME],
        ["--purpose", f"ticket for {CANARY_NAME}", "--fields", "doc_type"],  # values not asked for count too
    ],
)
def test_reveal_refuses_a_purpose_or_actor_holding_the_lines_own_values(site, extra):
    before = audit_records(site)
    argv = ["--keys", site["keys"], "--merged", site["merged"], "--line-id", "L0001", *extra]
    one_line_error(run("reveal", *argv), "backfill reveal", "holds this line's own identity values")
    records = audit_records(site)
    assert len(records) == len(before) + 1  # on record, withheld
    assert records[-1]["outcome"] == "refused_purpose" and records[-1]["fields"] == []
    assert records[-1]["purpose"].startswith("(withheld")
    no_canary(os.path.join(site["merged"], "audit"))


@pytest.mark.parametrize("line_id", [CANARY_NUMBER, CANARY_NAME, f"L0001\n{CANARY_NAME}", "L0001\x1b[2J"])
def test_reveal_does_not_quote_or_keep_a_line_id_that_is_an_identity_value(site, line_id):
    before = audit_records(site)
    argv = ["--keys", site["keys"], "--merged", site["merged"], "--line-id", line_id, "--purpose", "ticket 7"]
    one_line_error(run("reveal", *argv), "backfill reveal")
    after = audit_records(site)
    if line_id.isprintable():  # read and recorded, the line id withheld
        assert len(after) == len(before) + 1 and after[-1]["outcome"] == "unknown_line"
        assert after[-1]["line_id"].startswith("(withheld")
    else:  # refused before anything is read
        assert len(after) == len(before)
    no_canary(os.path.join(site["merged"], "audit"))


def test_reveal_with_a_plain_purpose_still_shows_the_asked_fields(site):
    argv = ["--keys", site["keys"], "--merged", site["merged"], "--line-id", "L0001", "--purpose", "ticket 7"]
    proc = run("reveal", *argv, "--fields", "name,doc_type")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == f"name: {CANARY_NAME}\ndoc_type: RESIDENT_ID\n"
    assert audit_records(site)[-1]["fields"] == ["name", "doc_type"]
    proc = run("reveal", "--keys", site["keys"], "--merged", site["merged"], "--line-id", "L0404", "--purpose", "t")
    one_line_error(proc, "backfill reveal", "line L0404 cannot be revealed")  # a plain id is still quoted


# (c) keys: identity values in what the keys and shred logs keep -------------------------------------------------


def logs(site) -> dict[str, bytes]:
    found = glob.glob(os.path.join(os.path.dirname(site["keys"]), "audit", "*.jsonl"))
    found += glob.glob(os.path.join(site["merged"], "audit", "*.jsonl"))
    return {p: open(p, "rb").read() for p in found}


@pytest.mark.parametrize(
    "argv, expected",
    [
        (["shred", "--line-id", "L0002", "--reason", f"holder {CANARY_NUMBER} asked"], "--reason holds what looks"),
        (["shred", "--line-id", "L0002", "--reason", "r", "--actor", CANARY_NUMBER], "--actor holds what looks"),
        (["shred", "--line-id", CANARY_NUMBER, "--reason", "erasure request"], "(not quoted"),
        (["shred", "--line-id", f"L0002\n{CANARY_NAME}", "--reason", "r"], "--line-id holds control characters"),
        (["rotate", "--vault-key", "--actor", f"ops {CANARY_NUMBER}"], "--actor holds what looks"),
        (["restore", "--key-version", "v1\nforged"], "--key-version holds control characters"),
    ],
)
def test_keys_refuse_document_numbers_and_control_characters_in_what_they_keep(site, argv, expected):
    before = logs(site)
    vault = ["--vault", os.path.join(site["merged"], "vault")] if argv[0] == "shred" else []
    proc = run("keys", argv[0], "--keys", site["keys"], *vault, *argv[1:])
    one_line_error(proc, "backfill keys", expected)
    assert logs(site) == before


# (d) dead letters of events whose ids hold identity values --------------------------------------------------------


def test_event_dead_letters_do_not_quote_identity_values_sent_as_ids(site, tmp_path):
    rows = [
        canary_event(event_id="A1", line_id=CANARY_NAME),  # UNKNOWN_LINE
        canary_event(event_id=CANARY_ADDRESS, line_id="L0002", registered_at="yesterday"),  # BAD_TIMESTAMP
        canary_event(event_id="A3", line_id=CANARY_NUMBER, channel="FAX"),  # BAD_ENUM
        canary_event(event_id=CANARY_NAME, line_id="L0003", doc_number="1"),  # policy
        canary_event(event_id="A5", line_id="L0002"),  # applied
        canary_event(event_id="A5", line_id=CANARY_NAME),  # EVENT_ID_CONFLICT
    ]
    events = write_jsonl(tmp_path / "events.jsonl", rows)
    out = tmp_path / "merge"
    argv = ["--merged", site["merged"], "--registrations", events, "--keys", site["keys"], "--out", str(out)]
    proc = run("merge", *argv, "--as-of", AS_OF, "--progress-seconds", "0")
    assert proc.returncode == 0, proc.stderr
    with open(out / "manifest.json", encoding="utf-8") as handle:
        counts = json.load(handle)["counts"]["events"]
    assert counts["rows_in"] == len(rows) and counts["balanced"]
    assert (counts["applied"], counts["dead_letters"]) == (1, len(rows) - 1)
    letters = [json.loads(line) for f in sorted((out / "dead_letter").iterdir()) for line in open(f)]
    assert len(letters) == len(rows) - 1
    assert {(d["event_id"], d["line_id"]) for d in letters} == {
        ("A1", None),
        (None, "L0002"),
        ("A3", None),
        (None, "L0003"),
        ("A5", None),
    }
    no_canary(str(out))
    assert not any(c in proc.stdout + proc.stderr for c in CANARIES)


# (e) the streaming merge on the emulator: a large message, identity values in attributes ---------------------------


def test_the_stream_takes_a_message_over_4_mib_and_quotes_no_attribute_values(site, tmp_path, fresh_topic):
    from tests.support.stream_cli import publish

    topic, subscription = fresh_topic
    valid = canary_event(event_id="S1", line_id="L0002")
    big = {**canary_event(event_id="S2", line_id="L0003"), "notes": "x" * (5 * 1024 * 1024)}
    mismatch = canary_event(event_id="S3", line_id="L0003")

    def body(e: dict) -> bytes:
        return json.dumps(e, ensure_ascii=False).encode("utf-8")

    publish(
        topic,
        [
            (body(big), {"event_id": "S2", "line_id": "L0003"}),
            (body(valid), {"event_id": "S1", "line_id": "L0002"}),
            (body(mismatch), {"event_id": CANARY_NUMBER, "line_id": CANARY_NAME}),
        ],
    )
    out = tmp_path / "stream"
    argv = ["--streaming", "--subscription", subscription, "--base", site["base"], "--keys", site["keys"]]
    argv += ["--out", str(out), "--as-of", AS_OF, "--window-seconds", "1", "--stop-after-idle", "4"]
    proc = run("merge", *argv)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "3 in -> 1 applied + 0 superseded + 0 duplicates + 2 dead letters (balanced)" in proc.stdout
    letters = [
        json.loads(line) for f in sorted(glob.glob(str(out / "deltas" / "*" / "dead_letter.jsonl"))) for line in open(f)
    ]
    assert sorted((d["reason"], d["event_id"], d["line_id"]) for d in letters) == [
        ("ATTRIBUTE_MISMATCH", None, None),
        ("MESSAGE_TOO_LARGE", "S2", "L0003"),
    ]
    no_canary(*glob.glob(str(out / "deltas" / "*" / "dead_letter.jsonl")))
    assert not any(c in proc.stdout + proc.stderr for c in CANARIES)


def test_an_event_id_holding_identity_values_is_not_applied_nor_kept(site, tmp_path):
    # An applied event's id is kept in the merged base (registration_event_id): one that is a document number or
    # a name (a shifted column) would be plaintext there. A long numeric id that is no identity card number
    # (a snowflake id) stays an id.
    import pyarrow.parquet as pq

    snowflake = "1734567890123456789"
    rows = [
        canary_event(event_id=CANARY_NUMBER, line_id="L0002"),
        canary_event(event_id=f"ev-{CANARY_NUMBER.lower()}", line_id="L0002"),
        canary_event(event_id=CANARY_NAME, line_id="L0003"),
        canary_event(event_id=snowflake, line_id="L0003"),
    ]
    out = tmp_path / "merge"
    argv = ["--merged", site["merged"], "--registrations", write_jsonl(tmp_path / "e.jsonl", rows)]
    proc = run("merge", *argv, "--keys", site["keys"], "--out", str(out), "--as-of", AS_OF, "--progress-seconds", "0")
    assert proc.returncode == 0, proc.stderr
    with open(out / "manifest.json", encoding="utf-8") as handle:
        counts = json.load(handle)["counts"]["events"]
    assert (counts["rows_in"], counts["applied"], counts["dead_letters"], counts["balanced"]) == (4, 1, 3, True)
    letters = [json.loads(line) for f in sorted((out / "dead_letter").iterdir()) for line in open(f)]
    assert sorted((d["reason"], d["event_id"], d["line_id"]) for d in letters) == [
        ("EVENT_ID_MALFORMED", None, "L0002"),
        ("EVENT_ID_MALFORMED", None, "L0002"),
        ("EVENT_ID_MALFORMED", None, "L0003"),
    ]
    held = pq.read_table(out / "base", columns=["line_id", "registration_event_id"]).to_pylist()
    assert {r["line_id"]: r["registration_event_id"] for r in held}["L0003"] == snowflake
    no_canary(str(out))
