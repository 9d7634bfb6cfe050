"""Convergence report, posterior predictive checks, holdout evaluation, model comparison.

Everything here works on posterior draws (``bayesclv.fit.posterior_params``: dims
``(chain, draw, segment)``) and on the data, never on a ``pm.Model``. The closed forms
(P(alive), expected purchases given alive, conditional mean spend) are those of
:mod:`bayesclv.predict`; the log-densities those of :mod:`bayesclv.likelihoods`; the
unconditional simulator that of :mod:`bayesclv.simulate`. What is written here is only
what those modules do not have: simulation of the holdout *conditional on each
customer's history*, and the probability of a holdout count given the individual
latent rates (used for the holdout log predictive density).

Memory: arrays are at most ``(n_draws, chunk of customers)``; draws used for
simulation are a seeded subsample of at most ``n_draws`` posterior draws.

References
----------
Fader, Hardie & Lee (2005), "Counting your customers the easy way", Marketing Science
24(2) (tracking plots, conditional expectations by calibration frequency, CDNOW
39/39-week split). Platzer & Reutterer (2016) and the BTYDplus R package (BIAS =
sum(predicted) / sum(actual) - 1). Vehtari, Gelman & Gabry (2017) (PSIS-LOO).
Vehtari et al. (2021), "Rank-normalization, folding, and localization: an improved
R-hat" (R-hat < 1.01 and bulk/tail ESS > 400 as thresholds; ``arviz`` implements them).
Betancourt (2016), "Diagnosing suboptimal cotangent disintegrations in Hamiltonian
Monte Carlo" (E-BFMI < 0.3).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import arviz as az
import numpy as np
import pandas as pd
import scipy.special as sps
import xarray as xr

from bayesclv.data import DAYS_PER_UNIT, RFMData
from bayesclv.errors import ModelSpecificationError
from bayesclv.families import get_family
from bayesclv.predict import (
    DrawParams,
    customer_columns,
    expected_purchases,
    expected_spend,
)
from bayesclv.stacking import PurchaseStack, stacked
from bayesclv.summary import interval_arrays

__all__ = [
    "ConvergenceReport",
    "ConvergenceWarning",
    "convergence_report",
    "warn_if_bad",
    "FrequencyCheck",
    "posterior_predictive_frequency",
    "holdout_metrics",
    "HoldoutEvaluation",
    "holdout_evaluation",
    "holdout_log_predictive_density",
    "conditional_expectations",
    "tracking",
    "pointwise_log_likelihood",
    "compare_models",
]

_APPROXIMATIONS = ("map", "laplace", "advi")
NOT_ASSESSED = "not assessed (approximation)"


# =====================================================================================
# Convergence
# =====================================================================================
class ConvergenceWarning(UserWarning):
    """A fit failed (or nearly failed) its convergence checks."""


@dataclass(frozen=True)
class ConvergenceReport:
    """Convergence diagnostics of one fit, with thresholds, verdict and advice.

    ``verdict`` is ``"ok"``, ``"warning"``, ``"fail"`` or ``"not assessed
    (approximation)"`` (MAP, ADVI, or no sampler statistics: nothing to assess, and
    never reported as ``"ok"``). ``problems`` says which checks failed, ``advice`` what
    to try. Values are ``None`` where a diagnostic does not apply (R-hat with one
    chain, tree depth without the statistic).
    """

    model: str
    pooling: str
    sampler: str
    chains: int
    draws: int
    tune: int
    verdict: str
    rhat_max: float | None
    rhat_worst: str | None
    ess_bulk_min: float | None
    ess_bulk_worst: str | None
    ess_tail_min: float | None
    ess_tail_worst: str | None
    divergences: int | None
    divergence_rate: float | None
    bfmi: tuple[float, ...] | None
    treedepth_saturation: float | None
    thresholds: Mapping[str, float]
    problems: tuple[str, ...] = ()
    advice: tuple[str, ...] = ()
    variables: tuple[str, ...] = field(default=(), repr=False)

    @property
    def ok(self) -> bool:
        return self.verdict == "ok"

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-serialisable dict (for the CLI and export metadata)."""

        def clean(v):
            if isinstance(v, float) and not math.isfinite(v):
                return None
            if isinstance(v, tuple):
                return [clean(u) for u in v]
            if isinstance(v, Mapping):
                return {k: clean(u) for k, u in v.items()}
            if isinstance(v, np.generic):
                return clean(v.item())
            return v

        keys = (
            "model pooling sampler chains draws tune verdict rhat_max rhat_worst ess_bulk_min "
            "ess_bulk_worst ess_tail_min ess_tail_worst divergences divergence_rate bfmi "
            "treedepth_saturation thresholds problems advice variables"
        ).split()
        return {k: clean(getattr(self, k)) for k in keys}

    def __str__(self) -> str:
        def fmt(v, spec):
            return "n/a" if v is None else format(v, spec)

        t = self.thresholds
        lines = [
            f"Convergence: {self.verdict.upper()}  ({self.model}, pooling={self.pooling}, "
            f"sampler={self.sampler}, {self.chains} chains x {self.draws} draws, "
            f"tune={self.tune})",
        ]
        if self.verdict != NOT_ASSESSED:
            bfmi = "n/a" if self.bfmi is None else ", ".join(f"{b:.2f}" for b in self.bfmi)
            lines += [
                f"  R-hat max       {fmt(self.rhat_max, '.3f'):>8}  (<= {t['rhat_max']})"
                + (f"  worst: {self.rhat_worst}" if self.rhat_worst else ""),
                f"  ESS bulk min    {fmt(self.ess_bulk_min, '.0f'):>8}  (>= {t['ess_min']:.0f})"
                + (f"  worst: {self.ess_bulk_worst}" if self.ess_bulk_worst else ""),
                f"  ESS tail min    {fmt(self.ess_tail_min, '.0f'):>8}  (>= {t['ess_min']:.0f})"
                + (f"  worst: {self.ess_tail_worst}" if self.ess_tail_worst else ""),
                f"  divergences     {fmt(self.divergences, 'd'):>8}  "
                f"(<= {t['max_divergences']:.0f})",
                f"  E-BFMI/chain    {bfmi}  (>= {t['bfmi_min']})",
                f"  max tree depth  {fmt(self.treedepth_saturation, '.1%'):>8}  of draws "
                f"(<= {t['treedepth_max_fraction']:.0%})",
            ]
        for p in self.problems:
            lines.append(f"  problem: {p}")
        for a in self.advice:
            lines.append(f"  try: {a}")
        return "\n".join(lines)


