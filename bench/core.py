"""The frame of the benchmarks: sections, rows, targets, the registry, the inputs.

A benchmark is a function ``fn(ctx: Context) -> Section`` registered with
``@register("name")``; :mod:`bench.run` runs them and writes the reports.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
from typing import Callable

from bench.measure import Measurement, measure, python_env

__all__ = [
    "Context",
    "Row",
    "Check",
    "Section",
    "register",
    "REGISTRY",
    "BenchError",
    "ensure_base",
    "label",
    "checked",
    "say",
    "AS_OF",
    "SEED",
    "ROOT",
]

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
AS_OF = "2026-11-30"
SEED = 7


@dataclasses.dataclass
class Context:
    data_dir: str
    out_dir: str
    python: str
    backfill: str
    ten_million: bool
    quick: bool = False  # small inputs (200k lines), one run per side, no warm-up: checks the harness itself
    load_before: tuple[float, float, float] | None = None  # load average when the run started

    @property
    def runs(self) -> int:
        """Counted runs per side of a comparison."""
        return 1 if self.quick else 3

    @property
    def warmup(self) -> bool:
        return not self.quick

    def lines(self, full: int, quick: int = 200_000) -> int:
        """The size of an input: ``full`` lines, or ``quick`` in quick mode."""
        return quick if self.quick else full

    def work(self, name: str) -> str:
        """A scratch output folder, emptied first."""
        path = os.path.join(self.out_dir, "work", name)
        shutil.rmtree(path, ignore_errors=True)
        return path


@dataclasses.dataclass
class Row:
    what: str
    rows: int
    seconds: float
    peak_mb: float | None
    note: str = ""
    cpu_seconds: float | None = None  # the command's process tree
    others_cpu_seconds: float | None = None  # the rest of the machine, meanwhile

    @property
    def rate(self) -> float:
        return self.rows / self.seconds if self.seconds else 0.0


@dataclasses.dataclass
class Check:
    name: str
    measured: str
    target: str
    ok: bool | None  # None: not measured this time
    step: str = ""  # the row of the summary table (issue 14) this check fills, if any


@dataclasses.dataclass
class Section:
    name: str
    title: str
    rows: list[Row]
    checks: list[Check]
    notes: list[str] = dataclasses.field(default_factory=list)
    details: dict = dataclasses.field(default_factory=dict)

    def markdown(self) -> str:
        lines = [
            f"## {self.title}",
            "",
            "| what | rows | seconds | rows/s | peak MB | CPU s | others' CPU s |",
            "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
        ]
        num = lambda v, fmt: format(v, fmt) if v is not None else "-"  # noqa: E731
        for r in self.rows:
            what = f"{r.what} ({r.note})" if r.note else r.what
            lines.append(
                f"| {what} | {r.rows:,} | {r.seconds:,.1f} | {r.rate:,.0f} | {num(r.peak_mb, ',.0f')} "
                f"| {num(r.cpu_seconds, ',.1f')} | {num(r.others_cpu_seconds, ',.1f')} |"
            )
        lines += [
            "",
            "seconds: wall clock, start to exit. CPU s: user + system of the command's process tree. "
            "others' CPU s: what the rest of the machine used meanwhile (a crowded machine slows the wall clock).",
            "",
            "| target | measured | wanted | verdict |",
            "| --- | --- | --- | --- |",
        ]
        for c in self.checks:
            verdict = {True: "PASS", False: "MISS", None: "not measured"}[c.ok]
            lines.append(f"| {c.name} | {c.measured} | {c.target} | {verdict} |")
        if self.notes:
            lines += [""] + [f"- {n}" for n in self.notes]
        return "\n".join(lines) + "\n"

    def as_json(self) -> dict:
        return {
            "name": self.name,
            "title": self.title,
            "rows": [{**dataclasses.asdict(r), "rows_per_second": r.rate} for r in self.rows],
            "checks": [dataclasses.asdict(c) for c in self.checks],
            "notes": self.notes,
            "details": self.details,
        }


REGISTRY: dict[str, Callable[[Context], Section]] = {}


def register(name: str):
    def add(fn: Callable[[Context], Section]):
        REGISTRY[name] = fn
        return fn

    return add


class BenchError(Exception):
    """A command of a benchmark failed; str() is one line."""


def say(text: str) -> None:
    print(text, flush=True)


def ensure_base(ctx: Context, name: str, lines: int, seed: int = SEED) -> str:
    """bench-data/NAME.parquet with ``lines`` rows, generated once (kept if its row count is right)."""
    import pyarrow.parquet as pq

    path = os.path.join(ctx.data_dir, f"{name}.parquet")
    if os.path.exists(path):
        try:
            if pq.read_metadata(path).num_rows == lines:
                return path
        except Exception:  # a broken file from an interrupted run: make it again
            pass
    os.makedirs(ctx.data_dir, exist_ok=True)
    partial = os.path.join(ctx.data_dir, f".partial-{name}.parquet")
    say(f"generating {lines:,} lines into {path} (once; kept for re-runs) ...")
    m = checked(
        measure(
            [ctx.backfill, "generate", "--lines", str(lines), "--seed", str(seed), "--out", partial, "--overwrite"],
            env=python_env(),
            cwd=ROOT,
        ),
        f"generate {name}",
    )
    os.replace(partial, path)
    say(f"  {m.seconds:.1f} s")
    return path


def label(lines: int) -> str:
    """200k, 2m, 10m: the size part of the names under bench-data/."""
    return f"{lines // 1_000_000}m" if lines % 1_000_000 == 0 else f"{lines // 1000}k"


def checked(m: Measurement, what: str) -> Measurement:
    if not m.ok:
        last = (m.output.strip().splitlines() or ["no output"])[-1]
        raise BenchError(f"{what} failed with exit code {m.returncode}: {last}")
    return m
