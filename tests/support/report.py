"""A small campaign made by the real steps, for the report's tests (tests/test_report*.py).

    paths = build_campaign(root)      # scan, keys, notify waves 1-2 with receipts, two merges, variants
    report_args(paths, out, as_of)    # the report's arguments over it

The campaign is the example's (ROOT/campaign.yaml, without its A/B variants).
generate -> scan -> keys init -> notify wave 1 -> receipts of wave 1 (a receipts
run) -> registrations r1 (+ a canary event) -> merge-1 -> notify wave 2 (its
failed SMS fall back to calls) -> receipts of wave 2 (the latest notify run is
a receipts run) -> registrations r2 -> merge-2. Canary identity values are
planted in the base and in an event.

Wave 1 is then given A/B template variants the way notify records them (a
``variant`` column in its history files, a ``variants`` list in its run's
manifest), by a stable hash of the campaign and line id: the report's variant
figures are tested without depending on notify's own variant code. Wave 2's
history files have no ``variant`` column (a wave without variants).
"""

from __future__ import annotations

import datetime as dt
import glob
import hashlib
import json
import os

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from tests.support.rows import CANARY_ADDRESS, CANARY_NAME, CANARY_NUMBER

EXAMPLE = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(__file__))), "examples", "campaign.yaml")
CAMPAIGN_ID = "rn-2026-q4"
SCAN_DAY, WAVE1, REG1, WAVE2, REG2, MERGE2 = (
    "2026-11-30",
    "2026-12-01",
    "2026-12-03",
    "2026-12-15",
    "2026-12-16",
    "2026-12-22",
)
AFTER_DEADLINE = "2027-02-02"
VARIANTS = [("A", 40.0), ("B", 40.0), ("C", 20.0)]  # wave 1's
RECEIPT_DAYS = {1: "2026-12-02", 2: "2026-12-16"}
CANARIES = (CANARY_NAME, CANARY_NUMBER, CANARY_ADDRESS)


def _plant_canaries(path: str) -> None:
    table = pq.read_table(path)
    for column, value in (("name", CANARY_NAME), ("doc_number", CANARY_NUMBER), ("address", CANARY_ADDRESS)):
        values = table[column].to_pylist()
        for i in range(0, table.num_rows, 97):
            values[i] = value
        index = table.schema.get_field_index(column)
        table = table.set_column(index, column, pa.array(values, table.schema.field(column).type))
    pq.write_table(table, path)


def _canary_event(events_path: str, line_id: str) -> None:
    event = {
        "event_id": "E-CANARY-1",
        "line_id": line_id,
        "doc_type": "RESIDENT_ID",
        "doc_number": CANARY_NUMBER,
        "name": CANARY_NAME,
        "address": CANARY_ADDRESS,
        "channel": "STORE",
        "agent_id": None,
        "verified_by": "ID_CARD_READER",
        "registered_at": "2026-12-03T09:00:00",
    }
    with open(events_path, "a", encoding="utf-8") as handle:
        handle.write(json.dumps(event, ensure_ascii=False) + "\n")


def stable_share(*parts: str) -> int:
    """0-99 from a hash of the parts (the fixture's own stable choice of receipts and variants)."""
    return int.from_bytes(hashlib.sha256("|".join(parts).encode()).digest()[:4], "big") % 100


def variant_of(line_id: str) -> str:
    share, edge = stable_share(CAMPAIGN_ID, line_id), 0.0
    for name, weight in VARIANTS:
        edge += weight
        if share < edge:
            return name
    return VARIANTS[-1][0]


def _receipts(notify_dir: str, wave: int, path: str) -> None:
    """Receipts for the wave's line jobs: most delivered, some failed, some changing status, some none."""
    jobs = pq.read_table(os.path.join(notify_dir, "history", "jobs")).to_pylist()
    rows = []
    for job in (j for j in jobs if j["wave"] == wave and j["line_id"]):
        k = stable_share("receipt", job["job_id"])
        day = RECEIPT_DAYS[wave]
        first, later = f"{day}T10:00:00", f"{day}T12:30:00"
        if k < 12:
            rows.append((job["job_id"], "FAILED", first))
        elif k < 16:  # failed, then delivered on a retry: delivered
            rows += [(job["job_id"], "FAILED", first), (job["job_id"], "DELIVERED", later)]
        elif k < 19:  # delivered, then a late failure report: failed
            rows += [(job["job_id"], "DELIVERED", first), (job["job_id"], "FAILED", later)]
        elif k < 21:  # both at once: DELIVERED wins a tie
            rows += [(job["job_id"], "FAILED", first), (job["job_id"], "DELIVERED", first)]
        elif k < 85:
            rows.append((job["job_id"], "DELIVERED", first))
    with open(path, "w", encoding="utf-8") as handle:
        handle.write("job_id,status,at\n" + "".join(f"{j},{s},{a}\n" for j, s, a in rows))


