"""Holdout evaluation: point metrics, randomized-PIT calibration, interval coverage,
log predictive density, conditional expectations by calibration frequency."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import arviz as az
import numpy as np
import pandas as pd
import scipy.special as sps
import xarray as xr

from bayesclv.data import RFMData
from bayesclv.diagnostics.common import (
    as_params,
    bin_labels,
    check_holdout,
    chunks,
    draw_groups,
    draw_subset,
    expected_purchases_any,
)
from bayesclv.errors import ModelSpecificationError
from bayesclv.predict import (
    DrawParams,
    customer_columns,
    expected_spend,
)
from bayesclv.stacking import PurchaseStack
from bayesclv.summary import interval_arrays


# =====================================================================================
# Holdout: metrics, conditional simulation, log predictive density
# =====================================================================================
def holdout_metrics(actual: Any, predicted: Any) -> dict[str, float]:
    """MAE, RMSE, MSLE and BIAS of point predictions against actual values.

    ``BIAS = sum(predicted) / sum(actual) - 1`` (the BTYDplus definition: the relative
    error of the aggregate forecast); ``MSLE = mean((log1p(pred) - log1p(actual))^2)``.
    """
    y = np.asarray(actual, dtype=float)
    p = np.asarray(predicted, dtype=float)
    if y.shape != p.shape:
        raise ValueError(f"actual has shape {y.shape} but predicted has {p.shape}.")
    err = p - y
    return {
        "n": int(y.size),
        "actual_total": float(y.sum()),
        "predicted_total": float(p.sum()),
        "MAE": float(np.mean(np.abs(err))),
        "RMSE": float(np.sqrt(np.mean(err**2))),
        "MSLE": float(np.mean((np.log1p(np.maximum(p, 0)) - np.log1p(y)) ** 2)),
        "BIAS": float(p.sum() / y.sum() - 1.0) if y.sum() > 0 else float("nan"),
    }


def randomized_pit(draws: np.ndarray, observed: np.ndarray, rng) -> np.ndarray:
    """Randomized probability integral transform of each observation under its
    predictive draws (Czado, Gneiting & Held 2009, Biometrics 65(4)).

    ``draws`` is ``(n_draws, n)``, ``observed`` ``(n,)``. With the predictive CDF ``F``
    estimated from the draws, ``u = F(y-) + V (F(y) - F(y-))``, ``V ~ Uniform(0, 1)``:
    uniform on (0, 1) when the predictions are calibrated, also for discrete counts, whose
    closed central intervals over-cover by construction (a count of 0 with 95% of the
    mass at 0 lies inside every central interval). The share of ``u`` within
    ``[0.5 - p/2, 0.5 + p/2]`` is then ``p``: that is the calibration check.
    """
    below = (draws < observed).mean(axis=0)
    at_or_below = (draws <= observed).mean(axis=0)
    return below + rng.random(observed.shape) * (at_or_below - below)


@dataclass(frozen=True)
class HoldoutEvaluation:
    """Everything :func:`holdout_evaluation` measures; ``to_dict()`` for JSON.

    Attributes
    ----------
    metrics : DataFrame
        Rows ``purchases`` (and ``spend``), columns ``n, actual_total, predicted_total,
        MAE, RMSE, MSLE, BIAS``; point predictions are posterior means.
    coverage : DataFrame
        Rows ``(quantity, prob)``. ``pit_calibration`` is **the calibration check**: the
        share of customers whose randomized PIT (:func:`randomized_pit`) lies in the
        central ``prob`` band, which is ``prob`` for calibrated predictions. ``coverage``
        is the share whose holdout value lies inside their central ``prob`` predictive
        interval, with ``mean_width``: for discrete counts closed intervals cover at
        least ``prob`` even when calibrated (far more on sparse data), so coverage is
        not a calibration check.
    conditional : DataFrame
        By calibration frequency: customers, actual mean, predicted mean with interval.
    log_predictive_density : float
        Sum over customers of log mean over draws of P(holdout purchases | history, draw).
    predicted : DataFrame
        Per customer: actual and predicted holdout purchases (and spend).
    """

    model: str
    holdout_length: float
    time_unit: str
    n_draws_simulated: int
    metrics: pd.DataFrame
    coverage: pd.DataFrame
    conditional: pd.DataFrame
    log_predictive_density: float
    predicted: pd.DataFrame = field(repr=False)

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "holdout_length": self.holdout_length,
            "time_unit": self.time_unit,
            "n_draws_simulated": self.n_draws_simulated,
            "metrics": self.metrics.to_dict(orient="index"),
            "coverage": [
                {"quantity": q, "prob": p, **row}
                for (q, p), row in self.coverage.to_dict(orient="index").items()
            ],
            "conditional": self.conditional.to_dict(orient="records"),
            "log_predictive_density": self.log_predictive_density,
            "log_predictive_density_per_customer": self.log_predictive_density
            / max(len(self.predicted), 1),
        }


def _posterior_mean_chunked(fn, rfm: RFMData, chunk: int) -> np.ndarray:
    out = np.empty(rfm.n_customers)
    for sl in chunks(rfm.n_customers, chunk):
        mask = np.zeros(rfm.n_customers, dtype=bool)
        mask[sl] = True
        out[sl] = fn(rfm.subset(mask)).mean(("chain", "draw")).values
    return out


def conditional_expectations(
    params: xr.Dataset | az.InferenceData,
    rfm: RFMData,
    *,
    max_count: int = 7,
    prob: float = 0.9,
    chunk_size: int = 20_000,
) -> pd.DataFrame:
    """Mean holdout purchases by calibration frequency: actual vs predicted (FHL 2005, fig. 3).

    The prediction per draw is the mean over the group's customers of the conditional
    expectation (:func:`bayesclv.predict.expected_purchases` over the holdout length);
    the interval is over draws (parameter uncertainty of the group mean).
    """
    check_holdout(rfm)
    params = as_params(params)
    n_bins = max_count + 1
    b = np.minimum(rfm.frequency, max_count)
    counts = np.bincount(b, minlength=n_bins)
    n_total, _ = draw_groups(params)
    sums = np.zeros((n_total, n_bins))
    chunk_size = max(1, min(int(chunk_size), int(5e6 // n_total)))
    for sl in chunks(rfm.n_customers, chunk_size):
        mask = np.zeros(rfm.n_customers, dtype=bool)
        mask[sl] = True
        e = expected_purchases_any(params, rfm.subset(mask), rfm.holdout_length).values
        e = e.reshape(n_total, -1)
        for k in range(n_bins):
            sel = b[sl] == k
            if sel.any():
                sums[:, k] += e[:, sel].sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        means = sums / counts
        actual = np.bincount(b, weights=rfm.holdout_frequency, minlength=n_bins) / counts
    iv = interval_arrays(means.T, prob)
    return pd.DataFrame(
        {
            "frequency": bin_labels(max_count),
            "customers": counts,
            "actual": actual,
            "predicted": iv["mean"],
            "lower": iv["lower"],
            "upper": iv["upper"],
        }
    )


def holdout_evaluation(
    params: xr.Dataset | az.InferenceData,
    rfm: RFMData,
    *,
    spend_params: xr.Dataset | az.InferenceData | None = None,
    probs: Sequence[float] = (0.5, 0.8, 0.95),
    n_draws: int = 500,
    max_count: int = 7,
    random_seed: int | None = None,
    chunk_size: int = 5_000,
) -> HoldoutEvaluation:
    """Evaluate holdout predictions: point metrics, interval coverage, log predictive density.

    Parameters
    ----------
    params : Dataset or InferenceData
        Purchase-model draws (BG/NBD, MBG/NBD or Pareto/NBD).
    rfm : RFMData
        With a holdout (``holdout_frequency``, ``holdout_spend``, ``holdout_length``).
    spend_params : Dataset or InferenceData, optional
        Gamma-Gamma draws; adds spend metrics and spend interval coverage.
    probs : sequence of float
        Central posterior predictive interval probabilities whose coverage is measured.
    n_draws : int
        Posterior draws (seeded subsample) used for simulation and the log predictive
        density; point predictions use every draw.
    random_seed : int, optional

    Notes
    -----
    Per posterior draw and customer: the customer is alive at the end of calibration with
    probability P(alive | history) (the family's ``log_p_alive``); given alive,
    the individual rates are drawn from their conjugate posterior given the history, and
    the holdout purchases simulated with the model's process over the holdout length;
    holdout spend is the sum of that many Gamma(p, nu) amounts with
    ``nu ~ Gamma(q + p x, v + x zbar)`` (the posterior of ``nu`` given the calibration
    spend). Purchase and spend draws are paired by position in their seeded subsamples
    (the two posteriors are independent).

    The log predictive density of each customer's holdout count is
    ``log mean_d [P(alive) P(y | latent_d) + (1 - P(alive)) 1{y = 0}]``, a Monte Carlo
    estimate over posterior draws and one latent draw each, with ``P(y | latent)`` exact
    (the family's ``window_log_pmf``).

    Point predictions: the posterior mean of the conditional expectation
    (:func:`bayesclv.predict.expected_purchases`) and, for spend, its product with the
    posterior mean of the conditional mean spend (exact for independent posteriors).
    """
    check_holdout(rfm)
    params = as_params(params)
    spend_params = None if spend_params is None else as_params(spend_params)
    probs = tuple(float(p) for p in probs)
    h = float(rfm.holdout_length)
    rng = np.random.default_rng(random_seed)
    n_total, groups = draw_groups(params)
    model = params.describe() if isinstance(params, PurchaseStack) else groups[0][0].model
    idx = draw_subset(n_total, n_draws, rng)
    # per family: its DrawParams, the (local) draws of the subsample it holds, customer columns
    parts = []
    for dp, pos in groups:
        local = np.flatnonzero(np.isin(pos, idx))
        local = np.repeat(local, [int((idx == pos[j]).sum()) for j in local])  # reused draws
        if local.size:
            parts.append((dp, local, customer_columns(dp, rfm)))
    sp = None
    if spend_params is not None:
        sp = DrawParams(spend_params, "spend")
        sp_idx = rng.permutation(draw_subset(sp.n_draws, len(idx), rng))
        sp_cols = customer_columns(sp, rfm)

    # --- point predictions (every draw), chunked over customers
    chunk_pm = max(1, int(5e6 // max(n_total, 1)))
    pred = _posterior_mean_chunked(lambda r: expected_purchases_any(params, r, h), rfm, chunk_pm)
    actual = rfm.holdout_frequency.astype(float)
    metrics = {"purchases": holdout_metrics(actual, pred)}
    table = {"customer_id": rfm.customer_id, "actual_purchases": actual,
             "predicted_purchases": pred}
    if sp is not None:
        if rfm.holdout_spend is None:
            raise ModelSpecificationError("spend evaluation needs rfm.holdout_spend.")
        chunk_sp = max(1, int(5e6 // max(sp.n_draws, 1)))
        zmean = _posterior_mean_chunked(lambda r: expected_spend(spend_params, r), rfm, chunk_sp)
        pred_spend = pred * zmean
        metrics["spend"] = holdout_metrics(rfm.holdout_spend, pred_spend)
        table.update(actual_spend=rfm.holdout_spend, predicted_spend=pred_spend)

    # --- simulation and log predictive density, chunked over customers
    inside = {(q, p): 0 for q in ("purchases", "spend") for p in probs}
    width = {k: 0.0 for k in inside}
    pit_in = {(q, p): 0 for q in ("purchases", "spend") for p in probs}
    lpd = np.empty(rfm.n_customers)
    pit = {"purchases": np.empty(rfm.n_customers), "spend": np.empty(rfm.n_customers)}
    # (draws x customers) per block; Pareto/NBD's quadrature multiplies it by 16 nodes
    chunk_size = max(1, min(int(chunk_size), int(1e6 // len(idx))))
    for sl in chunks(rfm.n_customers, chunk_size):
        x = rfm.frequency[sl].astype(float)
        t_x, T = rfm.recency[sl], rfm.T[sl]
        y = rfm.holdout_frequency[sl]
        terms, sims_y = [], []
        for dp, local, cols in parts:
            fam = dp.family
            th = {n: v[local][:, cols[sl]] for n, v in dp.values.items()}  # (draws, chunk)
            lpa = fam.log_p_alive(th, x, t_x, T)
            latent = fam.latent_given_alive(th, x, T, rng, **fam.recency(t_x))
            log_alive_term = lpa + fam.window_log_pmf(latent, y, h)
            with np.errstate(divide="ignore"):
                log_dead = np.where(y == 0, np.log(-np.expm1(lpa)), -np.inf)
            terms.append(np.logaddexp(log_alive_term, log_dead))
            alive = rng.random(lpa.shape) < np.exp(lpa)
            sims_y.append(np.where(alive, fam.simulate_window(latent, h, rng), 0))
        lpd[sl] = sps.logsumexp(np.concatenate(terms), axis=0) - np.log(len(idx))
        y_sim = np.concatenate(sims_y)
        sims = {"purchases": (y_sim, y)}
        if sp is not None:
            ths = {n: v[sp_idx][:, sp_cols[sl]] for n, v in sp.values.items()}
            nu = sp.family.latent_given_history(ths, x, rfm.monetary_value[sl], rng)
            spend_sim = sp.family.sample_totals(ths, nu, y_sim, rng)
            sims["spend"] = (spend_sim, rfm.holdout_spend[sl])
        for q, (draws_, obs) in sims.items():
            u = randomized_pit(draws_, obs, rng)
            pit[q][sl] = u
            for p in probs:
                iv = interval_arrays(draws_.T, p)
                inside[(q, p)] += int(((iv["lower"] <= obs) & (obs <= iv["upper"])).sum())
                width[(q, p)] += float((iv["upper"] - iv["lower"]).sum())
                pit_in[(q, p)] += int((np.abs(u - 0.5) <= p / 2).sum())
    n = rfm.n_customers
    cov_rows = [
        {"quantity": q, "prob": p, "pit_calibration": pit_in[(q, p)] / n,
         "coverage": inside[(q, p)] / n, "mean_width": width[(q, p)] / n}
        for q in ("purchases", "spend")
        if q == "purchases" or sp is not None
        for p in probs
    ]
    coverage = pd.DataFrame(
        cov_rows, columns=["quantity", "prob", "pit_calibration", "coverage", "mean_width"]
    ).set_index(["quantity", "prob"])
    table["log_predictive_density"] = lpd
    table["pit_purchases"] = pit["purchases"]
    if sp is not None:
        table["pit_spend"] = pit["spend"]
    return HoldoutEvaluation(
        model=model,
        holdout_length=h,
        time_unit=rfm.time_unit,
        n_draws_simulated=len(idx),
        metrics=pd.DataFrame(metrics).T,
        coverage=coverage,
        conditional=conditional_expectations(params, rfm, max_count=max_count),
        log_predictive_density=float(lpd.sum()),
        predicted=pd.DataFrame(table),
    )


def holdout_log_predictive_density(
    params: xr.Dataset | az.InferenceData,
    rfm: RFMData,
    *,
    n_draws: int = 500,
    random_seed: int | None = None,
) -> float:
    """Summed holdout log predictive density of the purchase counts (see
    :func:`holdout_evaluation`)."""
    return holdout_evaluation(
        params, rfm, n_draws=n_draws, random_seed=random_seed, probs=()
    ).log_predictive_density
