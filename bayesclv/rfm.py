"""Per-customer summaries (RFM): the one input every model builder takes.

``RFMData`` is frozen and validated once, in ``__post_init__``; its arrays are
read-only. It is made from a transaction log by :func:`bayesclv.log_summary.rfm_summary`
or directly (simulations, published summaries).

Time is measured in an explicit unit (``time_unit``); the number of days in each unit
is given by :data:`DAYS_PER_UNIT` and never hidden inside a formula.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from bayesclv.errors import DataValidationError, describe_rows

__all__ = ["DAYS_PER_UNIT", "RFMData", "round_times"]


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
