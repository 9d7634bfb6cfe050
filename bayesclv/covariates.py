"""Customer covariates: static and time-varying tables, validated, joined to an RFMData.

Two tables, validated once like the transaction log (:func:`bayesclv.data.validate_transactions`):
errors name the column, the customers or periods concerned (first few) and the fix.

* :class:`StaticCovariates`: one row per customer (``customer_id`` -> columns), e.g.
  gender or acquisition channel. Text or categorical columns become ``k - 1`` dummy
  columns (first level in sorted order is the reference), as CLVTools does.
* :class:`TimeVaryingCovariates`: one row per customer and period (``customer_id``,
  period start, columns), piecewise constant over regular calendar periods (weekly,
  monthly, ...), e.g. seasonality or direct marketing. Each period runs from its start
  to the next start. Every customer must be covered, without gaps, for every period the
  model needs: from the period of the first purchase through the calibration end, and
  for prediction through the end of the horizon (:meth:`DynamicDesign.future`).

:func:`calendar_covariates` builds calendar covariates (month dummies, a high-season
share, Fourier terms) for any period grid; :meth:`TimeVaryingCovariates.from_calendar`
gives every customer the same path.

:func:`join_covariates` joins a table to an :class:`~bayesclv.data.RFMData` by customer
id and returns the RFMData with the model-ready *design* in ``meta["covariates"]``: a
:class:`StaticDesign` or a :class:`DynamicDesign`, keyed by customer id so that it stays
valid under ``rfm.subset(...)``. Every customer that goes in comes out, or (with
``missing="drop"``) is removed, counted in ``meta["customers_not_in_summary"]`` with the
reason and warned about. The covariate families
(:mod:`bayesclv.families.pareto_nbd_cov`, :mod:`bayesclv.families.pareto_nbd_dyncov`)
read that design.

Standardisation happens inside: each design carries a :class:`Standardization` (the
means and standard deviations of its columns over the joined customers); models sample
and optimise the coefficients of the standardised columns, and report them on the
original scale (``gamma = gamma_std / sd``, with the scale parameters shifted so that
``alpha_i = alpha exp(-gamma' z_i)`` holds with the raw ``z_i``).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import pandas as pd

from bayesclv.data import DAYS_PER_UNIT, RFMData
from bayesclv.errors import DataValidationError, describe_rows

__all__ = [
    "Standardization",
    "StaticCovariates",
    "TimeVaryingCovariates",
    "StaticDesign",
    "DynamicDesign",
    "FuturePaths",
    "calendar_covariates",
    "join_covariates",
    "covariate_design",
    "as_days",
]

_NS_PER_DAY = 86_400 * 10**9


# --------------------------------------------------------------------------- helpers
def _require_columns(frame: pd.DataFrame, needed: Sequence[str], what: str) -> None:
    missing = [c for c in needed if c not in frame.columns]
    if missing:
        raise DataValidationError(
            f"{what}: missing column{'s' if len(missing) > 1 else ''} {missing}; the table "
            f"has columns {list(frame.columns)[:30]}. Pass the right names (customer_col=, "
            f"date_col=, columns=)."
        )


def _check_ids(ids: pd.Series, col: str, what: str) -> None:
    missing = ids.isna().to_numpy()
    if missing.any():
        raise DataValidationError(
            f"{what}: column '{col}' has {int(missing.sum())} missing customer ids (rows "
            f"{describe_rows(ids.index[missing])}). Drop or fill those rows."
        )


def _numeric_columns(
    frame: pd.DataFrame, columns: Sequence[str], what: str, labels: pd.Index, word: str = "rows"
) -> tuple[list[str], np.ndarray]:
    """Columns as float64 (text/categorical -> k - 1 dummies), checked finite."""
    names: list[str] = []
    blocks: list[np.ndarray] = []
    for col in columns:
        s = frame[col]
        if pd.api.types.is_bool_dtype(s):
            s = s.astype(np.float64)
        if pd.api.types.is_numeric_dtype(s):
            v = s.to_numpy(dtype=np.float64)
            bad = ~np.isfinite(v)
            if bad.any():
                raise DataValidationError(
                    f"{what}: column '{col}' has {int(bad.sum())} missing or non-finite "
                    f"values ({word} {describe_rows(labels[bad])}). Fill them (e.g. with 0 "
                    f"and an indicator column) before joining."
                )
            names.append(col)
            blocks.append(v[:, None])
            continue
        if s.isna().any():
            bad = s.isna().to_numpy()
            raise DataValidationError(
                f"{what}: column '{col}' has {int(bad.sum())} missing values ({word} "
                f"{describe_rows(labels[bad])}). Fill them with a level such as 'unknown'."
            )
        levels = sorted(pd.unique(s.astype(str)))
        if len(levels) < 2:
            raise DataValidationError(
                f"{what}: column '{col}' has the single level {levels!r}; a covariate "
                f"needs at least two. Drop the column."
            )
        text = s.astype(str).to_numpy()
        for level in levels[1:]:  # the first level is the reference
            names.append(f"{col}_{level}")
            blocks.append((text == level).astype(np.float64)[:, None])
    return names, np.concatenate(blocks, axis=1) if blocks else np.zeros((len(frame), 0))


def as_days(values: Any) -> np.ndarray:
    """Whole days since the epoch (int64) from dates or date-like values.

    Shared with the dynamic-covariate family (``families/pareto_nbd_dyncov.py``), which
    must count days exactly as the covariate tables do.
    """
    ts = pd.to_datetime(pd.Series(values)).dt.floor("D")
    return (ts.to_numpy(dtype="datetime64[ns]").astype(np.int64) // _NS_PER_DAY).astype(np.int64)


#: Old private name, kept until ``families/pareto_nbd_dyncov.py`` imports :func:`as_days`.
_as_days = as_days


def _dates(days: pd.DatetimeIndex, limit: int = 3) -> str:
    return describe_rows([str(d.date()) for d in days], limit)


def _ids_index(ids: np.ndarray) -> pd.Index:
    return pd.Index(ids)


def _aligned(design_ids: np.ndarray, ids: np.ndarray, what: str) -> np.ndarray:
    """Row of each of ``ids`` in ``design_ids``; an error naming the ones not there."""
    idx = _ids_index(design_ids).get_indexer(pd.Index(ids))
    bad = idx < 0
    if bad.any():
        raise DataValidationError(
            f"{what}: {int(bad.sum())} customers have no covariates in this design "
            f"({describe_rows(np.asarray(ids)[bad])}). Join the covariates to this RFMData "
            f"again with bayesclv.covariates.join_covariates."
        )
    return idx


# --------------------------------------------------------------------------- scaling
@dataclass(frozen=True)
class Standardization:
    """Means and standard deviations of covariate columns: ``z_std = (z - mean) / sd``.

    A model with rates scaled by ``exp(gamma_std' z_std)`` is the same model as one scaled
    by ``exp(gamma' z)`` with ``gamma = gamma_std / sd`` and a baseline rate multiplied by
    ``exp(-gamma' mean)`` (:meth:`to_original`, :meth:`offset`).
    """

    columns: tuple[str, ...]
    mean: np.ndarray
    sd: np.ndarray

    @classmethod
    def fit(cls, columns: Sequence[str], values: np.ndarray, what: str) -> Standardization:
        values = np.asarray(values, dtype=np.float64)
        values = (
            values.reshape(len(values), len(columns))
            if values.size or len(columns)
            else (np.zeros((0, 0)))
        )
        mean = values.mean(axis=0) if len(values) else np.zeros(len(columns))
        sd = values.std(axis=0) if len(values) else np.ones(len(columns))
        constant = [c for c, s in zip(columns, sd, strict=True) if not s > 0]
        if constant:
            raise DataValidationError(
                f"{what}: covariate column{'s' if len(constant) > 1 else ''} {constant} "
                f"take{'' if len(constant) > 1 else 's'} one value for every customer "
                f"joined, so their effect cannot be estimated. Leave them out "
                f"(purchase=[...], dropout=[...])."
            )
        mean.setflags(write=False)
        sd.setflags(write=False)
        return cls(tuple(columns), mean, sd)

    def apply(self, values: np.ndarray) -> np.ndarray:
        """Standardised values (last axis = columns)."""
        return (np.asarray(values, dtype=np.float64) - self.mean) / self.sd

    def to_original(self, gamma_std: Sequence) -> list:
        """Coefficients of the raw columns, ``gamma_std / sd`` (NumPy or PyTensor)."""
        return [g / s for g, s in zip(gamma_std, self.sd, strict=True)]

    def offset(self, gamma: Sequence):
        """``gamma' mean`` for raw-scale coefficients (NumPy or PyTensor; 0.0 if none)."""
        total = 0.0
        for g, m in zip(gamma, self.mean, strict=True):
            total = total + g * float(m)
        return total


# --------------------------------------------------------------------------- static
@dataclass(frozen=True)
class StaticCovariates:
    """One row of covariates per customer.

    Build it with :meth:`from_frame`; ``values[i, j]`` is column ``columns[j]`` of
    customer ``customer_id[i]``.
    """

    customer_id: np.ndarray
    columns: tuple[str, ...]
    values: np.ndarray

    @classmethod
    def from_frame(
        cls,
        frame: pd.DataFrame,
        *,
        customer_col: str = "customer_id",
        columns: Sequence[str] | None = None,
    ) -> StaticCovariates:
        """Validate a table with one row per customer.

        ``columns`` defaults to every column but ``customer_col``. Numeric and boolean
        columns are used as they are; text and categorical columns become ``k - 1``
        dummy columns named ``"{column}_{level}"``. Raises
        :class:`~bayesclv.errors.DataValidationError` on missing columns, missing or
        duplicated ids, and missing or non-finite values.
        """
        what = "static covariates"
        if not isinstance(frame, pd.DataFrame):
            raise DataValidationError(f"{what}: expected a DataFrame, got {type(frame).__name__}.")
        cols = [c for c in frame.columns if c != customer_col] if columns is None else list(columns)
        _require_columns(frame, [customer_col, *cols], what)
        if not cols:
            raise DataValidationError(f"{what}: no covariate columns besides '{customer_col}'.")
        ids = frame[customer_col]
        _check_ids(ids, customer_col, what)
        dup = ids.duplicated(keep=False).to_numpy()
        if dup.any():
            raise DataValidationError(
                f"{what}: column '{customer_col}' must be unique; {int(dup.sum())} rows share "
                f"an id (customers {describe_rows(pd.unique(ids[dup]))}). Keep one row per "
                f"customer, or use TimeVaryingCovariates for values that change over time."
            )
        labels = pd.Index(ids.to_numpy())
        names, values = _numeric_columns(frame, cols, what, labels, "customers")
        values.setflags(write=False)
        return cls(ids.to_numpy(), tuple(names), values)

    def __repr__(self) -> str:
        return (
            f"StaticCovariates(n_customers={len(self.customer_id)}, columns={list(self.columns)})"
        )


# --------------------------------------------------------------------------- time-varying
def _period_grid(dates: np.ndarray, freq: str | None, what: str) -> tuple[pd.DatetimeIndex, str]:
    grid = pd.DatetimeIndex(np.unique(dates)).sort_values()
    if freq is None:
        if len(grid) < 3:
            raise DataValidationError(
                f"{what}: {len(grid)} distinct period start(s); at least 3 are needed to "
                f"infer the period length. Pass freq= (e.g. 'W-SUN', 'MS', 'D')."
            )
        with warnings.catch_warnings():  # pandas 3 warns that it will return an offset
            warnings.simplefilter("ignore")
            freq = pd.infer_freq(grid)
        freq = getattr(freq, "freqstr", freq)
        if freq is None:
            gaps = np.diff(grid.values).astype("timedelta64[D]").astype(int)
            common = np.bincount(gaps).argmax()
            odd = grid[1:][gaps != common]
            raise DataValidationError(
                f"{what}: the period starts are not a regular calendar grid (most are "
                f"{common} days apart; irregular at {describe_rows([str(d.date()) for d in odd])}"
                f"). Every customer needs every period: add the missing periods, or pass "
                f"freq= to say which grid is meant."
            )
    full = pd.date_range(grid[0], grid[-1], freq=freq)
    off = grid.difference(full)
    if len(off):
        raise DataValidationError(
            f"{what}: {len(off)} period starts are not on the {freq!r} grid "
            f"({describe_rows([str(d.date()) for d in off])}). Period starts must be the "
            f"first day of each period."
        )
    return full, freq


@dataclass(frozen=True)
class TimeVaryingCovariates:
    """Covariates per customer and calendar period, piecewise constant in time.

    ``values[i, k, j]`` is column ``columns[j]`` of customer ``customer_id[i]`` in the
    period ``[period_start[k], period_end[k])``; ``covered[i, k]`` says whether the table
    has that cell (NaN in ``values`` where not). Each customer's covered periods form one
    run without gaps.
    """

    customer_id: np.ndarray
    period_start: pd.DatetimeIndex
    period_end: pd.DatetimeIndex
    freq: str
    columns: tuple[str, ...]
    values: np.ndarray
    covered: np.ndarray

    @classmethod
    def from_frame(
        cls,
        frame: pd.DataFrame,
        *,
        customer_col: str = "customer_id",
        date_col: str = "period_start",
        columns: Sequence[str] | None = None,
        freq: str | None = None,
    ) -> TimeVaryingCovariates:
        """Validate a long table (customer, period start, covariate columns).

        The period grid is inferred from the distinct period starts (``pd.infer_freq``)
        unless ``freq`` is given; periods end at the next start. Raises
        :class:`~bayesclv.errors.DataValidationError` on missing columns or ids,
        unparsable dates, period starts off the grid, duplicated (customer, period) rows,
        missing values (naming customers, periods and column) and gaps inside a
        customer's run of periods.
        """
        what = "time-varying covariates"
        if not isinstance(frame, pd.DataFrame):
            raise DataValidationError(f"{what}: expected a DataFrame, got {type(frame).__name__}.")
        skip = {customer_col, date_col}
        cols = [c for c in frame.columns if c not in skip] if columns is None else list(columns)
        _require_columns(frame, [customer_col, date_col, *cols], what)
        if not cols:
            raise DataValidationError(f"{what}: no covariate columns besides the id and date.")
        ids = frame[customer_col]
        _check_ids(ids, customer_col, what)
        try:
            dates = pd.to_datetime(frame[date_col]).dt.floor("D")
        except (ValueError, TypeError) as exc:
            raise DataValidationError(
                f"{what}: column '{date_col}' could not be read as dates ({exc}). Give "
                f"ISO dates (YYYY-MM-DD) or datetime values."
            ) from None
        if dates.isna().any():
            bad = dates.isna().to_numpy()
            raise DataValidationError(
                f"{what}: column '{date_col}' has {int(bad.sum())} missing dates (rows "
                f"{describe_rows(frame.index[bad])})."
            )
        grid, freq = _period_grid(dates.to_numpy(), freq, what)
        pairs = pd.MultiIndex.from_arrays([ids.to_numpy(), dates.to_numpy()])
        dup = pairs.duplicated(keep=False)
        if dup.any():
            shown = [f"{c!r} at {pd.Timestamp(d).date()}" for c, d in pairs[dup][:5]]
            raise DataValidationError(
                f"{what}: {int(dup.sum())} rows repeat a (customer, period) pair "
                f"({', '.join(shown)}). Keep one row per customer and period."
            )
        labels = pd.Index([f"{c!r} at {pd.Timestamp(d).date()}" for c, d in pairs]) if (
            frame[cols].isna().to_numpy().any()) else pd.Index(np.arange(len(frame)))  # fmt: skip
        names, flat = _numeric_columns(frame, cols, what, labels)
        cust, uniq = pd.factorize(ids, sort=True)
        k = grid.get_indexer(pd.DatetimeIndex(dates))
        values = np.full((len(uniq), len(grid), len(names)), np.nan)
        values[cust, k] = flat
        covered = np.zeros((len(uniq), len(grid)), dtype=bool)
        covered[cust, k] = True
        # one run of periods per customer: no holes between its first and last period
        first = covered.argmax(axis=1)
        last = len(grid) - 1 - covered[:, ::-1].argmax(axis=1)
        span = np.arange(len(grid))[None, :]
        holes = (span >= first[:, None]) & (span <= last[:, None]) & ~covered
        if holes.any():
            who = np.flatnonzero(holes.any(axis=1))
            shown = [f"{uniq[i]!r} (missing {_dates(grid[holes[i]])})" for i in who[:5]]
            raise DataValidationError(
                f"{what}: {len(who)} customers have gaps in their periods: "
                f"{'; '.join(shown)}. Every customer needs a row for every period."
            )
        end = grid[1:].append(pd.DatetimeIndex([grid[-1] + pd.tseries.frequencies.to_offset(freq)]))
        values.setflags(write=False)
        covered.setflags(write=False)
        return cls(np.asarray(uniq), grid, end, freq, tuple(names), values, covered)

    @classmethod
    def from_calendar(
        cls,
        customer_ids: Sequence,
        calendar: pd.DataFrame,
        *,
        date_col: str = "period_start",
        freq: str | None = None,
    ) -> TimeVaryingCovariates:
        """Every customer gets the same covariate path (e.g. :func:`calendar_covariates`)."""
        one = pd.DataFrame({"customer_id": ["__one__"] * len(calendar)}).join(
            calendar.reset_index(drop=True)
        )
        base = cls.from_frame(one, customer_col="customer_id", date_col=date_col, freq=freq)
        ids = np.asarray(list(customer_ids))
        if pd.Index(ids).has_duplicates:
            raise DataValidationError("from_calendar: customer_ids must be unique.")
        values = np.broadcast_to(base.values, (len(ids), *base.values.shape[1:]))
        covered = np.broadcast_to(base.covered, (len(ids), base.covered.shape[1]))
        return replace(base, customer_id=ids, values=values, covered=covered)

    def extend(self, later: TimeVaryingCovariates) -> TimeVaryingCovariates:
        """This table followed by ``later`` (e.g. future covariates for a forecast): same
        columns and grid; periods both have must hold the same values."""
        if later.columns != self.columns or later.freq != self.freq:
            raise DataValidationError(
                f"extend: tables differ in columns ({list(self.columns)} vs "
                f"{list(later.columns)}) or period grid ({self.freq!r} vs {later.freq!r})."
            )
        grid = self.period_start.union(later.period_start)
        full = pd.date_range(grid[0], grid[-1], freq=self.freq)
        ids = pd.Index(self.customer_id).union(pd.Index(later.customer_id))
        values = np.full((len(ids), len(full), len(self.columns)), np.nan)
        covered = np.zeros((len(ids), len(full)), dtype=bool)
        for tab in (self, later):
            ri = ids.get_indexer(pd.Index(tab.customer_id))
            ki = full.get_indexer(tab.period_start)
            block = values[np.ix_(ri, ki)]
            both = covered[np.ix_(ri, ki)] & tab.covered
            clash = both & ~np.all(np.isclose(block, tab.values, equal_nan=True), axis=-1)
            if clash.any():
                i, k = np.argwhere(clash)[0]
                raise DataValidationError(
                    f"extend: the tables disagree for customer {tab.customer_id[i]!r} in the "
                    f"period starting {tab.period_start[k].date()} ({int(clash.sum())} cells)."
                )
            sub = values[np.ix_(ri, ki)]
            sub[tab.covered] = tab.values[tab.covered]
            values[np.ix_(ri, ki)] = sub
            cov = covered[np.ix_(ri, ki)] | tab.covered
            covered[np.ix_(ri, ki)] = cov
        frame = self._long(ids, full, values, covered)
        frame = frame.rename(columns={f"__c{j}": c for j, c in enumerate(self.columns)})
        return TimeVaryingCovariates.from_frame(
            frame, customer_col="customer_id", date_col="period_start", freq=self.freq
        )

    @staticmethod
    def _long(ids, grid, values, covered) -> pd.DataFrame:
        i, k = np.nonzero(covered)
        out = pd.DataFrame({"customer_id": np.asarray(ids)[i], "period_start": grid[k]})
        for j in range(values.shape[2]):
            out[f"__c{j}"] = values[i, k, j]
        return out

    def to_frame(self) -> pd.DataFrame:
        """The long table (customer_id, period_start, columns) of the covered cells."""
        out = self._long(self.customer_id, self.period_start, self.values, self.covered)
        return out.rename(columns={f"__c{j}": c for j, c in enumerate(self.columns)})

    def __repr__(self) -> str:
        return (
            f"TimeVaryingCovariates(n_customers={len(self.customer_id)}, "
            f"periods={len(self.period_start)} x {self.freq!r} from "
            f"{self.period_start[0].date()} to {self.period_end[-1].date()}, "
            f"columns={list(self.columns)})"
        )

    def _cells(self, ids: np.ndarray, day0: np.ndarray, day1: np.ndarray, what: str):
        """Table rows and period indices ``(n, K)`` covering the days ``[day0, day1]`` of
        each customer (inclusive), with an error naming customers and periods that are
        not covered."""
        rows = pd.Index(self.customer_id).get_indexer(pd.Index(ids))
        bad = rows < 0
        if bad.any():
            raise DataValidationError(
                f"{what}: {int(bad.sum())} customers are not in the time-varying covariates "
                f"({describe_rows(ids[bad])}). Add their rows, or join with missing='drop'."
            )
        start = _as_days(self.period_start)
        end = _as_days(self.period_end)
        k0 = np.searchsorted(start, day0, side="right") - 1
        k1 = np.searchsorted(start, day1, side="right") - 1
        before = k0 < 0
        after = day1 >= end[-1]
        for mask, when in ((before, "before the first period"), (after, "after the last period")):
            if mask.any():
                first = int(np.flatnonzero(mask)[0])
                day = day0[first] if when.startswith("before") else day1[first]
                raise DataValidationError(
                    f"{what}: {int(mask.sum())} customers need covariates {when} "
                    f"({self.period_start[0].date()} .. {self.period_end[-1].date()}): "
                    f"{describe_rows(ids[mask])}, e.g. on "
                    f"{pd.Timestamp(int(day) * _NS_PER_DAY).date()}. Extend the table to cover "
                    f"every period from the first purchase to the end of the calibration "
                    f"(and of the forecast horizon)."
                )
        n_k = int((k1 - k0).max()) + 1 if len(ids) else 1
        kk = k0[:, None] + np.arange(n_k)[None, :]
        valid = kk <= k1[:, None]
        kk = np.where(valid, kk, k1[:, None])
        hole = valid & ~self.covered[rows[:, None], kk]
        if hole.any():
            who = np.flatnonzero(hole.any(axis=1))
            shown = [f"{ids[i]!r} ({_dates(self.period_start[kk[i][hole[i]]])})" for i in who[:5]]
            raise DataValidationError(
                f"{what}: {len(who)} customers lack covariates for periods they need: "
                f"{'; '.join(shown)}. Every customer needs every period from the one of its "
                f"first purchase through the end of the calibration (and of the horizon)."
            )
        return rows, kk, valid, start, end


# --------------------------------------------------------------------------- calendar
def calendar_covariates(
    period_start: Sequence | pd.DatetimeIndex | None = None,
    *,
    start: Any = None,
    end: Any = None,
    freq: str = "W-SUN",
    months: bool = False,
    high_season: Sequence[int] | None = None,
    fourier: int = 0,
    year_days: float = 365.25,
) -> pd.DataFrame:
    """Calendar covariates for a grid of periods: one row per period.

    Parameters
    ----------
    period_start : dates, optional
        The period starts; else ``pd.date_range(start, end, freq=freq)``.
    freq : str
        The period grid (pandas offset alias), used to find each period's end.
    months : bool
        Add ``month_2 .. month_12``: the share of the period's days in that month
        (January is the reference level; for monthly periods these are 0/1 dummies).
    high_season : sequence of int, optional
        Months (1-12) of the high season: adds ``high_season``, the share of the period's
        days that fall in them.
    fourier : int
        Number ``K`` of yearly Fourier pairs: ``sin_k``/``cos_k`` = ``sin/cos(2 pi k d /
        year_days)`` with ``d`` the day of the year at the period's midpoint.

    Returns
    -------
    DataFrame with ``period_start`` and the covariate columns, ready for
    :meth:`TimeVaryingCovariates.from_calendar`.
    """
    if period_start is None:
        if start is None or end is None:
            raise DataValidationError("calendar_covariates: give period_start, or start and end.")
        grid = pd.date_range(start, end, freq=freq)
    else:
        grid = pd.DatetimeIndex(pd.to_datetime(list(period_start))).floor("D")
    if len(grid) == 0:
        raise DataValidationError("calendar_covariates: the period grid is empty.")
    if not (months or high_season or fourier):
        raise DataValidationError(
            "calendar_covariates: ask for at least one of months=True, high_season=[...], "
            "fourier=K."
        )
    offset = pd.tseries.frequencies.to_offset(freq)
    stop = grid[1:].append(pd.DatetimeIndex([grid[-1] + offset]))
    out = pd.DataFrame({"period_start": grid})
    # every day of every period, to take shares exactly
    lengths = ((stop - grid) / pd.Timedelta(days=1)).astype(int).to_numpy()
    if np.any(lengths <= 0):
        raise DataValidationError("calendar_covariates: period starts must increase.")
    owner = np.repeat(np.arange(len(grid)), lengths)
    days = grid.values.repeat(lengths) + (
        np.arange(lengths.sum()) - np.repeat(np.cumsum(lengths) - lengths, lengths)
    ).astype("timedelta64[D]")
    month = pd.DatetimeIndex(days).month.to_numpy()

    def share(mask: np.ndarray) -> np.ndarray:
        return np.bincount(owner, weights=mask.astype(float), minlength=len(grid)) / lengths

    if months:
        for m in range(2, 13):
            out[f"month_{m}"] = share(month == m)
    if high_season:
        bad = [m for m in high_season if m not in range(1, 13)]
        if bad:
            raise DataValidationError(
                f"calendar_covariates: high_season months {bad} are not 1..12."
            )
        out["high_season"] = share(np.isin(month, list(high_season)))
    if fourier:
        mid = grid + (stop - grid) / 2
        d = mid.day_of_year.to_numpy() - 1 + (mid.hour.to_numpy() / 24.0)
        for k in range(1, int(fourier) + 1):
            out[f"sin_{k}"] = np.sin(2 * np.pi * k * d / year_days)
            out[f"cos_{k}"] = np.cos(2 * np.pi * k * d / year_days)
    return out


# --------------------------------------------------------------------------- designs
@dataclass(frozen=True)
class StaticDesign:
    """Static covariates aligned to customers, as the static covariate families use them.

    ``z_purchase[i]`` / ``z_dropout[i]`` are the raw (unstandardised) values of customer
    ``customer_id[i]``; ``scale_purchase`` / ``scale_dropout`` their standardisation.
    """

    customer_id: np.ndarray
    purchase: tuple[str, ...]
    dropout: tuple[str, ...]
    z_purchase: np.ndarray
    z_dropout: np.ndarray
    scale_purchase: Standardization
    scale_dropout: Standardization
    kind: str = field(default="static", init=False)

    def rows(self, ids: np.ndarray) -> np.ndarray:
        """Index of each customer id in this design (error for unknown ids)."""
        return _aligned(self.customer_id, ids, "static covariates")


@dataclass(frozen=True)
class FuturePaths:
    """Covariate pieces after the calibration end, per customer: piece ``k`` of customer
    ``i`` covers ``(start[i, k], start[i, k] + length[i, k]]`` time units after ``T``."""

    start: np.ndarray
    length: np.ndarray
    z_purchase: np.ndarray
    z_dropout: np.ndarray
    horizon: float


@dataclass(frozen=True)
class DynamicDesign:
    """Time-varying covariates laid out per customer in the model's time unit.

    Time ``0`` is the customer's first purchase. Piece ``k`` of customer ``i`` covers
    ``[start[i, k], start[i, k] + length[i, k]]`` (the overlap of a calendar period with
    ``[0, T_i]``; padding pieces have length 0), with covariates ``z_purchase[i, k]`` and
    ``z_dropout[i, k]`` (raw). ``at_purchase[i]`` is the sum of ``z_purchase`` over the
    customer's repeat purchases (the periods their days fall in): the likelihood needs
    the covariates at each purchase only through this sum.
    """

    customer_id: np.ndarray
    purchase: tuple[str, ...]
    dropout: tuple[str, ...]
    time_unit: str
    first_day: np.ndarray  # int64 days since the epoch
    calibration_end: pd.Timestamp
    T: np.ndarray
    start: np.ndarray
    length: np.ndarray
    z_purchase: np.ndarray
    z_dropout: np.ndarray
    at_purchase: np.ndarray
    scale_purchase: Standardization
    scale_dropout: Standardization
    table: TimeVaryingCovariates = field(repr=False)
    kind: str = field(default="dynamic", init=False)

    def rows(self, ids: np.ndarray) -> np.ndarray:
        """Index of each customer id in this design (error for unknown ids)."""
        return _aligned(self.customer_id, ids, "time-varying covariates")

    def future(
        self,
        horizon: float,
        *,
        table: TimeVaryingCovariates | None = None,
        rows: np.ndarray | None = None,
    ) -> FuturePaths:
        """Covariate pieces of ``(T, T + horizon]`` for each customer (or ``rows``).

        ``table`` (default: the one joined) must cover the horizon, e.g.
        ``joined.extend(future_table)``; a :class:`~bayesclv.errors.DataValidationError`
        names the customers and periods it lacks.
        """
        if not (np.isfinite(horizon) and horizon >= 0):
            raise DataValidationError(f"horizon must be finite and >= 0, got {horizon!r}.")
        tab = self.table if table is None else table
        sel = np.arange(len(self.customer_id)) if rows is None else np.asarray(rows)
        dpu = DAYS_PER_UNIT[self.time_unit]
        ids = self.customer_id[sel]
        t0 = self.first_day[sel] + self.T[sel] * dpu  # calibration end, in days
        day0 = np.floor(t0 + 1e-9).astype(np.int64)
        day1 = np.ceil(t0 + horizon * dpu - 1e-9).astype(np.int64) - 1
        day1 = np.maximum(day1, day0)
        what = f"time-varying covariates for a {horizon:g}-{self.time_unit} horizon"
        trow, kk, valid, pstart, pend = tab._cells(ids, day0, day1, what)
        lo = np.maximum(pstart[kk] - t0[:, None], 0.0) / dpu
        hi = np.minimum(pend[kk] - t0[:, None], horizon * dpu) / dpu
        length = np.where(valid, np.maximum(hi - lo, 0.0), 0.0)
        z = tab.values[trow[:, None], kk]
        zp = _pick(z, tab.columns, self.purchase)
        zd = _pick(z, tab.columns, self.dropout)
        return FuturePaths(
            start=np.where(valid, lo, horizon),
            length=length,
            z_purchase=np.where(valid[..., None], zp, 0.0),
            z_dropout=np.where(valid[..., None], zd, 0.0),
            horizon=float(horizon),
        )


def _pick(z: np.ndarray, columns: tuple[str, ...], names: tuple[str, ...]) -> np.ndarray:
    idx = [columns.index(c) for c in names]
    return z[..., idx]


def _select(columns: tuple[str, ...], chosen: Sequence[str] | None, what: str) -> tuple[str, ...]:
    if chosen is None:
        return tuple(columns)
    chosen = tuple(chosen)
    unknown = [c for c in chosen if c not in columns]
    if unknown:
        raise DataValidationError(
            f"{what}: unknown covariate columns {unknown}; the table has {list(columns)}."
        )
    return chosen


def _repeat_days(
    rfm: RFMData,
    transactions: pd.DataFrame,
    customer_col: str,
    date_col: str,
    first_day: np.ndarray,
    cal_day: int,
) -> tuple[np.ndarray, np.ndarray]:
    """(customer row, day) of each repeat purchase occasion in the calibration period,
    checked against the summary's frequency and recency."""
    if not isinstance(transactions, pd.DataFrame):
        raise DataValidationError(
            "join_covariates: time-varying covariates need the transaction log (a DataFrame "
            "with customer and date columns) to place each purchase in its period; pass "
            "transactions=..."
        )
    _require_columns(transactions, [customer_col, date_col], "join_covariates(transactions)")
    merge = rfm.meta.get("merge_period", "day")
    if merge != "day":
        raise DataValidationError(
            f"join_covariates: the summary merged purchases by {merge!r}; time-varying "
            f"covariates need purchase days (rfm_summary(..., merge_period='day'))."
        )
    rows = pd.Index(rfm.customer_id).get_indexer(pd.Index(transactions[customer_col]))
    keep = rows >= 0
    days = _as_days(transactions[date_col].to_numpy()[keep])
    rows = rows[keep]
    occ = np.unique(np.column_stack([rows, days]), axis=0)
    rows, days = occ[:, 0], occ[:, 1]
    repeat = (days > first_day[rows]) & (days <= cal_day)
    rows, days = rows[repeat], days[repeat]
    count = np.bincount(rows, minlength=rfm.n_customers)
    dpu = DAYS_PER_UNIT[rfm.time_unit]
    last = np.full(rfm.n_customers, -1)
    np.maximum.at(last, rows, days)
    t_x = np.where(count > 0, (last - first_day) / dpu, 0.0)
    bad = (count != rfm.frequency) | (np.abs(t_x - rfm.recency) > 1e-6)
    if bad.any():
        raise DataValidationError(
            f"join_covariates: the transaction log does not match the summary for "
            f"{int(bad.sum())} customers ({describe_rows(rfm.customer_id[bad])}): their "
            f"repeat purchase days by the calibration end differ from frequency/recency. "
            f"Pass the same (cleaned) log rfm_summary was built from, with customer_col= "
            f"and date_col= naming its columns."
        )
    return rows, days


def covariate_design(rfm: RFMData):
    """The covariate design an RFMData carries (``meta["covariates"]``), or an error
    saying how to add one."""
    design = rfm.meta.get("covariates") if isinstance(rfm, RFMData) else None
    if design is None:
        raise DataValidationError(
            "this RFMData has no covariates; add them with "
            "bayesclv.covariates.join_covariates(rfm, table, ...)."
        )
    return design


def join_covariates(
    rfm: RFMData,
    covariates: StaticCovariates | TimeVaryingCovariates,
    *,
    purchase: Sequence[str] | None = None,
    dropout: Sequence[str] | None = None,
    transactions: pd.DataFrame | None = None,
    customer_col: str = "customer_id",
    date_col: str = "date",
    missing: str = "error",
) -> RFMData:
    """Join covariates to a customer summary by customer id.

    Parameters
    ----------
    rfm : RFMData
    covariates : StaticCovariates or TimeVaryingCovariates
    purchase, dropout : sequence of str, optional
        Columns acting on the purchase rate and on the dropout process (default: every
        column for both). An empty list means none.
    transactions : DataFrame, optional
        Required with time-varying covariates: the transaction log the summary was made
        from (``customer_col``, ``date_col``), to place each purchase in its period.
    missing : {"error", "drop"}
        Customers of ``rfm`` without covariates (or, time-varying, without every period
        from their first purchase through the calibration end): an error naming them, or
        their removal, counted in ``meta["customers_not_in_summary"]["no_covariates"]``
        and warned about.

    Returns
    -------
    RFMData
        The same customers (or those left), with the design in ``meta["covariates"]``:
        :class:`StaticDesign` or :class:`DynamicDesign`.
    """
    if not isinstance(rfm, RFMData):
        raise DataValidationError(
            f"join_covariates: expected an RFMData, got {type(rfm).__name__}."
        )
    if missing not in ("error", "drop"):
        raise DataValidationError(f"missing={missing!r}; use 'error' or 'drop'.")
    if not isinstance(covariates, (StaticCovariates, TimeVaryingCovariates)):
        raise DataValidationError(
            "join_covariates: covariates must be a StaticCovariates or TimeVaryingCovariates "
            f"(build one with .from_frame), got {type(covariates).__name__}."
        )
    purchase = _select(covariates.columns, purchase, "join_covariates(purchase=)")
    dropout = _select(covariates.columns, dropout, "join_covariates(dropout=)")
    if not purchase and not dropout:
        raise DataValidationError("join_covariates: no covariate for either process.")
    ids = rfm.customer_id
    present = pd.Index(ids).isin(pd.Index(covariates.customer_id))
    reason = "no covariates"
    if isinstance(covariates, TimeVaryingCovariates):
        if rfm.calibration_end is None:
            raise DataValidationError(
                "join_covariates: time-varying covariates need the calibration end date "
                "(an RFMData from rfm_summary carries it)."
            )
        present &= _dynamic_covered(rfm, covariates)
        reason = "no covariates for every period from the first purchase to the calibration end"
    if not present.all():
        if missing == "error":
            what = "time-varying" if isinstance(covariates, TimeVaryingCovariates) else "static"
            if isinstance(covariates, TimeVaryingCovariates):
                # re-run the coverage check to raise its detailed message
                _dynamic_cells(rfm, covariates)
            raise DataValidationError(
                f"join_covariates: {int((~present).sum())} customers have no {what} covariates "
                f"({describe_rows(ids[~present])}). Add their rows, or pass missing='drop' to "
                f"leave them out (they are then counted in meta['customers_not_in_summary'])."
            )
        dropped = ids[~present]
        warnings.warn(
            f"join_covariates: {len(dropped)} customers left out ({reason}): "
            f"{describe_rows(dropped)}.",
            UserWarning,
            stacklevel=2,
        )
        rfm = rfm.subset(present)
        gone = dict(rfm.meta.get("customers_not_in_summary", {}))
        gone["no_covariates"] = tuple(dropped.tolist())
        rfm = replace(rfm, meta={**rfm.meta, "customers_not_in_summary": gone})
    if isinstance(covariates, StaticCovariates):
        design = _static_design(rfm, covariates, purchase, dropout)
    else:
        design = _dynamic_design(rfm, covariates, purchase, dropout, transactions,
                                 customer_col, date_col)  # fmt: skip
    return replace(rfm, meta={**rfm.meta, "covariates": design})


def _static_design(rfm, cov: StaticCovariates, purchase, dropout) -> StaticDesign:
    rows = pd.Index(cov.customer_id).get_indexer(pd.Index(rfm.customer_id))
    values = cov.values[rows]
    zp = _pick(values, cov.columns, purchase).copy()
    zd = _pick(values, cov.columns, dropout).copy()
    for a in (zp, zd):
        a.setflags(write=False)
    return StaticDesign(
        customer_id=rfm.customer_id,
        purchase=purchase,
        dropout=dropout,
        z_purchase=zp,
        z_dropout=zd,
        scale_purchase=Standardization.fit(purchase, zp, "purchase covariates"),
        scale_dropout=Standardization.fit(dropout, zd, "dropout covariates"),
    )


def _first_and_end(rfm: RFMData) -> tuple[np.ndarray, int]:
    dpu = DAYS_PER_UNIT[rfm.time_unit]
    cal_day = int(_as_days([rfm.calibration_end])[0])
    first = np.rint(cal_day - rfm.T * dpu).astype(np.int64)
    return first, cal_day


def _dynamic_covered(rfm: RFMData, cov: TimeVaryingCovariates) -> np.ndarray:
    """Which customers have every period from their first purchase to the calibration end."""
    first, cal_day = _first_and_end(rfm)
    rows = pd.Index(cov.customer_id).get_indexer(pd.Index(rfm.customer_id))
    start = _as_days(cov.period_start)
    end = _as_days(cov.period_end)
    k0 = np.searchsorted(start, first, side="right") - 1
    k1 = np.searchsorted(start, np.full_like(first, cal_day), side="right") - 1
    ok = (rows >= 0) & (k0 >= 0) & (cal_day < end[-1])
    cum = np.concatenate([np.zeros((len(cov.customer_id), 1), dtype=np.int64),
                          np.cumsum(cov.covered, axis=1)], axis=1)  # fmt: skip
    r = np.where(ok, rows, 0)
    a, b = np.clip(k0, 0, None), np.clip(k1, 0, None)
    ok &= (cum[r, b + 1] - cum[r, a]) == (b - a + 1)
    return ok


def _dynamic_cells(rfm: RFMData, cov: TimeVaryingCovariates):
    first, cal_day = _first_and_end(rfm)
    return cov._cells(rfm.customer_id, first, np.full_like(first, cal_day),
                      "join_covariates(time-varying)")  # fmt: skip


def _dynamic_design(rfm, cov: TimeVaryingCovariates, purchase, dropout, transactions,
                    customer_col, date_col) -> DynamicDesign:  # fmt: skip
    dpu = DAYS_PER_UNIT[rfm.time_unit]
    first, cal_day = _first_and_end(rfm)
    trow, kk, valid, pstart, pend = _dynamic_cells(rfm, cov)
    lo = np.maximum(pstart[kk] - first[:, None], 0) / dpu
    hi = np.minimum(pend[kk] - first[:, None], rfm.T[:, None] * dpu) / dpu
    length = np.where(valid, np.maximum(hi - lo, 0.0), 0.0)
    start = np.where(valid, lo, rfm.T[:, None])
    z = cov.values[trow[:, None], kk]
    zp = np.where(valid[..., None], _pick(z, cov.columns, purchase), 0.0)
    zd = np.where(valid[..., None], _pick(z, cov.columns, dropout), 0.0)
    # covariates at each repeat purchase: the period its day falls in
    rows, days = _repeat_days(rfm, transactions, customer_col, date_col, first, cal_day)
    k = np.searchsorted(pstart, days, side="right") - 1
    at = np.zeros((rfm.n_customers, len(purchase)))
    if len(purchase):
        np.add.at(at, rows, _pick(cov.values[trow[rows], k], cov.columns, purchase))
    # standardisation over the (customer, period) cells the calibration uses
    used = valid & (length > 0)
    for a in (start, length, zp, zd, at):
        a.setflags(write=False)
    return DynamicDesign(
        customer_id=rfm.customer_id,
        purchase=purchase,
        dropout=dropout,
        time_unit=rfm.time_unit,
        first_day=first,
        calibration_end=pd.Timestamp(rfm.calibration_end),
        T=np.asarray(rfm.T),
        start=start,
        length=length,
        z_purchase=zp,
        z_dropout=zd,
        at_purchase=at,
        scale_purchase=Standardization.fit(purchase, zp[used], "purchase covariates"),
        scale_dropout=Standardization.fit(dropout, zd[used], "dropout covariates"),
        table=cov,
    )
