"""bayesclv.likelihoods against independent implementations written in this file.

Oracles, each written from the papers without looking at the package code paths:

* BG/NBD and MBG/NBD: FHL (2005) eq. (6) and Batislam et al. (2007) eq. (3), with the
  Beta-function ratios taken literally (``B(a+1, b+x-1) / B(a, b)``), in log space.
* Pareto/NBD: the hypergeometric closed form of Fader & Hardie (2005), "A note on
  deriving the Pareto/NBD model and related expressions", eqs. (22)-(24), with
  ``scipy.special.hyp2f1``; and ``scipy.integrate.quad`` of the defining integral over
  the dropout time (same note, eq. 17 with the Gamma mixing done).
* Gamma-Gamma: ``x * zbar`` is Beta-prime(p x, q, scale v) (a Gamma with a Gamma rate),
  via ``scipy.stats.betaprime``.
* Monte Carlo: the individual-level likelihood averaged over population draws of
  ``(lambda, p)``, ``(lambda, mu)`` or ``nu``.

Plus finiteness of values and PyTensor gradients on an extreme grid (frequency up to
10,000, T up to 5,000, parameters from 1e-3 to 1e3).
"""

from __future__ import annotations

import functools
import itertools
import warnings

import numpy as np
import pytest
from scipy import integrate, special, stats

from bayesclv.likelihoods import bgnbd_logp, gamma_gamma_logp, mbgnbd_logp, pareto_nbd_logp

K_SE = 5.0  # Monte Carlo tolerance in standard errors
# PyTensor warns once that it found no BLAS; irrelevant to scalar-parameter gradients.
pytestmark = pytest.mark.filterwarnings("ignore:PyTensor could not link to a BLAS:UserWarning")
PARAM_LEVELS = (1e-3, 1e-1, 1.0, 10.0, 1e3)


def data_grid(xs=(0, 1, 2, 10, 100, 1000, 10_000), Ts=(0.0, 0.01, 1.0, 50.0, 5000.0)):
    """(x, t_x, T) with recency at the start, middle, almost the end and the end."""
    rows = []
    for T in Ts:
        for x in xs:
            if x == 0:
                rows.append((0, 0.0, T))
            elif T > 0:
                for t_x in (T * 1e-6, T / 2, T * (1 - 1e-12), T):
                    rows.append((x, t_x, T))
    x, t_x, T = (np.array(c, dtype=np.float64) for c in zip(*rows, strict=True))
    return x, t_x, T


def rel_err(got, expected):
    got, expected = np.asarray(got), np.asarray(expected)
    return np.abs(got - expected) / np.maximum(1.0, np.abs(expected))


# --------------------------------------------------------------------------- oracles
def oracle_bgnbd(r, alpha, a, b, x, t_x, T, modified=False):
    """FHL (2005) eq. (6); MBG/NBD, Batislam et al. (2007) eq. (3). Log scale."""
    log_a = special.gammaln(r + x) - special.gammaln(r) + r * np.log(alpha)
    lb = special.betaln(a, b)
    if modified:
        alive = special.betaln(a, b + x + 1) - lb - (r + x) * np.log(alpha + T)
        drop = special.betaln(a + 1, b + x) - lb - (r + x) * np.log(alpha + t_x)
        return log_a + np.logaddexp(alive, drop)
    alive = special.betaln(a, b + x) - lb - (r + x) * np.log(alpha + T)
    with np.errstate(invalid="ignore", divide="ignore"):
        drop = special.betaln(a + 1, b + x - 1) - lb - (r + x) * np.log(alpha + t_x)
    return log_a + np.where(x > 0, np.logaddexp(alive, np.where(x > 0, drop, -np.inf)), alive)


def _pareto_log_const(r, alpha, s, beta, x):
    return special.gammaln(r + x) - special.gammaln(r) + r * np.log(alpha) + s * np.log(beta)


