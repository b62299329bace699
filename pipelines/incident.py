"""backfill incident: the scope of a suspected leak, the report to file, and the shred (Art. 13).

    backfill incident --key-version j1 --base out/merge/base --vault out/merge/vault --out out/incident-1 \\
        [--detected-at 2026-11-30T09:15:00+08:00] [--description "join key found in a public repository"]
    backfill incident --lines leaked.csv --base out/merge/base --vault out/merge/vault --out out/incident-2 \\
        --shred --keys keys/keyset.json [--actor NAME] [--as-of 2026-11-30]
    python -m pipelines.incident ...

``--key-version jN`` takes the lines whose tokens are under join key jN;
``vN`` the lines whose data key is wrapped by vault key vN (the vault's key
table, and the base's ``vault_key_version``); ``--lines FILE`` a list of
line_ids (one per line, or a CSV with a ``line_id`` column).

Writes ``OUT/affected_lines.csv`` (line_id, region, identity fields held as
field *names*, key versions, sealed vault fields, whether the vault data can
be shredded and whether it was), ``OUT/incident.json`` and
``OUT/incident.html`` (what leaked or may have, when, how many lines and
subscribers, by region, what was done) and ``OUT/manifest.json``. Never a
token, mask or value: the report is what the operator files with the telecom
administration.

``--shred`` (with ``--keys`` and ``--vault``) crypto-shreds every affected
line that has a data key, in ``--vault`` itself (the live vault: a leak
response must destroy there), through ``pipelines.keys.shred_lines``: one
record per line in ``VAULT/../audit/shred.jsonl``, every other data key
re-wrapped under a new vault key version. The base's tokens and masks are left
as they are (``backfill retention`` blanks them for terminated lines).
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import io
import os
import sys
from typing import TYPE_CHECKING

import pyarrow as pa
import pyarrow.compute as pc
from apache_beam.io.filesystems import FileSystems

from pipelines.render import pages
from pipelines.common import ArgumentParser, UserError, new_run, parse_as_of, run_main, split_beam_flags
from pipelines.io.publish import check_apart, check_owned, publishing
from pipelines.manifest import Timer, keys_block, write_json
from pipelines.io.spreadsheet import spreadsheet_safe
from pipelines.incident_scope import _scan, _scope, read_line_ids, scope_text

if TYPE_CHECKING:
    from transforms.crypto.keyset import Keyset

__all__ = ["run", "main", "read_line_ids"]

OUTPUTS = ("affected_lines.csv", "incident.json", "incident.html", "manifest.json")  # what it writes into OUT


def parser() -> ArgumentParser:
    p = ArgumentParser(prog="backfill incident", description=__doc__.splitlines()[0])
    scope = p.add_mutually_exclusive_group(required=True)
    scope.add_argument("--key-version", default=None, help="leaked key version: jN (join key) or vN (vault key)")
    scope.add_argument("--lines", default=None, help="file of line_ids: one per line, or a CSV with a line_id column")
    p.add_argument("--base", required=True, action="append", help="merged base (backfill merge OUT/base); repeatable")
    p.add_argument("--vault", default=None, help="the vault folder (which lines have sealed data, for the shred)")
    p.add_argument("--out", required=True, help="output folder: incident.json, incident.html, affected_lines.csv")
    p.add_argument(
        "--shred", action="store_true", help="crypto-shred the affected lines' vault data (needs --keys, --vault)"
    )
    p.add_argument("--keys", default=None, help="keyset file (mode 0600), for --shred")
    p.add_argument("--as-of", type=parse_as_of, default=None, help="date of the report (default: today)")
    p.add_argument("--detected-at", default=None, help="when the incident was detected (ISO date or time)")
    p.add_argument("--description", default=None, help="what happened, in the operator's words (no identity values)")
    p.add_argument("--actor", default=None, help="who responds (recorded in the shred log)")
    p.add_argument("--debug", action="store_true", help="show tracebacks")
    return p


def _when(value: str | None) -> str | None:
    if value is None:
        return None
    try:
        when = dt.datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    except ValueError:
        raise UserError(
            f"--detected-at {value!r} is not an ISO date or time (YYYY-MM-DD[THH:MM[:SS][+08:00]])"
        ) from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.timezone.utc)  # no zone means UTC, as everywhere in the project
    return when.astimezone(dt.timezone.utc).isoformat().replace("+00:00", "Z")


def _write_csv(lines: pa.Table, shredded: pa.Array, path: str) -> None:
    def joined(column):
        return pc.binary_join(pc.fill_null(column, pa.scalar([], pa.list_(pa.string()))), ";")

    table = pa.table(
        {
            "line_id": lines.column("line_id"),
            "region": lines.column("region"),
            "fields": joined(lines.column("fields")),
            "join_key_version": lines.column("join_key_version"),
            "vault_key_version": lines.column("vault_key_version"),
            "vault_fields": pc.if_else(
                pc.is_null(lines.column("vault_fields")),
                pa.scalar(None, pa.string()),
                joined(lines.column("vault_fields")),
            ),
            "shreddable": lines.column("shreddable"),
            "shredded": shredded,
        }
    )
    import pyarrow.csv as pacsv

    sink = io.BytesIO()
    pacsv.write_csv(spreadsheet_safe(table), sink)  # analysts open it in a spreadsheet
    with FileSystems.create(path) as handle:
        handle.write(sink.getvalue())


@dataclasses.dataclass
class _Job:
    """One incident: the arguments checked and the inputs read, before the scope is taken."""

    args: argparse.Namespace
    run_id: str
    started: str
    as_of: dt.date
    out: str
    detected_at: str | None
    keyset: Keyset | None
    given: list[str] | None  # the listed line_ids (--lines), distinct
    rows_given: int
    files: list[str]
    keys: pa.Table | None  # the vault's tables (--vault)
    values: pa.Table | None
    timer: Timer


def _check_args(args) -> None:
    """--shred has what it needs; --key-version names a key version."""
    from transforms.compliance.incident import KEY_VERSION

    if args.shred and not (args.keys and args.vault):
        raise UserError("--shred needs --keys and --vault: the shred happens in the vault, under the keyset")
    if args.key_version is not None and not KEY_VERSION.match(args.key_version):
        raise UserError(f"--key-version {args.key_version!r} is not a key version: jN (join key) or vN (vault key)")


def _read_vault(args, keyset) -> tuple[pa.Table | None, pa.Table | None]:
    """The vault's key and value tables (None without --vault), made under the keyset if one is given."""
    from transforms.crypto.vault import VaultError
    from pipelines.io.vault_files import read_table

    if not args.vault:
        return None, None
    try:
        keys, values = read_table(args.vault, "keys"), read_table(args.vault, "values")
    except VaultError as exc:
        raise UserError(str(exc)) from None
    foreign = set(pc.unique(keys.column("keyset_id")).to_pylist()) - ({keyset.keyset_id} if keyset else set())
    if keyset and foreign:
        raise UserError(
            f"--vault {args.vault} was made under keyset {sorted(foreign)[0]}, "
            f"not {keyset.keyset_id} (--keys {args.keys})"
        )
    return keys, values


