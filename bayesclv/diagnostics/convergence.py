"""Convergence report with a verdict: R-hat, ESS, divergences, E-BFMI, tree depth."""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import arviz as az
import numpy as np
import xarray as xr

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
