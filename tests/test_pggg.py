"""Pareto/GGG (customer-level HB): likelihood, P(alive), gradient, predictions, recovery.

Oracles: the likelihood written with the integral over the lifetime, evaluated by
``scipy.integrate.quad`` from the Gamma densities of the actual gaps (not from ``litt``);
the Pareto/NBD likelihood and conditional expectation at ``k = 1``; a clockwork customer
(``k`` huge); central differences of the NumPy log-likelihood; a population recovered from
customers simulated here, independently of the package, from the generative model.
"""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd
import pytensor
import pytensor.tensor as pt
import pytest
import scipy.special as sps
from scipy import integrate, stats

from bayesclv.data import RFMData
from bayesclv.errors import ModelSpecificationError
from bayesclv.likelihoods import pareto_nbd_individual_logp
from bayesclv.models.pggg import (
    build_pareto_ggg,
    expected_holdout_purchases,
    pggg_log_alive,
    pggg_logp,
    pggg_p_alive,
)


def _quad_oracle(lam, k, mu, itts, T):
    """log L and P(alive) from the definition: the gaps' Gamma densities times
    ``e^{-mu T} S(T - t_x) + mu int_{t_x}^T e^{-mu tau} S(tau - t_x) dtau`` (by quad)."""
    itts = np.asarray(itts, dtype=float)
    t_x = float(itts.sum())
    c = k * lam
    gaps = float(np.sum(stats.gamma.logpdf(itts, k, scale=1.0 / c)))
    U = T - t_x
    alive = np.exp(-mu * U) * sps.gammaincc(k, c * U)  # relative to e^{-mu t_x}
    integral = 0.0
    if U > 0:
        # the survival falls around u = 1/lambda, sharply for a large k
        pts = [p for p in (0.5 / lam, 1.0 / lam, 2.0 / lam) if 0 < p < U]
        integral = integrate.quad(
            lambda u: np.exp(-mu * u) * sps.gammaincc(k, c * u),
            0.0,
            U,
            points=pts or None,
            epsabs=0.0,
            epsrel=1e-12,
            limit=1000,
        )[0]
    bracket = alive + mu * integral
    return gaps - mu * t_x + np.log(bracket), alive / bracket


CUSTOMERS = {  # name: (gaps, T)
    "no repeat": ([], 40.0),
    "one repeat": ([3.0], 52.0),
    "regular": ([4.0, 6.0, 5.0, 5.5, 4.5, 5.0], 31.0),
    "last purchase at T": ([2.0, 5.0, 3.0], 10.0),
}


def test_likelihood_and_p_alive_equal_the_quad_integral_over_an_extreme_grid():
    ks = (0.05, 0.3, 1.0, 4.0, 30.0, 300.0, 1000.0)
    lams = (1e-3, 0.2, 20.0)
    mus = (1e-5, 0.03, 5.0)
    worst_ll = worst_pa = 0.0
    for k, lam, mu, (gaps, T) in itertools.product(ks, lams, mus, CUSTOMERS.values()):
        ll_ref, pa_ref = _quad_oracle(lam, k, mu, gaps, T)
        x, t_x = float(len(gaps)), float(np.sum(gaps))
        litt = float(np.sum(np.log(gaps))) if gaps else 0.0
        ll = pggg_logp(lam, k, mu, x, t_x, T, litt)
        pa = pggg_p_alive(lam, k, mu, x, t_x, T)
        assert np.isfinite(ll) and 0.0 <= pa <= 1.0, (k, lam, mu, gaps)
        worst_ll = max(worst_ll, abs(ll - ll_ref) / max(1.0, abs(ll_ref)))
        worst_pa = max(worst_pa, abs(pa - pa_ref))
    # measured: 2.5e-10 (log-likelihood, relative to max(1, |log L|)) and 3.4e-12
    # (P(alive), absolute). The worst case (k = 30, lambda = 20, mu = 0.03, one gap of 3,
    # T = 52) is quad's own error: mpmath at 40 digits agrees with the closed form to 1e-16.
    assert worst_ll < 1e-9
    assert worst_pa < 1e-9


def test_k_equal_one_is_the_pareto_nbd():
    lam = np.array([0.01, 0.3, 2.0, 0.3])
    mu = np.array([0.5, 0.05, 1e-4, 0.05])
    x = np.array([0.0, 2.0, 40.0, 3.0])
    t_x = np.array([0.0, 10.0, 30.0, 40.0])
    T = np.array([40.0, 40.0, 31.0, 40.0])
    litt = np.array([0.0, 1.7, -3.0, 2.0])  # no effect at k = 1
    ours = pggg_logp(lam, 1.0, mu, x, t_x, T, litt)
    np.testing.assert_allclose(ours, pareto_nbd_individual_logp(lam, mu, x, t_x, T), rtol=1e-12)
    # Pareto/NBD P(alive) given (lambda, mu): 1 / (1 + mu/(lambda+mu) (e^{(lambda+mu)(T-t_x)} - 1))
    expect = 1.0 / (1.0 + mu / (lam + mu) * np.expm1((lam + mu) * (T - t_x)))
    np.testing.assert_allclose(pggg_p_alive(lam, 1.0, mu, x, t_x, T), expect, rtol=1e-12)


