"""Chained audit logs: each record MACed together with the previous record's MAC, under the keyset's audit key.

An *audit folder* holds one chain, spread over its JSON Lines files by kind::

    VAULT/../audit/reveal.jsonl   reveals of the vault's lines (every attempt, with its outcome)
    VAULT/../audit/shred.jsonl    lines crypto-shredded in the vault, one record per line
    VAULT/../audit/keys.jsonl     key changes of the vault (its data keys re-wrapped by rotate or a shred elsewhere)
    KEYS_DIR/audit/keys.jsonl     key changes of the keyset (init, rotate, shred, restore, destroy)

Every record carries ``seq`` (1, 2, ... over the whole folder) and ``mac``::

    mac(n) = HMAC-SHA256(K, mac(n-1) || lp(file name) || lp(canonical JSON of record n without "mac"))
    mac(0) = 32 zero bytes
    K      = HKDF-SHA256(the keyset's audit key a1, info "subscriber-backfill/audit/1" 0x00 "chain")

(canonical JSON: sorted keys, no spaces, UTF-8; ``lp`` = 4-byte length, then
the bytes). Without the key nobody can edit, add, drop or reorder a record
and recompute the MACs that follow; the key is only reachable through
:meth:`Keyset.audit_mac` and is never printed or stored in clear. The last
record's ``seq`` and ``mac`` are kept in the keyset's registry
(``transforms/crypto/registry.py``) as a witness, so a log whose last records
were cut off is caught too.

:func:`append` writes records (the caller holds the keyset's lock and saves
the registry afterwards); :func:`verify` checks a folder's chain and returns
findings (edited, removed, inserted, reordered records and a truncated tail)
for the self-inspection (``pipelines/self_inspection.py``). Records hold no
identity value and no key material; findings name files, line numbers and
sequence numbers, never a record's content.
"""

from __future__ import annotations

import collections
import dataclasses
import hmac as std_hmac
import json
import os
import stat

from transforms.crypto.envelope import length_prefixed
from transforms.crypto.keyset import Keyset, KeysetError
from transforms.crypto.keyset_store import append_bytes, is_remote, join, read_bytes
from transforms.crypto.registry import Registry, folder_location

__all__ = ["AuditError", "LOGS", "Entry", "append", "canonical", "read_folder", "verify"]

LOGS = ("reveal.jsonl", "shred.jsonl", "keys.jsonl")
GENESIS = "00" * 32


class AuditError(Exception):
    """An audit record that cannot be appended; one line, never a value."""


@dataclasses.dataclass
class Entry:
    """One line of an audit file."""

    log: str
    line: int  # 1-based
    record: dict | None  # None: not a JSON object (damaged)
    torn: bool = False  # the file's last line, without its newline (cut off)

    @property
    def chained(self) -> bool:
        r = self.record
        return (
            isinstance(r, dict)
            and isinstance(r.get("seq"), int)
            and not isinstance(r.get("seq"), bool)
            and isinstance(r.get("mac"), str)
        )

    @property
    def seq(self) -> int:
        return self.record["seq"]


