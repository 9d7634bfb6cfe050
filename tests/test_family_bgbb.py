"""BG/BB family: the published donations figures (Fader, Hardie & Shang 2010), the
likelihood against an independent NumPy/mpmath implementation and against simulation,
P(alive) and expectations against simulation, gradients, properties over the whole
support, posterior coverage with NUTS, holdout evaluation and CLV end to end."""

from __future__ import annotations

import math

import mpmath as mp
import numpy as np
import pytest
import xarray as xr
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scipy.special import betaln, comb, gammaln

from bayesclv.classic import fit_mle
from bayesclv.clv import expected_clv, score_customers, simulate_clv
from bayesclv.data import RFMData
from bayesclv.datasets import load_donations, load_donations_rfm
from bayesclv.diagnostics import holdout_evaluation
from bayesclv.errors import DataValidationError, ModelSpecificationError
from bayesclv.families import FAMILIES, get_family
from bayesclv.families.bgbb import BGBB, BGBBParams, BGBBPriors, bgbb_logp
from bayesclv.predict import expected_purchases, expected_purchases_new_customer, probability_alive
from bayesclv.priors import weak_priors
from bayesclv.simulate import GammaGammaParams, simulate_rfm

# Fader, Hardie & Shang (2010), donations 1995 cohort (also the BTYD / lifetimes figures)
PUBLISHED = dict(alpha=1.204, beta=0.750, gamma=0.657, delta=2.783)
PUBLISHED_LL = -33225.6
NAMES = ("alpha", "beta", "gamma", "delta")


def draws(values, segments=("all",), n_draw=1, jitter=0.0, seed=0, model="bgbb"):
    rng = np.random.default_rng(seed)
    shape = (1, n_draw, len(segments))
    ds = xr.Dataset(
        {k: (("chain", "draw", "segment"), v * np.exp(jitter * rng.standard_normal(shape)))
         for k, v in values.items()},
        coords={"chain": [0], "draw": np.arange(n_draw), "segment": list(segments)},
    )
    ds.attrs.update(model=model, time_unit="year")
    return ds


def reference_logp(a, b, g, d, x, t_x, n):
    """FHS (2010) eq. (5) written out term by term (no padding, no log-sum-exp)."""
    out = np.exp(betaln(a + x, b + n - x) - betaln(a, b) + betaln(g, d + n) - betaln(g, d))
    for i in range(int(n - t_x)):
        out += np.exp(betaln(a + x, b + t_x - x + i) - betaln(a, b)
                      + betaln(g + 1, d + t_x + i) - betaln(g, d))
    return np.log(out)


def mp_logp(a, b, g, d, x, t_x, n):
    """The same in 50-digit arithmetic."""
    with mp.workdps(50):
        a, b, g, d = (mp.mpf(v) for v in (a, b, g, d))
        B = mp.beta
        total = B(a + x, b + n - x) / B(a, b) * B(g, d + n) / B(g, d)
        for i in range(int(n - t_x)):
            total += B(a + x, b + t_x - x + i) / B(a, b) * B(g + 1, d + t_x + i) / B(g, d)
        return float(mp.log(total))


@pytest.fixture(scope="module")
def donations():
    return load_donations_rfm()


# ------------------------------------------------------------------ published oracles
def test_mle_matches_FHS_2010_donations(donations):
    assert donations.n_customers == 11104 and donations.time_unit == "year"
    fit = fit_mle("bgbb", donations)
    assert fit.converged
    for k, v in PUBLISHED.items():
        assert abs(fit.params[k] / v - 1) < 0.005, (k, fit.params[k])
    assert fit.log_likelihood == pytest.approx(PUBLISHED_LL, abs=0.1)
    # grouped table with weights: the same fit
    df = load_donations()
    grouped = RFMData.from_frame(df.assign(T=df.periods), monetary_value=None, time_unit="year")
    g = fit_mle("bgbb", grouped, weights=df.weights.to_numpy())
    assert g.log_likelihood == pytest.approx(fit.log_likelihood, abs=1e-6)


