"""The report's new figures computed again with plain Python loops over the step outputs (tests/test_report*.py).

    oracle = Oracle(path)                   # reads the scan, merge-2, the notify folder (jobs, receipts, runs)
    oracle.funnel()                         # {(wave, channel): {...}} as the report's funnel table
    oracle.variants()                       # {(wave, variant): {...}} with the Wilson interval and the z-test
    oracle.provinces(), oracle.quality(), oracle.days()

Nothing here calls the code under test: rows are read with pyarrow and
fastavro and counted with dicts; the statistics are the textbook formulas.
"""

from __future__ import annotations

import collections
import glob
import json
import math
import os
import zoneinfo

import fastavro
import pyarrow.parquet as pq

from tests.support.report import CAMPAIGN_ID, VARIANTS

TZ = zoneinfo.ZoneInfo("Asia/Shanghai")
ANNOUNCED = ("invalid_number", "suppressed", "sms_failed", "call_failed", "not_in_wave")


def rows_of(folder: str, pattern: str = "*.parquet") -> list[dict]:
    """Every row of the Parquet files under ``folder`` (file by file: their columns may differ)."""
    return [r for f in sorted(glob.glob(os.path.join(folder, pattern))) for r in pq.read_table(f).to_pylist()]


def wilson(k: int, n: int) -> tuple[float, float]:
    z = 1.959963984540054
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return max(0.0, centre - half), min(1.0, centre + half)


def z_test(k1: int, n1: int, k2: int, n2: int) -> float:
    pooled = (k1 + k2) / (n1 + n2)
    se = math.sqrt(pooled * (1 - pooled) * (1 / n1 + 1 / n2))
    return 1.0 if se == 0 else math.erfc(abs(k1 / n1 - k2 / n2) / se / math.sqrt(2))


def latest_statuses(receipts: list[dict]) -> dict[str, str]:
    """Job -> its latest receipt's status (by time; DELIVERED wins a tie)."""
    latest = {}
    for r in receipts:
        key = (r["at"], r["status"] == "DELIVERED")
        if r["job_id"] not in latest or key >= latest[r["job_id"]][0]:
            latest[r["job_id"]] = (key, r["status"])
    return {job: status for job, (_, status) in latest.items()}


def funnel_counts(needed: set, jobs: list[dict], receipts: list[dict], credited: dict) -> dict[tuple, dict]:
    """Per (wave, channel), over one campaign's jobs and receipts: each job on a needed line once, its latest
    receipt, SMS that failed and got a call in a later wave, registrations credited to the wave; announcements."""
    status, line_jobs, calls = latest_statuses(receipts), {}, collections.defaultdict(set)
    for j in jobs:
        if j["line_id"] in needed:
            line_jobs.setdefault(j["job_id"], j)
    for j in line_jobs.values():
        if j["channel"] == "call":
            calls[j["line_id"]].add(j["wave"])
    out = collections.defaultdict(collections.Counter)
    for j in line_jobs.values():
        c, s = out[(j["wave"], j["channel"])], status.get(j["job_id"])
        c.update(sent=1, delivered=s == "DELIVERED", failed=s == "FAILED")
        c["fell_back_to_call"] += (
            j["channel"] == "sms" and s == "FAILED" and max(calls[j["line_id"]], default=0) > j["wave"]
        )
        c["registered_after"] += credited.get(j["line_id"]) == j["wave"]
    for j in jobs:
        if j["line_id"] is None:
            out[(j["wave"], j["channel"])]["sent"] += 1
    return out


def variant_counts(needed: set, jobs: list[dict], credited: dict) -> dict[tuple, dict]:
    """Per (wave, variant): needed lines sent a job carrying it, and those registered after that wave."""
    lines = collections.defaultdict(set)
    for j in jobs:
        if j["line_id"] in needed and j.get("variant"):
            lines[(j["wave"], j["variant"])].add(j["line_id"])
    return {
        (wave, name): {"sent": len(members), "registered_after": sum(credited.get(m) == wave for m in members)}
        for (wave, name), members in lines.items()
    }


