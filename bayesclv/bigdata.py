"""Per-customer summaries of transaction logs larger than memory, through DuckDB.

:func:`rfm_summary_parquet` is :func:`bayesclv.data.rfm_summary` for one or many Parquet
files that need not fit in memory. DuckDB (embedded: a library, nothing to start) does
the grouping - validation counts, duplicates, first purchase days, purchase occasions
per calendar period - inside a memory limit, spilling to ``temp_directory`` when it must.
Memory then grows with the number of *customers* (a few arrays of one value each), not
with the number of transactions.

The result is identical to the pandas path, bit for bit: ids, segments, frequency,
recency, T, monetary_value, first purchase value, holdout columns, ``litt``, and the cleaning
report (rows and customers removed, and why). One detail makes that work: a sum of
floating-point amounts depends on the order of the additions, and the pandas path adds
each customer's amounts in row order (``numpy.bincount``). A parallel SQL ``SUM`` adds in
whatever order its threads meet the rows, and an ordered aggregate
(``sum(x ORDER BY row)``) is exact but costs a sort of every row. So the three sums
(first-occasion, repeat and holdout spend) are taken in one streamed pass over the rows
in file order, adding each amount into per-customer arrays (``numpy.add.at``, sequential
like ``bincount``). Row order is checked as the batches arrive.

Install with ``pip install "bayesclv[duckdb]"``.
"""

from __future__ import annotations

import glob as _glob
import logging
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from bayesclv.errors import DataValidationError, describe_rows
from bayesclv.log_summary import period_of_day
from bayesclv.rfm import DAYS_PER_UNIT, RFMData
from bayesclv.transactions import (
    AFTER_END_OPTIONS,
    CLEANING_REASONS,
    DUPLICATE_OPTIONS,
    NEGATIVE_OPTIONS,
    ZERO_OPTIONS,
    CleaningReport,
    as_day,
    check_option,
    raise_missing_columns,
)

__all__ = ["rfm_summary_parquet", "parquet_files"]

#: Each step's wall time is logged here at INFO level (``logging.basicConfig(level=20)``).
_log = logging.getLogger("bayesclv.bigdata")

#: Row key: file index in the high bits, row number inside the file in the low 40 bits
#: (files of up to ~10^12 rows).
_ROW_BITS = 40


def parquet_files(paths: str | os.PathLike | Sequence[str | os.PathLike]) -> list[str]:
    """The Parquet files named by ``paths``, in the order they are read.

    ``paths`` is a file, a directory (every ``*.parquet`` below it, sorted by path), a
    glob pattern (matches sorted) or a list of any of these (kept in the order given).
    The pandas equivalent of reading them is
    ``pd.concat([pd.read_parquet(f) for f in parquet_files(paths)], ignore_index=True)``.
    """
    items = [paths] if isinstance(paths, str | os.PathLike) else list(paths)
    out: list[str] = []
    for item in items:
        p = os.fspath(item)
        if os.path.isdir(p):
            found = sorted(str(f) for f in Path(p).rglob("*") if f.suffix in (".parquet", ".pq"))
        elif any(ch in p for ch in "*?["):
            found = sorted(_glob.glob(p, recursive=True))
        elif os.path.isfile(p):
            found = [p]
        else:
            found = []
        if not found:
            raise DataValidationError(
                f"no Parquet file found at '{p}'. Pass a file, a directory holding .parquet "
                f"files, or a glob pattern such as 'transactions/*.parquet'."
            )
        out.extend(found)
    return out


def _connect(memory_limit: str | None, temp_directory: str | None, threads: int | None):
    try:
        import duckdb
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError(
            "rfm_summary_parquet needs DuckDB: pip install 'bayesclv[duckdb]'."
        ) from exc
    config: dict[str, Any] = {"preserve_insertion_order": True}
    if memory_limit is not None:
        config["memory_limit"] = str(memory_limit)
    if temp_directory is not None:
        Path(temp_directory).mkdir(parents=True, exist_ok=True)
        config["temp_directory"] = str(temp_directory)
    if threads is not None:
        config["threads"] = int(threads)
    return duckdb.connect(config=config)


