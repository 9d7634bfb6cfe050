"""Abe's (2009) HB Pareto/NBD: the sampling coordinates change nothing but the sampling.

Oracles: the change-of-variables formula (the "auto" coordinates against the plain
non-centred ones, with the Jacobian taken by finite differences of the built model), and
population values recovered from data simulated from Abe's model itself.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytensor.tensor as pt
import pytest

from bayesclv.data import RFMData
from bayesclv.errors import ModelSpecificationError
from bayesclv.models import build_abe_pareto_nbd


def simulate_abe(n, mean, cov, *, T=(30.0, 52.0), random_seed=0) -> RFMData:
    """Customers of Abe's model: (log lambda, log mu) ~ MVN(mean, cov), Poisson purchases
    while alive, Exponential(mu) lifetime, calibration ages uniform on T."""
    rng = np.random.default_rng(random_seed)
    theta = rng.multivariate_normal(mean, cov, size=n)
    lam, mu = np.exp(theta[:, 0]), np.exp(theta[:, 1])
    age = rng.uniform(*T, size=n)
    window = np.minimum(rng.exponential(1.0 / mu), age)
    x = rng.poisson(lam * window)
    # the last of x uniform purchase times in the window
    t_x = np.where(x > 0, window * rng.beta(np.maximum(x, 1), 1.0), 0.0)
    frame = pd.DataFrame({"customer_id": np.arange(n), "frequency": x, "recency": t_x, "T": age})
    return RFMData.from_frame(frame, customer_id="customer_id", monetary_value=None)


def _log_rates_fn(model):
    f = model.compile_fn(
        model.replace_rvs_by_values([pt.log(model["lambda"]), pt.log(model["mu"])]),
        inputs=model.value_vars,
        on_unused_input="ignore",
    )
    return lambda point: np.stack(f(point), axis=1)


def _both_log_densities(fns, cov, s_l, s_m, unit, means, seed):
    """log density of the "auto" model at a point, and of the non-centred one at the
    image of that point plus the log-Jacobian of the map (both on the constrained scale)."""
    rng = np.random.default_rng(seed)
    n = cov.shape[0]
    r = 2 * unit - 1
    shared = {
        "log_lambda_mean": np.array(means[0]),
        "log_mu_mean": np.array(means[1]),
        "coefficients": np.array([[0.3], [-0.4]]),
    }
    pa = dict(shared)
    pa.update(
        log_lambda_sigma_log__=np.log(s_l),
        log_mu_sigma_log__=np.log(s_m),
        corr_unit_logodds__=np.log(unit / (1 - unit)),
        z_log_lambda=rng.normal(size=n),
        z_log_mu=rng.normal(size=n),
    )
    log_rates, logp_auto, logp_plain = fns
    theta = log_rates(pa)
    # d theta / d z per customer, by central differences of the built model
    h = 1e-6
    cols = []
    for name in ("z_log_lambda", "z_log_mu"):
        up, down = dict(pa), dict(pa)
        up[name] = pa[name] + h
        down[name] = pa[name] - h
        cols.append((log_rates(up) - log_rates(down)) / (2 * h))
    det = cols[0][:, 0] * cols[1][:, 1] - cols[1][:, 0] * cols[0][:, 1]

    L = np.array([[s_l, 0.0], [r * s_m, s_m * np.sqrt(1 - r**2)]])
    z_std = (cov - cov.mean()) / cov.std()
    mean = np.array(means) + z_std @ np.array([[0.3, -0.4]])
    pn = dict(shared)
    pn["chol_cholesky-cov-packed__"] = np.array([np.log(L[0, 0]), L[1, 0], np.log(L[1, 1])])
    pn["z"] = np.linalg.solve(L, (theta - mean).T).T
    # (s_l, s_m, unit) -> (L00, L10, L11): |det| = 2 s_m / sqrt(1 - r^2);
    # z -> e = L^-1 (theta(z) - mean): |det| = det(d theta / d z) / (L00 L11).
    log_jac = np.log(2 * s_m / np.sqrt(1 - r**2)) + np.sum(
        np.log(np.abs(det)) - np.log(L[0, 0] * L[1, 1])
    )
    return float(logp_auto(pa)), float(logp_plain(pn)) + log_jac


def test_auto_coordinates_are_the_noncentred_model_after_the_change_of_variables():
    rfm = simulate_abe(60, [-2.5, -3.5], [[1.0, 0.2], [0.2, 1.5]], random_seed=3)
    cov = np.random.default_rng(4).normal(size=(60, 1))
    auto = build_abe_pareto_nbd(rfm, covariates=cov)
    plain = build_abe_pareto_nbd(rfm, covariates=cov, parameterization="noncentered")
    fns = (
        _log_rates_fn(auto),
        auto.compile_logp(jacobian=False),
        plain.compile_logp(jacobian=False),
    )
    a1, p1 = _both_log_densities(fns, cov, 1.1, 1.7, 0.65, (-2.3, -3.9), seed=5)
    a2, p2 = _both_log_densities(fns, cov, 0.6, 2.4, 0.3, (-3.0, -3.2), seed=6)
    # Equal up to one constant: PyMC's LKJCholeskyCov normalises the n = 2 LKJ density
    # differently from Beta(eta, eta) (log(16/9) at eta = 2); the posterior is the same.
    assert a1 - p1 == pytest.approx(a2 - p2, abs=1e-5)
    assert abs(a1 - p1) < 1.0


def test_auto_coordinates_recover_the_population_of_simulated_customers():
    from bayesclv.fit import fit

    truth = {"log_lambda_mean": -2.5, "log_mu_mean": -3.5, "var_log_lambda": 0.8}
    rfm = simulate_abe(1000, [-2.5, -3.5], [[0.8, 0.1], [0.1, 1.0]], random_seed=11)
    idata = fit(
        build_abe_pareto_nbd(rfm),
        sampler="nutpie",
        chains=2,
        draws=200,
        tune=300,
        random_seed=2,
        progressbar=False,
    )
    assert int(idata.sample_stats["diverging"].sum()) == 0
    for name, value in truth.items():
        lo, hi = np.quantile(idata.posterior[name].values, [0.03, 0.97])
        assert lo <= value <= hi, (name, lo, hi)


def test_unknown_parameterization_names_the_choices():
    rfm = simulate_abe(20, [-2.5, -3.5], np.eye(2), random_seed=1)
    with pytest.raises(ModelSpecificationError, match="noncentered"):
        build_abe_pareto_nbd(rfm, parameterization="centered")


@pytest.mark.extended
def test_fit_defaults_to_the_draws_the_builder_recommends():
    """draws=None: 5000 for Abe's model (its var(log mu) needs them), 1000 otherwise."""
    from bayesclv.fit import fit
    from bayesclv.models import build_bgnbd
    from bayesclv.models._common import model_spec

    rfm = simulate_abe(60, [-2.5, -3.5], np.eye(2), random_seed=3)
    assert model_spec(build_bgnbd(rfm)).extra.get("draws") == 1000  # the family default
    kw = {"sampler": "advi", "advi_iterations": 50, "random_seed": 1, "progressbar": False}
    idata = fit(build_abe_pareto_nbd(rfm), **kw)
    assert idata.attrs["draws"] == 5000 and idata.posterior.sizes["draw"] == 5000
