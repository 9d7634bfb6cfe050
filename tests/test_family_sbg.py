"""Contractual families sBG and BdW: the published cohorts of Fader & Hardie (2007), the
likelihood against independent implementations and the simulator, retention, survival,
residual lifetime and DERL against closed forms / high-precision sums, gradients,
properties over the support, Bayesian fits under every pooling (NUTS coverage)."""

from __future__ import annotations

import math
import warnings

import mpmath as mp
import numpy as np
import pytest
import xarray as xr
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scipy.optimize import minimize
from scipy.special import betaln

from bayesclv.errors import DataValidationError, ModelSpecificationError
from bayesclv.families import FAMILIES
from bayesclv.families.sbg import (
    BDW,
    SBG,
    BdWParams,
    BdWPriors,
    ContractData,
    SBGParams,
    SBGPriors,
    bdw_logp,
    expected_derl,
    expected_residual_lifetime,
    retention_rate,
    sbg_logp,
    simulate_contracts,
    survival,
)
from bayesclv.priors import weak_priors

# Fader & Hardie (2007), "How to project customer retention", Table 1 (years 0-7) and
# the sBG fits on those 7 transitions of a cohort of 1,000. (The "regular" alpha is
# 0.704 in the paper and in every refit; 0.688 appears in some secondary sources.)
REGULAR = [100, 63.1, 46.8, 38.2, 32.6, 28.9, 26.2, 24.1]
HIGH_END = [100, 86.9, 74.3, 65.3, 59.3, 55.1, 51.7, 49.1]
PUBLISHED = {"regular": dict(alpha=0.704, beta=1.182), "high end": dict(alpha=0.668, beta=3.806)}
# High end: projected survival of years 8-12 at the fit, and DERL(d = 10%) of a subscriber
# who has renewed 7 times (FH 2007 / FH 2010, as reproduced by shifted_beta_geometric_py).
HIGH_END_PROJECTION = [0.460, 0.436, 0.414, 0.395, 0.378]
HIGH_END_DERL_7 = 7.530


@pytest.fixture(scope="module")
def cohorts():
    return ContractData.from_cohorts({"regular": (REGULAR, 1000), "high end": (HIGH_END, 1000)})


def counts_loglik(alpha, beta, surv, size=1000):
    """FH (2007) eq. (5) on counts: churners by the recursion P(1) = a/(a+b),
    P(t) = (b+t-2)/(a+b+t-1) P(t-1); survivors by S(7) = 1 - sum P."""
    alive = np.round(np.asarray(surv) / 100 * size)
    lost = -np.diff(alive)
    P = [alpha / (alpha + beta)]
    for t in range(2, len(alive)):
        P.append(P[-1] * (beta + t - 2) / (alpha + beta + t - 1))
    return float(np.sum(lost * np.log(P)) + alive[-1] * np.log(1 - np.sum(P)))


def draws(values, segments=("all",), n_draw=1, model="sbg"):
    shape = (1, n_draw, len(segments))
    ds = xr.Dataset({k: (("chain", "draw", "segment"), np.full(shape, v))
                     for k, v in values.items()},
                    coords={"chain": [0], "draw": np.arange(n_draw), "segment": list(segments)})
    ds.attrs.update(model=model, time_unit="year")
    return ds


def mp_residual(th, n, d=0.0, K=60):
    """sum_{k>=1} S(n+k)/S(n) (1+d)^-(k-1) in 30-digit arithmetic: K terms, then the
    tail by Euler-Maclaurin around the midpoint (the integral from K+1/2, plus f'/24
    minus 7 f^(3)/5760) with mpmath's Gauss-Legendre/tanh-sinh quadrature per decade
    (independent of the package's Gauss-Jacobi rule)."""
    with mp.workdps(30):
        a, b, c = (mp.mpf(th.get(k, 1.0)) for k in ("alpha", "beta", "c"))
        n, z = mp.mpf(n), 1 / (1 + mp.mpf(d))

        def lbeta(x, y):  # mp.beta loses the thread for huge y: log-gammas, enough digits
            with mp.workdps(mp.mp.dps + 10 + (int(mp.log10(y)) if y > 10 else 0)):
                return +(mp.loggamma(x) + mp.loggamma(y) - mp.loggamma(x + y))

        def f(u):
            return mp.exp(lbeta(a, b + (n + u) ** c) - lbeta(a, b + n**c)) * z ** (u - 1)

        m = mp.mpf(K) + mp.mpf(1) / 2
        # decade by decade to 1e12 m, then the power law f(U) U / (q - 1) (its relative
        # error, O(U^-min(1, c)), times a remainder of O(U^(1-q)), is far below 1e-12)
        U = m * mp.mpf(10) ** 12
        tail = mp.quad(f, [m * mp.mpf(10) ** j for j in range(13)])
        if d == 0:
            tail += f(U) * U / (a * c - 1)
        tail += mp.diff(f, m) / 24 - 7 * mp.diff(f, m, 3) / 5760
        return float(mp.fsum(f(k) for k in range(1, K + 1)) + tail)


