"""Abe (2009): the hierarchical Bayes Pareto/NBD, the reference "HB" model of the field.

Every customer has their own purchase rate ``lambda_i`` and dropout rate ``mu_i``;
``(log lambda_i, log mu_i)`` is bivariate normal across customers, with a mean that may
depend on customer covariates (e.g. the first purchase amount). Unlike the Gamma-mixed
Pareto/NBD, this allows a correlation between purchase and dropout rates.

Reference: Abe, M. (2009). "Counting your customers" one by one: a hierarchical Bayes
extension to the Pareto/NBD model. Marketing Science 28(3), 541-553. BTYDplus's
reproduction on CDNOW (weeks) reports medians log-lambda mean -3.54, log-mu mean -3.59,
var(log lambda) 1.34, cov 0.13, var(log mu) 2.62.

Sampling coordinates (``parameterization``). The model is always the one above; the
coordinates only change how NUTS moves. ``"auto"`` (default): the standard deviations
``s_l, s_m`` are HalfNormal and ``(r + 1) / 2 ~ Beta(eta, eta)``, which is exactly the
LKJ(eta) Cholesky prior for two rates (tests/test_abe.py checks the whole log density
against the non-centred form after the change of variables). ``log lambda_i`` is
partially non-centred on what customer ``i``'s own repeat purchases say about it: with
``p_i`` the curvature of their log-likelihood in ``log lambda`` at a rough empirical-Bayes
mode ``c_i`` (:func:`_reference`; ``p_i = 0`` for the 60% of CDNOW customers with no
repeat purchase) and ``k_i = sqrt(1 + s_l^2 p_i)``,
``log lambda_i = (m + c_i s_l^2 p_i) / k_i^2 + u_i s_l / k_i`` with
``u_i ~ Normal(s_l p_i (m - c_i) / k_i, k_i)``, the law that makes
``log lambda_i ~ Normal(m, s_l^2)`` (the segment form of
:func:`bayesclv.models._common.unconstrained_params`, per customer);
``log mu_i`` given ``log lambda_i`` is non-centred on its conditional normal.
``"noncentered"``: the first version, ``theta_i = m + L e_i`` with ``L`` from
``LKJCholeskyCov``.

Measured on the CDNOW sample (2,357 customers), nutpie, 4 chains x 1000 draws (+1000
tune), seed 1, on a 2-core machine shared with other jobs (wall times are noisy; the
leapfrog steps and ESS less so), ``var_log_mu`` the slowest quantity throughout:

==========================================  ======  ===========  =======  ========
coordinates                                 steps/  ESS bulk /   R-hat    verdict
                                            draw    tail
==========================================  ======  ===========  =======  ========
non-centred, LKJ (before; two runs, equal)  31.0    57 / 206     1.078    fail
2-D Gaussian partial non-centring (both     31.0    114 / 212    1.019    warning
rates, fixed reference information)                                       (E-BFMI 0.22)
log-lambda-only information, 2-D form       31.0    157 / 218    1.019    warning
adaptive (Newton on a Poisson-form          31.3    63 / 48      1.040    fail
surrogate inside the model, 3.4x gradient)
"auto" (kept: log lambda first, log mu      31.0    121 / 293    1.028    warning
given log lambda), two runs                         79 / 288     1.057    fail
==========================================  ======  ===========  =======  ========

One log-density-and-gradient evaluation (PyTensor C backend, CDNOW) costs 0.425 ms in
"auto" coordinates against 0.315 ms non-centred. So "auto" buys a modest, noisy gain:
bulk ESS of ``var_log_mu`` per gradient +0-60%, tail ESS +40% per draw (about equal per
gradient second), R-hat 1.03-1.06 instead of 1.08, and it starts at a data-derived point
instead of a MAP search. It is kept over the 2-D log-lambda-only form (within one seed's
noise of it) because every latent is an ordinary Normal (no Flat plus Potential), so
prior predictive sampling works.

None of these passes the convergence check (ESS 400) at 4 x 1000: every variant spends
the same 31 leapfrog steps per draw (tree depth 5, step size ~0.12, set by the ~4,700
latent coordinates), and ``var_log_mu`` stays slow because most customers' data bound
``log mu_i`` from one side only (alive at ``T`` says "``mu`` small", with no lower
limit), which neither a fixed centring nor a fixed Gaussian approximation captures.
``target_accept=0.8`` does not help either (still 31 steps per draw; bulk ESS 146).

So ``fit(model)`` runs this model for 4 x 5000 draws (``draws=None`` reads
``DEFAULT_DRAWS`` from the builder). Measured (``benchmarks/abe_cdnow.py --seed 1`` and
``--seed 2``, nutpie, machine under load ~3): 473 and 470 s; ``var_log_mu`` bulk ESS 553
and 596, tail ESS 1252 and 835; R-hat 1.005 (verdict ok) and 1.015 (verdict warning);
no divergences; every BTYDplus median inside the 94% intervals. Peak memory was 5.8 GB
while the per-customer sampling coordinates ``z_*`` were stored; ``fit`` now keeps only
``lambda`` and ``mu`` per customer (``extra["var_names"]``). Check ``convergence_report``
and run longer when it warns.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
import pymc as pm
import pytensor.tensor as pt

from bayesclv.data import RFMData
from bayesclv.errors import ModelSpecificationError
from bayesclv.likelihoods import pareto_nbd_individual_logp
from bayesclv.models._common import ModelSpec, check_options, register_spec
from bayesclv.priors import AbePriors

__all__ = ["build_abe_pareto_nbd", "abe_summary"]

PARAMETERIZATIONS = ("auto", "noncentered")
DEFAULT_DRAWS = 5000


def _loglik_derivatives(theta: np.ndarray, x, t_x, T, h: float = 1e-3):
    """Gradient and Hessian of each customer's log-likelihood in (log lambda, log mu).

    Central differences of :func:`pareto_nbd_individual_logp` (NumPy): they only shape
    the sampling coordinates, never the model, so 1e-6 relative accuracy is plenty.
    """

    def f(a, b):
        return pareto_nbd_individual_logp(np.exp(a), np.exp(b), x, t_x, T)

    l, m = theta[:, 0], theta[:, 1]
    f0, fpl, fml, fpm, fmm = f(l, m), f(l + h, m), f(l - h, m), f(l, m + h), f(l, m - h)
    grad = np.stack([fpl - fml, fpm - fmm], axis=1) / (2 * h)
    hll = (fpl - 2 * f0 + fml) / h**2
    hmm = (fpm - 2 * f0 + fmm) / h**2
    hlm = (f(l + h, m + h) - f(l + h, m - h) - f(l - h, m + h) + f(l - h, m - h)) / (4 * h * h)
    hess = np.stack([np.stack([hll, hlm], -1), np.stack([hlm, hmm], -1)], -2)
    return grad, hess


def _reference(x, t_x, T, iterations: int = 25) -> dict[str, np.ndarray]:
    """A rough empirical-Bayes fit: Laplace approximations per customer inside EM.

    Returns the population mean ``b`` and covariance ``S`` and each customer's mode
    ``theta`` of ``(log lambda, log mu)`` under ``N(b, S)``. Used only to choose
    sampling coordinates and starting values; Laplace-EM shrinks the variances (0.78
    and 0.50 on CDNOW against posterior medians 1.34 and ~4), which costs some
    efficiency, not exactness.
    """
    n = len(x)
    b = np.array([np.log(0.1), np.log(0.02)])
    S = np.eye(2)
    theta = np.tile(b, (n, 1))
    for _ in range(iterations):
        G = np.linalg.inv(S)
        for _ in range(8):
            grad, hess = _loglik_derivatives(theta, x, t_x, T)
            w, V = np.linalg.eigh(-hess)  # the likelihood's information, made >= 0
            info = (V * np.clip(w, 0.0, None)[:, None, :]) @ np.swapaxes(V, 1, 2)
            step = np.linalg.solve(info + G, (grad - (theta - b) @ G)[..., None])[..., 0]
            theta = theta + step / np.maximum(1.0, np.linalg.norm(step, axis=1))[:, None]
        b = theta.mean(axis=0)
        d = theta - b
        S = d.T @ d / n + np.linalg.inv(info + G).mean(axis=0)
    return {"b": b, "S": S, "theta": theta}


def build_abe_pareto_nbd(
    rfm: RFMData,
    priors: AbePriors | None = None,
    *,
    covariates: np.ndarray | pd.DataFrame | None = None,
    parameterization: str = "auto",
) -> pm.Model:
    """Abe's hierarchical Bayes Pareto/NBD with optional customer covariates.

    Assumptions: while alive, customer ``i`` buys as a Poisson process with rate
    ``lambda_i`` and stays alive for an Exponential(``mu_i``) time;
    ``(log lambda_i, log mu_i) ~ MVN(B d_i, Gamma)`` with ``d_i = (1, z_i)`` and ``z_i``
    the standardised covariates.

    Parameters
    ----------
    rfm : RFMData
        Needs ``frequency``, ``recency`` and ``T`` (segments are ignored; use covariates).
    priors : AbePriors, optional
    covariates : array (n, k) or DataFrame, optional
        Customer covariates, standardised inside (mean 0, sd 1) so the intercepts stay
        the population means. E.g. ``rfm.first_purchase_value`` (log).
    parameterization : {"auto", "noncentered"}
        Sampling coordinates of the same model. ``"noncentered"``: ``theta_i = B d_i +
        L e_i``, ``e_i ~ N(0, I)``, ``L`` from an LKJ Cholesky covariance (the first
        version). ``"auto"`` (default): standard deviations and correlation as separate
        parameters, ``log lambda_i`` partially non-centred on what the customer's own
        purchases say about it, and ``log mu_i`` non-centred given ``log lambda_i``
        (see the module docstring for the law and the measurements).

    Returns
    -------
    pymc.Model
        Deterministics ``log_lambda_mean``, ``log_mu_mean`` (intercepts),
        ``var_log_lambda``, ``var_log_mu``, ``cov_log`` and, with covariates,
        ``coefficients`` (dims ``rate, covariate``); per-customer ``lambda``, ``mu``.
    """
    check_options(rfm, "complete", "auto")
    if parameterization not in PARAMETERIZATIONS:
        raise ModelSpecificationError(
            f"parameterization={parameterization!r}; Abe's model takes one of {PARAMETERIZATIONS}."
        )
    priors = AbePriors() if priors is None else priors
    if not isinstance(priors, AbePriors):
        raise ModelSpecificationError(f"Abe's model needs AbePriors, got {type(priors).__name__}.")
    names: Sequence[str] = ()
    Z = None
    if covariates is not None:
        if isinstance(covariates, pd.DataFrame):
            names = [str(c) for c in covariates.columns]
            Z = covariates.to_numpy(dtype=np.float64)
        else:
            Z = np.asarray(covariates, dtype=np.float64)
            Z = Z[:, None] if Z.ndim == 1 else Z
            names = [f"z{j}" for j in range(Z.shape[1])]
        if Z.shape[0] != rfm.n_customers or not np.isfinite(Z).all():
            raise ModelSpecificationError(
                f"covariates must be finite with one row per customer ({rfm.n_customers}); got "
                f"shape {Z.shape} with {int((~np.isfinite(Z)).sum())} non-finite values."
            )
        sd = Z.std(axis=0)
        if (sd == 0).any():
            raise ModelSpecificationError("a covariate is constant; drop it.")
        Z = (Z - Z.mean(axis=0)) / sd
    n = rfm.n_customers
    coords = {"customer": np.arange(n), "rate": ["log_lambda", "log_mu"]}
    if Z is not None:
        coords["covariate"] = list(names)
    x, t_x, T = (np.asarray(a, dtype=np.float64) for a in (rfm.frequency, rfm.recency, rfm.T))
    # fit(draws=None) runs this many draws per chain: at 4 x 1000 var(log mu) reaches a
    # bulk ESS of only 80-150 (module docstring). "var_names": what fit keeps, everything
    # but the per-customer sampling coordinates (z_*), which duplicate lambda and mu.
    extra: dict = {"draws": DEFAULT_DRAWS}
    with pm.Model(coords=coords) as model:
        pl, pmu = priors.log_lambda_mean, priors.log_mu_mean
        m_lam = pm.Normal("log_lambda_mean", pl.mu, pl.sigma)
        m_mu = pm.Normal("log_mu_mean", pmu.mu, pmu.sigma)
        mean_lam, mean_mu = m_lam, m_mu
        if Z is not None:
            coef = pm.Normal(
                "coefficients", 0.0, priors.coefficient_sigma, dims=("rate", "covariate")
            )
            Zt = pt.as_tensor_variable(Z)
            mean_lam = m_lam + Zt @ coef[0]
            mean_mu = m_mu + Zt @ coef[1]
        if parameterization == "noncentered":
            chol, _, _ = pm.LKJCholeskyCov(
                "chol",
                n=2,
                eta=priors.lkj_eta,
                sd_dist=pm.HalfNormal.dist(priors.sd_sigma),
                compute_corr=True,
            )
            e = pm.Normal("z", 0.0, 1.0, dims=("customer", "rate"))
            log_lam = mean_lam + chol[0, 0] * e[:, 0]
            log_mu = mean_mu + chol[1, 0] * e[:, 0] + chol[1, 1] * e[:, 1]
            cov = chol @ chol.T
            var_lam, var_mu, cov_lm = cov[0, 0], cov[1, 1], cov[0, 1]
        else:
            # Gamma = [[s_l^2, r s_l s_m], [r s_l s_m, s_m^2]] with s ~ HalfNormal and
            # (r + 1) / 2 ~ Beta(eta, eta): exactly the LKJ(eta) Cholesky prior for n = 2.
            s_l = pm.HalfNormal("log_lambda_sigma", priors.sd_sigma)
            s_m = pm.HalfNormal("log_mu_sigma", priors.sd_sigma)
            r = pm.Deterministic(
                "corr", 2.0 * pm.Beta("corr_unit", priors.lkj_eta, priors.lkj_eta) - 1.0
            )
            ref = _reference(x, t_x, T)
            _, hess = _loglik_derivatives(ref["theta"], x, t_x, T)
            # What a repeat buyer's purchases say about log lambda: the curvature of
            # their likelihood at the reference mode (a precision) and that mode.
            info = np.where(x > 0, np.maximum(-hess[:, 0, 0], 0.0), 0.0)
            centre = ref["theta"][:, 0]
            rho2 = s_l**2 * info
            root = pt.sqrt(1.0 + rho2)
            # log lambda_i ~ N(mean, s_l^2) written as lambda-coordinate z_l with the law
            # that makes it so (as in _common.unconstrained_params, per customer).
            z_l = pm.Normal(
                "z_log_lambda",
                s_l * info * (mean_lam - centre) / root,
                root,
                dims="customer",
            )
            log_lam = (mean_lam + centre * rho2) / (1.0 + rho2) + z_l * s_l / root
            z_m = pm.Normal("z_log_mu", 0.0, 1.0, dims="customer")
            log_mu = (
                mean_mu + r * s_m / s_l * (log_lam - mean_lam) + s_m * pt.sqrt(1.0 - r**2) * z_m
            )
            var_lam, var_mu, cov_lm = s_l**2, s_m**2, r * s_l * s_m
            S = ref["S"]
            extra["start"] = {
                "log_lambda_mean": ref["b"][0],
                "log_mu_mean": ref["b"][1],
                "log_lambda_sigma": np.sqrt(S[0, 0]),
                "log_mu_sigma": np.sqrt(S[1, 1]),
                "corr_unit": 0.5 * (1.0 + S[0, 1] / np.sqrt(S[0, 0] * S[1, 1])),
            }
        lam = pm.Deterministic("lambda", pt.exp(log_lam), dims="customer")
        mu = pm.Deterministic("mu", pt.exp(log_mu), dims="customer")
        pm.Deterministic("var_log_lambda", var_lam)
        pm.Deterministic("var_log_mu", var_mu)
        pm.Deterministic("cov_log", cov_lm)
        pm.Potential("loglike", pt.sum(pareto_nbd_individual_logp(lam, mu, x, t_x, T)))
    per_customer = {"z", "z_log_lambda", "z_log_mu"}
    extra["var_names"] = [
        v.name for v in model.free_RVs + model.deterministics if v.name not in per_customer
    ]
    register_spec(
        model,
        ModelSpec(
            model="abe_pareto_nbd",
            pooling="individual",
            segment_names=rfm.segment_names,
            time_unit=rfm.time_unit,
            priors=priors,
            params=("log_lambda_mean", "log_mu_mean", "var_log_lambda", "var_log_mu", "cov_log"),
            unconstrained=(),
            n_customers=n,
            n_rows=n,
            segment_sizes=tuple(int(s) for s in rfm.segment_sizes()),
            parameterization=parameterization,
            extra=extra,
        ),
    )
    return model


def abe_summary(idata) -> pd.DataFrame:
    """Posterior medians and 94% intervals of the population quantities BTYDplus reports."""
    rows = []
    for name in ("log_lambda_mean", "log_mu_mean", "var_log_lambda", "cov_log", "var_log_mu"):
        draws = idata.posterior[name].values.ravel()
        lo, med, hi = np.quantile(draws, [0.03, 0.5, 0.97])
        rows.append({"quantity": name, "median": med, "lower_94": lo, "upper_94": hi})
    return pd.DataFrame(rows)