# (lambda, k, mu, x, t_x, T): ordinary, the large k where PyTensor's own gradient of
# gammaincc in the shape fails (k = 50, 200, 1000), tiny and huge rates, x = 0, t_x = T
POINTS = np.array(
    [
        (0.3, 2.0, 0.02, 5.0, 20.0, 40.0),
        (0.3, 0.2, 0.02, 0.0, 0.0, 40.0),
        (1.0, 50.0, 0.01, 3.0, 3.0, 42.0),
        (0.9, 200.0, 0.05, 10.0, 11.0, 12.1),
        (0.5, 1000.0, 0.001, 20.0, 40.0, 42.0),
        (2e-3, 5.0, 1e-4, 1.0, 30.0, 52.0),
        (15.0, 0.7, 3.0, 100.0, 7.0, 7.0),
        (0.05, 8.0, 0.3, 0.0, 0.0, 10.0),
    ]
)


def _points():
    lam, k, mu, x, t_x, T = POINTS.T
    litt = np.where(x > 0, x * np.log(np.maximum(t_x, 1e-9) / np.maximum(x, 1)) - 0.2 * x, 0.0)
    return lam, k, mu, x, t_x, T, litt


def _compiled():
    lam, k, mu, x, t_x, T, litt = _points()
    log_params = pt.dmatrix("log_params")  # rows: log lambda, log k, log mu
    l_lam, l_k, l_mu = (pt.exp(log_params[i]) for i in range(3))
    ll = pggg_logp(l_lam, l_k, l_mu, x, t_x, T, litt)
    la = pggg_log_alive(l_lam, l_k, l_mu, x, t_x, T, litt)
    grad = pytensor.grad(pt.sum(ll), log_params)
    # FAST_COMPILE: the same values (SciPy's gammaincc) without minutes of C compilation
    return pytensor.function([log_params], [ll, la, grad], mode="FAST_COMPILE")


def test_pytensor_logp_equals_numpy_and_its_gradient_equals_finite_differences():
    lam, k, mu, x, t_x, T, litt = _points()
    theta = np.log(np.stack([lam, k, mu]))
    ll, la, grad = _compiled()(theta)
    np.testing.assert_allclose(ll, pggg_logp(lam, k, mu, x, t_x, T, litt), rtol=1e-13)
    np.testing.assert_allclose(la, pggg_log_alive(lam, k, mu, x, t_x, T, litt), rtol=1e-13)
    h = 1e-5
    for i in range(3):
        up, down = theta.copy(), theta.copy()
        up[i] += h
        down[i] -= h
        fd = (pggg_logp(*np.exp(up), x, t_x, T, litt) - pggg_logp(*np.exp(down), x, t_x, T, litt))
        fd /= 2 * h
        assert np.all(np.isfinite(grad[i]))
        # measured: 6e-8 relative at most (the central differences' own error)
        np.testing.assert_allclose(grad[i], fd, rtol=1e-6, atol=1e-6)


def test_the_built_model_gradient_survives_pymc_rewrites_at_large_k():
    """PyMC rewrites the log density before differentiating it; the hand-made gradient
    in k must survive that (stop-gradients did not). Last purchase at T included."""
    frame = pd.DataFrame({"customer_id": [1, 2, 3], "frequency": [0, 4, 3],
                          "recency": [0.0, 20.0, 12.0], "T": [30.0, 21.0, 12.0],
                          "litt": [0.0, 5.5, 2.9]})  # fmt: skip
    rfm = RFMData.from_frame(frame, customer_id="customer_id", monetary_value=None)
    model = build_pareto_ggg(rfm)
    point = model.initial_point()
    point["log_regularity"] = np.array(np.log(80.0))  # customers' k around 80
    point["log_purchase_rate"] = np.array(np.log(0.2))
    logp = model.compile_logp(mode="FAST_COMPILE")
    dlogp = model.compile_dlogp(mode="FAST_COMPILE")
    grad = dlogp(point)
    names = [v.name for v in model.value_vars]
    sizes = [np.size(point[n]) for n in names]
    fd, h = [], 1e-5
    for name, size in zip(names, sizes, strict=True):
        for j in range(size):
            up, down = dict(point), dict(point)
            up[name] = np.array(point[name], dtype=float).copy()
            down[name] = up[name].copy()
            up[name].flat[j] += h
            down[name].flat[j] -= h
            fd.append((logp(up) - logp(down)) / (2 * h))
    assert np.all(np.isfinite(grad))
    np.testing.assert_allclose(grad, fd, rtol=1e-5, atol=1e-5)