def _inputs(args) -> dict:
    """Every path the incident reads, by flag: --out may be none of them, contain none, lie inside none."""
    return {"--base": args.base, "--vault": args.vault, "--lines": args.lines, "--keys": args.keys}


def _prepare(argv) -> _Job:
    """Parse and check the arguments; read the line list, the base's file list and the vault."""
    from pipelines.retention_base import merged_base_files
    from transforms.crypto.keyset import Keyset

    args, _ = split_beam_flags(parser(), argv, pipeline=False)
    timer = Timer()
    run_id, started = new_run("incident")
    as_of, out = args.as_of or parse_as_of(None), args.out.rstrip("/")
    _check_args(args)
    detected_at = _when(args.detected_at)
    if FileSystems.exists(FileSystems.join(out, "incident.json")):
        raise UserError(
            f"{out} already holds an incident report: it is a record that was filed; write this one to a new folder"
        )
    check_apart(out, _inputs(args))  # real paths
    check_owned(out, "incident")
    keyset = Keyset.load(args.keys) if args.keys else None  # permissions checked before anything is read
    given, rows_given = read_line_ids(args.lines) if args.lines else (None, 0)
    files = merged_base_files(args.base)
    keys, values = _read_vault(args, keyset)
    return _Job(
        args=args,
        run_id=run_id,
        started=started,
        as_of=as_of,
        out=out,
        detected_at=detected_at,
        keyset=keyset,
        given=given,
        rows_given=rows_given,
        files=files,
        keys=keys,
        values=values,
        timer=timer,
    )


