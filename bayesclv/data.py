"""Per-customer summaries (RFM) and the transaction data layer.

``RFMData`` is the one input every model builder takes. It is frozen and validated
once, in ``__post_init__``; its arrays are read-only.

Time is measured in an explicit unit (``time_unit``); the number of days in each unit
is given by :data:`DAYS_PER_UNIT` and never hidden inside a formula.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from types import MappingProxyType
from typing import Any

import numpy as np
import pandas as pd

from bayesclv.errors import DataValidationError, describe_rows

__all__ = [
    "DAYS_PER_UNIT",
    "RFMData",
    "CleaningReport",
    "validate_transactions",
    "rfm_summary",
    "round_times",
]

#: Length of each supported time unit in days. A month is a mean Gregorian month
#: (365.25 / 12 days) and a year a mean Julian year (365.25 days): stated here, once.
DAYS_PER_UNIT: dict[str, float] = {
    "day": 1.0,
    "week": 7.0,
    "month": 365.25 / 12.0,
    "year": 365.25,
}


def _as_readonly(values: Any, dtype: Any, name: str) -> np.ndarray:
    kind = getattr(values, "dtype", np.dtype(object)).kind
    if kind in "bcmM":  # casts that would "work" and lose meaning: True -> 1, 1+2j -> 1
        raise DataValidationError(
            f"RFMData: column '{name}' holds {values.dtype} values; pass real numbers."
        )
    try:
        arr = np.array(values, dtype=dtype, copy=True)
    except (TypeError, ValueError) as exc:
        raise DataValidationError(
            f"RFMData: column '{name}' cannot be converted to {np.dtype(dtype).name}: {exc}. "
            f"Pass numeric values."
        ) from exc
    if arr.ndim != 1:
        raise DataValidationError(
            f"RFMData: column '{name}' must be one-dimensional, got shape {arr.shape}."
        )
    arr.setflags(write=False)
    return arr


@dataclass(frozen=True, eq=False)
class RFMData:
    """Per-customer calibration summary: the input of every model builder.

    Parameters
    ----------
    customer_id : array of hashable, shape (n,)
        Unique customer identifiers.
    frequency : array of int, shape (n,)
        Number of repeat purchases in the calibration period (``x``): purchase
        occasions after the first one. Several transactions in one period count once.
    recency : array of float, shape (n,)
        Time from the first to the last purchase (``t_x``), in ``time_unit``; 0 where
        ``frequency`` is 0.
    T : array of float, shape (n,)
        Time from the first purchase to the end of the calibration period, in
        ``time_unit``.
    monetary_value : array of float, shape (n,)
        Mean amount of the repeat purchases (``zbar``), as the Gamma-Gamma model
        needs; 0.0 where ``frequency`` is 0 (the first purchase is excluded).
    segment : array of int, shape (n,)
        Segment code of each customer, an index into ``segment_names``.
    segment_names : tuple of str
        Names of the segments; ``("all",)`` when the data has no segment column.
    time_unit : str
        One of :data:`DAYS_PER_UNIT` (``"day"``, ``"week"``, ``"month"``, ``"year"``).
    first_purchase_value : array of float, optional
        Amount of each customer's first purchase (a covariate for some models).
    holdout_frequency, holdout_spend : array, optional
        Purchases and spend per customer in the holdout period, when the summary was
        made with a calibration/holdout split.
    holdout_length : float, optional
        Length of the holdout period in ``time_unit``.
    calibration_end : pandas.Timestamp, optional
        Last instant of the calibration period.
    litt : array of float, shape (n,), optional
        Sum of the logarithms of each customer's calibration inter-purchase times, in
        ``time_unit`` (BTYDplus's ``litt``); 0 where ``frequency`` is 0. The regularity
        families (BG/CNBD-k, MBG/CNBD-k) need it; :func:`rfm_summary` computes it.

    Notes
    -----
    Invariants checked once: equal lengths, unique ids, integer ``frequency >= 0``,
    ``0 <= recency <= T``, ``recency == 0`` where ``frequency == 0``, finite
    ``monetary_value >= 0`` where ``frequency > 0`` (a zero mean repeat spend is kept
    here; the Gamma-Gamma builder excludes and counts such customers), segment codes
    within range; ``litt`` (when given) finite, 0 where ``frequency`` is 0 and at most
    ``x log(t_x / x)`` (the log of the mean gap, times ``x``: the arithmetic mean of the
    gaps is at least their geometric mean).
    """

    customer_id: np.ndarray
    frequency: np.ndarray
    recency: np.ndarray
    T: np.ndarray
    monetary_value: np.ndarray
    segment: np.ndarray
    segment_names: tuple[str, ...] = ("all",)
    time_unit: str = "week"
    first_purchase_value: np.ndarray | None = None
    holdout_frequency: np.ndarray | None = None
    holdout_spend: np.ndarray | None = None
    holdout_length: float | None = None
    calibration_end: pd.Timestamp | None = None
    litt: np.ndarray | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:  # noqa: C901 - one linear list of checks
        set_ = object.__setattr__
        ids = np.asarray(self.customer_id)
        if ids.ndim != 1:
            raise DataValidationError("RFMData: 'customer_id' must be one-dimensional.")
        ids = ids.copy()
        ids.setflags(write=False)
        set_(self, "customer_id", ids)
        n = ids.shape[0]
        if n == 0:
            raise DataValidationError(
                "RFMData: no customers. Check that the transaction log is not empty and "
                "that the calibration period contains first purchases."
            )
        missing_id = pd.isna(ids) if ids.dtype == object or ids.dtype.kind == "f" else None
        if missing_id is not None and missing_id.any():
            raise DataValidationError(
                f"RFMData: 'customer_id' has {int(missing_id.sum())} missing values (rows "
                f"{describe_rows(np.flatnonzero(missing_id))}). Drop or fill them."
            )
        freq_raw = np.asarray(self.frequency)
        if freq_raw.dtype.kind == "f":
            # above 2**53 floats are not whole counts any more, and int64 casts overflow
            bad = ~np.isfinite(freq_raw) | (freq_raw != np.round(freq_raw))
            bad |= np.abs(np.where(bad, 0.0, freq_raw)) > 2.0**53
            if bad.any():
                raise DataValidationError(
                    f"RFMData: column 'frequency' must hold whole numbers; {int(bad.sum())} "
                    f"rows do not (customers {describe_rows(ids[bad])})."
                )
        set_(self, "frequency", _as_readonly(freq_raw, np.int64, "frequency"))
        for name in ("recency", "T", "monetary_value"):
            set_(self, name, _as_readonly(getattr(self, name), np.float64, name))
        set_(self, "segment", _as_readonly(self.segment, np.int64, "segment"))
        set_(self, "segment_names", tuple(str(s) for s in self.segment_names))
        for name in ("frequency", "recency", "T", "monetary_value", "segment"):
            if getattr(self, name).shape[0] != n:
                raise DataValidationError(
                    f"RFMData: column '{name}' has {getattr(self, name).shape[0]} rows but "
                    f"'customer_id' has {n}. All columns must have one row per customer."
                )
        for name in ("first_purchase_value", "holdout_frequency", "holdout_spend", "litt"):
            value = getattr(self, name)
            if value is not None:
                dtype = np.int64 if name == "holdout_frequency" else np.float64
                arr = _as_readonly(value, dtype, name)
                if arr.shape[0] != n:
                    raise DataValidationError(
                        f"RFMData: column '{name}' has {arr.shape[0]} rows, expected {n}."
                    )
                set_(self, name, arr)
        if self.time_unit not in DAYS_PER_UNIT:
            raise DataValidationError(
                f"RFMData: time_unit={self.time_unit!r} is not supported; use one of "
                f"{sorted(DAYS_PER_UNIT)}."
            )

        def check(mask: np.ndarray, message: str) -> None:
            if mask.any():
                raise DataValidationError(
                    f"RFMData: {message}: {int(mask.sum())} customers "
                    f"({describe_rows(ids[mask])})."
                )

        if pd.Index(ids).has_duplicates:
            dup = pd.Index(ids).duplicated(keep=False)
            check(dup, "'customer_id' must be unique; duplicated ids")
        check(self.frequency < 0, "'frequency' must be >= 0")
        check(~np.isfinite(self.recency) | (self.recency < 0), "'recency' must be finite and >= 0")
        check(~np.isfinite(self.T) | (self.T < 0), "'T' must be finite and >= 0")
        # A tiny tolerance absorbs rounding of recency and T to two decimals.
        check(self.recency > self.T + 1e-9, "'recency' must not exceed 'T'")
        check(
            (self.frequency == 0) & (self.recency != 0),
            "'recency' must be 0 where frequency is 0",
        )
        repeat = self.frequency > 0
        check(
            repeat & (~np.isfinite(self.monetary_value) | (self.monetary_value < 0)),
            "'monetary_value' must be finite and >= 0 for customers with repeat purchases",
        )
        check(
            ~repeat & (self.monetary_value != 0),
            "'monetary_value' must be 0 where frequency is 0 (it is the mean of repeat purchases)",
        )
        k = len(self.segment_names)
        if k == 0:
            raise DataValidationError("RFMData: 'segment_names' is empty.")
        if len(set(self.segment_names)) != k:
            raise DataValidationError(
                f"RFMData: 'segment_names' must be unique, got {self.segment_names}."
            )
        check((self.segment < 0) | (self.segment >= k), f"'segment' codes must be in 0..{k - 1}")
        if self.holdout_frequency is not None:
            check(self.holdout_frequency < 0, "'holdout_frequency' must be >= 0")
        if self.holdout_spend is not None:
            check(~np.isfinite(self.holdout_spend), "'holdout_spend' must be finite")
        if self.litt is not None:
            check(~np.isfinite(self.litt), "'litt' must be finite (inter-purchase times > 0)")
            check(~repeat & (self.litt != 0), "'litt' must be 0 where frequency is 0")
            # AM-GM: sum(log gaps) <= x log(mean gap); catches litt in another time unit
            x = np.maximum(self.frequency, 1).astype(np.float64)
            with np.errstate(divide="ignore", invalid="ignore"):
                bound = x * np.log(self.recency / x)
                within = self.litt <= bound + 1e-9 * np.maximum(1.0, np.abs(bound))
            check(
                repeat & ~within,
                "'litt' must be at most frequency * log(recency / frequency) (the sum of "
                "the log gaps of `frequency` gaps adding up to `recency`; is it in "
                "another time unit?)",
            )
        if self.holdout_length is not None:
            hl = float(self.holdout_length)
            if not np.isfinite(hl) or hl <= 0:
                raise DataValidationError(
                    f"RFMData: 'holdout_length' must be a positive number, "
                    f"got {self.holdout_length!r}."
                )
            set_(self, "holdout_length", hl)

    # ------------------------------------------------------------------ views
    @property
    def n_customers(self) -> int:
        return int(self.customer_id.shape[0])

    @property
    def n_segments(self) -> int:
        return len(self.segment_names)

    @property
    def has_holdout(self) -> bool:
        return self.holdout_frequency is not None

    def segment_sizes(self) -> pd.Series:
        """Number of customers per segment (every named segment, zeros included)."""
        counts = np.bincount(self.segment, minlength=self.n_segments)
        index = pd.Index(self.segment_names, name="segment")
        return pd.Series(counts, index=index, name="customers")

    def segment_labels(self) -> np.ndarray:
        """Segment name of each customer."""
        return np.asarray(self.segment_names, dtype=object)[self.segment]

    def to_frame(self) -> pd.DataFrame:
        """One row per customer, indexed by customer id."""
        cols: dict[str, Any] = {
            "frequency": self.frequency,
            "recency": self.recency,
            "T": self.T,
            "monetary_value": self.monetary_value,
            "segment": pd.Categorical.from_codes(self.segment, categories=list(self.segment_names)),
        }
        if self.first_purchase_value is not None:
            cols["first_purchase_value"] = self.first_purchase_value
        if self.holdout_frequency is not None:
            cols["holdout_frequency"] = self.holdout_frequency
        if self.holdout_spend is not None:
            cols["holdout_spend"] = self.holdout_spend
        if self.litt is not None:
            cols["litt"] = self.litt
        return pd.DataFrame(cols, index=pd.Index(self.customer_id, name="customer_id"))

    @classmethod
    def from_frame(
        cls,
        df: pd.DataFrame,
        *,
        customer_id: str | None = None,
        frequency: str = "frequency",
        recency: str = "recency",
        T: str = "T",
        monetary_value: str | None = "monetary_value",
        segment: str | None = None,
        time_unit: str = "week",
        litt: str | None = "litt",
        **extra: Any,
    ) -> RFMData:
        """Build from a per-customer table (for example a summary made elsewhere).

        ``customer_id=None`` takes the index. ``monetary_value=None`` means no spend
        data (all zeros; spend models will refuse it). ``segment=None`` puts every
        customer in one segment ``"all"``. ``litt`` names the column of the sums of log
        inter-purchase times, read when the table has it (``None``: never read).
        """
        if not isinstance(df, pd.DataFrame):
            raise DataValidationError(
                f"RFMData.from_frame expects a pandas DataFrame, got {type(df).__name__}."
            )
        needed = [c for c in (customer_id, frequency, recency, T, monetary_value, segment) if c]
        missing = [c for c in needed if c not in df.columns]
        if missing:
            raise DataValidationError(
                f"RFMData.from_frame: missing columns {missing}; the table has "
                f"{list(df.columns)[:20]}. Pass the right names, e.g. frequency='x', recency='t_x'."
            )
        ids = df.index.to_numpy() if customer_id is None else df[customer_id].to_numpy()
        if ids.dtype == object and pd.api.types.infer_dtype(ids, skipna=True) in (
            "mixed",
            "mixed-integer",
            "mixed-integer-float",
        ):
            kinds = sorted({type(v).__name__ for v in ids})
            problem = (
                f"mix types {kinds}, so 1 and '1' would be two customers"
                if len(kinds) > 1
                else f"are of type {kinds[0]}, not integers or strings"
            )
            raise DataValidationError(
                f"RFMData.from_frame: customer ids {problem}. Convert them to one type, e.g. "
                f"df.index = df.index.astype(str)."
            )

        def numeric(col: str, dtype: Any = np.float64) -> np.ndarray:
            values = df[col]
            if values.dtype == object:  # to_numeric reads True as 1 and drops 2j
                odd = np.array(
                    values.map(lambda v: isinstance(v, bool | np.bool_ | complex)), dtype=bool
                )
                if odd.any():
                    raise DataValidationError(
                        f"RFMData.from_frame: column '{col}' holds booleans or complex numbers "
                        f"(customers {describe_rows(ids[odd])}). Convert it to real numbers."
                    )
            if values.dtype == object or pd.api.types.is_string_dtype(values.dtype):
                parsed = pd.to_numeric(values, errors="coerce")
                bad = parsed.isna().to_numpy() & values.notna().to_numpy()
                if bad.any():
                    raise DataValidationError(
                        f"RFMData.from_frame: column '{col}' has {int(bad.sum())} values that "
                        f"are not numbers ({describe_rows(values[bad].astype(str).to_numpy())}"
                        f"; customers {describe_rows(ids[bad])}). Convert it to numbers."
                    )
                values = parsed
            if isinstance(values.dtype, np.dtype) and values.dtype.kind in "bcmM":
                return values.to_numpy()  # refused, with the column's name, by RFMData
            if pd.api.types.is_integer_dtype(values.dtype) and not values.hasnans:
                return values.to_numpy(dtype=np.int64)
            return values.to_numpy(dtype=np.float64, na_value=np.nan)

        mv = np.zeros(len(df)) if monetary_value is None else numeric(monetary_value)
        if segment is None:
            codes = np.zeros(len(df), dtype=np.int64)
            names: tuple[str, ...] = ("all",)
        else:
            seg = df[segment]
            if seg.isna().any():
                bad = seg.isna().to_numpy()
                raise DataValidationError(
                    f"RFMData.from_frame: column '{segment}' has {int(bad.sum())} missing values "
                    f"(customers {describe_rows(ids[bad])}). Fill them, e.g. with 'unknown'."
                )
            cat = pd.Categorical(seg.astype(str))
            codes = cat.codes.astype(np.int64)
            names = tuple(str(c) for c in cat.categories)
        return cls(
            customer_id=ids,
            frequency=numeric(frequency),
            recency=numeric(recency),
            T=numeric(T),
            monetary_value=mv,
            segment=codes,
            segment_names=names,
            time_unit=time_unit,
            **({"litt": numeric(litt)} if litt and litt in df.columns else {}),
            **extra,
        )

    def subset(self, mask: np.ndarray) -> RFMData:
        """The customers where ``mask`` is true (segment names are kept)."""
        mask = np.asarray(mask)

        def pick(a: np.ndarray | None) -> np.ndarray | None:
            return None if a is None else a[mask]

        return RFMData(
            customer_id=self.customer_id[mask],
            frequency=self.frequency[mask],
            recency=self.recency[mask],
            T=self.T[mask],
            monetary_value=self.monetary_value[mask],
            segment=self.segment[mask],
            segment_names=self.segment_names,
            time_unit=self.time_unit,
            first_purchase_value=pick(self.first_purchase_value),
            holdout_frequency=pick(self.holdout_frequency),
            holdout_spend=pick(self.holdout_spend),
            holdout_length=self.holdout_length,
            calibration_end=self.calibration_end,
            litt=pick(self.litt),
            meta=dict(self.meta),
        )

    def __repr__(self) -> str:
        return (
            f"RFMData(n_customers={self.n_customers}, segments={list(self.segment_names)}, "
            f"time_unit={self.time_unit!r}, repeat_buyers={int((self.frequency > 0).sum())}, "
            f"holdout={'yes' if self.has_holdout else 'no'})"
        )


def round_times(rfm: RFMData, step: float = 1.0) -> RFMData:
    """The same customers with recency and age rounded to a grid of ``step`` time units.

    The models' cost grows with the number of *distinct* customer rows
    ``(segment, frequency, recency, T)``, and the builders compute each distinct row
    once. Times measured to the day (or finer) make almost every row distinct; on a
    coarser grid many customers share a row. Measured on 1M simulated customers over
    one year: about 315K distinct rows at day resolution, about 31K at week resolution
    (see benchmarks/bench_laplace.py). This is an approximation the user opts into:
    each recency and age moves by at most ``step / 2`` (ages below ``step / 2`` become
    ``step``, so every age stays positive), which matters little when ``step`` is
    small next to the typical time between purchases.

    ``meta["time_rounding"]`` records ``step``; frequencies, spend, segments, holdout
    columns and customer ids are unchanged, so every customer that goes in comes out.
    ``litt`` (the sum of log inter-purchase times of the CNBD-k families) cannot be
    rounded consistently with the recency and is dropped (``None``): those families
    then refuse the data with a message naming it.
    """
    from dataclasses import replace

    step = float(step)
    if not (np.isfinite(step) and step > 0):
        raise DataValidationError(f"round_times needs a finite step > 0, got {step}.")

    def grid(t: np.ndarray) -> np.ndarray:
        return np.floor(t / step + 0.5) * step

    T = np.maximum(grid(rfm.T), step)
    recency = np.minimum(grid(rfm.recency), T)
    return replace(rfm, recency=recency, T=T, litt=None,
                   meta={**rfm.meta, "time_rounding": step})


# =====================================================================================
# Transaction log: validation and cleaning
# =====================================================================================

_NEGATIVE_OPTIONS = ("error", "drop")
_ZERO_OPTIONS = ("keep", "drop")
_DUPLICATE_OPTIONS = ("keep", "drop")
_AFTER_END_OPTIONS = ("error", "drop")
_MERGE_PERIODS = ("day", "week", "month", "none")

#: Reasons a whole customer can disappear during cleaning, in the order rows are
#: assigned to them (a row that is both negative and after the end counts as negative).
_REASONS = ("negative_amount", "zero_amount", "after_observation_end", "exact_duplicate")

#: Key of ``DataFrame.attrs`` under which :func:`validate_transactions` leaves its report,
#: so that :func:`rfm_summary` does not validate the same frame twice.
_REPORT_ATTR = "bayesclv_cleaning_report"


def _freeze_groups(groups: Mapping[str, Any] | None) -> Mapping[str, tuple]:
    return MappingProxyType({str(k): tuple(v) for k, v in (groups or {}).items()})


def _short_ids(ids: tuple, limit: int = 5) -> str:
    return describe_rows(ids, limit) if ids else "none"


@dataclass(frozen=True)
class CleaningReport:
    """What :func:`validate_transactions` (and :func:`rfm_summary`) removed, and why.

    Every row that goes in either comes out or is counted under exactly one reason, so
    ``rows_in == rows_out + negative_removed + zero_removed + after_end_removed +
    duplicates_removed``. Customers whose every row was removed are listed by id in
    ``customers_removed`` under the reason(s) of their rows.

    Parameters
    ----------
    rows_in, rows_out : int
        Transaction rows before and after cleaning.
    negative_removed, zero_removed, after_end_removed, duplicates_removed : int
        Rows removed because the amount was negative (returns, refunds), zero, the date
        was after ``observation_end``, or the row repeated an earlier row exactly
        (same customer, timestamp, amount and segment; the first copy is kept).
    duplicates_found : int
        Exact duplicate rows present in the input (kept when ``duplicates="keep"``).
    customers_in, customers_out : int
        Distinct customers before and after cleaning.
    customers_removed : mapping of str to tuple
        Reason -> ids of customers who lost all their rows. A customer whose rows were
        removed for several reasons is listed under the reasons joined by ``"+"``.
    excluded_from_summary : mapping of str to tuple
        Reason -> ids of customers present in the clean log but left out of the
        calibration summary by :func:`rfm_summary` (for example
        ``"first_purchase_after_calibration_end"``).
    notes : tuple of str
        Conversions applied (time zones, id parsing) and the options used.
    """

    rows_in: int
    rows_out: int
    negative_removed: int = 0
    zero_removed: int = 0
    after_end_removed: int = 0
    duplicates_removed: int = 0
    duplicates_found: int = 0
    customers_in: int = 0
    customers_out: int = 0
    customers_removed: Mapping[str, tuple] = field(default_factory=dict)
    excluded_from_summary: Mapping[str, tuple] = field(default_factory=dict)
    notes: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "customers_removed", _freeze_groups(self.customers_removed))
        object.__setattr__(
            self, "excluded_from_summary", _freeze_groups(self.excluded_from_summary)
        )
        object.__setattr__(self, "notes", tuple(str(n) for n in self.notes))

    # The report is immutable: copies may share it. pandas deep-copies ``DataFrame.attrs``
    # on every operation, so this also keeps a large report from being copied each time.
    def __copy__(self) -> CleaningReport:
        return self

    def __deepcopy__(self, memo: dict) -> CleaningReport:
        return self

    def __reduce__(self) -> tuple:
        # mappingproxy cannot be pickled; rebuild from plain dicts.
        state = {f.name: getattr(self, f.name) for f in fields(self)}
        for name in ("customers_removed", "excluded_from_summary"):
            state[name] = dict(state[name])
        return (_rebuild_report, (state,))

    @property
    def rows_removed(self) -> int:
        return self.rows_in - self.rows_out

    @property
    def customers_in_summary(self) -> int:
        """Customers left after cleaning and after the summary's exclusions."""
        return self.customers_out - sum(len(v) for v in self.excluded_from_summary.values())

    def to_dict(self) -> dict[str, Any]:
        """Plain, JSON-friendly dictionary (ids converted to Python scalars)."""

        def plain(ids: tuple) -> list:
            return [x.item() if isinstance(x, np.generic) else x for x in ids]

        return {
            "rows_in": self.rows_in,
            "rows_out": self.rows_out,
            "negative_removed": self.negative_removed,
            "zero_removed": self.zero_removed,
            "after_end_removed": self.after_end_removed,
            "duplicates_removed": self.duplicates_removed,
            "duplicates_found": self.duplicates_found,
            "customers_in": self.customers_in,
            "customers_out": self.customers_out,
            "customers_removed": {k: plain(v) for k, v in self.customers_removed.items()},
            "excluded_from_summary": {
                k: plain(v) for k, v in self.excluded_from_summary.items()
            },
            "notes": list(self.notes),
        }

    def __str__(self) -> str:
        lines = [
            "Cleaning report",
            f"  rows:      {self.rows_in:,} in -> {self.rows_out:,} out "
            f"({self.rows_removed:,} removed)",
            f"    negative amount:       {self.negative_removed:,}",
            f"    zero amount:           {self.zero_removed:,}",
            f"    after observation_end: {self.after_end_removed:,}",
            f"    exact duplicates:      {self.duplicates_removed:,} "
            f"(found {self.duplicates_found:,})",
            f"  customers: {self.customers_in:,} in -> {self.customers_out:,} out",
        ]
        for reason, ids in self.customers_removed.items():
            lines.append(f"    removed ({reason}): {len(ids):,} [{_short_ids(ids)}]")
        for reason, ids in self.excluded_from_summary.items():
            lines.append(
                f"    not in the summary ({reason}): {len(ids):,} [{_short_ids(ids)}]"
            )
        if self.excluded_from_summary:
            lines.append(f"  customers in the summary: {self.customers_in_summary:,}")
        lines.extend(f"  note: {n}" for n in self.notes)
        return "\n".join(lines)


def _rebuild_report(state: dict[str, Any]) -> CleaningReport:
    return CleaningReport(**state)


def _fail(col: str, problem: str, mask: np.ndarray, labels: pd.Index, fix: str) -> None:
    """Raise a DataValidationError naming the column, the count, the first rows and a fix."""
    n = int(mask.sum())
    raise DataValidationError(
        f"column '{col}': {n:,} row{'s' if n != 1 else ''} {problem} "
        f"(first rows: {describe_rows(labels[mask])}). {fix}"
    )


def _decimal_comma_numbers(values: pd.Series, decimal: str) -> pd.Series:
    """Text amounts written with ``decimal`` (``","``) as floats: ``230,30`` -> 230.3,
    ``1.230,50`` -> 1230.5 (a ``.``, space or no-break space between groups of three
    digits is a thousands separator). Text of any other shape (``12.5``) is an error
    naming the rows, never a guess; missing cells stay missing for the amount check."""
    if decimal == "." or not (values.dtype == object or pd.api.types.is_string_dtype(values)):
        return values
    text = np.array(
        [v.strip() if isinstance(v, str) else v for v in values.tolist()], dtype=object
    )
    d = re.escape(decimal)
    pattern = re.compile(rf"[+-]?(?:\d{{1,3}}(?:[. \u00a0]\d{{3}})+|\d+)(?:{d}\d+)?")
    ok = np.array([isinstance(v, str) and pattern.fullmatch(v) is not None for v in text],
                  dtype=bool)
    text_cells = np.array([isinstance(v, str) for v in text], dtype=bool)
    if (text_cells & ~ok).any():
        bad = text_cells & ~ok
        _fail(
            str(values.name),
            f"are not amounts written with the decimal mark {decimal!r} (values: "
            f"{describe_rows(text[bad])})",
            bad,
            values.index,
            "Fix those cells, or pass the decimal mark the file uses (decimal='.').",
        )
    out = np.full(len(text), np.nan)
    out[ok] = [float(re.sub(r"[. \u00a0]", "", v).replace(decimal, ".")) for v in text[ok]]
    numeric = ~text_cells & pd.notna(text)
    out[numeric] = pd.to_numeric(pd.Series(text[numeric]), errors="coerce").to_numpy(float)
    return pd.Series(out, index=values.index, name=values.name)


def _separator_hint(header: list[str], sep: str) -> str:
    """When a CSV header read with ``sep`` is one column holding another separator."""
    if len(header) != 1:
        return ""
    for other, name in ((";", "semicolon"), ("\t", "tab"), ("|", "pipe"), (",", "comma")):
        if other != sep and other in str(header[0]):
            flag = "'\\t'" if other == "\t" else f"'{other}'"
            return (
                f" The header reads as one column {header[0]!r}: the file seems to use "
                f"{name}s between fields; pass sep={flag} (--sep {flag} on the command line)."
            )
    return ""


def _read_input(
    data: Any,
    columns: list[str],
    id_col: str,
    date_col: str,
    encoding: str = "utf-8",
    *,
    amount_col: str | None = None,
    sep: str | None = None,
    decimal: str = ".",
) -> pd.DataFrame:
    """A DataFrame from a DataFrame, a CSV, Excel (.xlsx) or Parquet path (no copy of a
    DataFrame's data). ``sep`` is the CSV field separator (default ``","``, tab for
    ``.tsv``); ``decimal`` the decimal mark of text amounts (``","`` for 230,30)."""
    if isinstance(data, pd.DataFrame):
        if amount_col is not None and decimal != "." and amount_col in data.columns:
            data = data.assign(**{amount_col: _decimal_comma_numbers(data[amount_col], decimal)})
        return data
    if not isinstance(data, str | Path):
        raise DataValidationError(
            f"transactions must be a pandas DataFrame or the path of a CSV, Excel or Parquet "
            f"file, got {type(data).__name__}."
        )
    path = Path(data)
    if not path.is_file():
        raise DataValidationError(f"transaction file not found: '{path}'. Check the path.")
    suffixes = [s.lower() for s in path.suffixes]
    frame = None
    try:
        if suffixes and suffixes[-1] in (".parquet", ".pq"):
            import pyarrow.parquet as pq

            names = pq.read_schema(path).names
            missing = [c for c in columns if c not in names]
            if missing:
                _missing_columns(missing, names)
            frame = pd.read_parquet(path, columns=columns)
        elif suffixes and suffixes[-1] in (".xlsx", ".xlsm"):
            # the first sheet; ids as text (as for CSV), dates as Excel stores them
            header = pd.read_excel(path, nrows=0).columns
            missing = [c for c in columns if c not in header]
            if missing:
                _missing_columns(missing, list(header))
            dtype = {id_col: str} if decimal == "." or amount_col is None else {
                id_col: str, amount_col: str}
            frame = pd.read_excel(path, usecols=columns, dtype=dtype)
            frame = _ids_to_int_if_canonical(frame, id_col)
        elif suffixes and suffixes[-1] == ".xls":
            raise DataValidationError(
                f"'{path}' is an old-style Excel .xls file, which is not read; save it as "
                f".xlsx (or .csv) in Excel and pass that file."
            )
        elif ".csv" in suffixes or ".txt" in suffixes or ".tsv" in suffixes:
            if sep is None:
                sep = "\t" if ".tsv" in suffixes else ","
            header = pd.read_csv(path, sep=sep, nrows=0, encoding=encoding).columns
            missing = [c for c in columns if c not in header]
            if missing:
                try:
                    _missing_columns(missing, list(header))
                except DataValidationError as exc:
                    raise DataValidationError(
                        str(exc) + _separator_hint(list(header), sep)
                    ) from None
            # Ids are read as text so that zero-padded ids ("007" vs "7") stay distinct;
            # ids that are all plain integers are turned back into integers below. Dates
            # are read as text and parsed by _parse_dates, as for a DataFrame. The pyarrow
            # parser, unlike pandas' C parser with usecols, refuses a row with more fields
            # than the header: "1,2024-01-01,1,50" (an unquoted decimal comma) would
            # otherwise be read silently as an amount of 1. With a decimal comma the
            # amounts are read as text (pyarrow would read "1.230" as 1.23) and converted
            # by _decimal_comma_numbers.
            dtype = {id_col: str, date_col: str}
            if decimal != "." and amount_col is not None:
                dtype[amount_col] = str
            frame = pd.read_csv(
                path,
                sep=sep,
                usecols=columns,
                dtype=dtype,
                encoding=encoding,
                engine="pyarrow",
            )
            frame = _ids_to_int_if_canonical(frame, id_col)
    except DataValidationError:
        raise
    except Exception as exc:  # a parser error from pandas/pyarrow: say which file
        text = str(exc)
        if isinstance(exc, UnicodeDecodeError) or "UTF8" in text or "utf-8" in text:
            raise DataValidationError(
                f"could not read transaction file '{path}' as {encoding} text ({text}). "
                f"Pass the file's encoding, e.g. encoding='latin-1' (or --encoding latin-1 "
                f"on the command line); Excel on Windows often writes 'cp1252'."
            ) from exc
        if "Expected" in text and "columns" in text:
            raise DataValidationError(
                f"could not read transaction file '{path}': a row has a different number of "
                f"fields than the header ({text}). Quote fields that contain the separator "
                f"(e.g. a decimal comma in an amount: or pass sep=';' and decimal=',', "
                f"--sep ';' --decimal ',' on the command line) or fix the row."
            ) from exc
        raise DataValidationError(
            f"could not read transaction file '{path}': {type(exc).__name__}: {exc}"
        ) from exc
    if frame is None:
        raise DataValidationError(
            f"cannot tell the format of '{path}' from its name; use a .csv (optionally .gz), "
            f".xlsx or .parquet file, or read it yourself and pass a DataFrame."
        )
    if amount_col is not None and decimal != "." and amount_col in frame.columns:
        frame[amount_col] = _decimal_comma_numbers(frame[amount_col], decimal)
    return frame


def _ids_to_int_if_canonical(frame: pd.DataFrame, col: str) -> pd.DataFrame:
    """Text ids to int64 only if every id is written exactly as Python prints its integer
    (no sign on zero, no leading zeros, no '+', no spaces, at most 18 digits).

    Then the conversion is one-to-one: two different ids can never become one number.
    '0' and '-0', or '01' and '1', are two customers, so a column holding either form
    stays text.
    """
    ids = frame[col]
    if ids.isna().any() or len(ids) == 0:
        return frame
    if ids.str.fullmatch(r"0|-?[1-9][0-9]{0,17}").all():
        frame[col] = ids.astype(np.int64)
    return frame


def _missing_columns(missing: list[str], existing: list[str]) -> None:
    raise DataValidationError(
        f"missing column{'s' if len(missing) > 1 else ''} {missing}; the data has columns "
        f"{list(existing)[:30]}. Pass the right names, e.g. customer_col='CustomerID', "
        f"date_col='InvoiceDate', amount_col='Revenue'."
    )


_OK_ID_KINDS = {"integer", "string", "floating", "categorical", "empty"}


def _check_labels(values: pd.Series, col: str, labels: pd.Index, what: str) -> None:
    """Missing values and mixed types in an id or segment column."""
    missing = values.isna().to_numpy()
    if missing.any():
        fix = (
            "Drop these rows or fill the ids before calling validate_transactions."
            if what == "id"
            else "Fill them with a segment name such as 'unknown'."
        )
        _fail(col, f"have a missing {what}", missing, labels, fix)
    if values.dtype != object:
        return
    kind = pd.api.types.infer_dtype(values, skipna=True)
    if kind in _OK_ID_KINDS or (what == "segment" and kind == "boolean"):
        return
    types = values.map(lambda v: type(v).__name__)
    counts = types.value_counts()
    if len(counts) > 1:
        minority = (types != counts.index[0]).to_numpy()
        mix = ", ".join(f"{t} ({c:,} rows)" for t, c in counts.items())
        _fail(
            col,
            f"have a {what} whose type differs from the rest: the column mixes {mix}, so "
            f"1 and '1' would be two different customers",
            minority,
            labels,
            f"Convert the column to one type, e.g. df['{col}'] = df['{col}'].astype(str).",
        )
    raise DataValidationError(
        f"column '{col}': {what}s of type {counts.index[0]} are not supported; use integers "
        f"or strings, e.g. df['{col}'] = df['{col}'].astype(str)."
    )


def _is_tz_aware(values: pd.Series) -> np.ndarray:
    """Per-row flag: does the raw value carry a time zone or UTC offset?"""
    if values.dtype == object:
        has_tz = np.array(values.map(lambda v: getattr(v, "tzinfo", None) is not None), bool)
        text = np.array(values.map(lambda v: isinstance(v, str)), dtype=bool)
    else:
        has_tz = np.zeros(len(values), dtype=bool)
        text = np.ones(len(values), dtype=bool)
    if text.any():
        pattern = r"(?:Z|[+-]\d{2}:?\d{2}|UTC|GMT)\s*$"
        as_text = values[text].astype(str).str.strip()
        has_tz[text] = as_text.str.contains(pattern, regex=True).to_numpy()
    return has_tz


#: Dates that fit in ``datetime64[ns]`` (1677-09-22 to 2262-04-11): outside, a year such
#: as 1500 or 3000 is almost surely a typo, and a cast to ns would wrap around silently.
_FIRST_NS_DAY = np.datetime64("1677-09-22", "D")
_LAST_NS_DAY = np.datetime64("2262-04-10", "D")


def _to_ns(parsed: Any, col: str, labels: pd.Index) -> np.ndarray:
    """Naive dates (any datetime64 unit) as datetime64[ns], refusing dates out of range.

    numpy's unit cast does not check for overflow: 1500-01-01 in microseconds cast to
    nanoseconds becomes a date in 2084 without a word.
    """
    arr = np.asarray(parsed)
    if arr.dtype.kind != "M":
        arr = pd.Series(parsed).to_numpy()
    day = arr.astype("datetime64[D]")
    out = (day < _FIRST_NS_DAY) | (day > _LAST_NS_DAY)
    if out.any():
        shown = describe_rows([str(d) for d in day[out]])
        _fail(
            col,
            f"have dates outside 1677-09-22..2262-04-10 (values: {shown}), most likely typos "
            f"such as a year 1500 or 3000",
            out,
            labels,
            "Fix or drop these rows.",
        )
    return arr.astype("datetime64[ns]")


def _ambiguous_day_month(values: pd.Series, parsed: pd.Series, col: str) -> None:
    """Refuse dates that read as well day first as month first, e.g. 03/04/2024.

    Without a format pandas infers one from the first date, month first when it can
    (03/04/2024 is 4 March). If every day in the column is 12 or less, the day-first
    reading is as valid and gives other dates: a day-first file read month first,
    silently. Year-first dates (ISO 8601, 2024-03-04) and month names are unambiguous.
    """
    import re

    from pandas.tseries.api import guess_datetime_format

    text = values[values.map(lambda v: isinstance(v, str))]
    if text.empty or not isinstance(parsed, pd.Series):
        return
    first = str(text.iloc[0]).strip()
    fmt = guess_datetime_format(first)
    if fmt is not None:
        if "%d" not in fmt or "%m" not in fmt:
            return
        year = min((fmt.find(y) for y in ("%Y", "%y") if y in fmt), default=-1)
        if 0 <= year < min(fmt.find("%m"), fmt.find("%d")):
            return
    elif re.match(r"\d{4}", first) or re.search(r"[A-Za-z]{3}", first):
        return
    day, month = parsed.dt.day, parsed.dt.month
    if day.max() > 12 or (day == month).all():
        return
    example = str(values[(day != month).to_numpy()].iloc[0]).strip()
    read = parsed[(day != month).to_numpy()].iloc[0]
    other = read.replace(day=read.month, month=read.day)
    day_first = (
        fmt.replace("%d", "\0").replace("%m", "%d").replace("\0", "%m") if fmt else "%d/%m/%y"
    )
    month_first = fmt or "%m/%d/%y"
    raise DataValidationError(
        f"column '{col}': the dates are ambiguous: every day is 12 or less, so "
        f"'{example}' is {read.day} {read:%B %Y} read month first and {other.day} "
        f"{other:%B %Y} read day first. Say how the dates are written: pass "
        f"date_format='{day_first}' (day first) or date_format='{month_first}' (month "
        f"first); on the command line --date-format '{day_first}'."
    )


def _parse_dates(
    values: pd.Series, col: str, labels: pd.Index, date_format: str | None, notes: list[str]
) -> np.ndarray:
    """Naive datetime64[ns] array; tz-aware input is converted to UTC (noted)."""
    missing = values.isna().to_numpy()
    if missing.any():
        _fail(col, "have a missing date", missing, labels, "Drop or fill these rows.")
    if isinstance(values.dtype, pd.PeriodDtype):
        values = values.dt.to_timestamp()
    if isinstance(values.dtype, pd.DatetimeTZDtype) or (
        isinstance(values.dtype, pd.ArrowDtype) and getattr(values.dtype.pyarrow_dtype, "tz", None)
    ):
        notes.append(f"'{col}' had time zone {values.dt.tz}; converted to UTC, then tz dropped.")
        return _to_ns(values.dt.tz_convert("UTC").dt.tz_localize(None), col, labels)
    if pd.api.types.is_datetime64_any_dtype(values.dtype):
        return _to_ns(values, col, labels)
    if pd.api.types.is_numeric_dtype(values.dtype) or pd.api.types.is_bool_dtype(values.dtype):
        if date_format is None:
            raise DataValidationError(
                f"column '{col}' holds numbers ({values.dtype}), not dates. If they are dates "
                f"written as digits pass date_format, e.g. date_format='%Y%m%d'; if they are "
                f"Unix timestamps convert them first with pd.to_datetime(df['{col}'], unit='s')."
            )
        if pd.api.types.is_float_dtype(values.dtype):
            frac = values.to_numpy(dtype=np.float64) % 1 != 0
            if frac.any():
                _fail(
                    col,
                    "are not whole numbers, so not dates written as digits",
                    frac,
                    labels,
                    "Fix these rows or convert the column yourself with pd.to_datetime.",
                )
        values = values.astype(np.int64).astype(str)
    mixed_offsets = False
    try:
        parsed = pd.to_datetime(values, format=date_format, errors="coerce")
    except (ValueError, TypeError) as exc:
        if "mixed time" not in str(exc).lower() and "mixed timezones" not in str(exc).lower():
            raise DataValidationError(
                f"column '{col}': dates could not be parsed ({exc}). Pass date_format, e.g. "
                f"date_format='%Y-%m-%d'."
            ) from exc
        # Several UTC offsets: legitimate for tz-aware data; convert all to UTC below,
        # but first make sure no naive date hides among them (it would be read as UTC).
        mixed_offsets = True
        parsed = pd.to_datetime(values, format=date_format, errors="coerce", utc=True)
    bad = parsed.isna().to_numpy()
    aware = None
    if bad.any():
        # pandas turns the odd one out of a tz-aware/naive mix, and of dates in several
        # time zones, into NaT: tell those apart from a date that is simply unreadable.
        aware = _is_tz_aware(values)
        if aware.all() and not mixed_offsets:  # all zoned, in several zones: use UTC
            mixed_offsets = True
            parsed = pd.to_datetime(values, format=date_format, errors="coerce", utc=True)
            bad = parsed.isna().to_numpy()
    if bad.any() or mixed_offsets:
        aware = _is_tz_aware(values) if aware is None else aware
        if aware.any() and not aware.all():
            minority = aware if aware.sum() <= (~aware).sum() else ~aware
            _fail(
                col,
                f"{'carry' if minority is aware else 'lack'} a time zone while "
                f"{int((~minority).sum()):,} other rows "
                f"{'do not' if minority is aware else 'do'} (a tz-aware/naive mix)",
                minority,
                labels,
                "Make them consistent: localise the naive dates (e.g. "
                "pd.to_datetime(s).dt.tz_localize('UTC')) or strip the offsets.",
            )
        if bad.any() and date_format is None:
            # pandas infers one format from the first value; ISO 8601 dates written with
            # and without seconds or offsets are still unambiguous (no tz mix: checked).
            try:
                retry = pd.to_datetime(
                    values, format="ISO8601", errors="coerce", utc=bool(aware.all())
                )
            except (ValueError, TypeError):
                retry = None
            if retry is not None and not retry.isna().any():
                parsed, bad = retry, np.zeros(len(values), dtype=bool)
        if bad.any():
            shown = describe_rows(values[bad].astype(str).to_numpy())
            _fail(
                col,
                f"could not be read as dates (values: {shown})",
                bad,
                labels,
                "Fix or drop these rows, or pass date_format (e.g. date_format='%d/%m/%Y', "
                "or date_format='mixed' to guess each row's format separately).",
            )
    if date_format is None:
        _ambiguous_day_month(values, parsed, col)
    if isinstance(parsed.dtype, pd.DatetimeTZDtype):
        notes.append(f"'{col}' had time zones/offsets; converted to UTC, then tz dropped.")
        parsed = parsed.dt.tz_convert("UTC").dt.tz_localize(None)
    return _to_ns(parsed, col, labels)


def _parse_amounts(values: pd.Series, col: str, labels: pd.Index) -> np.ndarray:
    if pd.api.types.is_bool_dtype(values.dtype):
        raise DataValidationError(
            f"column '{col}' is boolean; amounts must be numbers (money spent per row)."
        )
    kind = values.dtype.kind if isinstance(values.dtype, np.dtype) else ""
    if kind in "cmM" and kind:  # complex, timedelta, datetime: not money, never cast
        raise DataValidationError(
            f"column '{col}' holds {values.dtype} values; amounts must be real numbers "
            f"(money spent per row). Check that amount_col names the right column."
        )
    if values.dtype == object:
        # pd.to_numeric would read True as 1 and drop the imaginary part of 1+2j.
        odd = values.map(lambda v: isinstance(v, bool | np.bool_ | complex | np.complexfloating))
        odd = odd.to_numpy(dtype=bool)
        if odd.any():
            shown = describe_rows(values[odd].astype(str).to_numpy())
            _fail(
                col,
                f"are booleans or complex numbers, not amounts (values: {shown})",
                odd,
                labels,
                "Convert the column to real numbers.",
            )
    missing = values.isna().to_numpy()
    if missing.any():
        _fail(
            col,
            "have a missing (NaN) amount",
            missing,
            labels,
            "Fill them with the amount spent or drop those rows; rows are never dropped for you.",
        )
    if pd.api.types.is_numeric_dtype(values.dtype):
        amount = values.to_numpy(dtype=np.float64, na_value=np.nan)
    else:
        amount = pd.to_numeric(values, errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
        bad = np.isnan(amount)
        if bad.any():
            shown = describe_rows(values[bad].astype(str).to_numpy())
            _fail(
                col,
                f"are not numbers (values: {shown})",
                bad,
                labels,
                "If the amounts use a decimal comma (230,30), pass decimal=','; "
                "otherwise strip currency symbols and thousands separators first, e.g. "
                f"pd.to_numeric(df['{col}'].str.replace('[$,]', '', regex=True)) for "
                "$1,230.50.",
            )
    inf = ~np.isfinite(amount)
    if inf.any():
        _fail(col, "have an infinite amount", inf, labels, "Fix or drop these rows.")
    return amount + 0.0  # turns -0.0 into 0.0 so that duplicates compare equal


def _as_day(value: Any, name: str) -> np.datetime64:
    """A date argument (str, date, Timestamp) as a day; it is an inclusive last day."""
    if isinstance(value, int | float | np.number | bool | np.bool_):
        raise DataValidationError(
            f"{name}={value!r} is a number, not a date; pass e.g. {name}='1997-09-30'."
        )
    try:
        ts = pd.Timestamp(value)
    except (ValueError, TypeError, OverflowError) as exc:
        raise DataValidationError(
            f"{name}={value!r} is not a date; pass e.g. {name}='1997-09-30'."
        ) from exc
    if ts is pd.NaT:
        raise DataValidationError(f"{name} is missing (NaT); pass a date such as '1997-09-30'.")
    if ts.tzinfo is not None:
        ts = ts.tz_convert("UTC").tz_localize(None)
    if ts != ts.normalize():
        raise DataValidationError(
            f"{name}={value!r} has a time of day; pass a date (the last day included, "
            f"e.g. {name}='{ts.date()}')."
        )
    return np.datetime64(ts.date(), "D")


def _mix64(x: np.ndarray) -> np.ndarray:
    """splitmix64 finaliser (Steele et al. 2014): a cheap, well-mixed 64-bit hash."""
    x = x ^ (x >> np.uint64(30))
    x = x * np.uint64(0xBF58476D1CE4E5B9)
    x = x ^ (x >> np.uint64(27))
    x = x * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


def _duplicated(columns: list[np.ndarray]) -> np.ndarray:
    """Rows equal (in every column) to an earlier row; the first copy is not flagged.

    ``DataFrame.duplicated`` costs seconds on 10M rows; hashing the 64-bit columns and
    sorting the hashes costs a fraction of that. Only rows whose hash collides are then
    compared exactly, so a hash collision can never remove a row.
    """
    n = columns[0].shape[0]
    h = np.zeros(n, dtype=np.uint64)
    for col in columns:
        h = _mix64(h * np.uint64(0x9E3779B97F4A7C15) + np.ascontiguousarray(col).view(np.uint64))
    s = np.sort(h)
    repeated = s[1:][s[1:] == s[:-1]]
    flags = np.zeros(n, dtype=bool)
    if repeated.size == 0:
        return flags
    candidates = np.flatnonzero(np.isin(h, repeated))
    frame = pd.DataFrame({i: col[candidates] for i, col in enumerate(columns)})
    flags[candidates[frame.duplicated(keep="first").to_numpy()]] = True
    return flags


def _factorize_ids(ids: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """Codes 0..k-1 and sorted unique ids (``pd.factorize(sort=True)``, faster for ints).

    Integer ids in a compact range (the usual case) are coded through a lookup table in
    O(n); hash-based factorisation of 10M ids costs about a second.
    """
    values = ids.to_numpy() if pd.api.types.is_integer_dtype(ids.dtype) else None
    if values is not None and values.dtype.kind in "iu" and values.size:
        lo, hi = int(values.min()), int(values.max())
        span = hi - lo + 1
        if span <= max(4 * values.size, 1_000_000):
            offset = (values - lo).astype(np.intp)
            present = np.zeros(span, dtype=bool)
            present[offset] = True
            table = np.cumsum(present, dtype=np.int64) - 1
            return table[offset], (np.flatnonzero(present) + lo).astype(values.dtype)
    codes, uniques = pd.factorize(ids, sort=True)
    return codes.astype(np.int64), np.asarray(uniques)


def _sorted_unique(a: np.ndarray) -> np.ndarray:
    # np.unique is about 50x slower than sort + diff on 10M int64 in numpy 2.4.
    s = np.sort(a)
    if s.size == 0:
        return s
    keep = np.empty(s.shape, dtype=bool)
    keep[0] = True
    np.not_equal(s[1:], s[:-1], out=keep[1:])
    return s[keep]


def _unique_pairs(first: np.ndarray, second: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Distinct (first, second) pairs of non-negative int64 arrays, sorted."""
    if first.size == 0:
        return first.copy(), second.copy()
    width = int(second.max()) + 1
    if (int(first.max()) + 1) * width < 2**62:
        key = _sorted_unique(first * np.int64(width) + second)
        return key // width, key % width
    order = np.lexsort((second, first))  # rare: codes too large to pack in one int64
    a, b = first[order], second[order]
    keep = np.ones(a.shape, dtype=bool)
    keep[1:] = (a[1:] != a[:-1]) | (b[1:] != b[:-1])
    return a[keep], b[keep]


def _check_option(name: str, value: Any, options: tuple[str, ...], why: str) -> None:
    if value not in options:
        raise DataValidationError(f"{name}={value!r} is not valid; use one of {options}. {why}")


def validate_transactions(
    data: pd.DataFrame | str | Path,
    *,
    customer_col: str = "customer_id",
    date_col: str = "date",
    amount_col: str | None = "amount",
    segment_col: str | None = None,
    date_format: str | None = None,
    observation_end: Any = None,
    negative_amounts: str = "error",
    zero_amounts: str = "keep",
    duplicates: str = "keep",
    after_end: str = "error",
    encoding: str = "utf-8",
    sep: str | None = None,
    decimal: str = ".",
) -> tuple[pd.DataFrame, CleaningReport]:
    """Check a transaction log and return it with standard columns, plus what was removed.

    Parameters
    ----------
    data : DataFrame, str or Path
        One row per transaction, or the path of a CSV (``.csv``, ``.csv.gz``, ``.txt``)
        or Parquet (``.parquet``) file. In CSV files, ids are read as text and turned
        into integers only if every id is a plain integer (so ``"007"`` stays ``"007"``).
    customer_col, date_col, amount_col : str
        Names of the customer id, transaction date and amount columns.
        ``amount_col=None``: a log without amounts (e.g. visits or orders only): every
        row gets amount 1, so purchase models work and a spend model does not apply
        (the note in the report says so).
    segment_col : str, optional
        Column giving each customer's segment (one segment per customer).
    date_format : str, optional
        ``strftime`` format of text dates, e.g. ``"%Y%m%d"``; required for dates stored
        as numbers such as ``19970101``. Passed to :func:`pandas.to_datetime`.
    observation_end : date-like, optional
        Last day of observation (inclusive). Rows after it are an error, or are removed
        with ``after_end="drop"``.
    negative_amounts : {"error", "drop"}
        Negative amounts are usually returns or refunds. ``"error"`` (default) stops so
        you decide; ``"drop"`` removes those rows (counted). To net returns against
        their purchases instead, do so before calling this function.
    zero_amounts : {"keep", "drop"}
        Zero-amount rows (free items, vouchers) count as purchase occasions when kept.
        Spend models need a positive mean repeat spend, so a customer whose repeat
        purchases are all zero makes :func:`rfm_summary` stop; ``"drop"`` avoids that.
    duplicates : {"keep", "drop"}
        Exact duplicates (same customer, timestamp, amount and segment). They are
        always counted; ``"drop"`` keeps only the first copy. Kept duplicates on the
        same day are merged into one purchase by :func:`rfm_summary` anyway.
    after_end : {"error", "drop"}
        What to do with rows dated after ``observation_end``.
    encoding : str
        Text encoding of a CSV file (default UTF-8, with or without a byte-order mark),
        e.g. ``"latin-1"`` or ``"cp1252"``. Ignored for DataFrames and Parquet.
    sep : str, optional
        Field separator of a CSV file (default ``","``; tab for ``.tsv``), e.g. ``";"``
        as Excel writes CSV where the decimal mark is a comma.
    decimal : {".", ","}
        Decimal mark of amounts written as text: with ``","``, ``230,30`` is 230.3 and
        ``1.230,50`` is 1230.5; text of any other shape is reported, never guessed.

    Returns
    -------
    clean : DataFrame
        Columns ``customer_id``, ``date`` (naive ``datetime64[ns]``), ``amount``
        (float64) and ``segment`` when ``segment_col`` is given; the original index
        of the kept rows, in the original order.
    report : CleaningReport
        Counts of rows and customers in and out, removed customers by reason, notes.

    Raises
    ------
    DataValidationError
        Empty input; missing columns; missing or mixed-type ids; missing segments or a
        customer in more than one segment; missing, unreadable or tz-aware/naive mixed
        dates; missing, non-numeric or infinite amounts; negative amounts or rows
        after ``observation_end`` under the ``"error"`` policy; nothing left.

    Notes
    -----
    Time zones: tz-aware dates are converted to UTC and the zone is dropped (noted in
    the report). A mix of tz-aware and naive dates is an error: there is no safe guess.
    Each removed row is counted under the first matching reason in the order negative,
    zero, after ``observation_end``, duplicate.

    Examples
    --------
    >>> from bayesclv.datasets import load_cdnow
    >>> clean, report = validate_transactions(load_cdnow())
    >>> report.rows_out
    6919
    """
    _check_option(
        "negative_amounts",
        negative_amounts,
        _NEGATIVE_OPTIONS,
        "Negative amounts are usually returns: 'error' stops, 'drop' removes them.",
    )
    _check_option("zero_amounts", zero_amounts, _ZERO_OPTIONS, "")
    _check_option("duplicates", duplicates, _DUPLICATE_OPTIONS, "")
    _check_option("after_end", after_end, _AFTER_END_OPTIONS, "")
    _check_option("decimal", decimal, (".", ","), "The decimal mark of the amounts.")
    if sep is not None and (not isinstance(sep, str) or len(sep) != 1):
        raise DataValidationError(
            f"sep={sep!r} is not valid; pass the one character between fields, e.g. ';'."
        )
    columns = [customer_col, date_col] + ([amount_col] if amount_col is not None else [])
    columns += [segment_col] if segment_col else []
    if len(set(columns)) != len(columns):
        raise DataValidationError(
            f"the customer, date, amount and segment columns must be different, got {columns}."
        )
    frame = _read_input(
        data, columns, customer_col, date_col, encoding,
        amount_col=amount_col, sep=sep, decimal=decimal,
    )
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        _missing_columns(missing, list(frame.columns))
    if frame.columns.has_duplicates:
        dup = sorted({str(c) for c in frame.columns[frame.columns.duplicated()]})
        raise DataValidationError(f"column names {dup} appear more than once; rename them.")
    n_in = len(frame)
    if n_in == 0:
        raise DataValidationError(
            "the transaction log is empty (0 rows); there is nothing to summarise."
        )
    labels = frame.index
    notes: list[str] = []

    ids = frame[customer_col]
    _check_labels(ids, customer_col, labels, "id")
    codes, uniques = _factorize_ids(ids)
    n_customers = len(uniques)
    seg_values = None
    if segment_col is not None:
        seg_values = frame[segment_col]
        _check_labels(seg_values, segment_col, labels, "segment")
        seg_codes = pd.factorize(seg_values)[0].astype(np.int64)
        cust, _ = _unique_pairs(codes, seg_codes)
        per_customer = np.bincount(cust, minlength=n_customers)
        if (per_customer > 1).any():
            several = per_customer[codes] > 1
            bad_ids = describe_rows(np.asarray(uniques[per_customer > 1]).tolist())
            _fail(
                segment_col,
                f"belong to {int((per_customer > 1).sum()):,} customers that appear in more "
                f"than one segment (customers {bad_ids})",
                several,
                labels,
                "A customer must have one segment: take e.g. the segment of the first "
                "purchase, df[seg] = df.groupby(customer)[seg].transform('first').",
            )
    dates = _parse_dates(frame[date_col], date_col, labels, date_format, notes)
    if amount_col is None:
        amount = np.ones(n_in)
        notes.append(
            "no amount column: every transaction counted with amount 1 (purchase models "
            "only; a spend model does not apply)."
        )
    else:
        amount = _parse_amounts(frame[amount_col], amount_col, labels)

    # One reason per removed row (0 = kept), assigned in the documented order.
    reason = np.zeros(n_in, dtype=np.int8)
    negative = amount < 0
    if negative.any():
        if negative_amounts == "error":
            _fail(
                amount_col,
                "have a negative amount (returns or refunds?)",
                negative,
                labels,
                "Choose: negative_amounts='drop' removes them (counted in the report), or "
                "net each return against its purchase before validating.",
            )
        reason[negative] = 1
    zero = amount == 0
    if zero_amounts == "drop":
        reason[zero & (reason == 0)] = 2
    if observation_end is not None:
        end = _as_day(observation_end, "observation_end")
        after = dates.astype("datetime64[D]") > end
        if after.any():
            if after_end == "error":
                _fail(
                    date_col,
                    f"are dated after observation_end={str(end)}",
                    after,
                    labels,
                    "Pass a later observation_end, or after_end='drop' to remove them "
                    "(counted in the report).",
                )
            reason[after & (reason == 0)] = 3
    keep = reason == 0
    dup_cols = [codes, dates.view(np.int64), amount]
    dup_all = _duplicated(dup_cols)  # segment is a function of the customer: not needed
    if duplicates == "drop":
        idx = np.flatnonzero(keep)
        dup_kept = _duplicated([c[idx] for c in dup_cols])
        reason[idx[dup_kept]] = 4
        keep = reason == 0

    rows_out = int(keep.sum())
    kept_per_customer = np.bincount(codes[keep], minlength=n_customers)
    lost = kept_per_customer == 0
    removed_groups: dict[str, tuple] = {}
    if lost.any():
        lost_rows = lost[codes]
        bits = np.zeros(n_customers, dtype=np.int64)
        np.bitwise_or.at(bits, codes[lost_rows], np.left_shift(1, reason[lost_rows] - 1))
        for combo in np.unique(bits[lost]):
            name = "+".join(r for i, r in enumerate(_REASONS) if combo & (1 << i))
            removed_groups[name] = tuple(np.asarray(uniques[lost & (bits == combo)]).tolist())
    if rows_out == 0:
        raise DataValidationError(
            f"no transactions left after cleaning: all {n_in:,} rows were removed "
            f"(negative {int((reason == 1).sum()):,}, zero {int((reason == 2).sum()):,}, "
            f"after observation_end {int((reason == 3).sum()):,}). Check the options."
        )

    # Take from the pandas arrays (not .to_numpy()) so Arrow strings and categoricals
    # keep their type without a round trip through Python objects.
    everything = bool(keep.all())
    rows = None if everything else np.flatnonzero(keep)

    def take(values: pd.Series) -> Any:
        return values.array if everything else values.array.take(rows)

    out = {
        "customer_id": take(ids),
        "date": dates if everything else dates[rows],
        "amount": amount if everything else amount[rows],
    }
    if seg_values is not None:
        out["segment"] = take(seg_values)
    clean = pd.DataFrame(out, index=labels if everything else labels[rows], copy=False)
    notes.append(
        f"options: negative_amounts={negative_amounts!r}, zero_amounts={zero_amounts!r}, "
        f"duplicates={duplicates!r}, after_end={after_end!r}, "
        f"observation_end={observation_end if observation_end is None else str(end)!r}"
    )
    report = CleaningReport(
        rows_in=n_in,
        rows_out=rows_out,
        negative_removed=int((reason == 1).sum()),
        zero_removed=int((reason == 2).sum()),
        after_end_removed=int((reason == 3).sum()),
        duplicates_removed=int((reason == 4).sum()),
        duplicates_found=int(dup_all.sum()),
        customers_in=n_customers,
        customers_out=int((~lost).sum()),
        customers_removed=removed_groups,
        notes=tuple(notes),
    )
    clean.attrs[_REPORT_ATTR] = report
    return clean, report


# =====================================================================================
# Transaction log -> per-customer summary
# =====================================================================================


def _period_of_day(day: np.ndarray, merge_period: str) -> np.ndarray:
    """Index of the calendar period containing each day (days since 1970-01-01)."""
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
    cust, offset = _unique_pairs(codes, day - base)
    pair_day = offset + base
    period = _period_of_day(pair_day, merge_period)
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
    report = transactions.attrs.get(_REPORT_ATTR)
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
    _check_option("merge_period", merge_period, ("day", "week", "month"), "")
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
    obs_end = last_day if observation_end is None else _as_day(observation_end, "observation_end")
    if last_day > obs_end:  # only possible for a frame validated without this end date
        after = day > obs_end.astype(np.int64)
        _fail(
            "date",
            f"are dated after observation_end={obs_end}",
            after,
            clean.index,
            "Validate with the same observation_end: validate_transactions(..., "
            "observation_end=..., after_end='drop') removes them and counts them.",
        )
    cal_end = obs_end if calibration_end is None else _as_day(calibration_end, "calibration_end")
    if cal_end > obs_end:
        raise DataValidationError(
            f"calibration_end={cal_end} is after observation_end={obs_end}; the calibration "
            f"period must end on or before the end of observation."
        )
    cal_day = int(cal_end.astype(np.int64))
    obs_day = int(obs_end.astype(np.int64))
    unit = DAYS_PER_UNIT[time_unit]

    codes, uniques = _factorize_ids(clean["customer_id"])
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
    first_period = _period_of_day(first_day, merge_period)
    in_first = cal & (_period_of_day(day, merge_period) == first_period[codes])
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
