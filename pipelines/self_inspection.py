"""Self-inspection (Decree 25 Art. 15): one year's runs, reveals, key changes, purges and incidents.

    python -m pipelines.self_inspection --year 2026 --manifests out/ [DIR ...] --out out/inspection
    backfill report --self-inspection --year 2026 --manifests out/ --out out/report   (the report wires it)

``self_inspection(roots, year, out_dir)`` walks the local folders ``roots``
and gathers:

* run manifests: every ``manifest.json`` with a ``step`` and a ``run_id``,
  and notify's per-run history ``runs/*.json``; the same run found twice
  (notify's latest manifest is also in ``runs/``, a copied folder) counts
  once; a run belongs to the year of its ``started`` time (UTC);
* audit logs (JSON Lines) in ``audit`` folders: ``reveal.jsonl`` (reveals, by
  purpose and outcome; purposes are free text typed by staff and are shown as
  given), ``keys.jsonl`` (key changes), ``shred.jsonl`` (crypto-shreds, by
  reason); a record belongs to the year of its ``at`` time; the same record
  in two copies of a log counts once.

It writes ``OUT/self_inspection_YEAR.json`` and ``.html``: runs per step,
rows in and out (``rows_in``/``lines_in`` and ``rows_out``/``lines_out``/
``classified`` counts, wherever they sit in a manifest's counts), dead letters
by step and reason, policy and key versions, reveals, key events, shreds,
retention purges, incidents, and findings: every manifest whose counts say
``balanced: false`` anywhere, failed reveals, incidents. Never an identity
value: manifests and audit logs hold none.

A year without any run manifest is an error (one line, exit 1): an empty
inspection would look like a clean year.
"""

from __future__ import annotations

import collections
import dataclasses
import json
import os
import sys

from pipelines.common import ArgumentParser, UserError, run_main, split_beam_flags
from pipelines.manifest import write_json

__all__ = ["self_inspection", "gather", "main"]

_AUDIT_LOGS = ("reveal.jsonl", "keys.jsonl", "shred.jsonl")
_IN, _OUT = ("rows_in", "lines_in"), ("rows_out", "lines_out", "classified")


def _files(roots: list[str]) -> tuple[list[str], dict[str, list[str]]]:
    manifests, audits = [], {name: [] for name in _AUDIT_LOGS}
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
    return manifests, audits


def _walk(value, key: str | None = None, path: str = ""):
    """Every (key, value, path) inside nested dicts."""
    if key is not None:
        yield key, value, path
    if isinstance(value, dict):
        for k, v in value.items():
            yield from _walk(v, k, f"{path}.{k}" if path else k)


def _load(path: str) -> dict | None:
    try:
        with open(path, encoding="utf-8") as handle:
            data = json.load(handle)
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) and data.get("step") and data.get("run_id") else None


def _records(paths: list[str], year: int) -> list[dict]:
    out, seen = [], set()
    for path in paths:
        with open(path, encoding="utf-8") as handle:
            for line in handle:
                line = line.strip()
                if not line or line in seen:
                    continue
                seen.add(line)
                try:
                    record = json.loads(line)
                except ValueError:
                    continue  # a torn last line of an interrupted append
                if isinstance(record, dict) and str(record.get("at", ""))[:4] == str(year):
                    out.append(record)
    return sorted(out, key=lambda r: str(r.get("at")))


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


def _counted(counts: dict, names: tuple[str, ...]) -> int:
    return sum(v for k, v, _ in _walk(counts) if k in names and isinstance(v, int) and not isinstance(v, bool))