def _shred(job: _Job, lines: pa.Table, scope: dict) -> tuple[dict, pa.Array]:
    """Crypto-shred the affected lines that have a data key (with --shred); the action taken and, per line,
    whether it was shredded."""
    from pipelines.keys import shred_lines

    args, has_vault = job.args, job.keys is not None
    shreddable = pc.fill_null(lines.column("shreddable"), False)
    shred_ids = lines.column("line_id").filter(shreddable).to_pylist()
    shred, shredded = None, pa.array([False] * lines.num_rows, pa.bool_())
    if args.shred and shred_ids:
        description = (args.description or "").strip().replace("\n", " ")
        shred = shred_lines(
            args.keys,
            args.vault,
            shred_ids,
            actor=args.actor,
            reason=f"incident {job.run_id} (Art. 13): {description or scope_text(scope)}",
        )
        shredded = shreddable
    job.timer.mark("shred_seconds")
    n_shredded = len(shred_ids) if shred else 0
    action = {
        "shred_requested": args.shred,
        "lines_shredded": n_shredded,
        "lines_not_shreddable": lines.num_rows - len(shred_ids) if has_vault else None,
        "lines_shreddable_not_shredded": len(shred_ids) - n_shredded if has_vault else None,
        "new_vault_key_version": shred["new_vault_key_version"] if shred else None,
        "retired_vault_key_versions": shred["retired_vault_key_versions"] if shred else [],
        "shred_log": os.path.join(os.path.dirname(os.path.normpath(args.vault)), "audit", "shred.jsonl")
        if shred
        else None,
    }
    action["summary"] = _action_text(action, has_vault)
    return action, shredded


def _report(
    job: _Job, scope: dict, exposure: str, lines: pa.Table, subscribers: int, unknown: list, action: dict
) -> dict:
    """The incident report (``OUT/incident.json``): what, when, how many, where, what was done."""
    from transforms.compliance.incident import summarise
    from transforms.crypto.keyset import Keyset

    args, summary = job.args, summarise(lines)
    keyset = Keyset.load(args.keys) if job.keyset is not None and args.keys else None  # as it is after a shred
    return {
        "step": "incident",
        "incident_id": job.run_id,
        "run_id": job.run_id,
        "started": job.started,
        "as_of": job.as_of.isoformat(),
        "detected_at": job.detected_at,
        "description": args.description,
        "scope": scope,
        "what": {
            "exposure": exposure,
            "fields": summary["by_field"],
            "vault_fields": summary["by_vault_field"],
            "join_key_versions": summary["by_join_key_version"],
            "vault_key_versions": summary["by_vault_key_version"],
        },
        "how_many": {
            "lines": summary["lines"],
            "lines_with_identity": summary["lines_with_identity"],
            "subscribers_by_document": subscribers,
            "lines_without_document": summary["lines"] - summary["by_field"].get("doc", 0),
        },
        "by_region": summary["by_region"],
        # counted, never shown: a leaked list may hold anything (a name, a number) where a line_id belongs
        "unknown_line_ids": {"count": len(unknown)},
        "action": action,
        "affected_lines_file": FileSystems.join(job.out, "affected_lines.csv"),
        "keys": keys_block(keyset) if keyset else None,
        "inputs": {"base": list(args.base), "base_files": job.files, "vault": args.vault, "lines": args.lines},
    }