def _q(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _period_sql(day: str, merge_period: str) -> str:
    """SQL twin of :func:`bayesclv.log_summary.period_of_day` (days since 1970-01-01)."""
    if merge_period == "day":
        return day
    if merge_period == "week":
        return f"floor(({day} + 3) / 7)::BIGINT"
    d = f"(DATE '1970-01-01' + {day}::INTEGER)"
    return f"((year({d}) - 1970) * 12 + month({d}) - 1)"


def rfm_summary_parquet(
    paths: str | os.PathLike | Sequence[str | os.PathLike],
    *,
    customer_col: str = "customer_id",
    date_col: str = "date",
    amount_col: str = "amount",
    segment_col: str | None = None,
    time_unit: str = "week",
    merge_period: str = "day",
    calibration_end: Any = None,
    observation_end: Any = None,
    first_purchase_value: bool = False,
    negative_amounts: str = "error",
    zero_amounts: str = "keep",
    duplicates: str = "keep",
    after_end: str = "error",
    memory_limit: str | None = "2GB",
    temp_directory: str | os.PathLike | None = None,
    threads: int | None = None,
    batch_rows: int = 1_000_000,
) -> RFMData:
    """:func:`bayesclv.data.rfm_summary` for Parquet files larger than memory (DuckDB).

    Parameters
    ----------
    paths : path, glob pattern, directory or list of them
        The transaction files, read in the order of :func:`parquet_files`.
    customer_col, date_col, amount_col, segment_col, time_unit, merge_period, \
calibration_end, observation_end, first_purchase_value, negative_amounts, zero_amounts, \
duplicates, after_end
        As :func:`bayesclv.data.rfm_summary` and
        :func:`bayesclv.data.validate_transactions`. Dates must be stored as Parquet
        timestamps (naive, or with a time zone: converted to UTC, noted in the report)
        or dates; amounts as numbers. Text dates are refused: convert them once, e.g.
        ``duckdb.sql("COPY (SELECT * REPLACE (strptime(d, '%Y%m%d') AS d) FROM 'in.parquet')
        TO 'out.parquet'")``.
    memory_limit : str, optional
        DuckDB's memory limit, e.g. ``"2GB"``; beyond it DuckDB spills to
        ``temp_directory``. ``None`` leaves DuckDB's default (80 % of RAM).
    temp_directory : path, optional
        Where DuckDB spills; default: DuckDB's own (``.tmp`` in the working directory).
    threads : int, optional
        DuckDB threads (default: all cores).
    batch_rows : int
        Rows per batch of the streamed spend pass (memory about 60 bytes a row).

    Returns
    -------
    RFMData
        Equal to ``rfm_summary(<the files read with pandas and concatenated>, ...)`` with
        the same options: the same customers in the same order, the same values bit for
        bit, the same ``meta`` (cleaning report included). Error messages name rows as
        ``(file index, row in file)`` instead of DataFrame index labels.

    Notes
    -----
    Memory: DuckDB stays within ``memory_limit``; Python holds a few float/int arrays per
    customer (about 100 bytes a customer with integer ids, more with text ids) and one
    batch of rows. The duplicate count (always reported) groups every row by
    ``(customer, timestamp, amount)``; on a log of distinct rows that is DuckDB's biggest
    job and the one that spills.

    Segment names are the sorted distinct values written as text; a pandas categorical
    column saved to Parquet (whose category order and unused categories pandas would
    restore) is read as its values.
    """
    if time_unit not in DAYS_PER_UNIT:
        raise DataValidationError(
            f"time_unit={time_unit!r} is not supported; use one of {sorted(DAYS_PER_UNIT)}."
        )
    check_option("merge_period", merge_period, ("day", "week", "month"), "")
    check_option(
        "negative_amounts",
        negative_amounts,
        NEGATIVE_OPTIONS,
        "Negative amounts are usually returns: 'error' stops, 'drop' removes them.",
    )
    check_option("zero_amounts", zero_amounts, ZERO_OPTIONS, "")
    check_option("duplicates", duplicates, DUPLICATE_OPTIONS, "")
    check_option("after_end", after_end, AFTER_END_OPTIONS, "")
    columns = [customer_col, date_col, amount_col] + ([segment_col] if segment_col else [])
    if len(set(columns)) != len(columns):
        raise DataValidationError(
            f"the customer, date, amount and segment columns must be different, got {columns}."
        )
    if int(batch_rows) < 1:
        raise ValueError(f"batch_rows must be a positive integer, got {batch_rows!r}.")
    files = parquet_files(paths)
    obs_given = None if observation_end is None else as_day(observation_end, "observation_end")
    cal_given = None if calibration_end is None else as_day(calibration_end, "calibration_end")

    con = _connect(
        memory_limit, None if temp_directory is None else os.fspath(temp_directory), threads
    )
    try:
        return _summarise(
            con,
            files,
            columns=columns,
            segment_col=segment_col,
            time_unit=time_unit,
            merge_period=merge_period,
            cal_given=cal_given,
            obs_given=obs_given,
            first_purchase_value=first_purchase_value,
            negative_amounts=negative_amounts,
            zero_amounts=zero_amounts,
            duplicates=duplicates,
            after_end=after_end,
            batch_rows=int(batch_rows),
        )
    finally:
        con.close()


def _summarise(  # noqa: C901 - one linear pipeline, in the order of the pandas path
    con,
    files: list[str],
    *,
    columns: list[str],
    segment_col: str | None,
    time_unit: str,
    merge_period: str,
    cal_given: np.datetime64 | None,
    obs_given: np.datetime64 | None,
    first_purchase_value: bool,
    negative_amounts: str,
    zero_amounts: str,
    duplicates: str,
    after_end: str,
    batch_rows: int,
) -> RFMData:
    customer_col, date_col, amount_col = columns[:3]
    listed = ", ".join("'" + f.replace("'", "''") + "'" for f in files)
    con.execute(
        f"CREATE TEMP VIEW raw AS SELECT *, file_index AS __file_index "
        f"FROM read_parquet([{listed}], file_row_number = true)"
    )
    schema = {row[0]: row[1] for row in con.execute("DESCRIBE raw").fetchall()}
    missing = [c for c in columns if c not in schema]
    if missing:
        raise_missing_columns(
            missing, [c for c in schema if c not in ("file_row_number", "__file_index")]
        )

    notes: list[str] = []
    dtype = schema[date_col].upper()
    if "TIME ZONE" in dtype or dtype.startswith("TIMESTAMPTZ"):
        import pyarrow.parquet as pq

        tz = getattr(pq.read_schema(files[0]).field(date_col).type, "tz", None) or "UTC"
        notes.append(f"'{date_col}' had time zone {tz}; converted to UTC, then tz dropped.")
        # Kept as an instant (full precision, for exact duplicates); its day is taken
        # from epoch_ns below: the UTC day, whatever DuckDB's session time zone.
        ts = _q(date_col)
    elif dtype.startswith("TIMESTAMP") or dtype == "DATE":
        ts = f"CAST({_q(date_col)} AS TIMESTAMP_NS)" if dtype == "DATE" else _q(date_col)
    else:
        raise DataValidationError(
            f"column '{date_col}' is stored as {schema[date_col]}, not as dates. Write it "
            f"to Parquet as a timestamp or date (e.g. df['{date_col}'] = "
            f"pd.to_datetime(df['{date_col}'], format=...)), or use "
            f"bayesclv.data.rfm_summary, which parses text."
        )
    atype = schema[amount_col].upper()
    numeric = (
        "TINYINT",
        "SMALLINT",
        "INTEGER",
        "BIGINT",
        "HUGEINT",
        "UTINYINT",
        "USMALLINT",
        "UINTEGER",
        "UBIGINT",
        "FLOAT",
        "DOUBLE",
        "REAL",
    )
    if not (atype in numeric or atype.startswith("DECIMAL")):
        raise DataValidationError(
            f"column '{amount_col}' is stored as {schema[amount_col]}; amounts must be "
            f"numbers (money spent per row). Convert it before writing the Parquet files."
        )
    seg = _q(segment_col) if segment_col else "NULL"
    con.execute(
        f"""
        CREATE TEMP VIEW src AS SELECT
            {_q(customer_col)} AS cid,
            {ts} AS ts,
            CAST({_q(amount_col)} AS DOUBLE) + 0.0 AS amt,
            {seg} AS seg,
            (__file_index::BIGINT << {_ROW_BITS}) + file_row_number AS rk
        FROM raw
        """
    )

    def rows_where(condition: str) -> str:
        hits = con.execute(
            f"SELECT rk FROM src WHERE {condition} ORDER BY rk LIMIT 6"
        ).fetchnumpy()["rk"]
        n = int(con.execute(f"SELECT count(*) FROM src WHERE {condition}").fetchone()[0])
        where = [(int(r) >> _ROW_BITS, int(r) & ((1 << _ROW_BITS) - 1)) for r in hits]
        shown = describe_rows(where)
        return f"{n:,} row{'s' if n != 1 else ''} (first (file, row): {shown})"

    def fail(col: str, condition: str, problem: str, fix: str) -> None:
        raise DataValidationError(f"column '{col}': {rows_where(condition)} {problem}. {fix}")

    # ------------------------------------------------------------- row-level checks
    clock = [time.perf_counter()]

    def step(name: str) -> None:
        now = time.perf_counter()
        _log.info("%s: %.1f s", name, now - clock[0])
        clock[0] = now

    obs_day = None if obs_given is None else int(obs_given.astype(np.int64))
    # UTC calendar day (days since 1970-01-01) by floor division of epoch nanoseconds;
    # DuckDB's // truncates towards zero, hence the positive remainder.
    ns_day = 86_400_000_000_000
    day = f"((epoch_ns(ts) - ((epoch_ns(ts) % {ns_day}) + {ns_day}) % {ns_day}) // {ns_day})"
    after_sql = "FALSE" if obs_day is None else f"{day} > {obs_day}"
    # One reason per removed row (0 = kept), in the order of validate_transactions.
    reason = (
        "CASE WHEN amt < 0 THEN 1 "
        + ("WHEN amt = 0 THEN 2 " if zero_amounts == "drop" else "")
        + f"WHEN {after_sql} THEN 3 ELSE 0 END"
    )
    counts = con.execute(
        f"""
        SELECT count(*),
               count(*) FILTER (WHERE cid IS NULL),
               count(*) FILTER (WHERE {"seg IS NULL" if segment_col else "FALSE"}),
               count(*) FILTER (WHERE ts IS NULL),
               count(*) FILTER (WHERE amt IS NULL OR isnan(amt)),
               count(*) FILTER (WHERE isinf(amt)),
               count(*) FILTER (WHERE amt < 0),
               count(*) FILTER (WHERE amt = 0),
               count(*) FILTER (WHERE {after_sql}),
               count(*) FILTER (WHERE ({reason}) = 0),
               count(*) FILTER (WHERE ({reason}) = 2),
               count(*) FILTER (WHERE ({reason}) = 3)
        FROM src
        """
    ).fetchone()
    (
        n_in,
        n_noid,
        n_noseg,
        n_nodate,
        n_noamt,
        n_inf,
        n_neg,
        n_zero,
        n_after,
        n_reason0,
        zero_removed,
        after_removed,
    ) = map(int, counts)
    if n_in == 0:
        raise DataValidationError(
            "the transaction log is empty (0 rows); there is nothing to summarise."
        )
    if n_noid:
        fail(
            customer_col,
            "cid IS NULL",
            "have a missing id",
            "Drop these rows or fill the ids before summarising.",
        )
    if n_noseg:
        fail(
            segment_col,
            "seg IS NULL",
            "have a missing segment",
            "Fill them with a segment name such as 'unknown'.",
        )
    if segment_col:
        multi = con.execute(
            "SELECT cid FROM src GROUP BY cid HAVING count(DISTINCT seg) > 1 ORDER BY cid"
        ).fetchnumpy()["cid"]
        if len(multi):
            raise DataValidationError(
                f"column '{segment_col}': {len(multi):,} customers appear in more than one "
                f"segment (customers {describe_rows(list(multi))}). A customer must have one "
                f"segment: take e.g. the segment of the first purchase."
            )
    if n_nodate:
        fail(date_col, "ts IS NULL", "have a missing date", "Drop or fill these rows.")
    if n_noamt:
        fail(
            amount_col,
            "amt IS NULL OR isnan(amt)",
            "have a missing (NaN) amount",
            "Fill them with the amount spent or drop those rows; rows are never dropped for you.",
        )
    if n_inf:
        fail(amount_col, "isinf(amt)", "have an infinite amount", "Fix or drop these rows.")
    if n_neg and negative_amounts == "error":
        fail(
            amount_col,
            "amt < 0",
            "have a negative amount (returns or refunds?)",
            "Choose: negative_amounts='drop' removes them (counted in the report), or net "
            "each return against its purchase before summarising.",
        )
    if n_after and after_end == "error":
        fail(
            date_col,
            after_sql,
            f"are dated after observation_end={obs_given}",
            "Pass a later observation_end, or after_end='drop' to remove them (counted in "
            "the report).",
        )

    step("row checks")
    con.execute(f"CREATE TEMP VIEW rows AS SELECT *, {day} AS day, {reason} AS reason FROM src")

    # Exact duplicates (customer, timestamp, amount): counted over every row; with
    # "drop", later copies among the kept rows go (the first copy, in row order, stays).
    con.execute(
        """
        CREATE TEMP TABLE dup_groups AS
        SELECT cid, ts, amt, count(*) AS n, count(*) FILTER (WHERE reason = 0) AS n0,
               min(rk) FILTER (WHERE reason = 0) AS rk0
        FROM rows GROUP BY cid, ts, amt HAVING count(*) > 1
        """
    )
    dup = con.execute("SELECT coalesce(sum(n - 1), 0) FROM dup_groups").fetchone()
    dups_found = int(dup[0])
    dropped = np.zeros(0, dtype=np.int64)
    if duplicates == "drop" and dups_found:
        dropped = (
            con.execute(
                """
            SELECT r.rk FROM rows r JOIN dup_groups g
              ON r.cid = g.cid AND r.ts = g.ts AND r.amt = g.amt
            WHERE g.n0 > 1 AND r.reason = 0 AND r.rk > g.rk0 ORDER BY r.rk
            """
            )
            .fetchnumpy()["rk"]
            .astype(np.int64)
        )

    step("duplicates")
    # ------------------------------------------------------------- customers
    cust = con.execute(
        """
        SELECT cid,
               count(*) FILTER (WHERE reason = 0) AS n_kept,
               bit_or(CASE WHEN reason > 0 THEN 1 << (reason - 1) ELSE 0 END) AS bits,
               min(day) FILTER (WHERE reason = 0) AS first_day,
               max(day) FILTER (WHERE reason = 0) AS last_day,
               min(seg) AS seg
        FROM rows GROUP BY cid ORDER BY cid
        """
    ).fetchnumpy()
    ids_all = _plain(cust["cid"])
    n_customers = len(ids_all)
    n_kept = _plain(cust["n_kept"]).astype(np.int64)
    lost = n_kept == 0
    rows_out = n_reason0 - int(dropped.size)
    removed_groups: dict[str, tuple] = {}
    if lost.any():
        bits = _plain(cust["bits"]).astype(np.int64)
        for combo in np.unique(bits[lost]):
            name = "+".join(r for i, r in enumerate(CLEANING_REASONS) if combo & (1 << i))
            removed_groups[name] = tuple(ids_all[lost & (bits == combo)].tolist())
    if rows_out == 0:
        raise DataValidationError(
            f"no transactions left after cleaning: all {n_in:,} rows were removed "
            f"(negative {n_neg:,}, zero {zero_removed:,}, "
            f"after observation_end {after_removed:,}). Check the options."
        )
    end_note = None if obs_given is None else str(obs_given)
    notes.append(
        f"options: negative_amounts={negative_amounts!r}, zero_amounts={zero_amounts!r}, "
        f"duplicates={duplicates!r}, after_end={after_end!r}, "
        f"observation_end={end_note!r}"
    )
    report = CleaningReport(
        rows_in=n_in,
        rows_out=rows_out,
        negative_removed=n_neg,
        zero_removed=zero_removed,
        after_end_removed=after_removed,
        duplicates_removed=int(dropped.size),
        duplicates_found=dups_found,
        customers_in=n_customers,
        customers_out=int((~lost).sum()),
        customers_removed=removed_groups,
        notes=tuple(notes),
    )

    step("customers")
    # ------------------------------------------------------------- dates
    keep_c = ~lost
    uids = ids_all[keep_c]
    first_day = _plain(cust["first_day"], fill=0)[keep_c].astype(np.int64)
    last_day = int(_plain(cust["last_day"], fill=0)[keep_c].astype(np.int64).max())
    obs_day = last_day if obs_given is None else obs_day
    obs_end = np.datetime64(obs_day, "D")
    cal_end = obs_end if cal_given is None else cal_given
    if cal_end > obs_end:
        raise DataValidationError(
            f"calibration_end={cal_end} is after observation_end={obs_end}; the calibration "
            f"period must end on or before the end of observation."
        )
    cal_day = int(cal_end.astype(np.int64))
    unit = DAYS_PER_UNIT[time_unit]
    in_summary = first_day <= cal_day
    if not in_summary.any():
        raise DataValidationError(
            f"no customer made a first purchase on or before calibration_end={cal_end} "
            f"(first purchases start {np.datetime64(int(first_day.min()), 'D')}). Pass a "
            f"later calibration_end."
        )
    late_ids = tuple(uids[~in_summary].tolist())

    # ------------------------------------------------------------- occasions
    # One occasion per customer and calendar period, dated by its first day; holdout
    # occasions are counted on holdout rows alone, as in the pandas path. (Dropped exact
    # duplicates share their day with the kept copy: they never change occasions.)
    period = _period_sql("day", merge_period)
    occ = con.execute(
        f"""
        WITH occ AS (
            SELECT cid, day > {cal_day} AS hold, min(day) AS occ_day
            FROM rows WHERE reason = 0
            GROUP BY cid, hold, {period}
        )
        SELECT cid,
               count(*) FILTER (WHERE NOT hold) AS n_occ,
               max(occ_day) FILTER (WHERE NOT hold) AS last_occ,
               count(*) FILTER (WHERE hold) AS n_hold
        FROM occ GROUP BY cid ORDER BY cid
        """
    ).fetchnumpy()
    if len(occ["cid"]) != len(uids) or not np.array_equal(_plain(occ["cid"]), uids):
        raise RuntimeError("customer order differs between two DuckDB queries (a bug).")
    n_occ = _plain(occ["n_occ"]).astype(np.int64)
    last_occ = _plain(occ["last_occ"], fill=0).astype(np.int64)
    n_hold = _plain(occ["n_hold"]).astype(np.int64)

    step("occasions")
    # ------------------------------------------------------------- spend, in row order
    first_spend, repeat_spend, hold_spend = _stream_sums(
        con, uids, first_day, cal_day, merge_period, dropped, batch_rows
    )

    step("spend pass")
    litt = _stream_litt(con, uids, cal_day, merge_period, unit, batch_rows)[in_summary]
    step("litt pass")
    sel = in_summary
    frequency = n_occ[sel] - 1
    ids = uids[sel]
    monetary = np.divide(
        repeat_spend[sel], frequency, out=np.zeros(frequency.shape), where=frequency > 0
    )
    zero_spend = (frequency > 0) & ~(monetary > 0)
    recency = (last_occ[sel] - first_day[sel]) / unit
    T = (cal_day - first_day[sel]) / unit

    holdout: dict[str, Any] = {}
    n_hold_occ = 0
    if obs_day > cal_day:
        n_hold_occ = int(n_hold[sel].sum())
        holdout = {
            "holdout_frequency": n_hold[sel],
            "holdout_spend": hold_spend[sel],
            "holdout_length": (obs_day - cal_day) / unit,
        }

    if segment_col:
        seg_values = _plain(cust["seg"])[keep_c]
        seg_codes, categories = pd.factorize(pd.Series(seg_values), sort=True)
        names = tuple(str(c) for c in categories)
        if len(set(names)) != len(names):
            raise DataValidationError(
                f"segment names are not unique once written as text: {list(names)[:20]}; "
                f"convert the segment column to strings that differ."
            )
        segment = seg_codes.astype(np.int64)[sel]
    else:
        names = ("all",)
        segment = np.zeros(int(sel.sum()), dtype=np.int64)

    excluded = {"first_purchase_after_calibration_end": late_ids} if late_ids else {}
    from dataclasses import replace

    report = replace(report, excluded_from_summary=excluded)
    meta = {
        "cleaning_report": report,
        "customers_not_in_summary": dict(report.excluded_from_summary),
        "calibration_end": pd.Timestamp(cal_end),
        "observation_end": pd.Timestamp(obs_end),
        "merge_period": merge_period,
        "n_transactions": rows_out,
        "n_calibration_occasions": int(n_occ[sel].sum()),
        "n_holdout_occasions": n_hold_occ,
        "repeat_buyers_with_zero_spend": ids[zero_spend].tolist(),
    }
    return RFMData(
        customer_id=ids,
        frequency=frequency,
        recency=recency,
        T=T,
        monetary_value=monetary,
        segment=segment,
        segment_names=names,
        time_unit=time_unit,
        first_purchase_value=first_spend[sel] if first_purchase_value else None,
        calibration_end=pd.Timestamp(cal_end),
        litt=litt,
        meta=meta,
        **holdout,
    )


def _plain(values: Any, fill: Any = None) -> np.ndarray:
    """A DuckDB ``fetchnumpy`` column as a plain array; NULLs become ``fill``."""
    if np.ma.isMaskedArray(values):
        if fill is not None:
            return values.filled(fill)
        if values.mask.any():
            raise RuntimeError("unexpected missing values in a DuckDB result (a bug).")
        return values.data
    return np.asarray(values)


def _id_coder(uids: np.ndarray):
    """Function mapping a batch of ids to positions in the sorted ``uids``."""
    if uids.dtype.kind in "iu" and uids.size:
        lo, hi = int(uids.min()), int(uids.max())
        if hi - lo + 1 <= max(4 * uids.size, 1_000_000):
            table = np.full(hi - lo + 1, -1, dtype=np.int64)
            table[(uids - lo).astype(np.intp)] = np.arange(uids.size)
            return lambda b: table[(np.asarray(b, dtype=np.int64) - lo).astype(np.intp)]
    index = pd.Index(uids)
    return lambda b: index.get_indexer(b)


def _stream_litt(con, uids, cal_day, merge_period, unit, batch_rows):
    """Sum of the log gaps between calibration occasions per customer (``RFMData.litt``).

    The occasions come sorted by customer and day, in batches; each log gap is added in
    turn (``numpy.add.at``), as ``numpy.bincount`` adds them in the pandas path, so the
    sums are bit-identical to it. A gap across two batches is carried over.
    """
    litt = np.zeros(len(uids))
    code_of = _id_coder(uids)
    period = _period_sql("day", merge_period)
    reader = con.sql(
        f"""
        SELECT cid, min(day) AS occ_day FROM rows
        WHERE reason = 0 AND day <= {cal_day}
        GROUP BY cid, {period} ORDER BY cid, occ_day
        """
    ).to_arrow_reader(batch_rows)
    prev_code, prev_day = np.array([-1]), np.array([0])
    for batch in reader:
        if batch.num_rows == 0:
            continue
        code = np.concatenate([prev_code, code_of(batch.column(0).to_numpy(zero_copy_only=False))])
        day = np.concatenate([prev_day, batch.column(1).to_numpy().astype(np.int64)])
        same = code[1:] == code[:-1]
        gaps = (day[1:][same] - day[:-1][same]) / unit
        np.add.at(litt, code[1:][same], np.log(gaps))
        prev_code, prev_day = code[-1:], day[-1:]
    return litt


def _stream_sums(con, uids, first_day, cal_day, merge_period, dropped, batch_rows):
    """First-occasion, repeat and holdout spend per customer, added in file row order.

    ``numpy.add.at`` adds each amount in turn, as ``numpy.bincount`` does on the whole
    log in the pandas path, so every sum is bit-identical to it.
    """
    n = len(uids)
    first_spend, repeat_spend, hold_spend = np.zeros(n), np.zeros(n), np.zeros(n)
    code_of = _id_coder(uids)
    first_period = period_of_day(first_day, merge_period)
    reader = con.sql("SELECT cid, day, amt, rk FROM rows WHERE reason = 0").to_arrow_reader(
        batch_rows
    )
    last_rk = -1
    for batch in reader:
        rk = batch.column(3).to_numpy()
        if rk.size == 0:
            continue
        if rk[0] <= last_rk or (rk.size > 1 and not (np.diff(rk) > 0).all()):
            raise RuntimeError(
                "DuckDB returned rows out of file order; the spend sums would not be "
                "reproducible. Please report this with your DuckDB version."
            )
        last_rk = int(rk[-1])
        cid = batch.column(0).to_numpy(zero_copy_only=False)
        day = batch.column(1).to_numpy().astype(np.int64)
        amt = batch.column(2).to_numpy()
        if dropped.size:
            keep = ~np.isin(rk, dropped)
            cid, day, amt = cid[keep], day[keep], amt[keep]
        code = code_of(cid)
        cal = day <= cal_day
        in_first = cal & (period_of_day(day, merge_period) == first_period[code])
        repeat = cal & ~in_first
        np.add.at(first_spend, code[in_first], amt[in_first])
        np.add.at(repeat_spend, code[repeat], amt[repeat])
        np.add.at(hold_spend, code[~cal], amt[~cal])
    return first_spend, repeat_spend, hold_spend
