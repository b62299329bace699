"""The cross-record steps' fast paths against plain references: the algorithms they replaced (kept here as
oracles: sort every key row; group-by and join) and per-row Python computations, over random key tables
built to stress them (many repeated ids, equal and null timestamps, null ids, several files, ids of one
length and of many, ids that differ only in their middle, sliced and chunked columns)."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from tests.support.rows import CTX
from transforms.core.deadletter import dead_letter_table
from transforms.scan.classify import FLAG_BIT
from transforms.scan.crossrecord import (
    EXCEPTIONS_SCHEMA,
    _repeated_rows,
    apply_exceptions,
    deduplicate,
    document_flags,
    document_keys,
)

INT64_MIN = np.iinfo(np.int64).min
FILES = ["b.csv", "a.csv", "c/part-00001.parquet", "基站.csv"]
ID_KINDS = ["fixed", "mixed", "middle", "large", "int", "short"]


def _oracle_exceptions(keys: pa.Table, drop: bool, bits) -> pa.Table:
    n = keys.num_rows
    flag_bits = bits if isinstance(bits, np.ndarray) else np.full(n, bits, np.uint8)
    columns = {"_batch": keys.column("_batch"), "_index": keys.column("_index"), "_drop": pa.array(np.full(n, drop))}
    columns["_flag_bits"] = pa.array(flag_bits.astype(np.uint8), pa.uint8())
    return pa.table(columns, schema=EXCEPTIONS_SCHEMA)


def oracle_deduplicate(keys: pa.Table, ctx):
    """The de-duplication before its fast path: every key row sorted."""
    if keys.num_rows == 0:
        return keys, EXCEPTIONS_SCHEMA.empty_table(), dead_letter_table(ctx, [])
    ts = pc.fill_null(keys.column("_updated_at").cast(pa.int64()), INT64_MIN)
    table = pa.table(
        {"line_id": keys.column("line_id"), "ts": ts, "file": keys.column("_src_file"), "row": keys.column("_src_row")}
    )
    order = pc.sort_indices(table, sort_keys=[(c, "ascending") for c in ("line_id", "ts", "file", "row")])
    ids = keys.column("line_id").combine_chunks().take(order)
    loser = np.zeros(keys.num_rows, bool)
    if keys.num_rows > 1:
        loser[:-1] = pc.equal(ids.slice(0, len(ids) - 1), ids.slice(1)).to_numpy(zero_copy_only=False)
    if not loser.any():
        return keys, EXCEPTIONS_SCHEMA.empty_table(), dead_letter_table(ctx, [])
    order = order.to_numpy()
    losers = keys.take(pa.array(np.sort(order[loser])))
    kept = keys.take(pa.array(np.sort(order[~loser])))
    dead = dead_letter_table(
        ctx,
        ["DUPLICATE_LINE_ID"] * losers.num_rows,
        source_file=losers.column("_src_file"),
        source_row=losers.column("_src_row"),
        line_id=losers.column("line_id"),
        field="line_id",
        detail="a later row of the same line_id was kept (latest updated_at)",
    )
    return kept, _oracle_exceptions(losers, True, 0), dead


def oracle_document_flags(keys: pa.Table, line_limit: int) -> pa.Table:
    """The document flags before their fast path: a group-by and a join (rows in the join's order)."""
    if keys.num_rows == 0:
        return EXCEPTIONS_SCHEMA.empty_table()
    per_doc = keys.group_by("_doc_key").aggregate(
        [("_name_key", "count_distinct", pc.CountOptions(mode="only_valid")), ("_active_person", "sum")]
    )
    conflict = pc.greater(per_doc.column("_name_key_count_distinct"), 1)
    over = pc.greater(pc.fill_null(per_doc.column("_active_person_sum"), 0), line_limit)
    findings = per_doc.filter(pc.or_(conflict, over))
    if findings.num_rows == 0:
        return EXCEPTIONS_SCHEMA.empty_table()
    findings = pa.table(
        {
            "_doc_key": findings.column("_doc_key"),
            "_conflict": pc.greater(findings.column("_name_key_count_distinct"), 1),
            "_over": pc.greater(pc.fill_null(findings.column("_active_person_sum"), 0), line_limit),
        }
    )
    joined = keys.join(findings, "_doc_key", join_type="inner")
    conflict_bit = np.where(joined.column("_conflict").to_numpy(), FLAG_BIT["DOC_NAME_CONFLICT"], 0)
    active = joined.column("_active_person").to_numpy(zero_copy_only=False)
    over_bit = np.where(joined.column("_over").to_numpy() & active, FLAG_BIT["DOC_LINE_LIMIT"], 0)
    bits = (conflict_bit | over_bit).astype(np.uint8)
    keep = bits != 0
    return _oracle_exceptions(joined.filter(pa.array(keep)), False, bits[keep])


def _ids(rng, n: int, kind: str) -> pa.Array:
    """Line ids drawn from a pool a third the size of the table (many repeats), about 5 % null."""
    picks = rng.integers(0, max(1, n // 3), n)
    null = rng.random(n) < 0.05
    if kind == "int":
        return pa.array(picks, pa.int64(), mask=null)
    makers = {
        "fixed": lambda k: f"L{k:010d}",
        "mixed": lambda k: f"L{k}" if k % 3 else f"线路-{k}",
        "middle": lambda k: "P" * 40 + f"{k:06d}" + "S" * 40,  # over 64 bytes, the same first and last 32
        "large": lambda k: f"L{k}",
        "short": lambda k: f"{k % 50}",  # under 8 bytes, few distinct
    }
    values = [None if null[i] else makers[kind](int(k)) for i, k in enumerate(picks)]
    return pa.array(values, pa.large_string() if kind == "large" else pa.string())


def _tags(rng, n: int, pool: int, null_share: float) -> pa.Array:
    tags = rng.integers(0, 256, (pool, 16), dtype=np.uint8)
    picks = rng.integers(0, pool, n)
    return pa.array([None if rng.random() < null_share else tags[k].tobytes() for k in picks], pa.binary(16))


def key_rows(rng, n: int, kind: str = "fixed", doc_pool: int | None = None) -> pa.Table:
    """A random key table as key_table makes them (batches of up to 97 rows, each in _index order)."""
    stamps = rng.integers(1_700_000_000, 1_700_000_005, n) * 1_000_000  # five instants: many equal
    position = np.arange(n)
    return pa.table(
        {
            "line_id": _ids(rng, n, kind),
            "_updated_at": pa.array(stamps, pa.timestamp("us", tz="UTC"), mask=rng.random(n) < 0.1),
            "_src_file": pa.array([None if rng.random() < 0.02 else FILES[k] for k in rng.integers(0, 4, n)]),
            "_src_row": pa.array(rng.integers(1, 6, n), pa.int64(), mask=rng.random(n) < 0.02),
            "_doc_key": _tags(rng, n, doc_pool or max(1, n // 4), 0.2),
            "_name_key": _tags(rng, n, 3, 0.2),
            "_active_person": pa.array(rng.random(n) < 0.7),
            "_batch": pa.array(position // 97 * 7919 + 11, pa.int64()),
            "_index": pa.array(position % 97, pa.int32()),
        }
    )


def shapes(table: pa.Table) -> list[pa.Table]:
    """The table as it is, cut from a larger one (arrays with an offset), and in several chunks."""
    n = table.num_rows
    padded = pa.concat_tables([table.slice(0, min(n, 5)), table]).combine_chunks().slice(min(n, 5))
    cuts = sorted({0, n // 3, n // 2, n})
    chunked = pa.concat_tables([table.slice(a, b - a) for a, b in zip(cuts[:-1], cuts[1:])] or [table])
    return [table, padded, chunked]


def reference_losers(keys: pa.Table) -> list[int]:
    """Per row, in Python: of each non-null line_id, every row but the greatest by (updated_at with nulls
    first, file, row, with nulls last, then position) loses."""
    ts = keys.column("_updated_at").cast(pa.int64()).to_pylist()
    files, rows = keys.column("_src_file").to_pylist(), keys.column("_src_row").to_pylist()
    best: dict = {}
    for i, line_id in enumerate(keys.column("line_id").to_pylist()):
        if line_id is None:
            continue
        rank = (
            INT64_MIN if ts[i] is None else ts[i],
            (files[i] is None, files[i] or ""),
            (rows[i] is None, rows[i] or 0),
            i,
        )
        best[line_id] = max(best.get(line_id, rank), rank)
    winners = {rank[-1] for rank in best.values()}
    return [
        i for i, line_id in enumerate(keys.column("line_id").to_pylist()) if line_id is not None and i not in winners
    ]


def reference_flags(keys: pa.Table, line_limit: int) -> pa.Table:
    """Per row, in Python: DOC_NAME_CONFLICT on every row of a document under two or more names,
    DOC_LINE_LIMIT on the active rows of a document with more active rows than the limit; keys' order."""
    docs, names = keys.column("_doc_key").to_pylist(), keys.column("_name_key").to_pylist()
    active = [a is True for a in keys.column("_active_person").to_pylist()]
    named: dict = {}
    count: dict = {}
    for doc, name, on in zip(docs, names, active):
        if doc is not None:
            named.setdefault(doc, set()).update([name] if name is not None else [])
            count[doc] = count.get(doc, 0) + on
    bits = np.zeros(keys.num_rows, np.uint8)
    for i, (doc, on) in enumerate(zip(docs, active)):
        if doc is not None:
            bits[i] = FLAG_BIT["DOC_NAME_CONFLICT"] * (len(named[doc]) > 1)
            bits[i] |= FLAG_BIT["DOC_LINE_LIMIT"] * (on and count[doc] > line_limit)
    return _oracle_exceptions(keys.filter(pa.array(bits != 0)), False, bits[bits != 0])


def by_row(exceptions: pa.Table) -> pa.Table:
    return exceptions.sort_by([("_batch", "ascending"), ("_index", "ascending")])


@pytest.mark.parametrize("kind", ID_KINDS)
@pytest.mark.parametrize("seed", range(4))
def test_deduplicate_equals_the_full_sort_and_the_per_row_rule(kind, seed):
    rng = np.random.default_rng(seed)
    table = key_rows(rng, int(rng.integers(300, 3000)), kind)
    losers = reference_losers(table)
    assert len(losers) > table.num_rows // 4  # the data repeats ids a lot
    for keys in shapes(table):
        kept, drops, dead = deduplicate(keys, CTX)
        want_kept, want_drops, want_dead = oracle_deduplicate(keys, CTX)
        assert kept.equals(want_kept) and drops.equals(want_drops) and dead.equals(want_dead)
        assert kept.equals(table.filter(pa.array(~np.isin(np.arange(table.num_rows), losers))))
        assert dead.column("source_row").to_pylist() == table.take(pa.array(losers)).column("_src_row").to_pylist()
        assert drops.column("_index").to_pylist() == table.take(pa.array(losers)).column("_index").to_pylist()


@pytest.mark.parametrize("kind", ["fixed", "mixed", "int"])
def test_deduplicate_without_repeats_and_tiny_tables(kind):
    rng = np.random.default_rng(9)
    table = key_rows(rng, 40, kind)
    unique = table.filter(pc.is_valid(table.column("line_id"))).group_by("line_id").aggregate([])
    cases = [table.slice(0, 0), table.slice(0, 1), table.slice(7, 2), table.take(pa.array([3, 3, 3]))]
    cases.append(table.filter(pc.is_in(table.column("line_id"), unique.column("line_id"))).slice(0, 1))
    nulls = table.filter(pc.is_null(table.column("line_id")))
    cases.append(pa.concat_tables([nulls, nulls]))  # null line_ids are never duplicates of each other
    for keys in cases:
        for got, want in zip(deduplicate(keys, CTX), oracle_deduplicate(keys, CTX)):
            assert got.equals(want)


def test_unique_ids_give_few_candidates_and_never_miss_a_repeat():
    rng = np.random.default_rng(3)
    ids = pa.array([f"L{k:010d}" for k in rng.permutation(200_000)])
    assert len(_repeated_rows(ids)) < 200  # a 32-bit fingerprint collides rarely
    repeated = pa.concat_arrays([ids.slice(0, 1000), pa.array([None, None], pa.string()), ids.slice(500, 500)])
    got = _repeated_rows(repeated)
    assert set(range(500, 1000)) | set(range(1002, 1502)) <= set(got.tolist())
    assert 1000 not in got and 1001 not in got and (np.diff(got) > 0).all()


@pytest.mark.parametrize("limit", [0, 1, 2, 3])
@pytest.mark.parametrize("seed", range(4))
def test_document_flags_equal_the_group_by_and_the_per_row_rule(limit, seed):
    rng = np.random.default_rng(100 + seed)
    n = int(rng.integers(300, 3000))
    for doc_pool in (n // 4, n * 50):  # many shared documents; nearly all documents on one row
        table = key_rows(rng, n, doc_pool=doc_pool)
        want = reference_flags(table, limit)
        assert doc_pool > n or want.num_rows > 0
        for keys in shapes(table) + shapes(document_keys(table)):
            got = document_flags(keys, limit)
            assert got.equals(reference_flags(keys, limit))  # in the keys' order
            assert by_row(got).equals(by_row(oracle_document_flags(keys, limit)))
        assert document_flags(table.slice(0, 0), limit).equals(EXCEPTIONS_SCHEMA.empty_table())
        assert document_flags(table.slice(0, 1), limit).equals(reference_flags(table.slice(0, 1), limit))


def test_document_flags_with_unknown_activity_count_only_active_rows():
    rng = np.random.default_rng(5)
    table = key_rows(rng, 2000)
    active = table.column("_active_person").to_pylist()
    unknown = pa.array([None if rng.random() < 0.2 else a for a in active])
    table = table.set_column(table.schema.get_field_index("_active_person"), "_active_person", unknown)
    for limit in (0, 1, 2):
        assert document_flags(table, limit).equals(reference_flags(table, limit))


def _batches(rng, sizes: list[int]) -> pa.Table:
    """Rows as apply_exceptions gets them: whole batches, each contiguous and in _index order."""
    parts = []
    for number, size in enumerate(sizes):
        parts.append(
            pa.table(
                {
                    "line_id": pa.array([f"L{number}-{i}" for i in range(size)]),
                    "reasons": pa.array([["A", "B"][: i % 3] for i in range(size)], pa.list_(pa.string())),
                    "_flag_bits": pa.array(rng.integers(0, 4, size), pa.uint8()),
                    "_batch": pa.array(np.full(size, 1000 - 37 * number), pa.int64()),
                    "_index": pa.array(np.arange(size), pa.int32()),
                }
            )
        )
    return pa.concat_tables(parts)


@pytest.mark.parametrize("seed", range(4))
def test_apply_exceptions_equals_the_per_row_rule(seed):
    rng = np.random.default_rng(200 + seed)
    rows = _batches(rng, [int(s) for s in rng.integers(1, 400, 5)])
    picks = rng.integers(0, rows.num_rows, int(rng.integers(1, 300)))
    exceptions = pa.table(
        {
            "_batch": rows.column("_batch").take(pa.array(picks)),
            "_index": rows.column("_index").take(pa.array(picks)),
            "_drop": pa.array(rng.random(len(picks)) < 0.4),
            "_flag_bits": pa.array(rng.integers(0, 8, len(picks)), pa.uint8()),
        },
        schema=EXCEPTIONS_SCHEMA,
    )
    position = {(b, i): p for p, (b, i) in enumerate(zip(rows["_batch"].to_pylist(), rows["_index"].to_pylist()))}
    bits, dropped = rows.column("_flag_bits").to_numpy().copy(), set()
    for exc in exceptions.to_pylist():
        p = position[(exc["_batch"], exc["_index"])]
        bits[p] |= exc["_flag_bits"]
        dropped |= {p} if exc["_drop"] else set()
    want = rows.set_column(2, "_flag_bits", pa.array(bits, pa.uint8()))
    want = want.take(pa.array([p for p in range(rows.num_rows) if p not in dropped], pa.int64()))
    for shaped in shapes(rows):
        assert apply_exceptions(shaped, exceptions).equals(want)
    assert apply_exceptions(rows, None).equals(rows) and apply_exceptions(rows, exceptions.slice(0, 0)).equals(rows)
