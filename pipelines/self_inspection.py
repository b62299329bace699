"""Self-inspection (Decree 25 Art. 15): one year's runs, reveals, key changes, purges and incidents.

    python -m pipelines.self_inspection --year 2026 --manifests out/ [DIR ...] --keys keys/keys.json \
        --out out/inspection
    backfill report --self-inspection --year 2026 --manifests out/ --out out/report   (the report wires it)

``self_inspection(roots, year, out_dir, keys=[...])`` walks the local folders ``roots``
and gathers:

* run manifests: every ``manifest.json`` with a ``step`` and a ``run_id``,
  and notify's per-run history ``runs/*.json``; the same run found twice
  (notify's latest manifest is also in ``runs/``, a copied folder) counts
  once; a run belongs to the year of its ``started`` time (UTC);
* audit logs (JSON Lines) in ``audit`` folders: ``reveal.jsonl`` (reveals, by
  purpose and outcome; purposes are free text typed by staff and are shown as
  given), ``keys.jsonl`` (key changes), ``shred.jsonl`` (crypto-shreds, by
  reason); a record belongs to the year of its ``at`` time; the same record
  in two copies of a log counts once;
* the audit chains: every ``audit`` folder found, and every one the keysets'
  registries name (wherever it is), is verified record by record
  (``transforms/crypto/audit.py``) with the keysets given by ``--keys``: an
  edited, removed, inserted or reordered record, a tail cut off (the
  registry's witness saw a later record, or the last line is cut), or a whole
  registered audit folder gone, is a finding. Without the keyset of a chain
  its MACs cannot be checked: that is a finding too (``audit_chain_unverified``).

It writes ``OUT/self_inspection_YEAR.json`` and ``.html``: runs per step,
rows in and out (``rows_in``/``lines_in`` and ``rows_out``/``lines_out``/
``classified`` counts, wherever they sit in a manifest's counts), dead letters
by step and reason, policy and key versions, reveals, key events, shreds,
retention purges, incidents, and findings: every manifest whose counts say
``balanced: false`` anywhere, failed reveals, incidents, and audit chains
that do not verify. Never an identity value: manifests and audit logs hold
none, and a chain finding names a file, a line and a sequence number only.

A year without any run manifest is an error (one line, exit 1): an empty
inspection would look like a clean year.
"""

from __future__ import annotations

import json
import os
import sys

from pipelines.common import ArgumentParser, UserError, run_main, split_beam_flags
from pipelines.manifest import write_json
from pipelines.self_inspection_tally import _Tally

__all__ = ["self_inspection", "gather", "main"]

_AUDIT_LOGS = ("reveal.jsonl", "keys.jsonl", "shred.jsonl")


def _files(roots: list[str]) -> tuple[list[str], dict[str, list[str]]]:
    manifests, audits = [], {name: [] for name in _AUDIT_LOGS}
    audits["_folders"] = []
    seen = set()
    for root in roots:
        if "://" in root:
            raise UserError(f"--manifests {root}: only local folders are inspected (copy the outputs here first)")
        if not os.path.isdir(root):
            raise UserError(f"--manifests {root} is not a folder")
        for folder, dirs, names in os.walk(root):
            dirs[:] = sorted(d for d in dirs if not d.startswith(("_tmp", ".")))
            for name in sorted(names):
                path = os.path.join(folder, name)
                real = os.path.realpath(path)
                if real in seen:
                    continue
                seen.add(real)
                if name == "manifest.json" or (name.endswith(".json") and os.path.basename(folder) == "runs"):
                    manifests.append(path)
                elif name in _AUDIT_LOGS and os.path.basename(folder) == "audit":
                    audits[name].append(path)
                    if folder not in audits["_folders"]:
                        audits["_folders"].append(folder)
    return manifests, audits


def _load_keysets(keys: list[str]) -> list:
    """(keyset, registry or None) of every --keys file."""
    from transforms.crypto.keyset import Keyset, KeysetError
    from transforms.crypto.registry import Registry

    out = []
    for path in keys:
        try:
            keyset = Keyset.load(path)
            registry = Registry.load(path, keyset) if keyset.has_audit_key else None
        except KeysetError as exc:
            raise UserError(str(exc)) from None
        out.append((keyset, registry))
    return out


def _chains(audit_paths: dict[str, list[str]], keysets: list) -> list[dict]:
    """Verify every audit folder found, and every one a registry names (its files join ``audit_paths``)."""
    from transforms.crypto.audit import verify
    from transforms.crypto.registry import folder_location

    by_id = {ks.keyset_id: ks for ks, _ in keysets}
    witnesses: dict[str, tuple[int, str]] = {}
    for _, registry in keysets:
        for folder, head in (registry.chains if registry else {}).items():
            if folder not in witnesses or head[0] > witnesses[folder][0]:
                witnesses[folder] = head
    found = {folder_location(f): f for f in audit_paths["_folders"]}
    for folder in witnesses:
        if folder not in found and os.path.isdir(folder):
            found[folder] = folder
            for name in _AUDIT_LOGS:
                if os.path.isfile(os.path.join(folder, name)):
                    audit_paths[name].append(os.path.join(folder, name))
    reports = []
    for real in sorted(found):
        reports.append(verify(found[real], by_id, witnesses.get(real)))
    for folder in sorted(set(witnesses) - set(found)):
        seq = witnesses[folder][0]
        reports.append(
            {
                "folder": folder,
                "records": 0,
                "verified": 0,
                "unverified": 0,
                "last_seq": 0,
                "witness_seq": seq,
                "findings": [
                    {
                        "kind": "audit_record_removed",
                        "folder": folder,
                        "log": None,
                        "line": None,
                        "seq": 1,
                        "detail": f"{folder}: the audit folder is gone; its chain had {seq} record(s)",
                    }
                ],
            }
        )
    return reports