def oracle_pareto_hyp2f1(r, alpha, s, beta, x, t_x, T):
    """Fader & Hardie (2005 note) eqs. (22)-(24), scalar inputs."""
    rsx = r + s + x
    if alpha >= beta:
        c, k2 = alpha, s + 1

        def f(t):
            z = (alpha - beta) / (alpha + t)
            return special.hyp2f1(rsx, k2, rsx + 1, z) / np.float64(c + t) ** rsx
    else:
        c, k2 = beta, r + x

        def f(t):
            z = (beta - alpha) / (beta + t)
            return special.hyp2f1(rsx, k2, rsx + 1, z) / np.float64(c + t) ** rsx

    a0 = f(t_x) - f(T)
    alive = (alpha + T) ** -(r + x) * (beta + T) ** -s
    return _pareto_log_const(r, alpha, s, beta, x) + np.log(alive + s / rsx * a0)


def oracle_pareto_quad(r, alpha, s, beta, x, t_x, T):
    """Integral over the dropout time tau in (t_x, T], by adaptive quadrature, scalar inputs.

    ``L = C [ (alpha+T)^-(r+x) (beta+T)^-s
              + s Int_{t_x}^T (alpha+tau)^-(r+x) (beta+tau)^-(s+1) dtau ]``.
    The integrand is scaled by its value at ``t_x`` and ``quad`` is given break points at
    multiples of its decay length, so it resolves integrands that fall by e^-10,000.
    """

    def log_h(tau):
        return -(r + x) * np.log(alpha + tau) - (s + 1) * np.log(beta + tau)

    log_alive = -(r + x) * np.log(alpha + T) - s * np.log(beta + T)
    log_const = _pareto_log_const(r, alpha, s, beta, x)
    if T <= t_x:
        return log_const + log_alive
    h0 = log_h(t_x)
    scale = 1.0 / ((r + x) / (alpha + t_x) + (s + 1) / (beta + t_x))
    gap = T - t_x
    points = [scale * 10.0**k for k in range(-1, 12) if scale * 10.0**k < gap]
    val, err = integrate.quad(
        lambda u: np.exp(log_h(t_x + u) - h0),
        0.0,
        gap,
        points=points or None,
        epsabs=0.0,
        epsrel=1e-13,
        limit=500,
    )
    assert val > 0 and err <= 1e-9 * val, (val, err)
    return log_const + np.logaddexp(log_alive, np.log(s) + h0 + np.log(val))


def oracle_gamma_gamma(p, q, v, x, zbar):
    """Density of zbar: x times the Beta-prime(p x, q, scale v) density of x * zbar."""
    return np.log(x) + stats.betaprime.logpdf(x * zbar, p * x, q, scale=v)


# --------------------------------------------------------------------------- comparisons
@pytest.mark.parametrize("modified", [False, True])
def test_bgnbd_matches_paper_formula_on_extreme_grid(modified):
    x, t_x, T = data_grid()
    logp = mbgnbd_logp if modified else bgnbd_logp
    worst = 0.0
    for r, alpha, a, b in itertools.product(PARAM_LEVELS, repeat=4):
        got = logp(r, alpha, a, b, x, t_x, T)
        expected = oracle_bgnbd(r, alpha, a, b, x, t_x, T, modified=modified)
        assert np.all(np.isfinite(got)), (r, alpha, a, b)
        worst = max(worst, rel_err(got, expected).max())
    assert worst < 1e-10


# The package's Pareto/NBD quadrature (12 nodes, see bayesclv.likelihoods.pareto_nbd and
# benchmarks/bench_pareto_logp.py) measured worst relative errors of 3e-12 on the moderate
# grid, 5e-11 with similar scales and extreme data, 7e-9 on the realistic grid and 2e-3 at
# the 1e-3/1e3 corners of the extreme grid. The previous 16-node quadrature was off by
# 1e-4..1 (e.g. r=1, alpha=10, s=1, beta=0.1, x=0, t_x=0, T=50 gave -0.039664 instead of
# -0.037421, confirmed by the closed form, quadrature and Monte Carlo). The tolerances
# below pin the measured accuracy with some headroom; the extreme grid keeps a strict
# xfail at the 1e-8 a log-likelihood should meet, plus a guard on what it does meet.
PARETO_TOL_SIMILAR_SCALES = 1e-9
PARETO_TOL_ANY = 1e-8  # what a log-likelihood should meet
PARETO_TOL_EXTREME_MET = 1e-2  # extreme grid: current accuracy, a regression guard


