"""bayesclv.numerics against mpmath at 30-50 digits, over the whole prior support.

Oracles (all mpmath, none shares code with the module under test):

* Phi, BG/NBD expected purchases given alive: the Beta expectation
  ``E_p[(1 - (1 + p k)^-n) / p]`` by ``mpmath.quad`` in ``u = logit(p)`` (tails mapped
  by ``v = exp(a u)`` and ``v = exp(-b u)`` so that slowly decaying ends are integrated to
  full precision), or, where it needs few terms, the positive series
  ``sum_j NegBin(j; n, w) sum_{i<j} (b)_i/(a+b)_i`` summed in mpmath. The two agree to
  1e-23 where both run (checked below).
* Window pmfs: the defining formulas with ``mpmath.gammainc`` and ``mpmath.loggamma``, and
  for Pareto/NBD also ``mpmath.quad`` of the Poisson over the exponential lifetime.
* P(alive): the FHL (2005) expression in mpmath.

Strategies mix ordinary draws (CDNOW-like) with the edges of the support: r, alpha in
1e-3..1e5; a, b in 1e-3..1e6 with a + b = 1, a = 1, b = 1 and both huge; x up to 10,000;
T and t in 0..5,000.
"""

from __future__ import annotations

import functools
import math

import mpmath as mp
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bayesclv.numerics import (
    bg_cheb_reliable,
    bg_expected_alive,
    bg_expected_alive_times,
    bg_hyp2f1_reliable,
    bg_log_p_alive,
    bg_window_log_pmf,
    pareto_window_log_pmf,
    poisson_log_sf,
)

DPS = 30
CASES_RUN: dict[str, int] = {}  # examples per property test (printed with -s)
SETTINGS = dict(deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])


def _count(name: str) -> None:
    CASES_RUN[name] = CASES_RUN.get(name, 0) + 1


# --------------------------------------------------------------------------- oracles
def _mp_phi_series(n, A, a, b, t, maxterms):
    """Positive series; None if it would need more than maxterms terms."""
    n, A, a, b, t = (mp.mpf(v) for v in (n, A, a, b, t))
    w = t / (A + t)
    pj = mp.exp(-n * mp.log1p(t / A))
    S, rho, tot = mp.mpf(0), mp.mpf(1), mp.mpf(0)
    mean = n * t / A
    for j in range(1, maxterms):
        pj *= (n + j - 1) / j * w
        S += rho
        rho *= (b + j - 1) / (a + b + j - 1)
        term = pj * S
        tot += term
        if j > mean and term < mp.mpf(10) ** (-DPS - 5) * tot:
            return tot
    return None


def _mp_phi_quad(n, A, a, b, t):
    n, A, a, b, t = (mp.mpf(v) for v in (n, A, a, b, t))
    k = t / A
    log_beta = mp.log(mp.beta(a, b))

    def g(u):
        p = 1 / (1 + mp.exp(-u))
        f = -mp.expm1(-n * mp.log1p(p * k)) / p
        return f * mp.exp(-a * mp.log1p(mp.exp(-u)) - b * mp.log1p(mp.exp(u)) - log_beta)

    um, s, uf = mp.log(a / b), mp.sqrt(1 / a + 1 / b), -mp.log(n * k)
    pts = sorted({um + j * s for j in (-30, -10, -3, -1, 0, 1, 3, 10, 30)}
                 | {uf + j for j in (-6, -2, 0, 2, 6)})
    lo, hi = pts[0], pts[-1]
    brk = [0, mp.mpf(10) ** -8, mp.mpf(10) ** -3, 1]
    left = mp.quad(lambda v: g(lo + mp.log(v) / a) / (a * v), brk)
    right = mp.quad(lambda v: g(hi - mp.log(v) / b) / (b * v), brk)
    return left + mp.quad(g, pts) + right


@functools.cache
def phi_ref(n, A, a, b, t) -> float:
    if t == 0:
        return 0.0
    with mp.workdps(DPS):
        k = t / A
        if n * k * (1 + k) < 200 and k < 20:
            v = _mp_phi_series(n, A, a, b, t, 4000)
            if v is not None:
                return float(v)
        return float(_mp_phi_quad(n, A, a, b, t))


