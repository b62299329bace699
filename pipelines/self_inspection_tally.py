"""What a year's runs and audit logs add up to, for the self-inspection (``pipelines/self_inspection.py``):
runs per step, rows in and out, dead letters, policy and key versions, retention purges, incidents,
reveals, key events and shreds, and the findings among them."""

from __future__ import annotations

import collections
import dataclasses
import json

_IN, _OUT = ("rows_in", "lines_in"), ("rows_out", "lines_out", "classified")


def _walk(value, key: str | None = None, path: str = ""):
    """Every (key, value, path) inside nested dicts."""
    if key is not None:
        yield key, value, path
    if isinstance(value, dict):
        for k, v in value.items():
            yield from _walk(v, k, f"{path}.{k}" if path else k)


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

    def add_chains(self, chains: list[dict]) -> list[dict]:
        """Each chain's findings become the inspection's; returns the chains' summary rows."""
        rows, unverified = [], []
        for chain in chains:
            for f in chain["findings"]:
                if f["kind"] == "audit_chain_unverified":
                    unverified.append(chain)
                    continue
                self.findings.append(
                    {"kind": f["kind"], "step": "audit", "run_id": None, "manifest": None, "detail": f["detail"]}
                )
            rows.append({k: v for k, v in chain.items() if k != "findings"} | {"findings": len(chain["findings"])})
        if unverified:  # one finding for all: the keyset was not given
            n = sum(c["unverified"] for c in unverified)
            self.findings.append(
                {
                    "kind": "audit_chain_unverified",
                    "step": "audit",
                    "run_id": None,
                    "manifest": None,
                    "detail": f"{n} audit record(s) in {len(unverified)} log folder(s) not verified: "
                    "give the keyset that wrote them (--keys)",
                }
            )
        return rows

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