def write_campaign(root: str) -> str:
    """The example campaign without A/B variants (the fixture adds its own to wave 1), as ROOT/campaign.yaml."""
    import yaml

    with open(EXAMPLE, encoding="utf-8") as handle:
        raw = yaml.safe_load(handle)
    raw.pop("variants", None)
    for wave in raw["waves"]:
        wave.pop("variants", None)
    path = os.path.join(root, "campaign.yaml")
    with open(path, "w", encoding="utf-8") as handle:
        yaml.safe_dump(raw, handle, allow_unicode=True, sort_keys=False)
    return path


def add_variants(notify_dir: str, wave: int = 1) -> None:
    """Give the wave A/B variants as notify records them: history column ``variant``, manifest ``variants``."""
    for path in glob.glob(os.path.join(notify_dir, "history", "jobs", "*.parquet")):
        table = pq.read_table(path)
        if wave not in table["wave"].to_pylist():
            continue
        names = [variant_of(r["line_id"]) if r["line_id"] and r["wave"] == wave else None for r in table.to_pylist()]
        if "variant" in table.column_names:  # notify's own column (null: no variants in the fixture's campaign)
            table = table.drop_columns(["variant"])
        pq.write_table(table.append_column("variant", pa.array(names, pa.string())), path)
    for path in glob.glob(os.path.join(notify_dir, "runs", "*.json")) + [os.path.join(notify_dir, "manifest.json")]:
        with open(path, encoding="utf-8") as handle:
            run = json.load(handle)
        if (run.get("campaign") or {}).get("wave") == wave:
            run["campaign"]["variants"] = [{"name": n, "weight": w} for n, w in VARIANTS]
            with open(path, "w", encoding="utf-8") as handle:
                json.dump(run, handle)


def _notify(*args) -> None:
    from pipelines import notify

    assert notify.main(list(args)) == 0


def _merge(*args) -> None:
    from pipelines import merge

    assert merge.main(list(args)) == 0


def build_campaign(root: str) -> dict:
    """Every step output of the campaign under ``root``; returns {name: path}."""
    from dev import generate
    from dev.simulate import simulate_registrations
    from pipelines import keys, scan

    def path(*parts):
        return os.path.join(root, *parts)

    keyset, campaign = path("keys", "keyset.json"), write_campaign(root)
    generate.write_base(path("base.parquet"), 4_000, 77)
    _plant_canaries(path("base.parquet"))
    scan.run(["--base", path("base.parquet"), "--out", path("scan"), "--as-of", SCAN_DAY])
    keys.main(["init", "--keys", keyset])
    wave = ["--classified", path("scan"), "--campaign", campaign, "--out", path("notify")]
    _notify(*wave, "--wave", "1", "--as-of", WAVE1)
    _receipts(path("notify"), 1, path("receipts-1.csv"))
    _notify("--receipts", path("receipts-1.csv"), "--out", path("notify"))
    events = path("events", "r1.jsonl")
    simulate_registrations(path("scan"), events, share=0.4, seed=5, as_of=dt.date.fromisoformat(REG1), days=3)
    needed = pq.read_table(path("scan", "classified"), filters=pc.field("needs_registration"))
    _canary_event(events, needed["line_id"][-1].as_py())
    _merge(
        *["--base", path("base.parquet"), "--registrations", events, "--keys", keyset],
        "--out",
        path("merge-1"),
        "--as-of",
        REG1,
    )
    _notify(*wave, "--wave", "2", "--as-of", WAVE2, "--registered", path("merge-1"))
    _receipts(path("notify"), 2, path("receipts-2.csv"))
    _notify("--receipts", path("receipts-2.csv"), "--out", path("notify"))
    first = pq.read_table(path("merge-1", "base"), columns=["line_id", "registration_event_id"])
    registered = first.filter(pc.is_valid(first["registration_event_id"]))["line_id"]
    r2 = path("events", "r2.jsonl")
    simulate_registrations(
        path("scan"), r2, share=0.3, seed=6, as_of=dt.date.fromisoformat(REG2), days=5, exclude=registered
    )
    base = ["--base", path("merge-1", "base"), "--vault", path("merge-1", "vault")]
    _merge(*base, "--registrations", r2, "--keys", keyset, "--out", path("merge-2"), "--as-of", MERGE2)
    add_variants(path("notify"))
    return {"root": root, "path": path, "keys": keyset, "campaign": campaign}


def report_args(path, out: str, as_of: str, *extra: str, merge: str = "merge-2") -> list[str]:
    """The report's arguments over the campaign (both merges, notify, the campaign file)."""
    earlier = ["--earlier-merges", path("merge-1")] if merge == "merge-2" else []
    return [
        "--scan",
        path("scan"),
        "--merge",
        path(merge),
        *earlier,
        "--notify",
        path("notify"),
        "--campaign",
        path("campaign.yaml"),
        "--out",
        out,
        "--as-of",
        as_of,
        *extra,
    ]