def test_pareto_nbd_matches_hyp2f1_closed_form_on_moderate_grid():
    """The closed form is trusted where 2F1 converges well and A0 does not cancel."""
    x, t_x, T = data_grid(xs=(0, 1, 3, 10, 40), Ts=(1.0, 10.0, 39.0, 200.0))
    keep = (T - t_x) > 1e-3 * T
    x, t_x, T = x[keep], t_x[keep], T[keep]
    shapes, scales = (0.2, 1.0, 5.0, 20.0), (5.0, 10.0, 20.0)
    n_checked = n_total = 0
    for r, alpha, s, beta in itertools.product(shapes, scales, shapes, scales):
        got = pareto_nbd_logp(r, alpha, s, beta, x, t_x, T)
        for i in range(x.shape[0]):
            n_total += 1
            expected = oracle_pareto_hyp2f1(r, alpha, s, beta, x[i], t_x[i], T[i])
            if not np.isfinite(expected):  # 2F1 overflow: the reason the package avoids it
                continue
            n_checked += 1
            err = rel_err(got[i], expected)
            assert err < PARETO_TOL_SIMILAR_SCALES, (r, alpha, s, beta, x[i], t_x[i], T[i])
    assert n_checked > 0.9 * n_total


def test_pareto_nbd_cdnow_point_matches_hyp2f1():
    """Customer 1 of CDNOW at the published estimates, both routes."""
    args = (0.553, 10.578, 0.606, 11.669, 2.0, 30.43, 38.86)
    assert pareto_nbd_logp(*args) == pytest.approx(oracle_pareto_hyp2f1(*args), rel=1e-10)


def _pareto_worst_vs_quad(levels, data):
    x, t_x, T = data
    worst, where = 0.0, None
    for theta in levels:
        got = pareto_nbd_logp(*theta, x, t_x, T)
        assert np.all(np.isfinite(got)), theta
        for i in range(x.shape[0]):
            expected = oracle_pareto_quad(*theta, x[i], t_x[i], T[i])
            err = rel_err(got[i], expected)
            if err > worst:
                worst, where = err, (*theta, x[i], t_x[i], T[i], float(got[i]), expected)
    return worst, where


@pytest.mark.filterwarnings("ignore::scipy.integrate.IntegrationWarning")
def test_pareto_nbd_matches_quadrature_with_extreme_data_and_similar_scales():
    """Frequency to 10,000 and T to 5,000 with alpha, beta within a factor 2 of each other."""
    levels = itertools.product((1e-3, 0.5, 5.0, 1e3), (5.0, 10.0), (1e-3, 0.5, 5.0, 1e3), (10.0,))
    worst, where = _pareto_worst_vs_quad(list(levels), data_grid(Ts=(0.01, 50.0, 5000.0)))
    assert worst < PARETO_TOL_SIMILAR_SCALES, where


@pytest.mark.filterwarnings("ignore::scipy.integrate.IntegrationWarning")
def test_pareto_nbd_matches_quadrature_on_realistic_grid():
    """alpha and beta up to 50x apart, frequency to 1,000, T to 500."""
    levels = list(itertools.product((0.1, 0.5, 2.0), (1.0, 10.0, 50.0), repeat=2))
    data = data_grid(xs=(0, 1, 3, 10, 100, 1000), Ts=(0.5, 39.0, 500.0))
    worst, where = _pareto_worst_vs_quad(levels, data)
    assert worst < PARETO_TOL_ANY, where


@functools.cache
def _pareto_worst_on_extreme_grid():
    levels = list(itertools.product((1e-3, 1.0, 1e3), repeat=4))
    data = data_grid(xs=(0, 10, 10_000), Ts=(0.01, 5000.0))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", integrate.IntegrationWarning)
        return _pareto_worst_vs_quad(levels, data)


def test_pareto_nbd_extreme_grid_accuracy_does_not_regress():
    worst, where = _pareto_worst_on_extreme_grid()
    assert worst < PARETO_TOL_EXTREME_MET, where


@pytest.mark.xfail(
    strict=True,
    reason="pareto_nbd_logp's 12-node quadrature converges slowly for two-scale integrands "
    "with parameters 1e-3 and 1e3 together (worst ~2e-3 relative at r=1e-3, alpha=1e-3, "
    "s=1, beta=1, x=0, T=5000)",
)
def test_pareto_nbd_matches_quadrature_on_extreme_grid():
    worst, where = _pareto_worst_on_extreme_grid()
    assert worst < PARETO_TOL_ANY, where