# ------------------------------------------------------------------ published oracles
@pytest.mark.parametrize("name, surv", [("regular", REGULAR), ("high end", HIGH_END)])
def test_mle_matches_FH_2007_cohorts(name, surv):
    res = minimize(lambda th: -counts_loglik(*np.exp(th), surv), np.zeros(2),
                   method="Nelder-Mead", options={"xatol": 1e-10, "fatol": 1e-10})
    a, b = np.exp(res.x)
    assert a == pytest.approx(PUBLISHED[name]["alpha"], rel=0.005)
    assert b == pytest.approx(PUBLISHED[name]["beta"], rel=0.005)
    # the package's per-subscriber likelihood on the records equals the counts form
    data = ContractData.from_cohort(surv, 1000, segment=name)
    assert sbg_logp(a, b, data.tenure, data.churned).sum() == pytest.approx(
        counts_loglik(a, b, surv), rel=1e-12)
    if name == "high end":
        assert -res.fun == pytest.approx(-1611.16, abs=0.01)
        # FH (2007) spreadsheet's starting value, per subscriber: -2.115 at (1, 1)
        assert counts_loglik(1.0, 1.0, surv) / 1000 == pytest.approx(-2.1155, abs=1e-4)


def test_map_within_half_percent_of_FH_2007_under_complete_and_no_pooling(cohorts):
    from bayesclv.models import build_model, model_spec

    prior = weak_priors(SBGPriors)
    for s, name in enumerate(cohorts.segment_names):
        one = ContractData.from_cohort(REGULAR if s == 0 else HIGH_END, 1000, segment=name)
        spec = model_spec(build_model("sbg", one, prior, "complete"))
        mode = SBG.to_natural(**spec.extra["start"])
        for k, v in PUBLISHED[name].items():
            assert abs(mode[k] / v - 1) < 0.005, (name, k, mode[k])
    model = build_model("sbg", cohorts, prior, pooling="none")
    start = model_spec(model).extra["start"]
    mode = SBG.to_natural(**{k: np.asarray(v) for k, v in start.items()})
    for s, name in enumerate(cohorts.segment_names):
        for k, v in PUBLISHED[name].items():
            assert abs(mode[k][s] / v - 1) < 0.005, (name, k)
    # the compiled model's gradient vanishes there: it is the MAP of the PyMC model
    point = {**model.initial_point(), **{k: np.asarray(v) for k, v in start.items()}}
    grad = model.compile_dlogp()(point)
    assert np.max(np.abs(grad)) < 1e-2, grad


def test_projection_retention_and_derl_match_FH_2007_and_FH_2010():
    th = PUBLISHED["high end"]
    S = np.exp(SBG.log_survival(th, np.arange(8, 13)))
    np.testing.assert_allclose(S, HIGH_END_PROJECTION, atol=6e-4)
    t = np.arange(1, 13)
    np.testing.assert_allclose(SBG.retention(th, t),
                               (th["beta"] + t - 1) / (th["alpha"] + th["beta"] + t - 1),
                               rtol=1e-12)  # FH (2007) eq. (4)
    assert SBG.residual_lifetime(th, 7.0, 0.1) == pytest.approx(HIGH_END_DERL_7, abs=5e-4)


