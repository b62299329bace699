"""Which subscriber base an output comes from: the ``lineage`` a scan and a merge record in their manifests, and
the check that a scan and a live state (a merge, compact, retention output) are of the same base.

The fingerprint of a base is that of its files as read, whatever their names, order or place (a local folder, a
copy in ``s3://``): per file, sha256 of its size, its first 64 KiB and its last 64 KiB (a Parquet file's footer,
an Avro file's header with the sync marker drawn at random when it was written, a CSV file's first and last rows);
then the files' digests, sorted, through scrypt (about 0.1 s, once per run). It reads at most 128 KiB a file and is
the same for a byte-for-byte copy: modification times are not part of it (a copy changes them). Scrypt because
the bytes hold identity values: a fast digest of a file of a few rows could be used to confirm a guess of the one
value in it that one does not know; the fingerprint is a slow and salted one of the whole base instead.
A manifest records::

    "lineage": {"method": "edges-scrypt-v1", "base": HEX, "origin": HEX, "origin_is_raw": true}

``base``: the base the step read; ``origin``: the raw base its chain started from (a merge of a previous merge's
base carries that output's origin on; a scan refuses a merged base; compact, retention and ``keys retokenize``
record none, so their input is followed back; the streaming merge records its base's for compact to compare). When the chain reaches an output whose manifest records no lineage (made
before lineages were recorded), ``origin`` is the earliest base fingerprinted and ``origin_is_raw`` false: such
origins only ever make the check unsure, never refuse.
"""

from __future__ import annotations

import concurrent.futures
import hashlib
import logging
import os

import pyarrow.parquet as pq

from pipelines.common import UserError
from pipelines.io.paths import is_uri, join_path

__all__ = ["METHOD", "base_lineage", "live_folder", "live_lineage", "check_same_base", "check_stream_base"]

log = logging.getLogger("backfill")

METHOD = "edges-scrypt-v1"
EDGE = 64 << 10  # bytes read at a file's start and at its end
SALT = b"subscriber-backfill lineage v1"
LIVE = ("merge", "compact", "retention", "retokenize")  # outputs whose base/ is a merged base
FOLLOWED = ("compact", "retention", "retokenize")  # they keep their input's lines: their origin is their input's
_PLAINTEXT = {"doc_number", "name", "address"}
_NOTHING = {"notify": "nothing was sent", "report": "nothing was written"}


def _open(path: str):
    if not is_uri(path):
        return open(path, "rb")
    from apache_beam.io.filesystem import CompressionTypes
    from apache_beam.io.filesystems import FileSystems

    return FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED)  # the bytes stored


def _file_digest(path: str) -> bytes:
    with _open(path) as handle:
        handle.seek(0, os.SEEK_END)
        size = handle.tell()
        handle.seek(0)
        digest = hashlib.sha256(size.to_bytes(8, "big") + handle.read(EDGE))
        if size > EDGE:
            handle.seek(max(size - EDGE, EDGE))
            digest.update(handle.read(EDGE))
    return digest.digest()


def fingerprint(files: list[str]) -> str:
    """The base's fingerprint: its files' digests, sorted (names and order play no part), through scrypt."""
    with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, min(16, len(files)))) as pool:
        digests = sorted(pool.map(_file_digest, files))
    whole = hashlib.sha256(b"".join(digests)).digest()
    return hashlib.scrypt(whole, salt=SALT, n=1 << 15, r=8, p=1, maxmem=64 << 20, dklen=32).hex()


def _manifest(folder: str) -> dict | None:
    return _read(join_path(folder, "manifest.json"))


def live_folder(path: str) -> str | None:
    """The merge (compact, retention, retokenize) output that ``path`` is (``OUT``) or lies in (``OUT/base``, a
    file or a pattern under it); None when it is none (a raw base, a list of line ids, a copy without manifest)."""
    path = path.rstrip("/") or "/"
    wild = [path.index(c) for c in "*?[" if c in path]
    if wild:
        path = path[: min(wild)].rsplit("/", 1)[0]
    parts = path.split("/")
    candidates = [path] + ["/".join(parts[:i]) or "." for i in range(len(parts) - 1, -1, -1) if parts[i] == "base"]
    for folder in candidates[:3]:
        manifest = _manifest(folder)
        if manifest is not None and manifest.get("step") in LIVE:
            return folder
    return None