def canonical(record: dict) -> bytes:
    """The bytes a record's MAC covers: its JSON without ``mac``, keys sorted, no spaces, UTF-8."""
    body = {k: v for k, v in record.items() if k != "mac"}
    return json.dumps(body, sort_keys=True, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


class _Macs:
    """One keyed HMAC per keyset (HKDF once), copied per record."""

    def __init__(self):
        self._base: dict[str, object] = {}

    def __call__(self, keyset: Keyset, prev: str, log: str, record: dict) -> str:
        base = self._base.get(keyset.keyset_id)
        if base is None:
            base = self._base[keyset.keyset_id] = keyset.audit_mac(b"chain")
        mac = base.copy()
        mac.update(bytes.fromhex(prev) + length_prefixed(log, canonical(record)))
        return mac.finalize().hex()


def record_mac(keyset: Keyset, prev: str, log: str, record: dict) -> str:
    return _Macs()(keyset, prev, log, record)


def _same(a: str, b: str) -> bool:
    try:
        return std_hmac.compare_digest(a, b)
    except TypeError:
        return False


def read_folder(folder: str) -> list[Entry]:
    """Every line of the folder's audit files (missing files: none), blank lines skipped."""
    entries = []
    for log in LOGS:
        path = os.path.join(folder, log)
        try:
            if is_remote(folder):  # the audit folder of a keyset at a URI (transforms/crypto/keyset_store.py)
                path = join(folder, log)
                data = read_bytes(path, "audit log", missing_ok=True)
                if data is None:
                    continue
            else:
                with open(path, "rb") as handle:
                    data = handle.read()
        except FileNotFoundError:
            continue
        except KeysetError as exc:
            raise AuditError(str(exc)) from None
        except OSError as exc:
            raise AuditError(f"audit log {path} cannot be read ({exc.strerror})") from None
        pieces = data.split(b"\n")
        for i, raw in enumerate(pieces):
            if not raw.strip():
                continue
            torn = i == len(pieces) - 1  # no newline after it
            try:
                record = json.loads(raw.decode("utf-8"))
            except (UnicodeDecodeError, ValueError):
                record = None
            entries.append(Entry(log, i + 1, record if isinstance(record, dict) else None, torn))
    return entries


def _head(keyset: Keyset, registry: Registry, folder: str, entries: list[Entry]) -> tuple[int, str]:
    """Where the next record chains on: the registry's witness, advanced over records that chain from it
    (appended before a crash could save the witness); without a witness, the file's last record."""
    chained = [e for e in entries if e.chained]
    witness = registry.chain_head(folder)
    if witness is None:
        if not chained:
            return 0, GENESIS
        last = max(chained, key=lambda e: e.seq)
        return last.seq, last.record["mac"]
    seq, mac = witness
    by_seq = collections.defaultdict(list)
    for e in chained:
        by_seq[e.seq].append(e)
    macs = _Macs()
    while True:
        follows = [
            e
            for e in by_seq.get(seq + 1, [])
            if e.record.get("keyset_id") == keyset.keyset_id
            and _same(macs(keyset, mac, e.log, e.record), e.record["mac"])
        ]
        if not follows:
            return seq, mac
        seq, mac = seq + 1, follows[0].record["mac"]


def _append_lines(folder: str, log: str, data: bytes) -> None:
    """Append to FOLDER/LOG: a regular file (never a link or a device), O_APPEND, mode 0600, fsync."""
    if is_remote(folder):  # an object rewritten whole, under the keyset's lock object
        try:
            return append_bytes(join(folder, log), data)
        except KeysetError as exc:
            raise AuditError(str(exc)) from None
    path = os.path.join(folder, log)
    try:
        os.makedirs(folder, mode=0o700, exist_ok=True)
        if os.path.islink(folder) or not os.path.isdir(folder):
            raise AuditError(f"the audit folder {folder} is not a plain folder (a link?); nothing was appended")
        fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    except AuditError:
        raise
    except OSError as exc:
        raise AuditError(f"cannot open the audit log {path} ({exc.strerror})") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise AuditError(f"the audit log {path} is not a regular file")
        if st.st_mode & 0o077:
            os.fchmod(fd, 0o600)
        if st.st_size and os.pread(fd, 1, st.st_size - 1) != b"\n":
            data = b"\n" + data  # a cut-off last line stays as it is (the self-inspection reports it)
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)
    except AuditError:
        raise
    except OSError as exc:
        raise AuditError(f"cannot write the audit log {path} ({exc.strerror})") from None
    finally:
        os.close(fd)


def append(keyset: Keyset, registry: Registry, folder: str, log: str, records: list[dict]) -> list[dict]:
    """Chain ``records`` onto FOLDER's chain, in LOG; returns them with ``seq`` and ``mac``.

    The caller holds the keyset's lock (:func:`transforms.crypto.keyset.keyset_lock`) and saves
    ``registry`` (the new witness) afterwards. Raises AuditError when nothing could be written."""
    if log not in LOGS:
        raise AuditError(f"{log} is not an audit log ({', '.join(LOGS)})")
    folder = folder_location(folder)
    seq, mac = _head(keyset, registry, folder, read_folder(folder))
    macs, out, lines = _Macs(), [], []
    for record in records:
        seq += 1
        body = {**record, "keyset_id": keyset.keyset_id, "seq": seq}
        mac = macs(keyset, mac, log, body)
        out.append({**body, "mac": mac})
        lines.append(json.dumps(out[-1], ensure_ascii=False) + "\n")
    if lines:
        _append_lines(folder, log, "".join(lines).encode("utf-8"))
        registry.set_chain_head(folder, seq, mac)
    return out


class _Findings:
    """The findings of one folder's check, in the order they are found."""

    def __init__(self, folder: str):
        self.folder = folder
        self.items: list[dict] = []

    def __call__(self, kind: str, e: Entry | None, detail: str, seq: int | None = None) -> None:
        where = f"{e.log} line {e.line}: " if e else ""
        self.items.append(
            {
                "kind": kind,
                "folder": self.folder,
                "log": e.log if e else None,
                "line": e.line if e else None,
                "seq": seq if seq is not None else (e.seq if e and e.chained else None),
                "detail": f"{self.folder}: {where}{detail}",
            }
        )


def _chained_entries(entries: list[Entry], find: _Findings) -> list[Entry]:
    """The entries that are part of the chain; damaged, cut-off and unchained lines are findings."""
    chained = []
    for e in entries:
        if e.record is None:
            if e.torn:
                find("audit_tail_truncated", e, "the last record is cut off")
            else:
                find("audit_record_edited", e, "not a JSON record (damaged)")
        elif not e.chained:
            find("audit_record_inserted", e, "a record without seq and mac: not part of the chain")
        else:
            chained.append(e)
    return chained