def _load(path: str) -> dict | None:
    try:
        with open(path, encoding="utf-8") as handle:
            data = json.load(handle)
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) and data.get("step") and data.get("run_id") else None


def _year_runs(manifest_paths: list[str], year: int, roots: list[str]) -> tuple[list[tuple[str, dict]], int]:
    """The year's run manifests, each run once, by start time; and how many manifests were unreadable."""
    runs, by_id, unreadable = [], {}, 0
    for path in manifest_paths:
        m = _load(path)
        if m is None:
            unreadable += 1
            continue
        if str(m.get("started", ""))[:4] != str(year) or m["run_id"] in by_id:
            continue
        by_id[m["run_id"]] = path
        runs.append((path, m))
    if not runs:
        raise UserError(
            f"no run manifest from {year} under {', '.join(roots)} "
            f"({len(manifest_paths)} manifest(s) of other years or unreadable): nothing to inspect"
        )
    runs.sort(key=lambda pm: (pm[1]["started"], pm[1]["run_id"]))
    return runs, unreadable


def gather(roots: list[str], year: int, keys: list[str] | None = None) -> dict:
    """The year's evidence, as one document (no files written); ``keys``: keyset files that verify the
    audit chains."""
    manifest_paths, audit_paths = _files(roots)
    runs, unreadable = _year_runs(manifest_paths, year, roots)
    keysets = _load_keysets(keys or [])
    chains = _chains(audit_paths, keysets)
    tally = _Tally()
    for path, m in runs:
        tally.add_run(path, m)
    audits = tally.add_audits(audit_paths, year)
    chain_rows = tally.add_chains(chains)
    return {
        "year": year,
        "roots": list(roots),
        "manifests": {"found": len(manifest_paths), "runs_in_year": len(runs), "unreadable": unreadable},
        "runs_by_step": dict(tally.steps),
        "dead_letters_by_step": {step: dict(sorted(c.items())) for step, c in sorted(tally.dead.items())},
        "policy_versions": dict(sorted(tally.policies.items())),
        "key_versions": {k: sorted(v, key=lambda s: (len(s), s)) for k, v in sorted(tally.key_versions.items())},
        **audits,
        "retention": {
            "runs": len(tally.retention),
            "lines_purged": sum(r["purged"] for r in tally.retention),
            "purges": tally.retention,
        },
        "incidents": tally.incidents,
        "audit_chains": {"keysets": sorted(ks.keyset_id for ks, _ in keysets), "chains": chain_rows},
        "findings": tally.findings,
        "runs": tally.table,
    }


def _render(report: dict) -> str:
    from pipelines.render.pages import render

    return render("self_inspection.html.j2", r=report)


def self_inspection(roots: list[str], year: int, out_dir: str, keys: list[str] | None = None) -> dict:
    """Gather the year's evidence under ``roots``; write ``OUT/self_inspection_YEAR.{json,html}``; return it.

    ``keys``: the keyset files whose audit key verifies the audit chains (and whose registries hold the
    chains' witnesses)."""
    import datetime as dt

    report = gather(roots, year, keys)
    report["generated_at"] = dt.datetime.now(dt.timezone.utc).replace(microsecond=0).isoformat().replace("+00:00", "Z")
    os.makedirs(out_dir, exist_ok=True)
    report["outputs"] = {
        "json": os.path.join(out_dir, f"self_inspection_{year}.json"),
        "html": os.path.join(out_dir, f"self_inspection_{year}.html"),
    }
    write_json(report["outputs"]["json"], report)
    with open(report["outputs"]["html"], "w", encoding="utf-8") as handle:
        handle.write(_render(report))
    return report


def parser() -> ArgumentParser:
    p = ArgumentParser(prog="backfill self-inspection", description=__doc__.splitlines()[0])
    p.add_argument("--year", required=True, type=int, help="the year inspected (runs by their start time, UTC)")
    p.add_argument("--manifests", required=True, nargs="+", help="folders searched for manifests and audit logs")
    p.add_argument("--out", required=True, help="output folder: self_inspection_YEAR.json and .html")
    p.add_argument(
        "--keys",
        action="append",
        default=None,
        help="keyset file whose audit key verifies the audit logs' chains; repeatable",
    )
    p.add_argument("--debug", action="store_true", help="show tracebacks")
    return p


def format_summary(r: dict) -> str:
    steps = ", ".join(f"{k} {v['runs']:,}" for k, v in r["runs_by_step"].items())
    return (
        f"self-inspection {r['year']}: {r['manifests']['runs_in_year']:,} run(s) ({steps}); "
        f"{r['reveals']['records']:,} reveal(s); {r['retention']['lines_purged']:,} line(s) purged by retention; "
        f"{len(r['incidents']):,} incident(s); {len(r['findings']):,} finding(s) -> {r['outputs']['html']}"
    )


def _body(argv) -> int:
    args, _ = split_beam_flags(parser(), argv, pipeline=False)
    print(format_summary(self_inspection(args.manifests, args.year, args.out, args.keys)))
    return 0


def main(argv=None) -> int:
    return run_main("backfill self-inspection", _body, argv)


if __name__ == "__main__":
    sys.exit(main())