def bg_pmf_ref(lam, p, y, h) -> float:
    with mp.workdps(50):
        lam, p, h = mp.mpf(lam), mp.mpf(p), mp.mpf(h)
        m = lam * h
        if y == 0:
            return float(-m)
        log_pois = y * mp.log(m) - m - mp.loggamma(y + 1)
        sf = mp.gammainc(y + 1, 0, m, regularized=True)  # P(K > y)
        inner = mp.exp(log_pois) + p * sf
        drop = (y - 1) * mp.log1p(-p) if y > 1 else mp.mpf(0)
        return float(drop + mp.log(inner))


def pareto_pmf_ref(lam, mu, y, h) -> float:
    with mp.workdps(50):
        lam, mu, h = mp.mpf(lam), mp.mpf(mu), mp.mpf(h)
        tot = lam + mu
        alive = mp.exp(-mu * h - lam * h + y * mp.log(lam * h) - mp.loggamma(y + 1))
        dropped = mu / tot * (lam / tot) ** y * mp.gammainc(y + 1, 0, tot * h, regularized=True)
        return float(mp.log(alive + dropped))


def f_bounds(n, A, t):
    k = t / A
    return -math.expm1(-n * math.log1p(k)), n * k


# --------------------------------------------------------------------------- strategies
def _logu(lo, hi):
    return st.floats(math.log10(lo), math.log10(hi)).map(lambda e: float(10.0**e))


positive_rate = st.one_of(st.sampled_from([1e-3, 0.243, 4.414, 1e5]), _logu(1e-3, 1e5))
ordinary_ab = st.floats(0.2, 5.0)
beta_param = st.one_of(
    st.sampled_from([1e-3, 0.5, 1.0, 2.0, 1e4, 1e6]), _logu(1e-3, 1e6), ordinary_ab
)
frequency = st.one_of(st.sampled_from([0, 1, 10, 1000, 10_000]), st.integers(0, 50),
                      st.integers(0, 10_000))
age = st.one_of(st.sampled_from([0.0, 1.0, 39.0, 5000.0]), st.floats(0.0, 5000.0))
horizon = st.one_of(st.sampled_from([0.0, 1e-6, 1.0, 39.0, 52.0, 5000.0]),
                    st.floats(0.0, 5000.0))


@st.composite
def bg_draws(draw):
    r, alpha = draw(positive_rate), draw(positive_rate)
    kind = draw(st.sampled_from(["free", "free", "a+b=1", "both huge", "cdnow"]))
    if kind == "a+b=1":
        a = draw(st.sampled_from([0.5, 0.3, 1e-3]) | st.floats(1e-3, 0.999))
        b = 1.0 - a
    elif kind == "both huge":
        a, b = draw(_logu(1e4, 1e6)), draw(_logu(1e4, 1e6))
    elif kind == "cdnow":
        r, alpha = draw(st.floats(0.1, 1.0)), draw(st.floats(1.0, 20.0))
        a, b = draw(ordinary_ab), draw(ordinary_ab)
    else:
        a, b = draw(beta_param), draw(beta_param)
    x = draw(frequency)
    modified = draw(st.booleans()) and kind != "a+b=1"
    if kind == "a+b=1":
        x = 0
    T, t = draw(age), draw(horizon)
    return r + x, alpha + T, a, b + x + (1.0 if modified else 0.0), t


# --------------------------------------------------------------------------- Phi
def test_the_two_mpmath_oracles_agree():
    # Independent oracles, where both run: quadrature of the Beta expectation and the
    # positive negative-binomial series.
    for n, A, a, b, t in [(0.292, 38.9, 0.5, 0.5, 39.0), (3.0, 10.0, 1e-3, 1e6, 20.0),
                          (30.0, 100.0, 1e4, 1e6, 39.0), (1.5, 2.0, 1.0, 3.0, 5.0)]:
        with mp.workdps(DPS):
            q = _mp_phi_quad(n, A, a, b, t)
            s = _mp_phi_series(n, A, a, b, t, 20_000)
        assert s is not None and abs(q - s) <= mp.mpf(10) ** -22 * abs(s)