@dataclasses.dataclass
class _Tally:
    """What the year's runs and audit logs add up to."""

    steps: dict = dataclasses.field(default_factory=dict)
    dead: dict = dataclasses.field(default_factory=lambda: collections.defaultdict(collections.Counter))
    policies: collections.Counter = dataclasses.field(default_factory=collections.Counter)
    key_versions: dict = dataclasses.field(default_factory=lambda: collections.defaultdict(set))
    findings: list = dataclasses.field(default_factory=list)
    table: list = dataclasses.field(default_factory=list)
    retention: list = dataclasses.field(default_factory=list)
    incidents: list = dataclasses.field(default_factory=list)

    def key_version(self, version: str, purpose: str | None = None) -> None:
        self.key_versions[purpose or ("join" if version.startswith("j") else "vault")].add(version)

    def add_run(self, path: str, m: dict) -> None:
        step, counts = m["step"], m.get("counts") or {}
        s = self.steps.setdefault(step, {"runs": 0, "rows_in": 0, "rows_out": 0, "dead_letters": 0})
        rows_in, rows_out, n_dead = _counted(counts, _IN), _counted(counts, _OUT), 0
        for k, v, _ in _walk(counts):
            if k == "dead_letter_reasons" and isinstance(v, dict):
                for reason, n in v.items():
                    self.dead[step][reason] += n
                    n_dead += n
        for name, n in (("runs", 1), ("rows_in", rows_in), ("rows_out", rows_out), ("dead_letters", n_dead)):
            s[name] += n
        unbalanced = [p for k, v, p in _walk(counts) if k == "balanced" and v is False]
        policy = (m.get("policy") or {}).get("version") or m.get("policy_version")
        if policy:
            self.policies[policy] += 1
        for k, v, _ in _walk(m.get("keys") or {}):
            if isinstance(v, str) and k not in ("keyset_id",):
                self.key_version(v)
            elif isinstance(v, list):
                for item in v:
                    if isinstance(item, str):
                        self.key_version(item)
        self.table.append(
            {
                "step": step,
                "run_id": m["run_id"],
                "started": m["started"],
                "as_of": m.get("as_of"),
                "policy_version": policy,
                "rows_in": rows_in,
                "rows_out": rows_out,
                "dead_letters": n_dead,
                "balanced": not unbalanced,
                "manifest": path,
            }
        )
        if unbalanced:
            self.findings.append(
                {
                    "kind": "unbalanced_run",
                    "step": step,
                    "run_id": m["run_id"],
                    "manifest": path,
                    "detail": f"counts {', '.join(unbalanced)} say balanced: false",
                }
            )
        if step == "retention":
            self.retention.append(_retention_row(m))
        if step == "incident":
            self.add_incident(path, m)

    def add_incident(self, path: str, m: dict) -> None:
        c, scope = m.get("counts", {}), m.get("scope") or {}
        self.incidents.append(
            {
                "run_id": m["run_id"],
                "detected_at": m.get("detected_at"),
                "scope": scope,
                "affected": c.get("affected", 0),
                "unknown": c.get("unknown", 0),
                "shredded": c.get("shredded", 0),
            }
        )
        self.findings.append(
            {
                "kind": "incident",
                "step": "incident",
                "run_id": m["run_id"],
                "manifest": path,
                "detail": f"{c.get('affected', 0):,} line(s) in scope, {c.get('shredded', 0):,} shredded",
            }
        )

    def add_audits(self, audit_paths: dict[str, list[str]], year: int) -> dict:
        """The year's reveals, key events and shreds, summed up; failed reveals are a finding."""
        reveals = _records(audit_paths["reveal.jsonl"], year)
        key_events = _records(audit_paths["keys.jsonl"], year)
        shreds = _records(audit_paths["shred.jsonl"], year)
        failed = [r for r in reveals if r.get("outcome") not in ("revealed", "no_values")]
        if failed:
            outcomes = collections.Counter(str(r.get("outcome")) for r in failed)
            self.findings.append(
                {
                    "kind": "failed_reveals",
                    "step": "reveal",
                    "run_id": None,
                    "manifest": None,
                    "detail": f"{len(failed)} reveal attempt(s) failed: "
                    + ", ".join(f"{k} {v}" for k, v in sorted(outcomes.items())),
                }
            )
        for r in key_events:
            for k, v, _ in _walk(r):
                if k in ("new_version", "new_vault_key_version", "join_key_version") and isinstance(v, str):
                    self.key_version(v)
                elif k in ("join", "vault") and isinstance(v, str):
                    self.key_version(v, k)
        count = lambda records, key: collections.Counter(str(r.get(key)) for r in records)  # noqa: E731
        return {
            "reveals": {
                "records": len(reveals),
                "by_purpose": dict(count(reveals, "purpose").most_common()),
                "by_outcome": dict(sorted(count(reveals, "outcome").items())),
                "lines": len({r.get("line_id") for r in reveals}),
                "logs": audit_paths["reveal.jsonl"],
            },
            "key_events": {
                "records": len(key_events),
                "by_event": dict(sorted(count(key_events, "event").items())),
                "logs": audit_paths["keys.jsonl"],
            },
            "shreds": {
                "lines": len(shreds),
                "by_reason": dict(count(shreds, "reason").most_common()),
                "logs": audit_paths["shred.jsonl"],
            },
        }


def _retention_row(m: dict) -> dict:
    c = m.get("counts", {})
    return {
        "run_id": m["run_id"],
        "as_of": m.get("as_of"),
        "purge_terminated_on_or_before": (m.get("retention") or {}).get("purge_terminated_on_or_before"),
        "purged": c.get("purged", 0),
        "nothing_to_purge": c.get("nothing_to_purge", 0),
        "terminated_without_date": c.get("terminated_without_date", 0),
        "keys_shredded": (c.get("vault") or {}).get("keys_shredded", 0),
    }


def gather(roots: list[str], year: int) -> dict:
    """The year's evidence, as one document (no files written)."""
    manifest_paths, audit_paths = _files(roots)
    runs, unreadable = _year_runs(manifest_paths, year, roots)
    tally = _Tally()
    for path, m in runs:
        tally.add_run(path, m)
    audits = tally.add_audits(audit_paths, year)
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
        "findings": tally.findings,
        "runs": tally.table,
    }


def _render(report: dict) -> str:
    from pipelines.render.pages import render

    return render("self_inspection.html.j2", r=report)


def self_inspection(roots: list[str], year: int, out_dir: str) -> dict:
    """Gather the year's evidence under ``roots``; write ``OUT/self_inspection_YEAR.{json,html}``; return it."""
    import datetime as dt

    report = gather(roots, year)
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
    p.add_argument("--debug", action="store_true", help="show tracebacks")
    return p


def format_summary(r: dict) -> str:
    steps = ", ".join(f"{k} {v['runs']}" for k, v in r["runs_by_step"].items())
    return (
        f"self-inspection {r['year']}: {r['manifests']['runs_in_year']} run(s) ({steps}); "
        f"{r['reveals']['records']} reveal(s); {r['retention']['lines_purged']:,} line(s) purged by retention; "
        f"{len(r['incidents'])} incident(s); {len(r['findings'])} finding(s) -> {r['outputs']['html']}"
    )


def _body(argv) -> int:
    args, _ = split_beam_flags(parser(), argv, pipeline=False)
    print(format_summary(self_inspection(args.manifests, args.year, args.out)))
    return 0


def main(argv=None) -> int:
    return run_main("backfill self-inspection", _body, argv)


if __name__ == "__main__":
    sys.exit(main())