def _stat(stats_ds: xr.Dataset | None, *names: str) -> np.ndarray | None:
    if stats_ds is None:
        return None
    for n in names:
        if n in stats_ds:
            return np.asarray(stats_ds[n].values)
    return None


def _worst(ds: xr.Dataset, pick) -> tuple[float | None, str | None]:
    """Extreme value over every variable and element of ``ds`` and where it is."""
    best_v, best_name = None, None
    for name, da in ds.data_vars.items():
        vals = np.asarray(da.values, dtype=float)
        if vals.size == 0 or not np.isfinite(vals).any():
            continue
        flat = np.where(np.isfinite(vals), vals, np.nan).ravel()
        i = int(np.nanargmax(flat) if pick == "max" else np.nanargmin(flat))
        v = float(flat[i])
        if best_v is None or (v > best_v if pick == "max" else v < best_v):
            label = name
            if da.ndim:
                idx = np.unravel_index(i, da.shape)
                coords = [str(da[d].values[j]) if d in da.coords else str(j)
                          for d, j in zip(da.dims, idx, strict=True)]
                label = f"{name}[{', '.join(coords)}]"
            best_v, best_name = v, label
    return best_v, best_name


def convergence_report(
    idata: az.InferenceData,
    *,
    rhat_max: float = 1.01,
    ess_min: float = 400.0,
    max_divergences: int = 0,
    bfmi_min: float = 0.3,
    treedepth_max_fraction: float = 0.01,
    rhat_fail: float = 1.05,
    ess_fail: float = 100.0,
    divergence_fail_rate: float = 0.01,
    var_names: Sequence[str] | None = None,
) -> ConvergenceReport:
    """Assess a fit's convergence: R-hat, bulk/tail ESS, divergences, E-BFMI, tree depth.

    Parameters
    ----------
    idata : arviz.InferenceData
        From :func:`bayesclv.fit.fit`.
    rhat_max, ess_min, max_divergences, bfmi_min, treedepth_max_fraction
        Thresholds of an ``"ok"`` verdict; missing one gives ``"warning"``. Defaults
        follow Vehtari et al. (2021) and Betancourt (2016).
    rhat_fail, ess_fail, divergence_fail_rate
        Beyond these the verdict is ``"fail"``: the posterior summaries should not be used.
    var_names : sequence of str, optional
        Variables to check. Default: the paper parameters (``r, alpha, a, b`` ...) and the
        population hyperparameters (``*_mu``, ``*_sigma``) when the fit has them.

    Returns
    -------
    ConvergenceReport
    """
    attrs = idata.attrs
    post = idata.posterior
    kind = str(attrs.get("model", "unknown"))
    sampler = str(attrs.get("sampler", "unknown"))
    chains, draws = int(post.sizes["chain"]), int(post.sizes["draw"])
    thresholds = {
        "rhat_max": float(rhat_max),
        "ess_min": float(ess_min),
        "max_divergences": float(max_divergences),
        "bfmi_min": float(bfmi_min),
        "treedepth_max_fraction": float(treedepth_max_fraction),
        "rhat_fail": float(rhat_fail),
        "ess_fail": float(ess_fail),
        "divergence_fail_rate": float(divergence_fail_rate),
    }
    if var_names is None:
        from bayesclv.families import FAMILIES

        names = list(FAMILIES[kind].params) if kind in FAMILIES else []
        names += [v for v in post.data_vars if v.endswith(("_mu", "_sigma"))]
        names = [v for v in names if v in post.data_vars] or list(post.data_vars)
    else:
        names = list(var_names)
    base = dict(
        model=kind,
        pooling=str(attrs.get("pooling", "unknown")),
        sampler=sampler,
        chains=chains,
        draws=draws,
        tune=int(attrs.get("tune", 0)),
        thresholds=thresholds,
        variables=tuple(names),
    )
    sample_stats = getattr(idata, "sample_stats", None)
    if sampler in _APPROXIMATIONS or sample_stats is None or draws < 4:
        why = (
            f"sampler={sampler!r} gives an approximation (no MCMC chains), so convergence "
            "cannot be assessed and its intervals are not calibrated posterior intervals"
        )
        return ConvergenceReport(
            verdict=NOT_ASSESSED,
            rhat_max=None, rhat_worst=None, ess_bulk_min=None, ess_bulk_worst=None,
            ess_tail_min=None, ess_tail_worst=None, divergences=None, divergence_rate=None,
            bfmi=None, treedepth_saturation=None,
            problems=(why,),
            advice=("refit with sampler='pymc' or 'nutpie' (NUTS) before trusting intervals",),
            **base,
        )

    sub = post[names]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        r_hat, r_worst = (None, None)
        if chains >= 2:
            r_hat, r_worst = _worst(az.rhat(sub), "max")
        eb, eb_worst = _worst(az.ess(sub, method="bulk"), "min")
        et, et_worst = _worst(az.ess(sub, method="tail"), "min")
    div = _stat(sample_stats, "diverging")
    n_div = None if div is None else int(div.sum())
    div_rate = None if div is None else n_div / div.size
    energy = _stat(sample_stats, "energy")
    bfmi = None
    if energy is not None:
        num = np.square(np.diff(energy, axis=1)).mean(axis=1)
        bfmi = tuple(float(v) for v in num / np.var(energy, axis=1))
    reached = _stat(sample_stats, "reached_max_treedepth", "maxdepth_reached")
    sat = None if reached is None else float(np.mean(reached))

    problems: list[str] = []
    advice: list[str] = []
    fail = False
    if chains < 2:
        problems.append("one chain only: R-hat cannot compare chains")
        advice.append("sample at least 4 chains (chains=4)")
    if r_hat is not None and r_hat > rhat_max:
        fail |= r_hat > rhat_fail
        problems.append(f"R-hat {r_hat:.3f} > {rhat_max} ({r_worst}): chains disagree")
    low_ess = [v for v in (eb, et) if v is not None and v < ess_min]
    if low_ess:
        fail |= min(low_ess) < ess_fail
        problems.append(
            f"ESS {min(low_ess):.0f} < {ess_min:.0f} (bulk worst: {eb_worst}, tail worst: "
            f"{et_worst})"
        )
    if (r_hat is not None and r_hat > rhat_max) or low_ess:
        advice.append(
            f"run longer: more tuning and draws (e.g. tune={max(1000, 2 * base['tune'])}, "
            f"draws={max(1000, 2 * draws)}), more chains"
        )
    if n_div is not None and n_div > max_divergences:
        fail |= div_rate > divergence_fail_rate
        problems.append(f"{n_div} divergent transitions ({div_rate:.1%} of draws)")
        advice.append("raise target_accept (0.95 to 0.99)")
        if base["pooling"] == "partial":
            advice.append(
                "change the geometry of partial pooling: parameterization='noncentered' for "
                "small segments (or 'centered' for large ones)"
            )
        advice.append("use stronger (more informative) priors, e.g. a smaller segment_sigma")
    if bfmi is not None and min(bfmi) < bfmi_min:
        problems.append(f"E-BFMI {min(bfmi):.2f} < {bfmi_min} (poor momentum resampling)")
        advice.append("more tuning; reparameterise (non-centred) or use stronger priors")
    if sat is not None and sat > treedepth_max_fraction:
        problems.append(f"{sat:.1%} of draws hit the maximum tree depth")
        advice.append(
            "strong posterior correlations: reparameterise or use stronger priors; as a last "
            "resort raise the maximum tree depth"
        )
    if base["tune"] < 500 and problems:
        advice.insert(0, f"tune={base['tune']} is short for adaptation; use tune >= 1000")
    verdict = "fail" if fail else ("warning" if problems else "ok")
    return ConvergenceReport(
        verdict=verdict,
        rhat_max=r_hat, rhat_worst=r_worst,
        ess_bulk_min=eb, ess_bulk_worst=eb_worst,
        ess_tail_min=et, ess_tail_worst=et_worst,
        divergences=n_div, divergence_rate=div_rate,
        bfmi=bfmi, treedepth_saturation=sat,
        problems=tuple(problems), advice=tuple(dict.fromkeys(advice)),
        **base,
    )


