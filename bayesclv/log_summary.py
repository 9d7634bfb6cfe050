"""Transaction log -> per-customer summary (:func:`rfm_summary`).

The log is validated and cleaned by :mod:`bayesclv.transactions` (a frame straight from
:func:`~bayesclv.transactions.validate_transactions` is not validated twice); this module
turns it into purchase occasions and one :class:`~bayesclv.rfm.RFMData` row per customer.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from bayesclv.errors import DataValidationError, describe_rows
from bayesclv.rfm import DAYS_PER_UNIT, RFMData
from bayesclv.transactions import (
    REPORT_ATTR,
    CleaningReport,
    as_day,
    check_option,
    factorize_ids,
    raise_for_rows,
    unique_pairs,
    validate_transactions,
)

__all__ = ["rfm_summary", "period_of_day"]


def period_of_day(day: np.ndarray, merge_period: str) -> np.ndarray:
    """Index of the calendar period containing each day (days since 1970-01-01).

    :mod:`bayesclv.bigdata` writes the same rule in SQL (``_period_sql``): keep them alike.
    """
    if merge_period == "day":
        return day
    if merge_period == "week":
        # 1970-01-01 was a Thursday; +3 makes weeks start on Monday (ISO weeks).
        return np.floor_divide(day + 3, 7)
    return day.astype("datetime64[D]").astype("datetime64[M]").astype(np.int64)


def _occasions(
    codes: np.ndarray, day: np.ndarray, merge_period: str
) -> tuple[np.ndarray, np.ndarray]:
    """Purchase occasions: (customer code, day of the occasion's first transaction).

    All transactions of a customer in one ``merge_period`` form one occasion, dated by
    its earliest day. Sorted by customer then day.
    """
    if codes.size == 0:
        return codes.copy(), day.copy()
    base = int(day.min())
    cust, offset = unique_pairs(codes, day - base)
    pair_day = offset + base
    period = period_of_day(pair_day, merge_period)
    start = np.ones(cust.shape, dtype=bool)
    start[1:] = (cust[1:] != cust[:-1]) | (period[1:] != period[:-1])
    return cust[start], pair_day[start]


def _check_sums_finite(sums: np.ndarray, ids: np.ndarray, amount_col: str) -> None:
    """Amounts are finite row by row (validated) but their sums may overflow float64."""
    bad = ~np.isfinite(sums)
    if bad.any():
        raise DataValidationError(
            f"column '{amount_col}': the amounts of {int(bad.sum()):,} customers add up to more "
            f"than the largest float (about 1.8e308) (customers {describe_rows(ids[bad])}). "
            f"Rescale the amounts (e.g. to thousands) or fix these rows."
        )


def _pre_validated(transactions: Any) -> CleaningReport | None:
    """The report of a frame straight from validate_transactions, if it still fits."""
    if not isinstance(transactions, pd.DataFrame):
        return None
    report = transactions.attrs.get(REPORT_ATTR)
    if not isinstance(report, CleaningReport) or len(transactions) != report.rows_out:
        return None
    cols = transactions.columns
    if not {"customer_id", "date", "amount"} <= set(cols):
        return None
    if transactions["date"].dtype != np.dtype("datetime64[ns]"):
        return None
    if transactions["amount"].dtype != np.float64:
        return None
    return report


def rfm_summary(
    transactions: pd.DataFrame | str | Path,
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
    date_format: str | None = None,
    negative_amounts: str = "error",
    zero_amounts: str = "keep",
    duplicates: str = "keep",
    after_end: str = "error",
    encoding: str = "utf-8",
) -> RFMData:
    """Summarise a transaction log into one row per customer (frequency, recency, T, spend).

    Parameters
    ----------
    transactions : DataFrame, str or Path
        The output of :func:`validate_transactions` (used as is, with its standard
        column names and its ``segment`` column if it has one), or any DataFrame / CSV
        / Parquet path, which is validated here with the column names and cleaning
        options given (see :func:`validate_transactions`).
    customer_col, date_col, amount_col, segment_col : str
        Column names in a not-yet-validated input.
    time_unit : {"day", "week", "month", "year"}
        Unit of ``recency``, ``T`` and ``holdout_length``; see :data:`DAYS_PER_UNIT`.
    merge_period : {"day", "week", "month"}
        Transactions of one customer in the same calendar day (default, as in the
        CDNOW studies), ISO week (Monday to Sunday) or calendar month form one purchase
        occasion, dated by its first day, with the amounts summed.
    calibration_end : date-like, optional
        Last day of the calibration period (inclusive). Defaults to ``observation_end``.
    observation_end : date-like, optional
        Last day of observation (inclusive). Defaults to the last transaction day. If
        it is after ``calibration_end``, the purchases in between form the holdout.
    first_purchase_value : bool
        Also return the amount of each customer's first purchase occasion.
    date_format, negative_amounts, zero_amounts, duplicates, after_end, encoding
        Passed to :func:`validate_transactions` when the input is not yet validated.

    Returns
    -------
    RFMData
        Customers sorted by id. ``frequency`` = calibration purchase occasions - 1;
        ``recency`` = last - first occasion day and ``T`` = ``calibration_end`` - first
        day, both counted in whole days between day-floored dates and divided by
        ``DAYS_PER_UNIT[time_unit]``; ``monetary_value`` = mean amount of the repeat
        occasions (the first excluded), 0 for customers without repeats. With a holdout:
        ``holdout_frequency`` (occasions in ``(calibration_end, observation_end]``),
        ``holdout_spend`` and ``holdout_length``. ``litt`` = sum of the logs of the gaps
        between consecutive calibration occasions (in ``time_unit``; 0 without repeat
        purchases), as the CNBD-k families need. ``meta`` holds the
        ``"cleaning_report"`` (a :class:`CleaningReport` whose
        ``excluded_from_summary`` lists customers whose first purchase is after
        ``calibration_end``), the dates used and the number of occasions.

    Raises
    ------
    DataValidationError
        Any validation error; ``calibration_end`` after ``observation_end``; no
        customer with a first purchase by ``calibration_end``; repeat buyers whose
        repeat purchases all have amount 0 (the Gamma-Gamma spend model needs a
        positive mean); rows after ``observation_end`` in an already validated frame.

    Notes
    -----
    With the CDNOW conventions (``merge_period="day"``, ``time_unit="week"``,
    ``calibration_end="1997-09-30"``, ``observation_end="1998-06-30"``) this reproduces
    the published CDNOW sample summary (Fader, Hardie & Lee 2005) exactly.

    Examples
    --------
    >>> from bayesclv.datasets import load_cdnow
    >>> rfm = rfm_summary(load_cdnow(), calibration_end="1997-09-30",
    ...                   observation_end="1998-06-30")
    >>> int(rfm.frequency.sum()), int(rfm.holdout_frequency.sum())
    (2457, 1882)
    """
    if time_unit not in DAYS_PER_UNIT:
        raise DataValidationError(
            f"time_unit={time_unit!r} is not supported; use one of {sorted(DAYS_PER_UNIT)}."
        )
    check_option("merge_period", merge_period, ("day", "week", "month"), "")
    report = _pre_validated(transactions)
    if report is not None:
        clean = transactions
        has_segment = "segment" in clean.columns
        if segment_col is not None and not has_segment:
            raise DataValidationError(
                f"segment_col={segment_col!r} was given but the validated frame has no "
                f"'segment' column; pass segment_col to validate_transactions as well."
            )
    else:
        clean, report = validate_transactions(
            transactions,
            customer_col=customer_col,
            date_col=date_col,
            amount_col=amount_col,
            segment_col=segment_col,
            date_format=date_format,
            observation_end=observation_end,
            negative_amounts=negative_amounts,
            zero_amounts=zero_amounts,
            duplicates=duplicates,
            after_end=after_end,
            encoding=encoding,
        )
        has_segment = segment_col is not None

    day = clean["date"].to_numpy().astype("datetime64[D]").astype(np.int64)
    last_day = np.datetime64(int(day.max()), "D")
    obs_end = last_day if observation_end is None else as_day(observation_end, "observation_end")
    if last_day > obs_end:  # only possible for a frame validated without this end date
        after = day > obs_end.astype(np.int64)
        raise_for_rows(
            "date",
            f"are dated after observation_end={obs_end}",
            after,
            clean.index,
            "Validate with the same observation_end: validate_transactions(..., "
            "observation_end=..., after_end='drop') removes them and counts them.",
        )
    cal_end = obs_end if calibration_end is None else as_day(calibration_end, "calibration_end")
    if cal_end > obs_end:
        raise DataValidationError(
            f"calibration_end={cal_end} is after observation_end={obs_end}; the calibration "
            f"period must end on or before the end of observation."
        )
    cal_day = int(cal_end.astype(np.int64))
    obs_day = int(obs_end.astype(np.int64))
    unit = DAYS_PER_UNIT[time_unit]

    codes, uniques = factorize_ids(clean["customer_id"])
    n_all = len(uniques)
    amount = clean["amount"].to_numpy(dtype=np.float64)

    first_day = np.full(n_all, np.iinfo(np.int64).max, dtype=np.int64)
    np.minimum.at(first_day, codes, day)
    in_summary = first_day <= cal_day
    uniques_arr = np.asarray(uniques)
    late_ids = tuple(uniques_arr[~in_summary].tolist())
    if not in_summary.any():
        raise DataValidationError(
            f"no customer made a first purchase on or before calibration_end={cal_end} "
            f"(first purchases start {np.datetime64(int(first_day.min()), 'D')}). Pass a "
            f"later calibration_end."
        )

    cal = day <= cal_day
    occ_cust, occ_day = _occasions(codes[cal], day[cal], merge_period)
    n_occ = np.bincount(occ_cust, minlength=n_all)
    last_occ = np.full(n_all, np.iinfo(np.int64).min, dtype=np.int64)
    np.maximum.at(last_occ, occ_cust, occ_day)
    first_period = period_of_day(first_day, merge_period)
    in_first = cal & (period_of_day(day, merge_period) == first_period[codes])
    first_spend = np.bincount(codes[in_first], weights=amount[in_first], minlength=n_all)
    repeat_rows = cal & ~in_first
    repeat_spend = np.bincount(codes[repeat_rows], weights=amount[repeat_rows], minlength=n_all)
    _check_sums_finite(first_spend + repeat_spend, uniques_arr, amount_col)

    sel = in_summary
    frequency = n_occ[sel] - 1
    ids = uniques_arr[sel]
    monetary = np.divide(
        repeat_spend[sel], frequency, out=np.zeros(frequency.shape), where=frequency > 0
    )
    # Repeat buyers whose repeat purchases were all free (mean repeat spend 0) are kept:
    # their purchases count for the purchase models. They are listed here, and the
    # Gamma-Gamma builder excludes and counts them (it needs positive spend).
    zero_spend = (frequency > 0) & ~(monetary > 0)
    zero_spend_ids = ids[zero_spend].tolist()
    recency = (last_occ[sel] - first_day[sel]) / unit
    T = (cal_day - first_day[sel]) / unit
    # Sum of log inter-purchase times (BTYDplus's `litt`, for the CNBD-k families):
    # occasions are sorted by customer then day, on distinct days, so every gap is >= 1.
    same = occ_cust[1:] == occ_cust[:-1]
    gaps = (occ_day[1:][same] - occ_day[:-1][same]) / unit
    litt = np.bincount(occ_cust[1:][same], weights=np.log(gaps), minlength=n_all)[sel]

    holdout: dict[str, Any] = {}
    n_hold_occ = 0
    if obs_day > cal_day:
        hold = ~cal  # every row is on or before observation_end (checked above)
        h_cust, _ = _occasions(codes[hold], day[hold], merge_period)
        n_hold_occ = int(np.isin(h_cust, np.flatnonzero(sel)).sum())
        hold_spend = np.bincount(codes[hold], weights=amount[hold], minlength=n_all)
        _check_sums_finite(hold_spend, uniques_arr, amount_col)
        holdout = {
            "holdout_frequency": np.bincount(h_cust, minlength=n_all)[sel],
            "holdout_spend": hold_spend[sel],
            "holdout_length": (obs_day - cal_day) / unit,
        }

    if has_segment:
        # one row per customer is enough: each customer has one segment (validated)
        first_row = np.empty(n_all, dtype=np.int64)
        first_row[codes[::-1]] = np.arange(codes.size - 1, -1, -1)
        seg = clean["segment"].iloc[first_row]
        if isinstance(seg.dtype, pd.CategoricalDtype):
            seg_codes = seg.cat.codes.to_numpy().astype(np.int64)
            categories = seg.cat.categories
        else:
            seg_codes, categories = pd.factorize(seg, sort=True)
            seg_codes = seg_codes.astype(np.int64)
        names = tuple(str(c) for c in categories)
        if len(set(names)) != len(names):
            raise DataValidationError(
                f"segment names are not unique once written as text: {list(names)[:20]}; "
                f"convert the segment column to strings that differ."
            )
        segment = seg_codes[sel]
    else:
        names = ("all",)
        segment = np.zeros(int(sel.sum()), dtype=np.int64)

    excluded = {"first_purchase_after_calibration_end": late_ids} if late_ids else {}
    report = replace(
        report,
        excluded_from_summary={**report.excluded_from_summary, **excluded},
    )
    meta = {
        "cleaning_report": report,
        "customers_not_in_summary": dict(report.excluded_from_summary),
        "calibration_end": pd.Timestamp(cal_end),
        "observation_end": pd.Timestamp(obs_end),
        "merge_period": merge_period,
        "n_transactions": len(clean),
        "n_calibration_occasions": int(n_occ[sel].sum()),
        "n_holdout_occasions": n_hold_occ,
        "repeat_buyers_with_zero_spend": zero_spend_ids,
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
