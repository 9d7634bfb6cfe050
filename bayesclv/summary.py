"""The last step: intervals, per-draw totals, tidy tables and export with metadata.

Everything before this module keeps ``(chain, draw, ...)``; here, and only here, draws
are summarised. Totals are summed per draw first (:func:`segment_totals`) and then
summarised, never the other way round: interval bounds are not additive.

Export (:func:`export`, in :mod:`bayesclv.export`) writes CSV, Parquet or Excel with the
run's metadata.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np
import pandas as pd
import xarray as xr

from bayesclv.data import RFMData

# Writing files is its own job (bayesclv/export.py); re-exported so that
# ``bayesclv.summary.export`` and the helpers other modules import keep working.
from bayesclv.export import (  # noqa: F401
    FORMULA_PREFIXES,
    METADATA_KEY,
    atomic_write,
    escape_formulas,
    export,
    read_metadata,
)
from bayesclv.predict import CUSTOMER_DIM

__all__ = [
    "interval_arrays",
    "clv_intervals",
    "segment_totals",
    "customer_table",
    "totals_table",
    "export",
    "read_metadata",
    "TABLE_COLUMNS",
]

SAMPLE_DIMS = ("chain", "draw")

#: Columns of :func:`customer_table`, in order.
TABLE_COLUMNS = (
    "customer_id",
    "segment",
    "clv_mean",
    "clv_median",
    "clv_lower",
    "clv_upper",
    "p_alive",
    "expected_purchases",
    "interval_kind",
    "interval_prob",
    "horizon",
    "time_unit",
)


# --------------------------------------------------------------------------- intervals
def _check_interval(prob: float, kind: str) -> float:
    prob = float(prob)
    if not 0.0 < prob < 1.0:
        raise ValueError(f"prob must be strictly between 0 and 1, got {prob!r}.")
    if kind not in ("eti", "hdi"):
        raise ValueError(f"kind must be 'eti' (equal-tailed) or 'hdi', got {kind!r}.")
    return prob


def _hdi_sorted(sorted_rows: np.ndarray, prob: float) -> tuple[np.ndarray, np.ndarray]:
    """Narrowest window holding ``floor(prob * n)`` + 1 sorted draws, per row.

    The same rule as ``arviz.hdi`` (Chen & Shao 1999 sorted-window estimator), vectorised
    over rows.
    """
    n = sorted_rows.shape[-1]
    inc = int(math.floor(prob * n))
    n_win = n - inc
    if n_win < 1 or inc < 1:
        return sorted_rows[..., 0].copy(), sorted_rows[..., -1].copy()
    widths = sorted_rows[..., inc:] - sorted_rows[..., :n_win]
    start = np.argmin(widths, axis=-1)[..., None]
    lower = np.take_along_axis(sorted_rows, start, axis=-1)[..., 0]
    upper = np.take_along_axis(sorted_rows, start + inc, axis=-1)[..., 0]
    return lower, upper


def _sorted_quantile(srt: np.ndarray, q: float) -> np.ndarray:
    """Quantile ``q`` of sorted rows, linear interpolation (numpy's default method)."""
    n = srt.shape[-1]
    h = (n - 1) * q
    lo = int(math.floor(h))
    hi = min(lo + 1, n - 1)
    frac = h - lo
    a, b = srt[..., lo], srt[..., hi]
    return a + frac * (b - a) if frac else a.copy()


def interval_arrays(samples: np.ndarray, prob: float = 0.94, kind: str = "eti") -> dict:
    """Mean, median and a ``prob`` interval of each row of ``samples``.

    Parameters
    ----------
    samples : ndarray, shape (..., n_samples)
        Draws along the last axis.
    prob : float
        Probability mass of the interval.
    kind : {"eti", "hdi"}
        Equal-tailed (quantiles ``(1-prob)/2`` and ``(1+prob)/2``, linear interpolation)
        or highest-density (narrowest window of sorted draws, as ``arviz.hdi``).

    Returns
    -------
    dict of ndarray
        ``mean``, ``median``, ``lower``, ``upper``, each of shape ``samples.shape[:-1]``.
    """
    prob = _check_interval(prob, kind)
    samples = np.asarray(samples)
    if samples.shape[-1] == 0:
        raise ValueError("no draws to summarise.")
    mean = samples.mean(axis=-1, dtype=np.float64)
    # One sort serves every quantile and the HDI (faster than np.quantile's partitions).
    srt = np.sort(samples, axis=-1)
    med = _sorted_quantile(srt, 0.5)
    if kind == "eti":
        lo = _sorted_quantile(srt, (1 - prob) / 2)
        hi = _sorted_quantile(srt, (1 + prob) / 2)
    else:
        lo, hi = _hdi_sorted(srt, prob)
    return {"mean": mean, "median": med, "lower": lo, "upper": hi}


def clv_intervals(
    draws: xr.DataArray, prob: float = 0.94, kind: str = "eti", sample_dims=SAMPLE_DIMS
) -> xr.Dataset:
    """Summarise draws: mean, median and lower/upper bounds of a ``prob`` interval.

    Parameters
    ----------
    draws : xarray.DataArray
        Any quantity with dims ``(chain, draw, ...)`` (CLV, totals, P(alive)).
    prob : float
        Probability mass of the interval, e.g. 0.94 or 0.5.
    kind : {"eti", "hdi"}
        Equal-tailed or highest-density interval.

    Returns
    -------
    xarray.Dataset
        Variables ``mean, median, lower, upper`` over the remaining dims, and
        ``interval`` with dims ``(..., "ci_bound")`` and coordinate
        ``ci_bound = ["lower", "upper"]`` (the layout of ``arviz_stats`` intervals):
        the same numbers as ``lower`` and ``upper``, stacked, not computed again.
        ``lower``/``upper`` stay for table code. Attrs ``interval_prob`` and
        ``interval_kind``.
    """
    missing = [d for d in sample_dims if d not in draws.dims]
    if missing:
        raise ValueError(f"draws lack sample dims {missing}; they have {draws.dims}.")
    rest = [d for d in draws.dims if d not in sample_dims]
    arr = draws.transpose(*rest, *sample_dims).values
    arr = arr.reshape(*arr.shape[: len(rest)], -1)
    out = interval_arrays(arr, prob, kind)
    coords = {d: draws[d] for d in rest if d in draws.coords}
    ds = xr.Dataset({k: (rest, v) for k, v in out.items()}, coords=coords)
    ds["interval"] = ((*rest, "ci_bound"), np.stack([out["lower"], out["upper"]], axis=-1))
    ds = ds.assign_coords(ci_bound=np.array(["lower", "upper"]))
    ds.attrs.update(interval_prob=float(prob), interval_kind=kind)
    return ds


# --------------------------------------------------------------------------- totals
def segment_sums(values: np.ndarray, codes: np.ndarray, n_segments: int) -> np.ndarray:
    """Sum ``values`` (n_draws, n_customers) over customers of each segment, per draw.

    Returns an array (n_draws, n_segments); used to accumulate totals chunk by chunk.
    """
    values = np.asarray(values, dtype=np.float64)
    onehot = np.zeros((codes.shape[0], n_segments), dtype=np.float64)
    onehot[np.arange(codes.shape[0]), codes] = 1.0
    return values @ onehot


def segment_totals(clv_draws: xr.DataArray, rfm: RFMData) -> xr.Dataset:
    """Sum customer values per draw: per segment and for the whole portfolio.

    Parameters
    ----------
    clv_draws : xarray.DataArray
        Dims ``(chain, draw, customer_id)``, customers in the order of ``rfm``.
    rfm : RFMData
        Gives each customer's segment.

    Returns
    -------
    xarray.Dataset
        ``segment_total`` with dims ``(chain, draw, segment)`` (every named segment,
        zeros for empty ones) and ``portfolio_total`` with dims ``(chain, draw)``. Take
        intervals of these with :func:`clv_intervals` or :func:`totals_table`.
    """
    if clv_draws.sizes.get(CUSTOMER_DIM) != rfm.n_customers:
        raise ValueError(
            f"clv_draws has {clv_draws.sizes.get(CUSTOMER_DIM)} customers but rfm has "
            f"{rfm.n_customers}; pass the RFMData the draws were computed for."
        )
    arr = clv_draws.transpose("chain", "draw", CUSTOMER_DIM).values
    c, d, n = arr.shape
    seg = segment_sums(arr.reshape(c * d, n), rfm.segment, rfm.n_segments).reshape(c, d, -1)
    return totals_dataset(seg, clv_draws, rfm.segment_names)


def totals_dataset(seg: np.ndarray, like, segment_names) -> xr.Dataset:
    coords = {"segment": list(segment_names)}
    for dim in ("chain", "draw"):
        if like is not None and dim in like.coords:
            coords[dim] = like[dim].values
    return xr.Dataset(
        {
            "segment_total": (("chain", "draw", "segment"), seg),
            "portfolio_total": (("chain", "draw"), seg.sum(axis=-1)),
        },
        coords=coords,
    )


def totals_table(totals: xr.Dataset, prob: float = 0.94, kind: str = "eti") -> pd.DataFrame:
    """One row per segment plus a ``"portfolio"`` row: mean, median and interval."""
    seg = clv_intervals(totals["segment_total"], prob, kind)
    port = clv_intervals(totals["portfolio_total"], prob, kind)
    rows = pd.DataFrame(
        {
            "segment": [str(s) for s in totals["segment"].values] + ["portfolio"],
            **{
                f"total_{k}": np.append(seg[k].values, port[k].values)
                for k in ("mean", "median", "lower", "upper")
            },
        }
    )
    rows["interval_kind"] = kind
    rows["interval_prob"] = float(prob)
    return rows


# --------------------------------------------------------------------------- tables
def table_from_arrays(
    customer_id: np.ndarray,
    segment: np.ndarray,
    clv: np.ndarray,
    *,
    p_alive: np.ndarray | None,
    expected_purchases: np.ndarray | None,
    prob: float,
    kind: str,
    horizon: float | None,
    time_unit: str | None,
) -> pd.DataFrame:
    """Build :data:`TABLE_COLUMNS` from ``clv`` of shape (n_customers, n_samples).

    ``p_alive`` and ``expected_purchases`` are per-customer posterior means (or None).
    """
    return table_from_summaries(
        customer_id,
        segment,
        interval_arrays(clv, prob, kind),
        p_alive=p_alive,
        expected_purchases=expected_purchases,
        prob=prob,
        kind=kind,
        horizon=horizon,
        time_unit=time_unit,
    )


def table_from_summaries(
    customer_id: np.ndarray,
    segment: np.ndarray,
    summaries: Mapping[str, np.ndarray],
    *,
    p_alive: np.ndarray | None,
    expected_purchases: np.ndarray | None,
    prob: float,
    kind: str,
    horizon: float | None,
    time_unit: str | None,
) -> pd.DataFrame:
    """Build :data:`TABLE_COLUMNS` from per-customer ``mean, median, lower, upper``."""
    n = len(customer_id)
    nan = np.full(n, np.nan)
    return pd.DataFrame(
        {
            "customer_id": customer_id,
            "segment": segment,
            "clv_mean": summaries["mean"],
            "clv_median": summaries["median"],
            "clv_lower": summaries["lower"],
            "clv_upper": summaries["upper"],
            "p_alive": nan if p_alive is None else p_alive,
            "expected_purchases": nan if expected_purchases is None else expected_purchases,
            "interval_kind": kind,
            "interval_prob": float(prob),
            "horizon": np.nan if horizon is None else float(horizon),
            "time_unit": time_unit,
        },
        columns=list(TABLE_COLUMNS),
    )


def customer_table(
    clv_draws: xr.DataArray,
    rfm: RFMData,
    *,
    p_alive: xr.DataArray | None = None,
    expected_purchases: xr.DataArray | None = None,
    prob: float = 0.94,
    kind: str = "eti",
    horizon: float | None = None,
) -> pd.DataFrame:
    """Tidy per-customer table: one row per customer of ``rfm``, in its order.

    Parameters
    ----------
    clv_draws : xarray.DataArray
        ``(chain, draw, customer_id)`` from :func:`bayesclv.clv.expected_clv` or
        :func:`bayesclv.clv.simulate_clv`.
    rfm : RFMData
        The customers; every one appears exactly once (checked).
    p_alive, expected_purchases : xarray.DataArray, optional
        ``(chain, draw, customer_id)``; their posterior means fill the columns (NaN if None).
    prob, kind : interval probability and ``"eti"`` / ``"hdi"``.
    horizon : float, optional
        Defaults to ``clv_draws.attrs["horizon"]``.

    Returns
    -------
    pandas.DataFrame
        Columns :data:`TABLE_COLUMNS`.
    """
    if clv_draws.sizes.get(CUSTOMER_DIM) != rfm.n_customers:
        raise ValueError(
            f"clv_draws has {clv_draws.sizes.get(CUSTOMER_DIM)} customers, rfm has "
            f"{rfm.n_customers}."
        )
    if CUSTOMER_DIM in clv_draws.coords:
        ids = clv_draws[CUSTOMER_DIM].values
        if not np.array_equal(ids, rfm.customer_id):
            raise ValueError("clv_draws customers are not those of rfm, in the same order.")
    arr = clv_draws.transpose(CUSTOMER_DIM, "chain", "draw").values
    arr = arr.reshape(arr.shape[0], -1)

    def mean_of(da):
        if da is None:
            return None
        return da.transpose(CUSTOMER_DIM, "chain", "draw").values.reshape(arr.shape[0], -1).mean(-1)

    if horizon is None:
        horizon = clv_draws.attrs.get("horizon")
    table = table_from_arrays(
        rfm.customer_id,
        rfm.segment_labels(),
        arr,
        p_alive=mean_of(p_alive),
        expected_purchases=mean_of(expected_purchases),
        prob=prob,
        kind=kind,
        horizon=horizon,
        time_unit=rfm.time_unit,
    )
    check_one_row_per_customer(table, rfm.customer_id)
    return table


def check_one_row_per_customer(table: pd.DataFrame, customer_id: np.ndarray) -> None:
    """Raise if ``table`` does not hold every customer exactly once."""
    ids = pd.Index(table["customer_id"])
    if len(ids) != len(customer_id) or ids.has_duplicates or not ids.equals(pd.Index(customer_id)):
        missing = pd.Index(customer_id).difference(ids)
        raise AssertionError(
            f"customer table must hold every customer exactly once: {len(ids)} rows for "
            f"{len(customer_id)} customers, {int(ids.duplicated().sum())} duplicated, "
            f"{len(missing)} missing."
        )