def warn_if_bad(report: ConvergenceReport, *, stacklevel: int = 2) -> bool:
    """Issue a loud :class:`ConvergenceWarning` unless the verdict is ``"ok"``.

    Returns True when a warning was issued.
    """
    if report.verdict == "ok":
        return False
    banner = "!" * 72
    warnings.warn(
        f"\n{banner}\nbayesclv: the fit's convergence verdict is {report.verdict.upper()}.\n"
        f"{report}\n{banner}",
        ConvergenceWarning,
        stacklevel=stacklevel,
    )
    return True


# =====================================================================================
# Shared helpers
# =====================================================================================
def _as_params(obj: xr.Dataset | az.InferenceData) -> xr.Dataset:
    if isinstance(obj, az.InferenceData):
        from bayesclv.fit import posterior_params

        return posterior_params(obj)
    return obj


def _expected_purchases(params, rfm: RFMData, horizon: float) -> xr.DataArray:
    """:func:`bayesclv.predict.expected_purchases` for draws or a purchase stack."""
    if isinstance(params, PurchaseStack):
        return stacked(expected_purchases, params, rfm, horizon)
    return expected_purchases(params, rfm, horizon)


def _draw_groups(params) -> tuple[int, list[tuple[DrawParams, np.ndarray]]]:
    """The posterior's number of draws and its parts: ``(DrawParams, positions)`` per
    family of a purchase stack, or the one family with every position."""
    if isinstance(params, PurchaseStack):
        return params.n_draws, [
            (DrawParams(sub, "purchase"), pos) for _, pos, sub in params.components()
        ]
    dp = DrawParams(params, "purchase")
    return dp.n_draws, [(dp, np.arange(dp.n_draws))]