def test_gamma_gamma_matches_beta_prime_density_on_extreme_grid():
    xs = np.array([1.0, 2.0, 10.0, 100.0, 10_000.0])
    zbars = np.array([1e-3, 0.5, 20.0, 1e3, 1e5])
    x, zbar = (a.ravel() for a in np.meshgrid(xs, zbars))
    for p, q, v in itertools.product(PARAM_LEVELS, repeat=3):
        got = gamma_gamma_logp(p, q, v, x, zbar)
        expected = oracle_gamma_gamma(p, q, v, x, zbar)
        assert np.all(np.isfinite(got)), (p, q, v)
        # gammaln(p x + q) - gammaln(p x) cancels: allow its rounding (a few ulp of it)
        tol = 1e-9 * np.maximum(1.0, np.abs(expected)) + 8 * np.finfo(float).eps * np.abs(
            special.gammaln(p * x + q)
        )
        assert np.all(np.abs(got - expected) < tol), (p, q, v)


def test_gamma_gamma_integrates_to_one_over_zbar():
    p, q, v, x = 6.25, 3.74, 15.44, 3.0
    total = integrate.quad(lambda z: np.exp(gamma_gamma_logp(p, q, v, x, z)), 0, np.inf)[0]
    assert total == pytest.approx(1.0, abs=1e-8)


@pytest.mark.parametrize("logp", [bgnbd_logp, mbgnbd_logp, pareto_nbd_logp])
def test_likelihood_is_a_probability_density_over_purchase_histories(logp):
    """L(x, t_x, T) is the density of the whole path t_1 < ... < t_x <= T; integrating out
    the x - 1 earlier times gives t_x^(x-1) / (x-1)!, so
    ``L(0, 0, T) + sum_x Int_0^T L(x, t, T) t^(x-1) / (x-1)! dt = 1``."""
    theta, T = (0.8, 5.0, 1.2, 2.5), 10.0
    total = np.exp(logp(*theta, 0.0, 0.0, T))
    for x in range(1, 200):
        total += integrate.quad(
            lambda t, x=x: np.exp(
                logp(*theta, float(x), t, T) + (x - 1) * np.log(t) - special.gammaln(x)
            ),
            0.0,
            T,
            epsabs=1e-13,
        )[0]
    assert total == pytest.approx(1.0, abs=1e-7)


# --------------------------------------------------------------------------- Monte Carlo
MC_POINTS = [(0, 0.0, 30.0), (1, 5.0, 38.0), (2, 30.43, 38.86), (5, 20.0, 39.0)]


def _assert_mc(values: np.ndarray, log_expected: float, what: str) -> None:
    mean = values.mean()
    se = values.std(ddof=1) / np.sqrt(values.size)
    expected = np.exp(log_expected)
    assert abs(mean - expected) < K_SE * se, f"{what}: MC {mean:.6g} +- {se:.2g} vs {expected:.6g}"
    assert se < 0.05 * expected, f"{what}: Monte Carlo too noisy to be a test"


@pytest.mark.parametrize(("x", "t_x", "T"), MC_POINTS)
@pytest.mark.parametrize("modified", [False, True])
def test_bgnbd_equals_population_average_of_individual_likelihood(x, t_x, T, modified):
    r, alpha, a, b = 0.243, 4.414, 0.793, 2.426
    rng = np.random.default_rng(100 + x)
    lam = rng.gamma(r, 1 / alpha, 2_000_000)
    p = rng.beta(a, b, lam.shape[0])
    base = lam**x * (1 - p) ** x
    if modified:  # may also drop at time 0
        ind = base * (1 - p) * np.exp(-lam * T) + p * base * np.exp(-lam * t_x)
        logp = mbgnbd_logp
    else:
        drop = p * (1 - p) ** (x - 1) * lam**x * np.exp(-lam * t_x) if x > 0 else 0.0
        ind = base * np.exp(-lam * T) + drop
        logp = bgnbd_logp
    _assert_mc(ind, logp(r, alpha, a, b, x, t_x, T), f"modified={modified} {x, t_x, T}")