def test_map_complete_pooling_weak_priors_within_half_percent_of_FHS_2010(donations):
    from bayesclv.models import build_model, model_spec

    model = build_model("bgbb", donations, weak_priors(BGBBPriors), pooling="complete")
    start = model_spec(model).extra["start"]  # the posterior mode, found on NumPy
    nat = BGBB.to_natural(**start)
    for k, v in PUBLISHED.items():
        assert abs(nat[k] / v - 1) < 0.005, (k, nat[k])
    # ... and it is the compiled model's mode: the PyTensor gradient vanishes there
    point = {**model.initial_point(), **{k: np.asarray(v) for k, v in start.items()}}
    grad = model.compile_dlogp()(point)
    assert np.all(np.isfinite(grad)) and np.max(np.abs(grad)) < 0.05, grad


def test_p_alive_matches_FHS_2010_eq_11():
    th = {k: np.array([v]) for k, v in PUBLISHED.items()}
    pa = BGBB.p_alive(th, np.array([0.0, 2.0, 6.0]), np.array([0.0, 4.0, 6.0]), np.full(3, 6.0))
    np.testing.assert_array_equal(np.round(pa, 2), [0.11, 0.59, 0.93])
    # the same through the public API on draws
    rfm = RFMData(customer_id=[1, 2, 3], frequency=[0, 2, 6], recency=[0.0, 4.0, 6.0],
                  T=[6.0] * 3, monetary_value=[0.0, 1.0, 1.0], segment=[0, 0, 0],
                  time_unit="year")
    got = probability_alive(draws(PUBLISHED), rfm).values.ravel()
    np.testing.assert_allclose(got, pa, rtol=1e-12)


def test_sum_of_conditional_expectations_matches_FHS_2010_12884(donations):
    mle = fit_mle("bgbb", donations).params
    e = expected_purchases(draws(mle), donations, 5.0).values.sum()
    assert e == pytest.approx(12884.2, abs=0.1)


# ------------------------------------------------------------------ likelihood
def test_logp_equals_term_by_term_reference_and_mpmath():
    rng = np.random.default_rng(0)
    n = rng.integers(0, 30, 400).astype(float)
    t_x = np.floor(rng.uniform(0, 1, 400) * (n + 1))
    x = np.floor(rng.uniform(0, 1, 400) * (t_x + 1))
    x = np.where(t_x == 0, 0.0, np.maximum(x, 1.0))
    p = 10 ** rng.uniform(-1.5, 1.5, (4, 400))
    got = bgbb_logp(*p, x, t_x, n)
    ref = np.array([reference_logp(*p[:, j], x[j], t_x[j], n[j]) for j in range(400)])
    np.testing.assert_allclose(got, ref, rtol=1e-11, atol=1e-11)
    for j in range(0, 400, 40):
        assert got[j] == pytest.approx(mp_logp(*p[:, j], x[j], t_x[j], n[j]), rel=1e-11,
                                       abs=1e-11)


def test_likelihood_is_the_pattern_distribution_of_the_simulator():
    truth = BGBBParams(1.2, 0.75, 0.66, 2.8)
    N, n = 200_000, 5
    rfm = simulate_rfm(truth, N, T=float(n), time_unit="year", random_seed=7)
    pats, counts = np.unique(np.column_stack([rfm.frequency, rfm.recency]), axis=0,
                             return_counts=True)
    every = [(x, t) for t in range(n + 1) for x in range(t + 1) if (x > 0) == (t > 0)]
    assert len(pats) == len(every)  # every pattern occurs, and only those
    # L is the probability of one transaction sequence; C(t_x - 1, x - 1) share a pattern
    ways = np.where(pats[:, 0] > 0, comb(pats[:, 1] - 1, pats[:, 0] - 1), 1.0)
    prob = ways * np.exp(bgbb_logp(*vars(truth).values(), pats[:, 0], pats[:, 1],
                                   np.full(len(pats), n)))
    assert prob.sum() == pytest.approx(1.0, abs=1e-12)
    freq = counts / N
    assert np.all(np.abs(freq - prob) < 4.5 * np.sqrt(prob * (1 - prob) / N))