@settings(max_examples=60, **SETTINGS)
@given(bg_draws())
def test_bg_phi_matches_mpmath_over_the_prior_support(d):
    _count("phi vs mpmath")
    n, A, a, b, t = d
    got = float(bg_expected_alive(n, A, a, b, t))
    ref = phi_ref(n, A, a, b, t)
    lo, hi = f_bounds(n, A, t)
    assert np.isfinite(got)
    assert lo * (1 - 1e-14) <= got <= hi * (1 + 1e-14)
    assert got == pytest.approx(ref, rel=1e-11, abs=0.0)


@settings(max_examples=300, **SETTINGS)
@given(bg_draws())
def test_bg_phi_is_finite_and_inside_its_bounds(d):
    _count("phi bounds")
    n, A, a, b, t = d
    got = float(bg_expected_alive(n, A, a, b, t))
    lo, hi = f_bounds(n, A, t)
    # Jensen (f convex): Phi >= f(E p); f decreasing: Phi <= f(0) = n k.
    mu = a / (a + b)
    jensen = -math.expm1(-n * math.log1p(mu * t / A)) / mu if t > 0 else 0.0
    assert np.isfinite(got) and lo * (1 - 1e-14) <= got <= hi * (1 + 1e-14)
    assert got >= jensen * (1 - 1e-11)


@settings(max_examples=120, **SETTINGS)
@given(bg_draws())
def test_bg_phi_is_increasing_and_concave_in_the_horizon(d):
    # dPhi/dt = E[lambda (1 + p t/A)^-(n+1)] / ... is positive and decreasing in t.
    _count("phi monotone/concave")
    n, A, a, b, _ = d
    times = np.linspace(0.0, 5000.0 if A > 1 else 50.0, 27)
    phi = bg_expected_alive_times(n, A, a, b, times)
    d1 = np.diff(phi)
    tol = 1e-11 * phi[-1]
    assert np.all(d1 >= -tol)
    assert np.all(np.diff(d1) <= tol)


@settings(max_examples=60, **SETTINGS)
@given(bg_draws(), st.lists(horizon, min_size=1, max_size=6))
def test_bg_phi_times_equals_the_single_time_function(d, ts):
    _count("phi times vs single")
    n, A, a, b, _ = d
    times = np.array(ts)
    many = bg_expected_alive_times(n, A, a, b, times)
    one = np.array([float(bg_expected_alive(n, A, a, b, t)) for t in times])
    np.testing.assert_allclose(many, one, rtol=1e-12, atol=0.0)


@settings(max_examples=40, **SETTINGS)
@given(bg_draws())
def test_bg_phi_quadrature_alone_matches_mpmath(d):
    # The fallback must be accurate everywhere, not only where the router sends it.
    _count("quadrature vs mpmath")
    n, A, a, b, t = d
    got = float(bg_expected_alive(n, A, a, b, t, method="quad"))
    assert got == pytest.approx(phi_ref(n, A, a, b, t), rel=1e-12, abs=0.0)


@st.composite
def cdnow_like(draw):
    r, alpha = draw(st.floats(0.05, 2.0)), draw(st.floats(0.5, 30.0))
    a, b, x = draw(st.floats(0.1, 8.0)), draw(st.floats(0.1, 15.0)), draw(st.integers(0, 60))
    T, t = draw(st.floats(0.0, 80.0)), draw(st.floats(0.5, 104.0))
    return r + x, alpha + T, a, b + x + draw(st.sampled_from([0.0, 1.0])), t


@settings(max_examples=60, **SETTINGS)
@given(st.one_of(bg_draws(), cdnow_like(), cdnow_like()))
def test_bg_hyp2f1_route_is_accurate_where_reliable(d):
    n, A, a, b, t = d
    if not bg_hyp2f1_reliable(n, A, a, b, t):
        return
    _count("2F1 where reliable")
    got = float(bg_expected_alive(n, A, a, b, t, method="hyp2f1"))
    assert got == pytest.approx(phi_ref(n, A, a, b, t), rel=1e-10, abs=0.0)


