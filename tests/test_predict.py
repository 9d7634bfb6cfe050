"""Closed-form predictions checked against published values, quadrature and simulation."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.special as sps
import xarray as xr
from scipy import integrate, stats

from bayesclv.data import RFMData
from bayesclv.errors import ModelSpecificationError
from bayesclv.likelihoods import bgnbd_logp, mbgnbd_logp, pareto_nbd_logp
from bayesclv.predict import (
    expected_purchases,
    expected_purchases_new_customer,
    expected_spend,
    phi_alive,
    probability_alive,
)

# Published maximum-likelihood estimates for CDNOW (weeks).
BG_CDNOW = dict(r=0.243, alpha=4.414, a=0.793, b=2.426)  # FHL (2005)
PNBD_CDNOW = dict(r=0.553, alpha=10.578, s=0.606, beta=11.669)  # Fader & Hardie (2005)
GG_CDNOW = dict(p=6.25, q=3.74, v=15.44)  # Fader, Hardie & Lee (2005)
MODEL_OF = {"bgnbd": BG_CDNOW, "mbgnbd": BG_CDNOW, "pareto_nbd": PNBD_CDNOW}


def make_params(model, values, segments=("all",), n_chain=1, n_draw=1, jitter=0.0, seed=0):
    rng = np.random.default_rng(seed)
    shape = (n_chain, n_draw, len(segments))
    ds = xr.Dataset(
        {
            k: (("chain", "draw", "segment"), v * np.exp(jitter * rng.standard_normal(shape)))
            for k, v in values.items()
        },
        coords={"segment": list(segments), "chain": np.arange(n_chain), "draw": np.arange(n_draw)},
    )
    ds.attrs["model"] = model
    return ds


def make_rfm(x, t_x, T, zbar=None, segment=None, names=("all",)):
    x = np.asarray(x)
    n = len(x)
    if zbar is None:
        zbar = np.where(x > 0, 30.0, 0.0)
    return RFMData(
        customer_id=np.arange(n),
        frequency=x,
        recency=np.asarray(t_x, dtype=float),
        T=np.asarray(T, dtype=float),
        monetary_value=zbar,
        segment=np.zeros(n, dtype=int) if segment is None else segment,
        segment_names=names,
    )


# --------------------------------------------------------------------------- oracles
def test_bgnbd_conditional_expectation_matches_FHL_2005_example():
    # FHL (2005), section 5: x=2, t_x=30.43, T=38.86 -> 1.226 purchases in 39 weeks.
    rfm = make_rfm([2], [30.43], [38.86])
    ep = expected_purchases(make_params("bgnbd", BG_CDNOW), rfm, 39.0)
    assert ep.dims == ("chain", "draw", "customer_id")
    assert ep.values.item() == pytest.approx(1.226, abs=5e-4)


def _bg_phi_quadrature(th, x, T, t, b_eff):
    """E_p[(1 - (1 + p t/A)^-(r+x)) / p], p ~ Beta(a, b_eff): a 1-D integral in p."""
    n, A = th["r"] + x, th["alpha"] + T

    def f(p):
        return -np.expm1(-n * np.log1p(p * t / A)) / p * stats.beta.pdf(p, th["a"], b_eff)

    peak = min(1.0, 50.0 * th["a"] / (th["a"] + b_eff))
    return sum(
        integrate.quad(f, lo, hi, limit=400, epsabs=0, epsrel=1e-11)[0]
        for lo, hi in ((0.0, peak), (peak, 1.0))
        if hi > lo
    )


@pytest.mark.parametrize("model", ["bgnbd", "mbgnbd"])
@pytest.mark.parametrize("a", [0.35, 0.793, 1.0, 1.00004, 4.0])
@pytest.mark.parametrize("x,T", [(0, 0.0), (0, 39.0), (3, 30.0), (60, 70.0), (10_000, 20_000.0)])
def test_bg_alive_expectation_matches_quadrature_over_p(model, a, x, T):
    th = dict(BG_CDNOW, a=a)
    b_eff = th["b"] + x + (1.0 if model == "mbgnbd" else 0.0)
    for t in (1.0, 52.0, 500.0):
        got = float(phi_alive(model, th, x, T, t))
        want = _bg_phi_quadrature(th, x, T, t, b_eff)
        assert got == pytest.approx(want, rel=2e-7), (t, got, want)


@pytest.mark.parametrize("s", [0.606, 1.0, 2.5])
@pytest.mark.parametrize("x,T", [(0, 0.0), (4, 35.0), (10_000, 20_000.0)])
def test_pareto_alive_expectation_matches_quadrature_over_mu(s, x, T):
    th = dict(PNBD_CDNOW, s=s)
    t = 52.0
    B = th["beta"] + T

    def f(u):  # mu = u / B with u ~ Gamma(s, 1): E[(1 - exp(-mu t)) / mu]
        return -np.expm1(-u * t / B) / (u / B) * stats.gamma.pdf(u, s)

    want = (th["r"] + x) / (th["alpha"] + T) * integrate.quad(f, 0, np.inf, limit=400)[0]
    assert float(phi_alive("pareto_nbd", th, x, T, t)) == pytest.approx(want, rel=1e-7)


HISTORIES = dict(
    x=np.array([0, 1, 2, 5, 20, 200, 10_000, 3]),
    t_x=np.array([0.0, 5.0, 30.43, 36.0, 38.0, 150.0, 19_990.0, 0.5]),
    T=np.array([39.0, 39.0, 38.86, 38.0, 39.0, 160.0, 20_000.0, 60.0]),
)


def _log_alive_term(model, th, x, T):
    """log of the 'alive at T' part of each likelihood, written from the papers."""
    r, al = th["r"], th["alpha"]
    base = sps.gammaln(r + x) - sps.gammaln(r) + r * np.log(al) - (r + x) * np.log(al + T)
    if model == "bgnbd":
        return base + sps.betaln(th["a"], th["b"] + x) - sps.betaln(th["a"], th["b"])
    if model == "mbgnbd":
        return base + sps.betaln(th["a"], th["b"] + x + 1) - sps.betaln(th["a"], th["b"])
    return base + th["s"] * (np.log(th["beta"]) - np.log(th["beta"] + T))


@pytest.mark.parametrize("model", ["bgnbd", "mbgnbd", "pareto_nbd"])
def test_p_alive_equals_likelihood_ratio(model):
    th = MODEL_OF[model]
    logp = {"bgnbd": bgnbd_logp, "mbgnbd": mbgnbd_logp, "pareto_nbd": pareto_nbd_logp}[model]
    x, t_x, T = HISTORIES["x"], HISTORIES["t_x"], HISTORIES["T"]
    want = np.exp(_log_alive_term(model, th, x, T) - logp(*th.values(), x, t_x, T))
    got = probability_alive(make_params(model, th), make_rfm(x, t_x, T)).values[0, 0]
    np.testing.assert_allclose(got, want, rtol=1e-9)
    assert np.all((got > 0) & (got <= 1))
    if model == "bgnbd":
        assert got[0] == 1.0  # no repeat purchase: BG/NBD cannot have dropped out


def test_pareto_p_alive_matches_independent_quadrature_of_the_likelihood():
    th = PNBD_CDNOW
    r, al, s, be = th["r"], th["alpha"], th["s"], th["beta"]
    x, t_x, T = HISTORIES["x"][:6], HISTORIES["t_x"][:6], HISTORIES["T"][:6]
    got = probability_alive(make_params("pareto_nbd", th), make_rfm(x, t_x, T)).values[0, 0]
    for i in range(len(x)):
        # dropout term relative to the alive term (al+T)^-(r+x) (be+T)^-s, kept in logs
        def dropped(tau, i=i):
            return s * np.exp(
                -(r + x[i]) * np.log((al + tau) / (al + T[i]))
                - (s + 1) * np.log(be + tau)
                + s * np.log(be + T[i])
            )

        drop = integrate.quad(dropped, t_x[i], T[i], epsabs=0, epsrel=1e-12)[0]
        assert got[i] == pytest.approx(1.0 / (1.0 + drop), rel=1e-8)


def test_bgnbd_new_customer_matches_FHL_2005_eq_9():
    th = BG_CDNOW
    r, al, a, b = th.values()
    for t in (1.0, 39.0, 78.0):
        z = t / (al + t)
        eq9 = (a + b - 1) / (a - 1) * (1 - (al / (al + t)) ** r * sps.hyp2f1(r, b, a + b - 1, z))
        got = expected_purchases_new_customer(make_params("bgnbd", th), "all", t).values.item()
        assert got == pytest.approx(eq9, rel=1e-10)


def test_pareto_new_customer_matches_closed_form():
    th = PNBD_CDNOW
    r, al, s, be = th.values()
    t = 52.0
    want = r * be / (al * (s - 1)) * (1 - (be / (be + t)) ** (s - 1))
    got = expected_purchases_new_customer(make_params("pareto_nbd", th), "all", t).values.item()
    assert got == pytest.approx(want, rel=1e-12)


# --------------------------------------------------------------------------- simulation
def simulate_customers(model, th, n, T, t, seed):
    """Individual-level simulator: histories on (0, T] and purchases in (T, T+t].

    Each customer makes a first purchase at time 0; lambda ~ Gamma(r, rate alpha);
    BG/NBD: p ~ Beta(a, b), dropout right after each repeat purchase with prob p
    (MBG/NBD: also right after the first); Pareto/NBD: lifetime ~ Exp(mu),
    mu ~ Gamma(s, rate beta).
    """
    rng = np.random.default_rng(seed)
    lam = rng.gamma(th["r"], 1.0 / th["alpha"], n)
    if model == "pareto_nbd":
        mu = rng.gamma(th["s"], 1.0 / th["beta"], n)
        death = rng.exponential(1.0 / mu)
        p = None
    else:
        p = rng.beta(th["a"], th["b"], n)
        death = np.full(n, np.inf)
        if model == "mbgnbd":
            death[rng.random(n) < p] = 0.0
    x = np.zeros(n, dtype=int)
    t_x = np.zeros(n)
    future = np.zeros(n, dtype=int)
    clock = np.zeros(n)
    live = np.flatnonzero(death > 0)
    while live.size:
        clock[live] += rng.exponential(1.0 / lam[live])
        live = live[(clock[live] <= T + t) & (clock[live] <= death[live])]
        in_cal = clock[live] <= T
        x[live[in_cal]] += 1
        t_x[live[in_cal]] = clock[live[in_cal]]
        future[live[~in_cal]] += 1
        if p is not None:
            dies = rng.random(live.size) < p[live]
            death[live[dies]] = clock[live[dies]]
            live = live[~dies]
    alive_at_T = death > T
    return x, t_x, future, alive_at_T


@pytest.mark.parametrize("model", ["bgnbd", "mbgnbd", "pareto_nbd"])
def test_conditional_predictions_match_simulation_within_groups(model):
    th = MODEL_OF[model]
    T, t, n = 30.0, 26.0, 200_000
    x, t_x, future, alive = simulate_customers(model, th, n, T, t, seed=11)
    rfm = make_rfm(x, t_x, np.full(n, T))
    pp = make_params(model, th)
    pa = probability_alive(pp, rfm).values[0, 0]
    ep = expected_purchases(pp, rfm, t).values[0, 0]
    groups = [x == 0, x == 1, (x >= 2) & (x <= 4), x >= 5, (x >= 1) & (t_x < T / 3)]
    for g in groups:
        assert g.sum() > 500
        for obs, pred in ((alive, pa), (future, ep)):
            diff = obs[g] - pred[g]
            se = diff.std(ddof=1) / np.sqrt(g.sum())
            assert abs(diff.mean()) <= 4 * se + 1e-12, (model, g.sum(), diff.mean(), se)
    # A wrong formula would be caught: e.g. ignoring P(alive) overshoots clearly.
    g = (x >= 1) & (t_x < T / 3)
    wrong = ep[g] / pa[g]
    assert (wrong - future[g]).mean() > 8 * future[g].std() / np.sqrt(g.sum())


@pytest.mark.parametrize("model", ["bgnbd", "mbgnbd", "pareto_nbd"])
def test_new_customer_expectation_matches_simulation(model):
    th = MODEL_OF[model]
    n, t = 400_000, 52.0
    x, _, _, _ = simulate_customers(model, th, n, t, 0.0, seed=3)
    want = expected_purchases_new_customer(make_params(model, th), "all", t).values.item()
    assert abs(x.mean() - want) < 4 * x.std() / np.sqrt(n)


# --------------------------------------------------------------------------- spend
def test_expected_spend_is_posterior_mean_by_quadrature_over_nu():
    p, q, v = GG_CDNOW.values()
    sp = make_params("gamma_gamma", GG_CDNOW)
    x = np.array([0, 1, 4, 30])
    zbar = np.array([0.0, 20.0, 55.0, 12.0])
    got = expected_spend(sp, make_rfm(x, np.where(x > 0, 10.0, 0.0), np.full(4, 20.0), zbar))
    got = got.values[0, 0]
    for i in range(4):
        # Posterior of nu: prior Gamma(q, v) times prod_j Gamma(z_j | p, nu),
        # proportional to nu^(q + p x - 1) exp(-nu (v + x zbar)); normalised at its mode.
        a_post, b_post = q + p * x[i] - 1, v + x[i] * zbar[i]
        c = a_post * np.log(a_post / b_post) - a_post

        def post(nu, a_post=a_post, b_post=b_post, c=c):
            return np.exp(a_post * np.log(nu) - b_post * nu - c)

        num = integrate.quad(lambda nu, f=post: p / nu * f(nu), 0, np.inf, limit=400)
        den = integrate.quad(post, 0, np.inf, limit=400)
        assert got[i] == pytest.approx(num[0] / den[0], rel=1e-7)
    assert got[0] == pytest.approx(p * v / (q - 1), rel=1e-14)
    pop = expected_spend(sp, segment="all")
    assert pop.dims == ("chain", "draw")
    assert pop.values.item() == pytest.approx(p * v / (q - 1))


def test_expected_spend_requires_q_above_one():
    sp = make_params("gamma_gamma", dict(GG_CDNOW, q=0.9))
    with pytest.raises(ModelSpecificationError, match="q must be > 1"):
        expected_spend(sp, make_rfm([1], [2.0], [3.0]))


# --------------------------------------------------------------------------- layout
def test_draws_and_segments_are_kept_and_matched_by_name():
    names = ("b", "a")
    pp = make_params("bgnbd", BG_CDNOW, segments=("a", "b"), n_chain=2, n_draw=5, jitter=0.3)
    rfm = make_rfm([0, 3, 3], [0.0, 10.0, 10.0], [20.0, 20.0, 20.0], segment=np.array([0, 0, 1]),
                   names=names)
    ep = expected_purchases(pp, rfm, 10.0)
    assert ep.dims == ("chain", "draw", "customer_id") and ep.shape == (2, 5, 3)
    assert list(ep["customer_id"].values) == [0, 1, 2]
    # customer 1 is in segment "b" (column 1 of params), customer 2 in "a" (column 0)
    one = make_params("bgnbd", BG_CDNOW, segments=("a",))
    for seg, cust in (("b", 1), ("a", 2)):
        sub = pp.sel(segment=[seg]).assign_coords(segment=["a"])
        want = expected_purchases(sub, make_rfm([3], [10.0], [20.0], names=("a",)), 10.0)
        np.testing.assert_array_equal(ep.values[:, :, cust], want.values[:, :, 0])
    assert one.sizes["segment"] == 1
    # draws differ from each other (no averaging happened)
    assert np.unique(ep.values[:, :, 1]).size == 10


def test_missing_segment_and_bad_model_are_explained():
    pp = make_params("bgnbd", BG_CDNOW, segments=("a",))
    rfm = make_rfm([1], [1.0], [2.0], names=("z",))
    with pytest.raises(ModelSpecificationError, match="'z'"):
        probability_alive(pp, rfm)
    bad = pp.copy()
    bad.attrs["model"] = "nbd"
    with pytest.raises(ModelSpecificationError, match="nbd"):
        probability_alive(bad, make_rfm([1], [1.0], [2.0], names=("a",)))


@pytest.mark.parametrize("model", ["bgnbd", "mbgnbd", "pareto_nbd"])
def test_large_frequency_and_age_stay_finite(model):
    x = np.array([10_000, 10_000, 50_000])
    t_x = np.array([19_999.0, 10_000.0, 49_000.0])
    T = np.array([20_000.0, 20_000.0, 50_000.0])
    pp = make_params(model, MODEL_OF[model])
    rfm = make_rfm(x, t_x, T)
    pa = probability_alive(pp, rfm).values.ravel()
    ep = expected_purchases(pp, rfm, 52.0).values.ravel()
    assert np.all(np.isfinite(pa)) and np.all(np.isfinite(ep))
    assert pa[0] > 0.5 and pa[1] < 1e-10  # recent buyer alive; long silence -> gone
    # a customer buying once every two weeks and alive: about 26 purchases in 52 weeks
    assert ep[0] / pa[0] == pytest.approx(26.0, rel=0.02)