def _draw_subset(n_total: int, n_draws: int | None, rng: np.random.Generator) -> np.ndarray:
    """Indices of ``n_draws`` flattened posterior draws for simulation.

    A seeded subsample without replacement when the posterior has more draws; with
    fewer (a MAP fit, published point estimates) draws are reused, so the simulated
    predictive distribution still carries the customers' latent uncertainty. ``None``:
    every draw once.
    """
    if n_draws is None or n_draws == n_total:
        return np.arange(n_total)
    if n_draws < n_total:
        return np.sort(rng.choice(n_total, size=int(n_draws), replace=False))
    return np.sort(rng.choice(n_total, size=int(n_draws), replace=True))


def _chunks(n: int, size: int):
    for start in range(0, n, size):
        yield slice(start, min(n, start + size))


def _bin_labels(max_count: int) -> list[str]:
    return [str(k) for k in range(max_count)] + [f"{max_count}+"]


def _check_holdout(rfm: RFMData) -> None:
    if not rfm.has_holdout or rfm.holdout_length is None:
        raise ModelSpecificationError(
            "holdout evaluation needs an RFMData with a holdout period: build it with "
            "rfm_summary(..., calibration_end=..., observation_end=...) with observation_end "
            "after calibration_end."
        )


# =====================================================================================
# Posterior predictive check of the calibration frequency distribution
# =====================================================================================
@dataclass(frozen=True)
class FrequencyCheck:
    """Observed vs posterior predictive counts of customers by repeat purchases.

    ``observed`` has shape ``(n_groups, n_bins)``; ``simulated`` ``(n_draws, n_groups,
    n_bins)``; group 0 is ``"all"``, then one group per segment. The last bin is
    ``max_count+``.
    """

    groups: tuple[str, ...]
    bins: tuple[str, ...]
    observed: np.ndarray
    simulated: np.ndarray
    model: str

    def table(self, prob: float = 0.9) -> pd.DataFrame:
        """Tidy table: group, bin, observed, predicted mean and ``prob`` interval."""
        iv = interval_arrays(np.moveaxis(self.simulated, 0, -1), prob)
        rows = []
        for g, name in enumerate(self.groups):
            for k, b in enumerate(self.bins):
                lo, hi = iv["lower"][g, k], iv["upper"][g, k]
                obs = self.observed[g, k]
                rows.append(
                    dict(group=name, bin=b, observed=int(obs), mean=iv["mean"][g, k],
                         lower=lo, upper=hi, inside=bool(lo <= obs <= hi))
                )
        return pd.DataFrame(rows)

    def p_values(self) -> pd.Series:
        """Posterior predictive p-value per group of a chi-square discrepancy.

        ``D = sum_k (n_k - E n_k)^2 / E n_k`` with ``E n_k`` the posterior predictive mean;
        ``p = P(D_sim >= D_obs)``. Values near 0 say the model does not reproduce the
        frequency distribution.
        """
        e = self.simulated.mean(axis=0)
        e = np.where(e > 0, e, np.nan)
        d_obs = np.nansum((self.observed - e) ** 2 / e, axis=-1)
        d_sim = np.nansum((self.simulated - e) ** 2 / e, axis=-1)
        return pd.Series((d_sim >= d_obs).mean(axis=0), index=list(self.groups), name="p_value")