# Named regressions: the repros of issue 15 (r = 0.292, alpha = 17.2, x = 0, T = 21.7,
# t = 39) and the edges the old hyp2f1 route failed on.
CDNOW_ROW = dict(n=0.292, A=17.2 + 21.7, t=39.0)


@pytest.mark.parametrize("a, b", [(0.5, 0.5), (0.3, 0.7)])
def test_bg_phi_finite_when_a_plus_b_is_one(a, b):
    got = float(bg_expected_alive(CDNOW_ROW["n"], CDNOW_ROW["A"], a, b, CDNOW_ROW["t"]))
    assert got == pytest.approx(phi_ref(CDNOW_ROW["n"], CDNOW_ROW["A"], a, b, 39.0), rel=1e-13)
    assert not bg_hyp2f1_reliable(CDNOW_ROW["n"], CDNOW_ROW["A"], a, b, 39.0)


def test_bg_phi_finite_when_a_and_b_are_huge():
    n, A = CDNOW_ROW["n"], CDNOW_ROW["A"]
    got = float(bg_expected_alive(n, A, 3643.0, 28119.0, 39.0))
    assert got == pytest.approx(phi_ref(n, A, 3643.0, 28119.0, 39.0), rel=1e-13)


def test_bg_phi_a200_b600_over_the_discount_grid():
    # The CLV engine's Chebyshev table gave values ~1e85 here; Phi is ~0.25 at t = 39.
    n, A = CDNOW_ROW["n"], CDNOW_ROW["A"]
    times = np.arange(0.0, 53.0, 4.0)
    got = bg_expected_alive_times(n, A, 200.0, 600.0, times)
    ref = np.array([phi_ref(n, A, 200.0, 600.0, float(t)) for t in times])
    np.testing.assert_allclose(got, ref, rtol=1e-13, atol=0.0)


@pytest.mark.parametrize("a, b", [(1.0, 2.4), (0.8, 1.0), (1.0, 1.0), (1.0, 1e6), (1e-3, 1e-3),
                                  (1e6, 1e-3), (1e6, 1e6)])
def test_bg_phi_at_special_and_extreme_beta_parameters(a, b):
    for n, A, t in [(0.292, 38.9, 39.0), (10_000.243, 5000.0, 5000.0), (1e5, 1e-3, 5000.0)]:
        got = float(bg_expected_alive(n, A, a, b, t))
        assert got == pytest.approx(phi_ref(n, A, a, b, t), rel=1e-12)


def test_bg_phi_is_zero_at_zero_horizon_and_linear_near_it():
    assert bg_expected_alive(0.3, 40.0, 0.5, 0.5, 0.0) == 0.0
    # Phi = n k (1 - (n+1) k E[p] / 2 + O(k^2)).
    n, A, a, b, t = 0.3, 40.0, 0.5, 0.5, 1e-9
    k = t / A
    assert float(bg_expected_alive(n, A, a, b, t)) == pytest.approx(
        n * k * (1 - (n + 1) * k * a / (a + b) / 2), rel=1e-15)


def test_bg_phi_integer_parameters_where_betainc_loses_digits():
    # Quadrature tails use I_x(a + 11, b); scipy's betainc loses 1.5e-11 at I(12, 1e6; x).
    for t in (39.0, 200.0, 5000.0):
        got = float(bg_expected_alive(0.001, 1.316572136654413, 1.0, 1e6, t, method="quad"))
        assert got == pytest.approx(phi_ref(0.001, 1.316572136654413, 1.0, 1e6, t), rel=1e-13)


def test_bg_hyp2f1_reliable_flags_the_repro_cases_and_keeps_cdnow():
    n, A, t = CDNOW_ROW["n"], CDNOW_ROW["A"], 39.0
    assert not bg_hyp2f1_reliable(n, A, 3643.0, 28119.0, t)  # huge parameters
    assert not bg_hyp2f1_reliable(n, A, 200.0, 600.0, t)
    assert not bg_hyp2f1_reliable(n, A, 1.0, 2.4, t)  # a = 1: F - 1 cancels
    assert not bg_hyp2f1_reliable(n, A, 0.8, 2.4, 0.0)  # t = 0
    ok = bg_hyp2f1_reliable(0.243 + np.arange(30.0), 4.414 + 30.0, 0.793, 2.426 + np.arange(30.0),
                            39.0)
    assert ok.mean() > 0.9


