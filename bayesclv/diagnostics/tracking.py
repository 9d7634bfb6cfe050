"""Tracking data: actual vs expected cumulative and incremental purchases over time."""

from __future__ import annotations

import math

import arviz as az
import numpy as np
import pandas as pd
import xarray as xr

from bayesclv.data import DAYS_PER_UNIT, RFMData
from bayesclv.diagnostics.common import (
    as_params,
    draw_subset,
)
from bayesclv.errors import ModelSpecificationError
from bayesclv.predict import (
    DrawParams,
)
from bayesclv.summary import interval_arrays


# =====================================================================================
# Tracking plots data
# =====================================================================================
def tracking(
    params: xr.Dataset | az.InferenceData,
    rfm: RFMData,
    transactions: pd.DataFrame,
    *,
    customer_col: str = "customer_id",
    date_col: str = "date",
    period_days: float | None = None,
    prob: float = 0.9,
    n_draws: int | None = 1000,
    random_seed: int | None = None,
) -> pd.DataFrame:
    """Actual vs expected repeat transactions per period, incremental and cumulative.

    Parameters
    ----------
    params : Dataset or InferenceData
        Purchase-model draws.
    rfm : RFMData
        The customers to track (those in the calibration summary).
    transactions : DataFrame
        The raw transaction log (calibration and holdout) with ``customer_col`` and
        ``date_col``; transactions of one customer on one day count as one occasion (the
        ``rfm_summary`` default), the first occasion is the acquisition, not a repeat.
    period_days : float, optional
        Period length in days; default one ``rfm.time_unit``.
    prob : float
        Probability of the intervals (over posterior draws, of the summed expectation).
    n_draws : int, optional
        Posterior draws used (a seeded subsample; ``None`` for all).

    Returns
    -------
    DataFrame
        One row per period: ``period`` (1, 2, ...), ``period_end`` (date, inclusive),
        ``actual``, ``expected``, ``lower``, ``upper`` (incremental) and the same with
        ``cum_`` prefixes (cumulative). ``attrs`` hold ``calibration_end`` (in periods
        from the start), ``time_unit`` and ``period_days``.

    Notes
    -----
    The expectation for customer ``i`` acquired on day ``d_i`` is the unconditional
    ``E[X(t - d_i)]`` of a new customer of their segment (``P(alive at 0) * Phi`` with
    the closed forms of :mod:`bayesclv.predict`), evaluated once per distinct age and
    summed per draw, so memory is ``draws x distinct ages``, not ``draws x customers``.
    """
    params = as_params(params)
    dp = DrawParams(params, "purchase")
    day = DAYS_PER_UNIT[rfm.time_unit]
    period_days = day if period_days is None else float(period_days)
    missing = [c for c in (customer_col, date_col) if c not in transactions.columns]
    if missing:
        raise ModelSpecificationError(
            f"tracking: transactions lack columns {missing}; they have "
            f"{list(transactions.columns)}. Pass customer_col= and date_col=."
        )
    tx = pd.DataFrame(
        {
            "c": transactions[customer_col].to_numpy(),
            "d": pd.to_datetime(transactions[date_col]).dt.floor("D").to_numpy("datetime64[D]"),
        }
    ).drop_duplicates()
    tx = tx[pd.Index(rfm.customer_id).get_indexer(tx["c"]) >= 0]
    if tx.empty:
        raise ModelSpecificationError(
            "tracking: none of the transactions' customer ids is in rfm.customer_id."
        )
    first = tx.groupby("c")["d"].transform("min")
    start = np.datetime64(tx["d"].min(), "D")
    if rfm.calibration_end is None:
        raise ModelSpecificationError("tracking needs rfm.calibration_end (from rfm_summary).")
    cal_end = np.datetime64(pd.Timestamp(rfm.calibration_end).floor("D"), "D")
    hold_days = 0.0 if rfm.holdout_length is None else rfm.holdout_length * day
    end = cal_end + np.timedelta64(int(round(hold_days)), "D")
    tx = tx[tx["d"] <= end]
    n_days = int((end - start).astype(int)) + 1
    n_periods = int(math.ceil(n_days / period_days - 1e-9))
    # last day (offset from start, inclusive) of each period
    last = np.minimum(np.ceil(np.arange(1, n_periods + 1) * period_days - 1e-9) - 1, n_days - 1)

    repeat_day = (tx["d"] - start).to_numpy().astype("timedelta64[D]").astype(int)[
        (tx["d"] > first).to_numpy()
    ]
    actual_cum = np.searchsorted(np.sort(repeat_day), last, side="right").astype(float)

    # acquisition day of each rfm customer (customers absent from the log are an error)
    acq = tx.groupby("c")["d"].min()
    pos = pd.Index(acq.index).get_indexer(rfm.customer_id)
    if (pos < 0).any():
        raise ModelSpecificationError(
            f"tracking: {int((pos < 0).sum())} customers of rfm have no transaction in the log."
        )
    acq_day = (acq.to_numpy()[pos] - start).astype("timedelta64[D]").astype(int)
    rng = np.random.default_rng(random_seed)
    n_use = None if n_draws is None else min(n_draws, dp.n_draws)
    idx = draw_subset(dp.n_draws, n_use, rng)
    cols = dp.positions(rfm.segment_names)
    expected_cum = np.zeros((len(idx), n_periods))
    for s in range(rfm.n_segments):
        sel = rfm.segment == s
        if not sel.any():
            continue
        days, n_per_day = np.unique(acq_day[sel], return_counts=True)
        ages = np.maximum(last[None, :] - days[:, None], -1)  # (n_days_acq, n_periods)
        uniq, inv = np.unique(ages, return_inverse=True)
        th = {n: v[idx][:, [cols[s]]] for n, v in dp.values.items()}  # (draws, 1)
        t = np.maximum(uniq, 0) / day
        fam = dp.family
        e = fam.p_alive(th, 0.0, 0.0, 0.0) * fam.expected_alive(th, 0.0, 0.0, t[None, :],
                                                               **fam.recency(0.0))
        e = np.where(uniq[None, :] < 0, 0.0, e)  # not yet acquired
        # weights[u, p]: customers whose age at the end of period p is uniq[u]; one
        # matrix product then sums over customers without a draws x days x periods array
        weights = np.zeros((uniq.size, n_periods))
        periods = np.broadcast_to(np.arange(n_periods), ages.shape)
        np.add.at(weights, (inv.reshape(ages.shape), periods),
                  np.broadcast_to(n_per_day[:, None], ages.shape).astype(float))
        expected_cum += e @ weights
    expected_inc = np.diff(expected_cum, axis=1, prepend=0.0)
    actual_inc = np.diff(actual_cum, prepend=0.0)
    iv_c = interval_arrays(expected_cum.T, prob)
    iv_i = interval_arrays(expected_inc.T, prob)
    start_ts = pd.Timestamp(start)
    out = pd.DataFrame(
        {
            "period": np.arange(1, n_periods + 1),
            "period_end": start_ts + pd.to_timedelta(last, unit="D"),
            "actual": actual_inc,
            "expected": iv_i["mean"],
            "lower": iv_i["lower"],
            "upper": iv_i["upper"],
            "cum_actual": actual_cum,
            "cum_expected": iv_c["mean"],
            "cum_lower": iv_c["lower"],
            "cum_upper": iv_c["upper"],
        }
    )
    out.attrs.update(
        calibration_end=float(((cal_end - start).astype(int) + 1) / period_days),
        time_unit=rfm.time_unit,
        period_days=period_days,
        prob=prob,
        start=str(start_ts.date()),
        model=dp.model,
    )
    return out