@pytest.mark.parametrize(("x", "t_x", "T"), MC_POINTS)
def test_pareto_nbd_equals_population_average_of_individual_likelihood(x, t_x, T):
    r, alpha, s, beta = 0.553, 10.578, 0.606, 11.669
    rng = np.random.default_rng(200 + x)
    lam = rng.gamma(r, 1 / alpha, 2_000_000)
    mu = rng.gamma(s, 1 / beta, lam.shape[0])
    # Schmittlein et al. (1987) individual likelihood
    ind = lam**x * mu / (lam + mu) * np.exp(-(lam + mu) * t_x) + lam ** (x + 1) / (
        lam + mu
    ) * np.exp(-(lam + mu) * T)
    _assert_mc(ind, pareto_nbd_logp(r, alpha, s, beta, x, t_x, T), f"{x, t_x, T}")


@pytest.mark.parametrize(("x", "zbar"), [(1, 10.0), (2, 35.0), (6, 22.35), (20, 60.0)])
def test_gamma_gamma_equals_population_average(x, zbar):
    p, q, v = 6.25, 3.74, 15.44
    rng = np.random.default_rng(300 + x)
    nu = rng.gamma(q, 1 / v, 1_000_000)
    ind = x * stats.gamma.pdf(x * zbar, p * x, scale=1 / nu)
    _assert_mc(ind, gamma_gamma_logp(p, q, v, x, zbar), f"{x, zbar}")


# --------------------------------------------------------------------------- gradients
def _compiled(logp, names):
    import pytensor
    import pytensor.tensor as pt

    params = [pt.dscalar(n) for n in names]
    data = [pt.dvector(n) for n in ("x", "t_x", "T")]
    total = pt.sum(logp(*params, *data))
    grads = pytensor.grad(total, params)
    return pytensor.function([*params, *data], [total, *grads])


@pytest.mark.parametrize(
    ("logp", "names"),
    [
        (bgnbd_logp, ("r", "alpha", "a", "b")),
        (mbgnbd_logp, ("r", "alpha", "a", "b")),
        (pareto_nbd_logp, ("r", "alpha", "s", "beta")),
    ],
    ids=["bgnbd", "mbgnbd", "pareto_nbd"],
)
def test_values_and_gradients_finite_on_extreme_grid_and_match_finite_differences(logp, names):
    f = _compiled(logp, names)
    x, t_x, T = data_grid()
    bad = []
    for theta in itertools.product(PARAM_LEVELS, repeat=4):
        # a non-finite term makes the sum and its gradient non-finite; then find who
        if not np.isfinite(f(*theta, x, t_x, T)).all():
            for i in range(x.shape[0]):
                if not np.isfinite(f(*theta, x[i : i + 1], t_x[i : i + 1], T[i : i + 1])).all():
                    bad.append((theta, x[i], t_x[i], T[i]))
    assert not bad, f"{len(bad)} non-finite values or gradients, e.g. {bad[:3]}"
    # gradients are right, not only finite: central differences of the NumPy path
    xm, tm, Tm = data_grid(xs=(0, 1, 7, 60), Ts=(1.0, 39.0))
    for theta in [(0.3, 4.0, 0.8, 2.5), (2.0, 0.5, 3.0, 20.0)]:
        _, *grads = f(*theta, xm, tm, Tm)
        for k in range(4):
            h = 1e-6 * theta[k]
            up, dn = list(theta), list(theta)
            up[k] += h
            dn[k] -= h
            fd = (logp(*up, xm, tm, Tm).sum() - logp(*dn, xm, tm, Tm).sum()) / (2 * h)
            assert grads[k] == pytest.approx(fd, rel=1e-5, abs=1e-6), (names[k], theta)


def test_gamma_gamma_gradients_finite_on_extreme_grid():
    import pytensor
    import pytensor.tensor as pt

    p, q, v = (pt.dscalar(n) for n in "pqv")
    x, zbar = pt.dvector("x"), pt.dvector("zbar")
    total = pt.sum(gamma_gamma_logp(p, q, v, x, zbar))
    f = pytensor.function([p, q, v, x, zbar], [total, *pytensor.grad(total, [p, q, v])])
    xs, zs = (a.ravel() for a in np.meshgrid([1.0, 10.0, 10_000.0], [1e-3, 20.0, 1e5]))
    for theta in itertools.product(PARAM_LEVELS, repeat=3):
        assert np.isfinite(f(*theta, xs, zs)).all(), theta
