"""Ledger rows as Arrow tables: the schema of a row type, rows <-> columns (type-checked),
and the deduplication every read and fold uses (one row per key, the latest attempt wins).
Pure functions of tables and rows; :mod:`brainomni.pipeline.ledger` stores them."""

from __future__ import annotations

import dataclasses
import functools
import operator
from collections.abc import Iterable
from typing import Any


@functools.cache
def schema(row_type: type) -> Any:
    """The Arrow schema of ``row_type``'s parts and compacted ledger (from its fields)."""
    import pyarrow as pa

    kinds = {int: pa.int64(), float: pa.float64(), str: pa.string()}
    cols = []
    fields = dataclasses.fields(row_type)
    for f in fields:
        text = str(f.type)
        base = int if text.startswith("int") else float if text.startswith("float") else str
        cols.append(pa.field(f.name, kinds[base], nullable=f is not fields[0]))
    tag, version = row_type.LEDGER_TAG
    return pa.schema(cols, metadata={tag: version})


def rows_table(rows: Iterable[Any], row_type: type) -> Any:
    import pyarrow as pa

    # columns straight from the slots: dataclasses.asdict deep-copies every field (~1 ms a
    # row; 200,000 rows took minutes)
    names = [f.name for f in dataclasses.fields(row_type)]
    get = operator.attrgetter(*names)  # one C call per row for all its fields
    if len(names) == 1:
        get = lambda r, g=get: (g(r),)  # noqa: E731 - attrgetter of one name is no tuple
    values = [get(r) for r in rows]
    cols = zip(*values, strict=True) if values else ([] for _ in names)
    return pa.Table.from_pydict(dict(zip(names, cols, strict=True)), schema=schema(row_type))


def conform(table: Any, row_type: type, what: str = "ledger") -> Any:
    """``table`` with exactly ``row_type``'s columns, types and tag (a missing column is
    nulls: the field's default when turned into rows). A ledger is a file: a column of
    another type raises ``ValueError`` naming it and ``what``."""
    import pyarrow as pa

    sch = schema(row_type)
    have = set(table.column_names)
    cols = []
    for f in sch:
        if f.name not in have:
            cols.append(pa.nulls(table.num_rows, f.type))
            continue
        col = table.column(f.name)
        if col.type != f.type:
            raise ValueError(f"{what}: ledger column {f.name!r} has type {col.type}")
        cols.append(col)
    # nullability is the writer's promise, not checked here: table_rows checks the values
    return pa.Table.from_arrays(cols, schema=sch)


def table_rows(table: Any, row_type: type) -> list[Any]:
    """Rows of a ledger table, a column at a time (no dict per row). Values are checked
    against the field types (a ledger is a file: not trusted); a column of another type,
    or a null where the field has no default, raises ``ValueError`` naming the column."""
    import pyarrow.compute as pc

    table = conform(table, row_type)
    cols = []
    for f in dataclasses.fields(row_type):
        col = table.column(f.name)
        if col.null_count:
            if f.default is dataclasses.MISSING:
                raise ValueError(f"ledger column {f.name!r} has a null row; it needs a value")
            if f.default is not None:
                col = pc.fill_null(col, f.default)
        cols.append(col.to_pylist())
    return [row_type(*vals) for vals in zip(*cols, strict=True)]


def dedupe(rows: Iterable[Any]) -> list[Any]:
    """One row per key: the highest attempt wins (then the latest ``finished_at``, then the
    later row); sorted by the row type's ``sort_key`` (its key by default)."""
    best: dict[str, Any] = {}
    for row in rows:
        cur = best.get(row.key)
        if cur is None or (row.attempt, row.finished_at) >= (cur.attempt, cur.finished_at):
            best[row.key] = row
    return sorted(best.values(), key=lambda r: r.sort_key)


def key_column(row_type: type) -> str:
    """The column holding a row's key: ``KEY_COLUMN``, else the first field."""
    return getattr(row_type, "KEY_COLUMN", None) or dataclasses.fields(row_type)[0].name


def dedupe_table(table: Any, row_type: type) -> Any:
    """:func:`dedupe` in Arrow on a conformed table (rows in input order): one row per key,
    the same winner (highest attempt, then latest ``finished_at``, then the later row),
    sorted by ``row_type.SORT_COLUMNS`` (default the key column). Vectorised: at 200,000
    rows a sort and a filter instead of a Python object per row."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc

    if table.num_rows == 0:
        return table
    key = key_column(row_type)
    order = pa.table(
        {
            "k": table.column(key),
            "a": pc.fill_null(table.column("attempt"), 0),
            "f": pc.fill_null(table.column("finished_at"), ""),
            "i": pa.array(np.arange(table.num_rows, dtype=np.int64)),
        }
    )
    idx = pc.sort_indices(
        order, [("k", "ascending"), ("a", "descending"), ("f", "descending"), ("i", "descending")]
    )
    keys = order.column("k").take(idx)
    first = pa.chunked_array(
        [pa.array([True]), pc.not_equal(keys.slice(1), keys.slice(0, len(keys) - 1))]
    )
    best = table.take(idx.filter(first))
    sort_cols = getattr(row_type, "SORT_COLUMNS", None) or (key,)
    by = pa.table(
        {
            c: pc.fill_null(best.column(c), "")
            if pa.types.is_string(best.column(c).type)
            else best.column(c)
            for c in sort_cols
        }
    )
    return best.take(pc.sort_indices(by, [(c, "ascending") for c in sort_cols]))