# ------------------------------------------------------------------ P(alive), expectations
def test_p_alive_and_conditional_expectation_match_simulation():
    truth = BGBBParams(0.9, 1.4, 0.4, 1.6)
    N, n, h = 300_000, 6, 4
    rfm = simulate_rfm(truth, N, T=float(n), holdout_length=float(h), time_unit="year",
                       random_seed=11)
    alive = rfm.meta["truth"]["alive_at_T"].to_numpy()
    th = {k: np.array([v]) for k, v in vars(truth).items()}
    pa = BGBB.p_alive(th, rfm.frequency, rfm.recency, rfm.T)
    e = pa * BGBB.expected_alive(th, rfm.frequency, rfm.T, h)
    key = rfm.frequency * 100 + rfm.recency.astype(int)
    for k in np.unique(key):
        sel = key == k
        m = sel.sum()
        if m < 2000:
            continue
        q = pa[sel][0]
        assert abs(alive[sel].mean() - q) < 4.5 * math.sqrt(q * (1 - q) / m)
        y = rfm.holdout_frequency[sel]
        assert abs(y.mean() - e[sel][0]) < 4.5 * y.std() / math.sqrt(m) + 1e-3
    # p_alive_rows (the CLV engine's path) is bit-identical to p_alive
    rows = BGBB.p_alive_rows(th, rfm.frequency[:500], rfm.recency[:500], rfm.T[:500])
    np.testing.assert_array_equal(rows[:, 0], pa[:500])


def test_conditional_expectation_is_FHS_eq_13_and_new_customer_is_eq_7():
    a, b, g, d = PUBLISHED.values()
    df = load_donations()
    x, t_x, n = (df[c].to_numpy(float) for c in ("frequency", "recency", "periods"))
    th = {k: np.array([v]) for k, v in PUBLISHED.items()}
    for ns in (1, 5, 12):
        L = np.exp([reference_logp(a, b, g, d, *row) for row in zip(x, t_x, n, strict=True)])
        eq13 = (np.exp(betaln(a + x + 1, b + n - x) - betaln(a, b)) * d / (g - 1)
                * np.exp(gammaln(g + d) - gammaln(1 + d))
                * (np.exp(gammaln(1 + d + n) - gammaln(g + d + n))
                   - np.exp(gammaln(1 + d + n + ns) - gammaln(g + d + n + ns)))) / L
        got = BGBB.p_alive(th, x, t_x, n) * BGBB.expected_alive(th, x, n, ns)
        np.testing.assert_allclose(got, eq13, rtol=1e-10)
        eq7 = a / (a + b) * d / (g - 1) * (1 - np.exp(gammaln(g + d) + gammaln(1 + d + ns)
                                                      - gammaln(g + d + ns) - gammaln(1 + d)))
        new = expected_purchases_new_customer(draws(PUBLISHED), "all", ns).values.item()
        assert new == pytest.approx(eq7, rel=1e-10)
    # a window of 5.7 periods holds 5 whole opportunities (floor)
    np.testing.assert_array_equal(BGBB.expected_alive(th, x, n, 5.7),
                                  BGBB.expected_alive(th, x, n, 5.0))


def test_window_pmf_and_simulators_match_each_other():
    rng = np.random.default_rng(3)
    p, theta, h, N = 0.6, 0.25, 7, 200_000
    ys = np.arange(h + 1)
    pmf = np.exp(BGBB.window_log_pmf({"p": np.full(ys.shape, p), "theta": np.full(ys.shape, theta)},
                                     ys, h))
    assert pmf.sum() == pytest.approx(1.0, abs=1e-12)
    sim = BGBB.simulate_window({"p": np.full(N, p), "theta": np.full(N, theta)}, h, rng)
    freq = np.bincount(sim, minlength=h + 1) / N
    assert np.abs(freq - pmf).max() < 4.5 * np.sqrt(pmf.max() / N)
    # future_events: mean count per customer-draw = expected_alive; times are whole periods
    th = {k: np.full((1, 4), v) for k, v in PUBLISHED.items()}
    x, T = np.full((5000, 1), 3.0), np.full((5000, 1), 6.0)
    alive = np.ones((5000, 4), dtype=bool)
    pos, tau = BGBB.future_events(th, x, T, alive, 5.0, rng)
    assert set(np.unique(tau)) <= {1.0, 2.0, 3.0, 4.0, 5.0}
    assert np.bincount(pos * 10 + tau.astype(int)).max() == 1  # one per opportunity
    mean = pos.size / alive.size
    want = BGBB.expected_alive({k: v[:, :1] for k, v in th.items()}, 3.0, 6.0, 5.0).item()
    assert mean == pytest.approx(want, rel=0.03)