def live_lineage(folder: str, _depth: int = 0) -> dict | None:
    """The lineage of a live output: its manifest's, or (compact, retention, retokenize) its input's; None when
    nothing is recorded."""
    manifest = _manifest(folder) or {}
    lineage = manifest.get("lineage")
    if isinstance(lineage, dict) and lineage.get("method") == METHOD:
        return lineage
    inputs = manifest.get("inputs") or {}
    bases = inputs.get("base") or []
    if manifest.get("step") not in FOLLOWED or _depth >= 50 or not bases or not isinstance(bases[0], str):
        return None
    parent = live_folder(bases[0])
    if parent:
        return live_lineage(parent, _depth + 1)
    if inputs.get("base_kind") == "raw":  # compact of a raw base: its files, if still there, can confirm a match
        try:
            base = fingerprint([str(b) for b in bases])
        except Exception:  # moved, or a path of another working folder
            return None
        # not raw: the files may have been replaced since; a fingerprint taken now only ever confirms, never refuses
        return {"method": METHOD, "base": base, "origin": base, "origin_is_raw": False}
    return None


def _looks_merged(path: str) -> bool:
    if not path.lower().endswith(".parquet"):
        return False
    with _open(path) as handle:
        names = set(pq.ParquetFile(handle).schema_arrow.names)
    return "doc_token" in names and not names & _PLAINTEXT


def base_lineage(files: list[str]) -> dict | None:
    """The lineage a scan or a merge records for the base files it read; None when they cannot be fingerprinted
    (the run goes on: the check is then unsure, never a refusal)."""
    try:
        base = fingerprint(files)
        folders = {live_folder(f.rsplit("/", 1)[0] or "/") for f in files}  # by file's folder: a read or two each
        inherited = [_recorded(live_lineage(f)) for f in folders if f]
        if inherited and all(inherited) and len({(i["origin"], i["origin_is_raw"]) for i in inherited}) == 1:
            origin, raw = inherited[0]["origin"], bool(inherited[0]["origin_is_raw"])
        else:  # a raw base, or a merged one whose chain records no lineage (that base is its earliest known)
            origin, raw = base, not inherited and not _looks_merged(files[0])
    except Exception as exc:
        log.debug("the base's fingerprint could not be taken (%s)", type(exc).__name__)
        return None
    return {"method": METHOD, "base": base, "origin": origin, "origin_is_raw": raw}


def _recorded(lineage) -> dict | None:
    ok = isinstance(lineage, dict) and lineage.get("method") == METHOD and lineage.get("base") and lineage.get("origin")
    return lineage if ok else None


def check_same_base(
    step: str, scan: str, live: str, live_flag: str = "--merged", ids_ok: bool = False, changed: bool = False
) -> None:
    """Refuse (one line naming both folders) a live state whose base is not the scan's: a merge of another
    subscriber base would count its lines as registered, or not, by line id alone. When the manifests do not
    tell, a warning. ``ids_ok``: ``live`` may be a list of line ids (notify's ``--merged``): one that lies in no
    output is not checked. ``changed`` (``--base-changed``): the operator says the scan read another export of
    the same subscriber base (a newer one): a warning, not a refusal."""
    scanned = _recorded((_manifest(scan) or {}).get("lineage"))
    folder = live_folder(live)
    if folder is None and ids_ok:
        return
    merged = _recorded(live_lineage(folder)) if folder else None
    if folder is None:
        reason = "it lies in no merge, compact or retention output with a manifest"
    elif merged is None:
        reason = (
            "neither its manifest nor those of the outputs it was made from record a base fingerprint (runs "
            "before they were recorded, or a compact of a raw base)"
        )
    elif scanned is None:
        reason = "the scan's manifest records no base fingerprint (a scan before they were recorded, or planned in "
        reason += "its pipeline with --estimated-rows)"
    elif scanned["base"] == merged["base"] or scanned["origin"] == merged["origin"]:
        return
    elif scanned.get("origin_is_raw") and merged.get("origin_is_raw") and changed:
        log.warning(
            "%s: %s %s descends from another export of the subscriber base than --scan %s read (--base-changed): "
            "lines of one and not the other are counted as not registered",
            *(step, live_flag, live, scan),
        )
        return
    elif scanned.get("origin_is_raw") and merged.get("origin_is_raw"):
        raise UserError(
            f"{live_flag} {live} is not of the base --scan {scan} read: their manifests record different "
            "subscriber bases (base fingerprints); give the merge (compact, retention) of the base the scan read, "
            f"or --base-changed if the scan read a newer export of the same base; {_NOTHING.get(step, 'nothing was done')}"
        )
    else:
        reason = "one of them comes from a merged base whose manifest records no base fingerprint"
    log.warning(
        "%s: cannot tell whether %s %s is of the base --scan %s read: %s; make sure both come from the same "
        "subscriber base",
        *(step, live_flag, live, scan, reason),
    )