class Oracle:
    def __init__(self, path, merge: str = "merge-2"):
        self.path = path
        self.scan = rows_of(path("scan", "classified"))
        self.needed = {r["line_id"]: r for r in self.scan if r["needs_registration"]}
        self.base = {r["line_id"]: r for r in rows_of(path(merge, "base"))}
        jobs = rows_of(path("notify", "history", "jobs"))
        self.jobs = [j for j in jobs if j["campaign_id"] == CAMPAIGN_ID]
        self.receipts = [r for r in rows_of(path("notify", "history", "receipts")) if r["campaign_id"] == CAMPAIGN_ID]
        self.runs = [json.load(open(f, encoding="utf-8")) for f in sorted(glob.glob(path("notify", "runs", "*.json")))]

    def _first_notices(self) -> dict:
        first = collections.defaultdict(dict)
        for j in self.jobs:
            if j["line_id"] in self.needed:
                waves = first[j["line_id"]]
                waves[j["wave"]] = min(waves.get(j["wave"], j["sent_at"]), j["sent_at"])
        return first

    def credited(self) -> dict[str, int]:
        """Registered needed line -> the wave its registration is credited to (0: before any notice)."""
        notices, out = self._first_notices(), {}
        for line_id in self.needed:
            m = self.base.get(line_id)
            if m and m["identity_status"] == "COMPLETE" and m["registration_event_id"] is not None:
                before = [w for w, sent in notices.get(line_id, {}).items() if sent <= m["registered_at"]]
                out[line_id] = max(before) if before else 0
        return out

    def sends(self) -> dict[int, dict]:
        out = collections.defaultdict(lambda: {"targeted": collections.Counter()})
        for run in self.runs:
            block = run.get("campaign") or {}
            handed = sum((run.get("counts") or {}).get("handed_over", {}).values())
            if block.get("campaign_id") == CAMPAIGN_ID and run.get("mode") in ("files", "pubsub") and handed:
                outcomes = run["counts"]["outcomes"]
                t = out[block["wave"]]["targeted"]
                t.update(sms=outcomes["sms"], call=outcomes["call"], announcement=sum(outcomes[o] for o in ANNOUNCED))
        return out

    def sms_spend(self) -> dict[int, tuple[int, float]]:
        """Per wave: SMS segments and cost, from the SMS job files themselves."""
        spend = collections.defaultdict(lambda: [0, 0.0])
        for f in glob.glob(self.path("notify", "jobs", "sms", "*.avro")):
            with open(f, "rb") as handle:
                for job in fastavro.reader(handle):
                    spend[job["wave"]][0] += job["segments"]
                    spend[job["wave"]][1] += job["cost"]
        return {w: (s, c) for w, (s, c) in spend.items()}

    def funnel(self) -> dict[tuple, dict]:
        return funnel_counts(set(self.needed), self.jobs, self.receipts, self.credited())

    def variants(self) -> dict[tuple, dict]:
        out = variant_counts(set(self.needed), self.jobs, self.credited())
        control = out[(1, VARIANTS[0][0])]
        for (wave, name), v in out.items():
            v["ci"] = wilson(v["registered_after"], v["sent"])
            if name != VARIANTS[0][0]:
                v["p"] = z_test(v["registered_after"], v["sent"], control["registered_after"], control["sent"])
                v["significant"] = v["p"] < 0.05 / (len(VARIANTS) - 1)
        return out

    def regions(self) -> dict[str | None, collections.Counter]:
        out = collections.defaultdict(collections.Counter)
        for line_id, r in self.needed.items():
            m = self.base.get(line_id)
            complete = m is not None and m["identity_status"] == "COMPLETE"
            out[r["region"]].update(needed=1, complete=complete, remaining=not complete)
        return out

    def provinces(self) -> dict[str | None, collections.Counter]:
        out = collections.defaultdict(collections.Counter)
        for region, c in self.regions().items():
            digits = region is not None and len(region) == 6 and region.isdigit()
            out[region[:2] + "0000" if digits else None].update(c + collections.Counter(regions=1))
        return out

    def days(self) -> dict:
        per_day = collections.Counter()
        for line_id in self.credited():
            per_day[self.base[line_id]["registered_at"].astimezone(TZ).date()] += 1
        return per_day

    def quality(self) -> dict[tuple[str, str], int]:
        out = collections.Counter()
        for r in self.scan:
            out[("identity_status", r["identity_status"])] += 1
            out[("needs", "needs_registration")] += bool(r["needs_registration"])
            out[("needs", "needs_review")] += bool(r["needs_review"])
            for reason in r["reasons"] or []:
                out[("reason", reason)] += 1
            for flag in r["flags"] or []:
                out[("flag", flag)] += 1
        for f in glob.glob(self.path("scan", "dead_letter", "*")):
            with open(f, encoding="utf-8") as handle:
                for line in handle:
                    if line.strip():
                        out[("dead_letter_reason", json.loads(line)["reason"])] += 1
        return out