# ------------------------------------------------------------------ likelihood
def test_logp_against_independent_forms_and_sbg_is_bdw_at_c_1():
    rng = np.random.default_rng(0)
    t = rng.integers(0, 60, 300).astype(float)
    gone = (rng.random(300) < 0.6) & (t > 0)
    a, b, c = 10 ** rng.uniform(-1.5, 1.5, (3, 300))

    def S(tt):
        return np.exp(betaln(a, b + tt**c) - betaln(a, b))

    got = bdw_logp(a, b, c, t, gone)
    with np.errstate(divide="ignore"):
        naive = np.where(gone, np.log(S(np.maximum(t - 1, 0)) - S(t)), np.log(S(t)))
    ok = np.isfinite(naive) & (np.abs(naive) < 30)  # where the plain difference is exact enough
    np.testing.assert_allclose(got[ok], naive[ok], rtol=1e-8, atol=1e-11)
    # everywhere (also where S(t-1) - S(t) cancels in double precision): 30 digits
    with mp.workdps(30):
        for j in range(0, 300, 7):
            aj, bj, cj = (mp.mpf(v[j]) for v in (a, b, c))

            def Sm(u, aj=aj, bj=bj, cj=cj):
                return mp.beta(aj, bj + mp.mpf(u) ** cj) / mp.beta(aj, bj)

            ref = mp.log(Sm(t[j] - 1) - Sm(t[j])) if gone[j] else mp.log(Sm(t[j]))
            assert got[j] == pytest.approx(float(ref), rel=1e-8, abs=1e-11)
    np.testing.assert_allclose(sbg_logp(a, b, t, gone), bdw_logp(a, b, 1.0, t, gone),
                               rtol=1e-10, atol=1e-12)


def test_likelihood_is_the_distribution_of_the_simulator():
    truth = BdWParams(0.8, 2.5, 0.6)
    N, periods = 300_000, 6
    data = simulate_contracts(truth, N, periods=periods, random_seed=4)
    cells = [(t, True) for t in range(1, periods + 1)] + [(periods, False)]
    prob = np.exp([bdw_logp(*vars(truth).values(), np.array([t]), np.array([g]))[0]
                   for t, g in cells])
    assert prob.sum() == pytest.approx(1.0, abs=1e-12)
    freq = np.array([np.mean((data.tenure == t) & (data.churned == g)) for t, g in cells])
    assert np.all(np.abs(freq - prob) < 4.5 * np.sqrt(prob * (1 - prob) / N))
    # and the survival of simulated lifetimes past the window, for BdW and sBG
    life = data.meta["truth"]["lifetime"].to_numpy()
    sbg_truth = SBGParams(0.8, 2.5)
    sbg_life = simulate_contracts(sbg_truth, N, periods=1, random_seed=5).meta["truth"]
    for t in (8, 15, 30):
        for fam, th, lives in ((BDW, vars(truth), life),
                               (SBG, vars(sbg_truth), sbg_life["lifetime"].to_numpy())):
            s = np.exp(fam.log_survival(th, t))
            assert abs(np.mean(lives > t) - s) < 4.5 * math.sqrt(s * (1 - s) / N)


# ------------------------------------------------------------------ residual lifetime
def test_residual_lifetime_and_derl_against_closed_forms_and_long_sums():
    n = np.array([0.0, 3.0, 12.0])
    # sBG, alpha > 1: sum_k S(n+k)/S(n) = (beta+n)/(alpha-1) (telescoping); alpha <= 1: inf
    for a in (2.5, 1.01, 1.0005, 1.0 + 1e-9):  # also as alpha -> 1, where the mean explodes
        got = SBG.residual_lifetime(dict(alpha=a, beta=1.5), n)
        np.testing.assert_allclose(got, (1.5 + n) / (a - 1), rtol=1e-8 if a > 1.001 else 1e-6)
    assert np.all(np.isinf(SBG.residual_lifetime(PUBLISHED["regular"], n)))
    # BdW: infinite iff c alpha <= 1; finite ones (also with slow, algebraic tails)
    # against the 30-digit reference
    assert np.all(np.isinf(BDW.residual_lifetime(dict(alpha=1.5, beta=2.0, c=0.6), n)))
    cases = [
        (BDW, dict(alpha=1.5, beta=3.0, c=1.3), 0.0),
        (BDW, dict(alpha=0.7, beta=0.4, c=2.5), 0.0),
        (BDW, dict(alpha=4.0, beta=20.0, c=0.5), 0.0),
        (SBG, PUBLISHED["regular"], 0.005),
        (BDW, dict(alpha=0.3, beta=5.0, c=0.7), 0.1),
        (BDW, dict(alpha=2.0, beta=0.5, c=1.8), 1.0),
        (BDW, dict(alpha=1.2, beta=8.0, c=1.1), 1e-4),
    ]
    for fam, th, d in cases:
        got = fam.residual_lifetime(th, n, d)
        ref = [mp_residual(th, v, d) for v in n]
        np.testing.assert_allclose(got, ref, rtol=1e-9, err_msg=f"{th}, d={d}")
    # where S(t) is still far from its power law after 2e6 periods: NaN and a warning
    with pytest.warns(RuntimeWarning, match="converges too slowly"):
        assert np.isnan(BDW.residual_lifetime(dict(alpha=100.0, beta=1.0, c=math.exp(-2)), 0.0))
    # a horizon truncates the sum exactly
    th = PUBLISHED["high end"]
    want = sum(np.exp(SBG.log_survival(th, 7 + k) - SBG.log_survival(th, 7)) / 1.1 ** (k - 1)
               for k in range(1, 11))
    assert SBG.residual_lifetime(th, 7.0, 0.1, horizon=10) == pytest.approx(want, rel=1e-12)