def test_bg_cheb_reliable_rejects_growing_tables():
    # G grows like (1-w)^(1-a): a = 200 (issue 15) and a = 32 (values 1e90 off) are refused
    # although the closed form is fine at the largest time; an ordinary CDNOW row is kept.
    w_max = 52.0 / (4.414 + 52.0)
    assert not bg_cheb_reliable(0.292, 38.9, 200.0, 600.0, 1.0, 52.0, w_max)
    n, A = 0.8847 + 38.0, 0.06995 + 37.73
    assert bg_hyp2f1_reliable(n, A, 32.0038, 4.0486 + 38.0, 52.0)
    assert not bg_cheb_reliable(n, A, 32.0038, 4.0486 + 38.0, 1.0, 52.0, 52.0 / (0.07 + 52.0))
    assert bg_cheb_reliable(0.243 + 3, 4.414 + 30.0, 0.793, 2.426 + 3, 1.0, 52.0, w_max)


def test_bg_phi_refuses_bad_arguments():
    with pytest.raises(ValueError, match="b_eff"):
        bg_expected_alive(1.0, 1.0, 1.0, -1.0, 1.0)
    with pytest.raises(ValueError, match="t must be"):
        bg_expected_alive(1.0, 1.0, 1.0, 1.0, np.nan)


# --------------------------------------------------------------------------- window pmfs
prob = st.one_of(st.sampled_from([1e-300, 1e-16, 0.5, 1.0 - 1e-16, 1.0]),
                 st.floats(0.0, 1.0).filter(lambda p: p > 0), _logu(1e-300, 1.0))
mean_count = st.one_of(st.sampled_from([1e-12, 1.0, 100.0, 1e6]), _logu(1e-12, 1e6))
window = st.one_of(st.sampled_from([1.0, 39.0]), _logu(1e-3, 1e3))
count = st.one_of(st.sampled_from([0, 1, 2, 10_000]), st.integers(0, 60), st.integers(0, 10_000))


def _close_log(got, ref, tol=1e-12):
    if ref == -math.inf:
        return got == -math.inf
    return np.isfinite(got) and abs(got - ref) <= tol * max(1.0, abs(ref))


@settings(max_examples=150, **SETTINGS)
@given(mean_count, prob, count, window)
def test_bg_window_log_pmf_matches_mpmath(m, p, y, h):
    _count("bg window pmf")
    lam = m / h
    got = float(bg_window_log_pmf(lam, p, y, h))
    assert _close_log(got, bg_pmf_ref(lam, p, y, h))


@settings(max_examples=150, **SETTINGS)
@given(mean_count, mean_count, count, window)
def test_pareto_window_log_pmf_matches_mpmath(m, md, y, h):
    _count("pareto window pmf")
    lam, mu = m / h, md / h
    got = float(pareto_window_log_pmf(lam, mu, y, h))
    assert _close_log(got, pareto_pmf_ref(lam, mu, y, h))


def _mp_pareto_by_quadrature(lam, mu, y, h):
    """P(Y = y) integrating Poisson(lam tau) over the exponential lifetime tau."""
    with mp.workdps(40):
        L, M, H = mp.mpf(lam), mp.mpf(mu), mp.mpf(h)

        def pois(z):
            return mp.exp(-L * z) * (L * z) ** y / mp.factorial(y)

        val = mp.exp(-M * H) * pois(H) + mp.quad(lambda z: M * mp.exp(-M * z) * pois(z), [0, H])
        return float(mp.log(val))


def test_pareto_window_oracle_agrees_with_quadrature_over_the_lifetime():
    for lam, mu, y, h in [(1.0, 1.0, 3, 2.0), (0.5, 2.0, 0, 1.0), (5.0, 0.1, 20, 3.0)]:
        assert pareto_pmf_ref(lam, mu, y, h) == pytest.approx(
            _mp_pareto_by_quadrature(lam, mu, y, h), rel=1e-14)