def _find_reordered(chained: list[Entry], find: _Findings) -> None:
    """A record whose sequence number is lower than an earlier one of the same file."""
    last_in_file: dict[str, Entry] = {}
    for e in chained:
        before = last_in_file.get(e.log)
        if before is not None and e.seq < before.seq:
            find("audit_record_reordered", e, f"record {e.seq} comes after record {before.seq}")
        if before is None or e.seq > before.seq:
            last_in_file[e.log] = e


def _sort_copies(
    copies: list[Entry], keysets: dict[str, Keyset], macs: _Macs, prev: str, after_gap: bool, unverified
) -> tuple[list[Entry], list[Entry], list[Entry]]:
    """The records of one sequence number: (MAC verified, not checkable, MAC wrong)."""
    ok, unknown, bad = [], [], []
    for e in copies:
        ks = keysets.get(str(e.record.get("keyset_id")))
        if ks is None:
            unverified[str(e.record.get("keyset_id"))] += 1
            unknown.append(e)
        elif after_gap:
            unknown.append(e)  # its predecessor is gone: its MAC cannot be checked
        elif _same(macs(ks, prev, e.log, e.record), e.record["mac"]):
            ok.append(e)
        else:
            bad.append(e)
    return ok, unknown, bad


def _walk_chain(
    groups: dict[int, list[Entry]], keysets: dict[str, Keyset], wseq: int | None, find: _Findings
) -> tuple[int, int, collections.Counter]:
    """Follow the chain by sequence number; returns (records verified, last seq, unverified per keyset)."""
    macs, prev, expected = _Macs(), GENESIS, 1
    verified, unverified = 0, collections.Counter()
    link = None
    for seq in sorted(groups):
        if seq < expected:  # seq 0 or below
            for e in groups[seq]:
                find("audit_record_inserted", e, f"sequence number {seq} is not in the chain")
            continue
        after_gap = seq > expected
        if after_gap:
            missing = f"record {expected}" if seq == expected + 1 else f"records {expected} to {seq - 1}"
            find("audit_record_removed", None, f"{missing} of the chain are missing", expected)
        ok, unknown, bad = _sort_copies(groups[seq], keysets, macs, prev, after_gap, unverified)
        verified += len(ok)
        link = (ok or unknown or bad)[0]
        for e in ok[1:]:
            find("audit_record_inserted", e, f"a second copy of record {seq}")
        for e in bad:
            alone = len(groups[seq]) == 1 and (wseq is None or seq <= wseq)
            if alone:
                find("audit_record_edited", e, f"record {seq} does not match its MAC (edited)")
            else:
                find("audit_record_inserted", e, f"record {seq} does not match its MAC (added)")
        prev, expected = link.record["mac"], seq + 1
    return verified, expected - 1, unverified


def _check_witness(witness: tuple[int, str], last_seq: int, groups: dict[int, list[Entry]], find: _Findings) -> None:
    """The registry's witness against the chain's end: a tail cut off, or a last record replaced."""
    wseq = witness[0]
    if last_seq < wseq:
        cut = wseq - last_seq
        find(
            "audit_tail_truncated",
            None,
            f"the chain ends at record {last_seq} but record {wseq} was appended: {cut} record(s) cut off the end",
            last_seq + 1,
        )
    elif wseq in groups and not any(_same(e.record["mac"], witness[1]) for e in groups[wseq]):
        find("audit_record_edited", None, f"record {wseq} is not the record that was appended", wseq)


def verify(folder: str, keysets: dict[str, Keyset], witness: tuple[int, str] | None = None) -> dict:
    """Check one audit folder's chain.

    Args:
        keysets: keyset_id -> Keyset of the keysets whose records can be checked (others are unverified).
        witness: the registry's (seq, mac) of the last record appended, when known.

    Returns ``{"folder", "records", "verified", "unverified", "last_seq", "findings": [...]}``; each
    finding has ``kind`` (audit_record_edited, audit_record_removed, audit_record_inserted,
    audit_record_reordered, audit_tail_truncated, audit_chain_unverified), ``log``, ``line``, ``seq``
    and ``detail``.
    """
    entries = read_folder(folder)
    find = _Findings(folder)
    chained = _chained_entries(entries, find)
    _find_reordered(chained, find)
    groups = collections.defaultdict(list)
    for e in chained:
        groups[e.seq].append(e)
    wseq = witness[0] if witness else None
    verified, last_seq, unverified = _walk_chain(groups, keysets, wseq, find)
    if witness:
        _check_witness(witness, last_seq, groups, find)
    if unverified:
        ids = ", ".join(sorted(unverified))
        find(
            "audit_chain_unverified",
            None,
            f"{sum(unverified.values())} record(s) under keyset {ids} not verified (give its --keys)",
        )
    return {
        "folder": folder,
        "records": len(entries),
        "verified": verified,
        "unverified": sum(unverified.values()),
        "last_seq": last_seq,
        "witness_seq": wseq,
        "findings": find.items,
    }