def test_predictions_on_draws_per_subscriber(cohorts):
    from bayesclv.predict import DrawParams  # noqa: F401 (the draws layer they use)

    params = draws(PUBLISHED["regular"] | {}, segments=("regular", "high end"), n_draw=3)
    params["alpha"][..., 1] = PUBLISHED["high end"]["alpha"]
    params["beta"][..., 1] = PUBLISHED["high end"]["beta"]
    active = ~cohorts.churned
    r = retention_rate(params, cohorts)
    assert r.dims == ("chain", "draw", "customer_id") and np.all(r.values[..., ~active] == 0)
    he = (cohorts.segment == 1) & active
    assert np.allclose(r.values[..., he], SBG.retention(PUBLISHED["high end"], 8.0))
    s3 = survival(params, cohorts, 3).values[..., he]
    he_th = PUBLISHED["high end"]
    s10_7 = np.exp(SBG.log_survival(he_th, 10.0) - SBG.log_survival(he_th, 7.0))
    assert np.allclose(s3, s10_7, rtol=1e-12) and 0.84 < s10_7 < 0.85  # 0.414 / 0.489
    derl = expected_derl(params, cohorts, 0.1).values[..., he]
    assert np.allclose(derl, HIGH_END_DERL_7, atol=5e-4)
    life = expected_residual_lifetime(params, cohorts).values[..., active]
    assert np.all(np.isinf(life))  # alpha < 1 in both cohorts: an infinite mean
    capped = expected_residual_lifetime(params, cohorts, horizon=10).values[..., active]
    assert np.all((capped > 0) & (capped <= 10))


# ------------------------------------------------------------------ PyTensor, properties
def test_pytensor_logp_equals_numpy_and_gradient_is_finite_at_extremes():
    import pytensor
    import pytensor.tensor as pt

    v = pt.dvector("v")
    t = np.array([0.0, 1.0, 1.0, 7.0, 500.0, 500.0])
    gone = np.array([False, True, False, True, True, False])
    ll = bdw_logp(v[0], v[1], v[2], t, gone)
    f = pytensor.function([v], [ll, pytensor.grad(ll.sum(), v)])
    for point in ([0.7, 1.2, 1.0], [1e-3, 1e6, 0.05], [1e6, 1e-3, 20.0], [1e-3, 1e-3, 1.0],
                  [1e6, 1e6, 0.3]):
        val, grad = f(np.array(point))
        np.testing.assert_allclose(val, bdw_logp(*point, t, gone), rtol=1e-8, atol=3e-8)
        assert np.all(np.isfinite(grad)), (point, grad)


positive = st.floats(-3.0, 6.0).map(lambda e: 10.0**e)


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(a=positive, b=positive, c=st.floats(-3.0, 3.0).map(math.exp), n=st.integers(0, 500),
       gone=st.booleans(), d=st.floats(0.02, 1.0))
def test_every_prediction_path_finite_and_in_bounds_over_the_support(a, b, c, n, gone, d):
    gone = gone and n > 0
    ll = bdw_logp(a, b, c, np.array([float(n)]), np.array([gone]))
    assert np.all(np.isfinite(ll) & (ll <= 1e-9))
    for fam, th in ((SBG, dict(alpha=a, beta=b)), (BDW, dict(alpha=a, beta=b, c=c))):
        r = fam.retention(th, np.array([n + 1.0]))
        assert np.all((r >= 0) & (r <= 1))
        s = fam.survival_ahead(th, float(n), np.array([1.0, 5.0, 50.0]))
        assert np.all((s >= 0) & (s <= 1)) and np.all(np.diff(s) <= 1e-12)
        derl = fam.residual_lifetime(th, float(n), d)
        assert np.isfinite(derl) and 0 <= derl <= (1 + d) / d + 1e-9
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            life = fam.residual_lifetime(th, float(n))
        if np.isnan(life):  # only with a warning (S(t) not yet a power law after 2e6 periods)
            assert any("converges too slowly" in str(w.message) for w in caught)
        else:
            assert life >= derl - 1e-9 and (np.isfinite(life) or a * th.get("c", 1.0) <= 1)