def _stream_lineages(stream: str) -> list[dict]:
    """The distinct lineages the streaming merge's manifests in ``stream`` record (``manifest.json``, the last run's;
    ``runs/RUN.json``, each local run's)."""
    paths = [join_path(stream, "manifest.json")]
    if not is_uri(stream) and os.path.isdir(os.path.join(stream, "runs")):
        runs = os.path.join(stream, "runs")
        paths += [os.path.join(runs, n) for n in sorted(os.listdir(runs)) if n.endswith(".json")]
    found: dict[tuple, dict] = {}
    for path in paths:
        manifest = _read(path) or {}
        lineage = _recorded(manifest.get("lineage"))
        if lineage and manifest.get("mode") == "streaming":
            found.setdefault((lineage["base"], lineage["origin"]), lineage)
    return list(found.values())


def _read(path: str) -> dict | None:
    from pipelines.manifest import read_json

    try:
        data = read_json(path)
    except Exception:  # none, unreadable or not JSON: nothing recorded
        return None
    return data if isinstance(data, dict) else None


def check_stream_base(given: str, deltas: str, stream: str, lineage: dict | None, changed: bool = False) -> None:
    """``backfill compact``: refuse (one line) a base other than the one the streaming merge in ``stream`` ran on,
    as its manifests record it; a warning when they cannot tell. ``given`` (``--base PATH``, ``--merged DIR``),
    ``deltas``: the flags as given, for the message; ``lineage``: the compacted base's (:func:`base_lineage`); ``changed``: ``--base-changed``."""
    recorded, lineage = _stream_lineages(stream), _recorded(lineage)
    if lineage is None or not recorded:
        reason = (
            "the base's fingerprint could not be taken"
            if recorded
            else (
                "no streaming merge manifest beside the deltas records a base fingerprint (a stream run before they "
                "were recorded, or deltas copied without their manifest)"
            )
        )
        log.warning(
            "compact: cannot tell whether %s is the base the streaming merge of --deltas %s ran on: %s; make sure it is",
            *(given, deltas, reason),
        )
        return
    same = [r for r in recorded if r["base"] == lineage["base"] or r["origin"] == lineage["origin"]]
    if len(same) == len(recorded):
        return
    raw = lineage.get("origin_is_raw") and all(r.get("origin_is_raw") for r in recorded if r not in same)
    if raw and changed:
        log.warning(
            "compact: %s is another export of the subscriber base than the streaming merge of --deltas %s ran on "
            "(--base-changed): the stream's registrations are folded into it by line id",
            *(given, deltas),
        )
        return
    if raw:
        raise UserError(
            f"{given} is not the base the streaming merge of --deltas {deltas} ran on: their manifests record "
            "different subscriber bases (base fingerprints); give the base the stream read (a merged one with "
            "--merged), or --base-changed if it is a newer export of the same base; nothing was written"
        )
    log.warning(
        "compact: cannot tell whether %s is the base the streaming merge of --deltas %s ran on: one of them comes "
        "from a merged base whose manifest records no base fingerprint; make sure it is",
        *(given, deltas),
    )