def test_prior_predictive_check_of_default_priors():
    """What the default priors imply for six opportunities (FHS's donations design):
    every frequency 0..6 is plausible (measured: 52% none, 5-13% each of 1..5, 11% all
    six, averaged over 400 prior draws; the donations data have 31% none, 11% all six),
    neither extreme dominates, and the means sit where the docstring says."""
    pri = BGBBPriors()
    rng = np.random.default_rng(5)
    names = BGBB.unconstrained
    theta = {k: getattr(pri, k).draw(rng, 400) for k in names}
    nat = BGBB.to_natural(**theta)
    share = np.empty((400, 7))
    for j in range(400):
        truth = BGBBParams(*(nat[k][j] for k in NAMES))
        rfm = simulate_rfm(truth, 500, T=6.0, time_unit="year", random_seed=j)
        share[j] = np.bincount(rfm.frequency, minlength=7) / 500
    avg = share.mean(axis=0)
    assert np.all(avg > 0.03), avg
    assert avg[0] < 0.6 and avg[6] < 0.3, avg
    mean_p = nat["alpha"] / (nat["alpha"] + nat["beta"])
    assert 0.1 < np.quantile(mean_p, 0.1) < 0.3 and 0.7 < np.quantile(mean_p, 0.9) < 0.9
    drop = nat["gamma"] / (nat["gamma"] + nat["delta"])
    assert 0.15 < np.median(drop) < 0.25


# ------------------------------------------------------------------ PyTensor, properties
def test_pytensor_logp_equals_numpy_and_gradient_is_finite_at_extremes():
    import pytensor
    import pytensor.tensor as pt

    v = pt.dvector("v")
    x = np.array([0.0, 1.0, 3.0, 7.0, 40.0, 0.0])
    t_x = np.array([0.0, 1.0, 5.0, 7.0, 45.0, 0.0])
    n = np.array([0.0, 8.0, 9.0, 7.0, 500.0, 500.0])
    ll = bgbb_logp(v[0], v[1], v[2], v[3], x, t_x, n)
    f = pytensor.function([v], [ll, pytensor.grad(ll.sum(), v)])
    for point in ([1.2, 0.75, 0.66, 2.8], [1e-3, 1e6, 1e-3, 1e6], [1e6, 1e-3, 1e6, 1e-3],
                  [1e6, 1e6, 1e-3, 1e-3], [1.0, 1.0, 1.0, 1.0]):
        val, grad = f(np.array(point))
        # PyTensor's betaln is a sum of gammaln (1e7 at 1e6): ~1e-8 absolute round-off
        np.testing.assert_allclose(val, bgbb_logp(*point, x, t_x, n), rtol=1e-9, atol=3e-8)
        assert np.all(np.isfinite(grad)), (point, grad)


positive = st.floats(-3.0, 6.0).map(lambda e: 10.0**e)


@st.composite
def histories(draw, n_max=500):
    n = draw(st.integers(0, n_max))
    t_x = draw(st.integers(0, n))
    x = 0 if t_x == 0 else draw(st.integers(1, t_x))
    return float(x), float(t_x), float(n)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(a=positive, b=positive, g=positive, d=positive, hist=histories(), ahead=st.integers(0, 500))
def test_every_prediction_path_finite_and_in_bounds_over_the_support(a, b, g, d, hist, ahead):
    x, t_x, n = hist
    th = {"alpha": np.array([a]), "beta": np.array([b]), "gamma": np.array([g]),
          "delta": np.array([d])}
    ll = bgbb_logp(a, b, g, d, x, t_x, n)
    assert np.isfinite(ll) and ll <= 1e-9
    pa = BGBB.p_alive(th, x, t_x, n)
    assert np.all((pa >= 0) & (pa <= 1))
    e = BGBB.expected_alive(th, x, n, ahead)
    assert np.all(np.isfinite(e) & (e >= 0) & (e <= ahead + 1e-9))
    rng = np.random.default_rng(0)
    lat = BGBB.latent_given_alive(th, np.array([x]), np.array([n]), rng)
    h = min(ahead, 30)
    pmf = np.exp(BGBB.window_log_pmf({k: np.repeat(v, h + 1) for k, v in lat.items()},
                                     np.arange(h + 1), h))
    assert np.all(np.isfinite(pmf)) and pmf.sum() == pytest.approx(1.0, abs=1e-9)