# ------------------------------------------------------------------ data handling
def test_contract_data_from_cohort_round_trips_and_bad_records_get_clear_errors(cohorts):
    for s, surv in enumerate((REGULAR, HIGH_END)):
        sel = cohorts.segment == s
        alive = [np.mean(~(cohorts.churned[sel] & (cohorts.tenure[sel] <= t))) for t in range(8)]
        np.testing.assert_allclose(np.array(alive) * 100, surv, atol=1e-9)
    assert cohorts.segment_sizes().tolist() == [1000, 1000]
    with pytest.raises(DataValidationError, match="tenure 0"):
        ContractData(customer_id=[1, 2], tenure=[0, 3], churned=[True, False])
    with pytest.raises(DataValidationError, match="whole number"):
        ContractData(customer_id=[1], tenure=[2.5], churned=[False])
    with pytest.raises(DataValidationError, match="must not increase"):
        ContractData.from_cohort([100, 60, 70], 100)
    with pytest.raises(DataValidationError, match="start with 1"):
        ContractData.from_cohort([90, 60], 100)
    from bayesclv.datasets import load_donations_rfm
    from bayesclv.models import build_model

    with pytest.raises(ModelSpecificationError, match="ContractData"):
        build_model("sbg", load_donations_rfm())
    with pytest.raises(ModelSpecificationError, match="pooling"):
        build_model("sbg", cohorts, pooling="some")
    assert FAMILIES["sbg"] is SBG and FAMILIES["bdw"] is BDW and SBG.kind == "contractual"


def test_prior_predictive_check_of_default_priors():
    """The default priors put first-period churn anywhere from a few % to most of the
    cohort and give survival curves from flat to steep (measured over 4,000 draws)."""
    rng = np.random.default_rng(0)
    for fam, pri in ((SBG, SBGPriors()), (BDW, BdWPriors())):
        theta = {k: getattr(pri, k).draw(rng, 4000) for k in fam.unconstrained}
        nat = fam.to_natural(**theta)
        s1 = np.exp(fam.log_survival(nat, 1.0))
        s12 = np.exp(fam.log_survival(nat, 12.0))
        assert 0.7 < np.median(s1) < 0.9  # median first-period churn about 20%
        assert np.quantile(s1, 0.05) < 0.4 and np.quantile(s1, 0.95) > 0.97
        assert np.quantile(s12, 0.1) < 0.05 and np.quantile(s12, 0.9) > 0.7
        assert np.all(s12 <= s1)


# ------------------------------------------------------------------ Bayesian fits
def test_nuts_partial_pooling_on_the_cohorts_and_bdw_coverage_on_simulated_data(cohorts, tmp_path):
    import arviz as az

    from bayesclv.fit import fit, posterior_params
    from bayesclv.models import build_model

    idata = fit(build_model("sbg", cohorts, pooling="partial"), chains=2, draws=300,
                tune=300, cores=1, random_seed=1, progressbar=False)
    pp = posterior_params(idata)
    assert int(idata.sample_stats["diverging"].sum()) == 0
    for s, name in enumerate(cohorts.segment_names):
        for k, v in PUBLISHED[name].items():
            lo, hi = np.quantile(pp[k].values[..., s].ravel(), [0.03, 0.97])
            assert lo < v < hi, (name, k, lo, hi)
    # retention predictions keep every draw; the fit saves and loads like any other
    assert retention_rate(pp, cohorts).sizes["draw"] == 300
    from bayesclv.fit import load_fit, save_fit

    save_fit(idata, tmp_path / "sbg.nc")
    assert load_fit(tmp_path / "sbg.nc").attrs["model"] == "sbg"

    truth = BdWParams(0.9, 3.0, 0.7)
    data = simulate_contracts(truth, 3000, periods=12, random_seed=8)
    idata = fit(build_model("bdw", data, pooling="complete"), chains=2, draws=300, tune=300,
                cores=1, random_seed=2, progressbar=False)
    post = idata.posterior
    assert float(az.rhat(post[["alpha", "beta", "c"]]).to_array().max()) < 1.05
    for k in ("alpha", "beta", "c"):
        lo, hi = np.quantile(post[k].values.ravel(), [0.03, 0.97])
        assert lo < getattr(truth, k) < hi, (k, lo, hi)
        assert hi / lo > 1.05  # not collapsed
