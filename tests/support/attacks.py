"""What the attack tests share (tests/test_attacks_*.py): the real ``backfill`` command, the canary rows and
registration, and the checks that a refusal is one line with no traceback and that no canary is anywhere."""

from __future__ import annotations

import glob
import os
import re
import subprocess
import sys

from schemas import field_names
from tests.support.merge import event as canary_registration
from tests.support.rows import CANARY_ADDRESS, CANARY_NAME, CANARY_NUMBER, person

BACKFILL = os.path.join(os.path.dirname(sys.executable), "backfill")
AS_OF = "2026-11-30"
CONTRACT = field_names("subscriber_base")
CANARIES = (CANARY_NAME, CANARY_NUMBER, CANARY_ADDRESS)
FULLWIDTH_NUMBER = CANARY_NUMBER.translate({ord(c): ord(c) + 0xFEE0 for c in "0123456789X"})
# A step's own plan and progress lines on stderr ("scan scan-20261206T...: 1 file(s), ..."): counts, never values.
_PLAN_LINE = re.compile(r"^[a-z-]+ [a-z-]+-\d{8}T\d{6}Z-")


def run(*args: str, cwd: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([BACKFILL, *args], capture_output=True, text=True, timeout=600, cwd=cwd)


def refused(proc: subprocess.CompletedProcess, prog: str, code: int, *expected: str) -> str:
    """Exit ``code``, one line ``PROG: error: ...`` holding ``expected`` (besides the step's plan lines), no
    traceback, no canary in stdout or stderr."""
    assert proc.returncode == code, proc.stderr
    assert "Traceback" not in proc.stderr and "unexpected" not in proc.stderr, proc.stderr
    assert not any(c in proc.stdout + proc.stderr for c in (*CANARIES, FULLWIDTH_NUMBER, "金丝雀")), proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip() and not _PLAN_LINE.match(line)]
    assert len(lines) == 1 and lines[0].startswith(f"{prog}: error: "), proc.stderr
    for part in expected:
        assert part in lines[0], lines[0]
    return lines[0]


def canary_rows(ids) -> list[dict]:
    """Base rows of the given line ids, every one with the canary name, number and address."""
    return [person(line_id=i, name=CANARY_NAME, doc_number=CANARY_NUMBER, address=CANARY_ADDRESS) for i in ids]


def canary_csv(path, ids) -> str:
    """A CSV base of :func:`canary_rows`."""
    with open(path, "w", encoding="utf-8") as handle:
        handle.write(",".join(CONTRACT) + "\n")
        handle.writelines(",".join(r.get(c) or "" for c in CONTRACT) + "\n" for r in canary_rows(ids))
    return str(path)


def canary_event(**fields) -> dict:
    """The canary registration of line L0001 (tests/support/merge.py's, as an agent's ID card reader took it)."""
    plain = {"line_id": "L0001", "doc_type": "RESIDENT_ID", "channel": "AGENT", "verified_by": "ID_CARD_READER"}
    return canary_registration(**{**plain, "agent_id": None, **fields})


def no_canary(*paths: str, also: tuple[str, ...] = ()) -> None:
    """No canary (nor its first characters, nor any of ``also``), in UTF-8 or UTF-16, in the bytes of any file under
    the paths, vaults and keysets aside."""
    needles = [
        (c, c.encode(enc)) for c in (*CANARIES, "金丝雀", CANARY_NUMBER[:10], *also) for enc in ("utf-8", "utf-16-le")
    ]
    for root in paths:
        files = [root] if os.path.isfile(root) else glob.glob(os.path.join(root, "**", "*"), recursive=True)
        for path in [f for f in files if os.path.isfile(f) and "/vault/" not in f and "keys.json" not in f]:
            with open(path, "rb") as handle:
                data = handle.read()
            found = [c for c, needle in needles if needle in data]
            assert not found, (path, found)