@settings(max_examples=25, deadline=None)
@given(a=positive, b=positive, g=positive, d=positive, hist=histories(n_max=40))
def test_logp_equals_mpmath_over_the_support(a, b, g, d, hist):
    got = float(bgbb_logp(a, b, g, d, *hist))
    ref = mp_logp(a, b, g, d, *hist)
    assert got == pytest.approx(ref, rel=1e-9, abs=1e-8)


# ------------------------------------------------------------------ data handling
def test_bgbb_refuses_non_integer_or_impossible_histories():
    from bayesclv.models import build_model

    frac = RFMData(customer_id=[1, 2], frequency=[1, 0], recency=[2.5, 0.0], T=[6.0, 6.0],
                   monetary_value=[1.0, 0.0], segment=[0, 0], time_unit="year")
    with pytest.raises(ModelSpecificationError, match="whole numbers.*'recency'.*1"):
        build_model("bgbb", frac)
    too_many = RFMData(customer_id=[1], frequency=[3], recency=[2.0], T=[6.0],
                       monetary_value=[1.0], segment=[0], time_unit="year")
    with pytest.raises(DataValidationError, match="x <= t_x"):
        fit_mle("bgbb", too_many)
    with pytest.raises(ModelSpecificationError, match="whole number"):
        simulate_rfm(BGBBParams(1, 1, 1, 1), 10, T=(2.0, 6.0))
    assert get_family("bgbb") is FAMILIES["bgbb"] is BGBB


# ------------------------------------------------------------------ Bayesian fit: coverage
def test_nuts_posterior_covers_the_truth_with_mle_sized_intervals(tmp_path):
    """pymc-marketing's BG/BB collapsed its posterior (its issue #2919): ours must cover
    the truth with intervals as wide as the MLE's standard errors say."""
    import arviz as az

    from bayesclv.fit import fit
    from bayesclv.models import build_model

    truth = BGBBParams(1.2, 0.75, 0.66, 2.8)
    rfm = simulate_rfm(truth, 2000, T=8.0, time_unit="year", random_seed=3)
    mle = fit_mle("bgbb", rfm)
    idata = fit(build_model("bgbb", rfm, pooling="complete"), chains=2, draws=300, tune=300,
                cores=1, random_seed=1, progressbar=False)
    post = idata.posterior
    assert int(idata.sample_stats["diverging"].sum()) == 0
    assert float(az.rhat(post[list(NAMES)]).to_array().max()) < 1.05
    for k in NAMES:
        log_draws = np.log(post[k].values.ravel())
        lo, hi = np.quantile(log_draws, [0.03, 0.97])
        assert lo < math.log(getattr(truth, k)) < hi, (k, np.exp([lo, hi]))
        ratio = log_draws.std() / mle.se_log[k]
        assert 0.75 < ratio < 1.5, (k, ratio)
    # the fit is an ordinary bayesclv fit: pointwise log-likelihood (LOO), save and load
    from bayesclv.diagnostics import pointwise_log_likelihood
    from bayesclv.fit import load_fit, save_fit

    loo = az.loo(pointwise_log_likelihood(idata, rfm))
    assert np.isfinite(loo.elpd_loo) and loo.elpd_loo < 0
    save_fit(idata, tmp_path / "bgbb.nc")
    back = load_fit(tmp_path / "bgbb.nc")
    assert back.attrs["model"] == "bgbb"
    np.testing.assert_array_equal(back.posterior["alpha"].values, post["alpha"].values)