@pytest.mark.parametrize("family", ["bg", "pareto"])
def test_window_pmfs_sum_to_one(family):
    y = np.arange(0, 400)
    for lam, drop, h in [(2.0, 0.3, 10.0), (50.0, 0.01, 2.0), (1e-3, 0.9, 1.0)]:
        f = bg_window_log_pmf if family == "bg" else pareto_window_log_pmf
        total = np.exp(f(lam, drop, y, h)).sum()
        assert total == pytest.approx(1.0, rel=1e-12)


def test_bg_window_pmf_finite_when_p_is_one_and_y_is_one():
    # Previously 0 * log1p(-1) = NaN; P(Y = 1) = P(K >= 1) when the first purchase ends it.
    got = float(bg_window_log_pmf(2.0, 1.0, 1, 0.5))
    assert got == pytest.approx(math.log(-math.expm1(-1.0)), rel=1e-15)
    assert bg_window_log_pmf(2.0, 1.0, 2, 0.5) == -np.inf


def test_bg_window_pmf_keeps_the_dropout_term_far_above_the_mean():
    # stats.poisson.logsf underflowed here and the old value was 1e-2 off.
    assert _close_log(float(bg_window_log_pmf(100.0, 0.5, 5000, 1.0)),
                      bg_pmf_ref(100.0, 0.5, 5000, 1.0))


@pytest.mark.parametrize("lam, mu, y", [(1.0, 1.0, 300), (1e3, 1e3, 10_000)])
def test_pareto_window_pmf_when_gammainc_underflows(lam, mu, y):
    assert _close_log(float(pareto_window_log_pmf(lam, mu, y, 1.0)),
                      pareto_pmf_ref(lam, mu, y, 1.0))


@settings(max_examples=100, **SETTINGS)
@given(count, mean_count)
def test_poisson_log_sf_matches_mpmath(y, m):
    _count("poisson log sf")
    with mp.workdps(40):
        ref = float(mp.log(mp.gammainc(y + 1, 0, m, regularized=True)))
    assert _close_log(float(poisson_log_sf(y, m)), ref, tol=1e-12)


# --------------------------------------------------------------------------- P(alive)
@settings(max_examples=150, **SETTINGS)
@given(positive_rate, positive_rate, beta_param, beta_param, frequency, age,
       st.floats(0.0, 1.0), st.booleans())
def test_bg_log_p_alive_matches_mpmath(r, alpha, a, b, x, T, frac, modified):
    _count("bg log P(alive)")
    t_x = T * frac if x > 0 else 0.0
    got = float(bg_log_p_alive(r, alpha, a, b, x, t_x, T, modified=modified))
    with mp.workdps(DPS):
        if x == 0 and not modified:
            ref = 0.0
        else:
            ratio = mp.mpf(a) / (mp.mpf(b) + x - (0 if modified else 1))
            z = mp.log(ratio) + (r + x) * (mp.log(mp.mpf(alpha) + T) - mp.log(mp.mpf(alpha) + t_x))
            ref = float(-mp.log1p(mp.exp(z)))
    assert got <= 0.0 and _close_log(got, ref, tol=1e-13)


def test_bg_log_p_alive_large_alpha_short_gap():
    r, alpha, a, b, x, t_x, T = 1e4, 1e5, 0.5, 2.0, 10_000.0, 4999.0, 5000.0
    with mp.workdps(DPS):
        z = (mp.log(a) - mp.log(b + x - 1)
             + (r + x) * (mp.log(mp.mpf(alpha) + T) - mp.log(mp.mpf(alpha) + t_x)))
        ref = float(-mp.log1p(mp.exp(z)))
    assert float(bg_log_p_alive(r, alpha, a, b, x, t_x, T)) == pytest.approx(ref, rel=1e-14)


def test_report_cases_run():
    # Runs last in file order; prints how many hypothesis examples each property saw.
    print("\nhypothesis examples run:", CASES_RUN, "total", sum(CASES_RUN.values()))