def _write_outputs(job: _Job, stage: str, report: dict, lines: pa.Table, shredded: pa.Array, counts: dict) -> None:
    """affected_lines.csv, incident.json, incident.html and manifest.json (last) into ``stage``; the paths
    they record are OUT's."""
    out, csv_path = job.out, report["affected_lines_file"]
    _write_csv(lines, shredded, FileSystems.join(stage, "affected_lines.csv"))
    write_json(FileSystems.join(stage, "incident.json"), report)
    with FileSystems.create(FileSystems.join(stage, "incident.html")) as handle:
        page = pages.render("incident.html.j2", r=report, scope_text=scope_text(report["scope"]))
        handle.write(page.encode("utf-8"))
    write_json(
        FileSystems.join(stage, "manifest.json"),
        {
            "step": "incident",
            "run_id": job.run_id,
            "started": job.started,
            "as_of": job.as_of.isoformat(),
            "detected_at": job.detected_at,
            "scope": report["scope"],
            "keys": report["keys"],
            "inputs": report["inputs"],
            "outputs": {
                "report": FileSystems.join(out, "incident.json"),
                "html": FileSystems.join(out, "incident.html"),
                "affected_lines": csv_path,
            },
            "counts": counts,
            "action": report["action"],
            "runner": "pyarrow (no Beam pipeline)",
            "timings": job.timer.as_dict(),
        },
    )


def run(argv=None) -> dict:
    """Scope an incident, write its report (and shred); returns the report."""
    job = _prepare(argv)
    given_array = pa.array(job.given, pa.string()) if job.given is not None else None
    lines, lines_in, base_ids, subscribers = _scan(job.files, job.args.key_version, given_array, job.keys, job.values)
    job.timer.mark("scope_seconds")
    scope, exposure, unknown = _scope(job, given_array, base_ids)
    action, shredded = _shred(job, lines, scope)
    report = _report(job, scope, exposure, lines, subscribers, unknown, action)
    counts = {
        "base_lines_read": lines_in,
        "affected": lines.num_rows,
        "unknown": len(unknown),
        "shredded": action["lines_shredded"],
        "subscribers_by_document": subscribers,
    }
    if job.given is not None:
        counts.update(given=len(job.given), balanced=len(job.given) == lines.num_rows + len(unknown))
    # Written beside OUT and switched in whole at the end (pipelines/io/publish.py).
    with publishing(job.out, "incident", job.run_id, inputs=_inputs(job.args), produces=OUTPUTS) as pub:
        _write_outputs(job, pub.stage, report, lines, shredded, counts)
    return report


def _action_text(action: dict, has_vault: bool) -> str:
    if action["lines_shredded"]:
        return (
            f"{action['lines_shredded']:,} line(s) crypto-shredded: their data keys destroyed, every other data "
            f"key re-wrapped under {action['new_vault_key_version']}, "
            f"{', '.join(action['retired_vault_key_versions'])} retired"
        )
    if action["shred_requested"]:
        return "shred requested: no affected line has a data key in the vault; nothing was shredded"
    if not has_vault:
        return "nothing was shredded (no vault given: shreddability not assessed)"
    return "nothing was shredded (assessment only)"


def _body(argv) -> int:
    r = run(argv)
    h = r["how_many"]
    print(
        f"incident {r['incident_id']}: {scope_text(r['scope'])}: {h['lines']:,} line(s) affected "
        f"({h['subscribers_by_document']:,} subscriber(s) by document) in {len(r['by_region']):,} region(s); "
        f"fields {', '.join(f'{k} {v:,}' for k, v in r['what']['fields'].items()) or 'none'}"
    )
    if r["unknown_line_ids"]["count"]:
        print(f"  {r['unknown_line_ids']['count']:,} listed line_id(s) are not in the base")
    print(f"  {r['action']['summary']}")
    print(
        f"  -> {FileSystems.join(os.path.dirname(r['affected_lines_file']), 'incident.html')}, "
        f"{r['affected_lines_file']}"
    )
    return 0


def main(argv=None) -> int:
    return run_main("backfill incident", _body, argv)


if __name__ == "__main__":
    sys.exit(main())