def test_segments_build_under_every_pooling_and_unpooled_mode_is_each_segments_mle():
    from bayesclv.models import build_model, model_spec

    rfm = simulate_rfm({"a": BGBBParams(1.2, 0.75, 0.66, 2.8), "b": BGBBParams(0.5, 2.0, 0.5, 1.5)},
                       {"a": 1500, "b": 1500}, T=7.0, time_unit="year", random_seed=2)
    for pooling in ("complete", "partial"):
        model = build_model("bgbb", rfm, pooling=pooling)
        assert model_spec(model).segment_names == ("a", "b")
    model = build_model("bgbb", rfm, weak_priors(BGBBPriors, 100.0), pooling="none")
    mode = model_spec(model).extra["start"]
    start = BGBB.to_natural(**{k: np.asarray(v) for k, v in mode.items()})
    for s, name in enumerate(("a", "b")):
        fit = fit_mle("bgbb", rfm.subset(rfm.segment == s))
        assert fit.converged
        for k in NAMES:
            assert start[k][s] == pytest.approx(fit.params[k], rel=0.01), (name, k)


# ------------------------------------------------------------------ consumers end to end
@pytest.fixture(scope="module")
def simulated_with_holdout():
    truth = BGBBParams(1.2, 0.75, 0.66, 2.8)
    return truth, simulate_rfm(truth, 3000, T=6.0, holdout_length=5.0, time_unit="year",
                               spend=GammaGammaParams(6.0, 4.0, 15.0), random_seed=21)


def test_holdout_evaluation_runs_and_is_calibrated_at_the_truth(simulated_with_holdout):
    truth, rfm = simulated_with_holdout
    good = draws(vars(truth), n_draw=50, jitter=0.02)
    wrong = draws({**vars(truth), "gamma": truth.gamma * 5}, n_draw=50, jitter=0.02)
    spend = draws(dict(p=6.0, q=4.0, v=15.0), n_draw=50, model="gamma_gamma")
    ev = holdout_evaluation(good, rfm, spend_params=spend, n_draws=50, random_seed=1)
    bad = holdout_evaluation(wrong, rfm, n_draws=50, probs=(), random_seed=1)
    cov = ev.coverage["coverage"]
    for p in (0.5, 0.8, 0.95):
        assert cov[("purchases", p)] >= p - 0.04
    assert abs(ev.metrics.loc["purchases", "BIAS"]) < 0.06
    assert ev.log_predictive_density > bad.log_predictive_density + 50
    assert ev.conditional["customers"].sum() == rfm.n_customers


def test_clv_with_gamma_gamma_spend_runs_end_to_end(simulated_with_holdout):
    _, rfm = simulated_with_holdout
    pur = draws(PUBLISHED, n_draw=20, jitter=0.05, seed=1)
    spend = draws(dict(p=6.0, q=4.0, v=15.0), n_draw=20, jitter=0.05, seed=2, model="gamma_gamma")
    scores = score_customers(pur, spend, rfm, horizon=5, discount_rate=0.0, discount_period=1.0)
    table = scores.table
    assert len(table) == rfm.n_customers and np.all(np.isfinite(table["clv_mean"]))
    assert scores.totals.attrs["purchase_model"] == "bgbb"
    # undiscounted expected CLV = expected purchases x expected spend, per draw
    from bayesclv.predict import expected_spend

    e = expected_clv(pur, spend, rfm, horizon=5, discount_rate=0.0, discount_period=1.0)
    want = expected_purchases(pur, rfm, 5.0) * expected_spend(spend, rfm)
    np.testing.assert_allclose(e.values, want.values, rtol=1e-10)
    np.testing.assert_allclose(scores.totals["portfolio_total"].values,
                               e.sum("customer_id").values, rtol=1e-10)
    # discounting per period: the fast tables equal the direct sum of discounted increments
    disc = expected_clv(pur, spend, rfm, horizon=5, discount_rate=0.1, discount_period=1.0)
    cum = [expected_purchases(pur, rfm, k) for k in range(6)]
    inc = [cum[k] - cum[k - 1] for k in range(1, 6)]
    direct = sum(i * 1.1 ** -(k + 1) for k, i in enumerate(inc)) * expected_spend(spend, rfm)
    np.testing.assert_allclose(disc.values, direct.values, rtol=1e-10)
    # simulated CLV: its mean over customers and draws matches the expectation
    sim = simulate_clv(pur, spend, rfm, horizon=5, discount_rate=0.0, discount_period=1.0,
                       random_seed=3)
    assert float(sim.mean()) == pytest.approx(float(e.mean()), rel=0.05)