def test_expected_purchases_at_k_one_equal_the_pareto_nbd_closed_form():
    """k = 1: given alive, purchases in (T, T + t] have mean lambda/mu (1 - e^{-mu t})."""
    n = 40_000
    lam, mu, t = 0.4, 0.05, 52.0
    x, t_x, T = np.array([3.0, 0.0]), np.array([20.0, 0.0]), np.array([30.0, 25.0])
    draws = np.ones((n, 2))
    e = expected_holdout_purchases(lam * draws, draws, mu * draws, x, t_x, T, t, random_seed=4)
    p = pggg_p_alive(lam, 1.0, mu, x, t_x, T)
    expect = p * lam / mu * -np.expm1(-mu * t)
    se = e.std(axis=0) / np.sqrt(n)
    assert np.all(np.abs(e.mean(axis=0) - expect) < 4 * se), (e.mean(axis=0), expect, se)


def test_a_clockwork_customer_buys_on_schedule():
    """k huge: gaps of exactly 1 / lambda; last purchase 0.3 before T, so purchases at
    T + 0.7, T + 1.7, ..., T + 4.7 in a horizon of 5.5 (mu tiny: alive)."""
    e = expected_holdout_purchases(
        np.full(50, 1.0), np.full(50, 1e5), np.full(50, 1e-8), 4.0, 4.0, 4.3, 5.5, random_seed=1
    )
    np.testing.assert_allclose(e, 5.0, rtol=1e-6)


def test_predictions_are_reproducible_with_the_seed():
    lam, k, mu, x, t_x, T, _ = _points()
    a = expected_holdout_purchases(lam, k, mu, x, t_x, T, 10.0, random_seed=3)
    b = expected_holdout_purchases(lam, k, mu, x, t_x, T, 10.0, random_seed=3)
    np.testing.assert_array_equal(a, b)
    assert np.all(np.isfinite(a)) and np.all(a >= 0)


def test_the_builder_asks_for_litt():
    frame = pd.DataFrame({"customer_id": [1, 2], "frequency": [0, 2], "recency": [0.0, 5.0],
                          "T": [10.0, 10.0]})  # fmt: skip
    rfm = RFMData.from_frame(frame, customer_id="customer_id", monetary_value=None)
    with pytest.raises(ModelSpecificationError, match="litt"):
        build_pareto_ggg(rfm)


def simulate_pggg(n, r, alpha, t, gamma, s, beta, *, random_seed) -> RFMData:
    """Customers of the Pareto/GGG, simulated gap by gap (ages uniform on 30..52)."""
    rng = np.random.default_rng(random_seed)
    lam = rng.gamma(r, 1.0 / alpha, n)
    k = rng.gamma(t, 1.0 / gamma, n)
    mu = rng.gamma(s, 1.0 / beta, n)
    T = rng.uniform(30.0, 52.0, n)
    end = np.minimum(rng.exponential(1.0 / mu), T)
    rows = []
    for i in range(n):
        now, gaps = 0.0, []
        while True:
            gap = rng.gamma(k[i], 1.0 / (k[i] * lam[i]))
            if now + gap > end[i]:
                break
            now += gap
            gaps.append(gap)
        rows.append((i, len(gaps), now, T[i], float(np.sum(np.log(gaps))) if gaps else 0.0))
    frame = pd.DataFrame(rows, columns=["customer_id", "frequency", "recency", "T", "litt"])
    return RFMData.from_frame(frame, customer_id="customer_id", monetary_value=None)


@pytest.mark.slow
def test_nutpie_recovers_the_regularity_of_simulated_customers():
    from bayesclv.fit import fit

    truth = {"mean_k": 3.0, "gamma": 2.0, "t": 6.0, "mean_lambda": 0.3}
    rfm = simulate_pggg(300, 3.0, 10.0, 6.0, 2.0, 2.0, 100.0, random_seed=1)
    idata = fit(build_pareto_ggg(rfm), sampler="nutpie", chains=2, draws=150, tune=200,
                random_seed=1, progressbar=False)  # fmt: skip
    assert int(idata.sample_stats["diverging"].sum()) <= 2
    for name, value in truth.items():
        lo, hi = np.quantile(idata.posterior[name].values, [0.005, 0.995])
        assert lo <= value <= hi, (name, lo, hi)
    assert set(idata.posterior["k"].dims) == {"chain", "draw", "customer"}