def posterior_predictive_frequency(
    params: xr.Dataset | az.InferenceData,
    rfm: RFMData,
    *,
    max_count: int = 7,
    n_draws: int = 200,
    random_seed: int | None = None,
) -> FrequencyCheck:
    """Posterior predictive check of the calibration repeat-purchase distribution.

    For each of ``n_draws`` posterior draws, every customer's calibration period of
    length ``T`` is simulated afresh with :func:`bayesclv.simulate.simulate_customers`
    (the model's own process, with their segment's parameters of that draw), and the
    customers with 0, 1, ..., ``max_count``+ repeat purchases are counted, overall and
    per segment.
    """
    from bayesclv import simulate

    params = _as_params(params)
    dp = DrawParams(params, "purchase")
    cls = dp.family.truth_class
    rng = np.random.default_rng(random_seed)
    idx = _draw_subset(dp.n_draws, n_draws, rng)
    cols = dp.positions(rfm.segment_names)
    order = np.argsort(rfm.segment, kind="stable")
    seg_sorted = rfm.segment[order]
    T_sorted = rfm.T[order]
    present = [s for s in range(rfm.n_segments) if (rfm.segment == s).any()]
    sizes = {rfm.segment_names[s]: int((rfm.segment == s).sum()) for s in present}
    n_groups = 1 + rfm.n_segments
    n_bins = max_count + 1

    def count(x: np.ndarray, seg: np.ndarray) -> np.ndarray:
        b = np.minimum(x, max_count)
        out = np.zeros((n_groups, n_bins), dtype=np.int64)
        out[0] = np.bincount(b, minlength=n_bins)
        out[1:] = np.bincount(seg * n_bins + b, minlength=rfm.n_segments * n_bins).reshape(
            rfm.n_segments, n_bins
        )
        return out

    sim = np.empty((len(idx), n_groups, n_bins), dtype=np.int64)
    for j, d in enumerate(idx):
        pop = {
            rfm.segment_names[s]: cls(**{n: dp.values[n][d, cols[s]] for n in dp.values})
            for s in present
        }
        res = simulate.simulate_customers(pop, sizes, T=T_sorted, random_seed=rng)
        sim[j] = count(res.frequency, seg_sorted)
    observed = count(rfm.frequency, rfm.segment)
    groups = ("all", *rfm.segment_names)
    if rfm.n_segments == 1:  # the single segment is the whole population
        groups, observed, sim = ("all",), observed[:1], sim[:, :1]
    return FrequencyCheck(
        groups=groups,
        bins=tuple(_bin_labels(max_count)),
        observed=observed,
        simulated=sim,
        model=dp.model,
    )


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
    for sl in _chunks(rfm.n_customers, chunk):
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
    _check_holdout(rfm)
    params = _as_params(params)
    n_bins = max_count + 1
    b = np.minimum(rfm.frequency, max_count)
    counts = np.bincount(b, minlength=n_bins)
    n_total, _ = _draw_groups(params)
    sums = np.zeros((n_total, n_bins))
    chunk_size = max(1, min(int(chunk_size), int(5e6 // n_total)))
    for sl in _chunks(rfm.n_customers, chunk_size):
        mask = np.zeros(rfm.n_customers, dtype=bool)
        mask[sl] = True
        e = _expected_purchases(params, rfm.subset(mask), rfm.holdout_length).values
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
            "frequency": _bin_labels(max_count),
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
    _check_holdout(rfm)
    params = _as_params(params)
    spend_params = None if spend_params is None else _as_params(spend_params)
    probs = tuple(float(p) for p in probs)
    h = float(rfm.holdout_length)
    rng = np.random.default_rng(random_seed)
    n_total, groups = _draw_groups(params)
    model = params.describe() if isinstance(params, PurchaseStack) else groups[0][0].model
    idx = _draw_subset(n_total, n_draws, rng)
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
        sp_idx = rng.permutation(_draw_subset(sp.n_draws, len(idx), rng))
        sp_cols = customer_columns(sp, rfm)

    # --- point predictions (every draw), chunked over customers
    chunk_pm = max(1, int(5e6 // max(n_total, 1)))
    pred = _posterior_mean_chunked(lambda r: _expected_purchases(params, r, h), rfm, chunk_pm)
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
    for sl in _chunks(rfm.n_customers, chunk_size):
        x = rfm.frequency[sl].astype(float)
        t_x, T = rfm.recency[sl], rfm.T[sl]
        y = rfm.holdout_frequency[sl]
        terms, sims_y = [], []
        for dp, local, cols in parts:
            fam = dp.family
            th = {n: v[local][:, cols[sl]] for n, v in dp.values.items()}  # (draws, chunk)
            lpa = fam.log_p_alive(th, x, t_x, T)
            latent = fam.latent_given_alive(th, x, T, rng)
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
    params = _as_params(params)
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
    idx = _draw_subset(dp.n_draws, n_use, rng)
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
        e = fam.p_alive(th, 0.0, 0.0, 0.0) * fam.expected_alive(th, 0.0, 0.0, t[None, :])
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


# =====================================================================================
# Pointwise log-likelihood and model comparison
# =====================================================================================
def pointwise_log_likelihood(
    idata: az.InferenceData, rfm: RFMData, *, chunk_size: int = 2_000_000
) -> az.InferenceData:
    """A copy of ``idata`` with a ``log_likelihood`` group, dims ``(chain, draw, customer)``.

    The models' likelihood is a ``pm.Potential`` (summed over customers), so PyMC stores
    no pointwise values; they are recomputed here with the same log-densities
    (:mod:`bayesclv.likelihoods`), once per distinct ``(segment, data)`` row and then
    expanded to customers. Variable ``"purchases"`` (BG/NBD, MBG/NBD, Pareto/NBD) or
    ``"spend"`` (Gamma-Gamma: customers with a repeat purchase and positive mean spend).
    ``chunk_size`` bounds the number of (draw x row) values evaluated at once.
    """
    fam = get_family(idata.attrs.get("model"))
    params = _as_params(idata)
    dp = DrawParams(params, fam.kind)
    rows = fam.model_rows(rfm)
    keep, data = rows.mask, list(rows.columns)
    var = "purchases" if fam.kind == "purchase" else "spend"
    cols = dp.positions(rfm.segment_names)[rfm.segment[keep]]
    stacked = np.column_stack([cols.astype(float), *data])
    uniq, inv = np.unique(stacked, axis=0, return_inverse=True)
    inv = inv.ravel()
    ucols = uniq[:, 0].astype(np.int64)
    ll_u = np.empty((dp.n_draws, uniq.shape[0]))
    step = max(1, chunk_size // max(dp.n_draws, 1))
    for sl in _chunks(uniq.shape[0], step):
        th = [dp.values[n][:, ucols[sl]] for n in dp.values]
        d = [uniq[sl, j + 1] for j in range(len(data))]
        ll_u[:, sl] = fam.logp(*th, *d)
    ll = ll_u[:, inv].reshape(dp.n_chain, dp.n_draw, -1)
    ds = xr.Dataset(
        {var: (("chain", "draw", "customer"), ll)},
        coords={
            "chain": idata.posterior.chain.values,
            "draw": idata.posterior.draw.values,
            "customer": rfm.customer_id[keep],
        },
    )
    out = idata.copy()
    if "log_likelihood" in out.groups():
        del out.log_likelihood
    out.add_groups(log_likelihood=ds)
    return out


def compare_models(
    fits: Mapping[str, az.InferenceData],
    rfm: RFMData,
    *,
    ic: str = "loo",
) -> pd.DataFrame:
    """ELPD comparison (PSIS-LOO by default) of fits to the same data, via ``arviz.compare``.

    All fits must model the same data: purchase models (BG/NBD, MBG/NBD, Pareto/NBD, any
    pooling) with each other, or Gamma-Gamma fits with each other. MAP fits (one draw)
    cannot be compared this way. The table adds ``model``, ``pooling`` and ``p_loo``
    columns and the Pareto-k count above 0.7 (``n_bad_k``): where it is not 0 the LOO
    estimate for those customers is unreliable.
    """
    if not fits:
        raise ValueError("compare_models needs at least one fit.")
    families = {get_family(f.attrs.get("model")).kind for f in fits.values()}
    if len(families) > 1:
        raise ModelSpecificationError(
            "compare_models: purchase models and Gamma-Gamma fits model different data and "
            "cannot be compared; compare each group separately."
        )
    small = [k for k, f in fits.items() if f.posterior.sizes["draw"] < 10]
    if small:
        raise ModelSpecificationError(
            f"compare_models: fits {small} have fewer than 10 draws (MAP?); LOO needs "
            f"posterior draws (sampler='pymc' or 'nutpie')."
        )
    with_ll = {k: pointwise_log_likelihood(f, rfm) for k, f in fits.items()}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        table = az.compare(with_ll, ic=ic)
        bad = {}
        for k, f in with_ll.items():
            if ic == "loo":
                res = az.loo(f, pointwise=True)
                bad[k] = int((np.asarray(res.pareto_k) > 0.7).sum())
    table = table.copy()
    table.insert(0, "model", [fits[k].attrs.get("model") for k in table.index])
    table.insert(1, "pooling", [fits[k].attrs.get("pooling") for k in table.index])
    if bad:
        table["n_bad_k"] = [bad[k] for k in table.index]
    return table
