"""Model builders and fitting, checked against the published CDNOW estimates.

Oracles: Fader, Hardie & Lee (2005) BG/NBD and Pareto/NBD estimates on the CDNOW 1/10
sample with the 39-week calibration period, and the Gamma-Gamma estimates of Fader,
Hardie & Lee (2005, JMR) on its 946 repeat buyers.
"""

from __future__ import annotations

import json
import math
from importlib import resources

import numpy as np
import pandas as pd
import pytest

from bayesclv.data import RFMData
from bayesclv.diagnostics import convergence_report
from bayesclv.errors import ModelSpecificationError, SavedModelError
from bayesclv.fit import fit, load_fit, population_params, posterior_params, save_fit
from bayesclv.likelihoods import bgnbd_logp, gamma_gamma_logp, pareto_nbd_logp
from bayesclv.models import (
    build_bgnbd,
    build_gamma_gamma,
    build_mbgnbd,
    build_pareto_nbd,
    model_spec,
)
from bayesclv.priors import (
    BGNBDPriors,
    CVPrior,
    GammaGammaPriors,
    NormalPrior,
    ParetoNBDPriors,
    priors_from_dict,
    priors_to_dict,
    weak_priors,
)

PUBLISHED = {
    "bgnbd": {"r": 0.243, "alpha": 4.414, "a": 0.793, "b": 2.426, "LL": -9582.4},
    "pareto_nbd": {"r": 0.553, "alpha": 10.578, "s": 0.606, "beta": 11.669, "LL": -9595.0},
    "gamma_gamma": {"p": 6.25, "q": 3.74, "v": 15.44},
}


def _weak(cls, sigma=10.0):
    """The class's default prior centres with a very wide sigma ("weak priors")."""
    return weak_priors(cls, sigma)


@pytest.fixture(scope="module")
def cdnow() -> RFMData:
    path = resources.files("bayesclv.datasets") / "data" / (
        "cdnow_customers_summary_with_transactions.csv"
    )
    df = pd.read_csv(path)
    return RFMData.from_frame(
        df, customer_id="ID", frequency="x", recency="t_x", T="T", monetary_value="zbar"
    )


def _point(idata, name):
    return float(posterior_params(idata)[name].values.ravel()[0])


@pytest.mark.parametrize(
    "builder,kind,prior_cls",
    [
        (build_bgnbd, "bgnbd", BGNBDPriors),
        (build_pareto_nbd, "pareto_nbd", ParetoNBDPriors),
        (build_gamma_gamma, "gamma_gamma", GammaGammaPriors),
    ],
)
def test_map_is_close_to_published_cdnow_estimates(cdnow, builder, kind, prior_cls):
    model = builder(cdnow, _weak(prior_cls), pooling="complete")
    idata = fit(model, sampler="map", progressbar=False, random_seed=1)
    params = {name: _point(idata, name) for name in PUBLISHED[kind] if name != "LL"}
    for name, value in params.items():
        rel = abs(value - PUBLISHED[kind][name]) / PUBLISHED[kind][name]
        assert rel < 0.005, (kind, name, value, PUBLISHED[kind][name])
    x, t_x, T = cdnow.frequency, cdnow.recency, cdnow.T
    if kind == "bgnbd":
        ll = bgnbd_logp(*(params[n] for n in ("r", "alpha", "a", "b")), x, t_x, T).sum()
    elif kind == "pareto_nbd":
        ll = pareto_nbd_logp(*(params[n] for n in ("r", "alpha", "s", "beta")), x, t_x, T).sum()
    else:
        rep = x > 0
        assert model_spec(model).n_customers == 946
        zbar = cdnow.monetary_value[rep]
        ll = gamma_gamma_logp(params["p"], params["q"], params["v"], x[rep], zbar).sum()
    if "LL" in PUBLISHED[kind]:
        assert abs(ll - PUBLISHED[kind]["LL"]) < 0.1
    # NUTS starts (init="auto") at the mode the builder found on the NumPy likelihood,
    # without compiling anything: it must be the compiled model's MAP. (A free variable
    # that is no named parameter, e.g. Pareto/NBD's s_cv, is in unconstrained_posterior.)
    start = model_spec(model).extra["start"]
    assert set(start) == {rv.name for rv in model.free_RVs}
    for name, value in start.items():
        group = idata.posterior if name in idata.posterior else idata.unconstrained_posterior
        assert abs(value - float(group[name].values.ravel()[0])) < 2e-3, (kind, name)


_NUTS_FITS: dict = {}


def _nuts_fit(cdnow, builder, kind):
    """One NUTS fit per model for this module (complete pooling; default priors, but
    the weak priors of the published comparison for Pareto/NBD, whose dropout shape
    the default prior pulls a few percent)."""
    if kind not in _NUTS_FITS:
        priors = weak_priors(ParetoNBDPriors) if kind == "pareto_nbd" else None
        model = builder(cdnow, priors, pooling="complete")
        # nutpie: its compiled log density is cached across runs (bayesclv.compile_cache)
        # (Pareto/NBD: 4 x 500 nutpie draws left R-hat 1.015 in s, beta; 4 x 1000)
        n = 1000 if kind == "pareto_nbd" else 500
        _NUTS_FITS[kind] = fit(
            model, sampler="nutpie", draws=n, tune=n, chains=4, random_seed=7,
            progressbar=False,
        )
    return _NUTS_FITS[kind]


@pytest.mark.slow
@pytest.mark.parametrize(
    "builder,kind",
    [
        (build_bgnbd, "bgnbd"),
        (build_gamma_gamma, "gamma_gamma"),
        pytest.param(build_pareto_nbd, "pareto_nbd", marks=pytest.mark.extended),
    ],
)
def test_nuts_posterior_covers_published_cdnow_estimates(cdnow, builder, kind):
    """Published values inside the 94% intervals, medians within 5% of them (plus twice
    the Monte Carlo error of the median: Pareto/NBD's s and beta are skewed, and 4 x 500
    draws pin their medians to only ~3%), R-hat <= 1.01, no divergences."""
    idata = _nuts_fit(cdnow, builder, kind)
    params = posterior_params(idata)
    assert int(idata.sample_stats.diverging.sum()) == 0
    import arviz as az

    rhat = az.rhat(params)
    mcse = az.mcse(params, method="median")
    for name, published in PUBLISHED[kind].items():
        if name == "LL":
            continue
        draws = params[name].values.ravel()
        lo, med, hi = np.quantile(draws, [0.03, 0.5, 0.97])
        assert lo < published < hi, (name, lo, hi, published)
        err = float(mcse[name].max())
        assert abs(med - published) < 0.05 * published + 2 * err, (name, med, published, err)
        assert float(rhat[name].max()) <= 1.01


@pytest.mark.slow
@pytest.mark.parametrize(
    "builder,kind", [(build_bgnbd, "bgnbd"), (build_gamma_gamma, "gamma_gamma")]
)
def test_laplace_agrees_with_nuts(cdnow, builder, kind):
    """On 2,357 customers the posterior is close to Normal, so the Laplace draws
    (importance-resampled toward the posterior) match NUTS in means and sds, and the
    Pareto k-hat of the importance weights says the approximation is good."""
    priors = _weak(BGNBDPriors if kind == "bgnbd" else GammaGammaPriors)
    lap = fit(builder(cdnow, priors, pooling="complete"), sampler="laplace", draws=1000,
              random_seed=3, progressbar=False)  # fmt: skip
    params = posterior_params(lap)
    assert params["r" if kind == "bgnbd" else "p"].shape == (4, 1000, 1)
    assert "sample_stats" not in lap.groups()
    timings = json.loads(lap.attrs["timings"])
    assert timings["laplace_psis_khat"] < 0.5 and timings["laplace_resampled"]
    assert timings["laplace_mode_max_abs_grad"] < 1e-3
    nuts = posterior_params(_nuts_fit(cdnow, builder, kind))
    for p in params.data_vars:
        m_l, m_n = float(params[p].mean()), float(nuts[p].mean())
        s_l, s_n = float(params[p].std()), float(nuts[p].std())
        # default vs weak priors and Monte Carlo error: within a fifth of a posterior sd
        assert abs(m_l - m_n) < 0.2 * s_n, (p, m_l, m_n, s_n)
        assert abs(s_l / s_n - 1) < 0.15, (p, s_l, s_n)
    assert convergence_report(lap).verdict != "ok"


def test_every_pooling_gives_segment_dims_and_population_draws(cdnow):
    seg = (cdnow.T > np.median(cdnow.T)).astype(int)
    rfm = RFMData(
        customer_id=cdnow.customer_id,
        frequency=cdnow.frequency,
        recency=cdnow.recency,
        T=cdnow.T,
        monetary_value=cdnow.monetary_value,
        segment=seg,
        segment_names=("late", "early"),
    )
    for pooling in ("complete", "partial", "none"):
        idata = fit(build_bgnbd(rfm, pooling=pooling), sampler="map", progressbar=False)
        params = posterior_params(idata)
        assert params["r"].dims == ("chain", "draw", "segment")
        assert list(params.segment.values) == ["late", "early"]
        if pooling == "complete":
            assert np.allclose(params["r"].values[..., 0], params["r"].values[..., 1])
        if pooling == "none":
            with pytest.raises(ModelSpecificationError, match="population"):
                population_params(idata)
        else:
            new = population_params(idata, "new", random_seed=1)
            assert new["a"].dims == ("chain", "draw", "segment")
            assert np.all(new["a"].values > 0)
    # Pareto/NBD's log s has a CVPrior: under every pooling its free variable is the
    # coefficient of variation and log s (or its population mean) is -2 log(cv).
    import pymc as pm

    for pooling, cv, log_s in (("complete", "s_cv", "log_s"), ("none", "s_cv", "log_s"),
                               ("partial", "s_pop_cv", "log_s_mu")):  # fmt: skip
        model = build_pareto_nbd(rfm, pooling=pooling)
        assert cv in {v.name for v in model.free_RVs} and log_s in model.named_vars
        prior = pm.sample_prior_predictive(400, model=model, var_names=[cv, log_s], random_seed=2)
        draws = prior.prior
        np.testing.assert_allclose(draws[log_s].values, -2 * np.log(draws[cv].values), rtol=1e-9)
        assert 0.9 < float(np.median(draws[cv].values.ravel())) < 1.8  # HalfNormal(2): 1.35


def test_mbgnbd_map_is_near_its_mle(cdnow):
    import scipy.optimize as so

    from bayesclv.likelihoods import mbgnbd_logp

    def nll(th):
        return -mbgnbd_logp(*np.exp(th), cdnow.frequency, cdnow.recency, cdnow.T).sum()

    mle = np.exp(so.minimize(nll, np.zeros(4), method="Nelder-Mead",
                             options={"xatol": 1e-8, "fatol": 1e-8, "maxiter": 20000}).x)
    idata = fit(build_mbgnbd(cdnow, _weak(BGNBDPriors), pooling="complete"), sampler="map",
                progressbar=False)
    got = [_point(idata, n) for n in ("r", "alpha", "a", "b")]
    assert np.allclose(got, mle, rtol=0.01)


def test_bad_inputs_get_clear_errors(cdnow):
    with pytest.raises(ModelSpecificationError, match="RFMData"):
        build_bgnbd(cdnow.to_frame())
    with pytest.raises(ModelSpecificationError, match="pooling"):
        build_bgnbd(cdnow, pooling="some")
    with pytest.raises(ModelSpecificationError, match="priors of type"):
        build_bgnbd(cdnow, ParetoNBDPriors())
    empty_segment = RFMData(
        customer_id=cdnow.customer_id,
        frequency=cdnow.frequency,
        recency=cdnow.recency,
        T=cdnow.T,
        monetary_value=cdnow.monetary_value,
        segment=np.zeros(cdnow.n_customers, dtype=int),
        segment_names=("a", "b"),
    )
    with pytest.raises(ModelSpecificationError, match="no customers"):
        build_pareto_nbd(empty_segment, pooling="partial")
    one_timers = cdnow.subset(cdnow.frequency == 0)
    with pytest.raises(ModelSpecificationError, match="repeat purchase"):
        build_gamma_gamma(one_timers)
    with pytest.raises(ModelSpecificationError, match="not built by a bayesclv builder"):
        import pymc as pm

        fit(pm.Model())
    with pytest.raises(ModelSpecificationError):
        NormalPrior(0.0, -1.0)


def test_priors_round_trip_through_json():
    for cls in (BGNBDPriors, ParetoNBDPriors, GammaGammaPriors):
        for p in (cls(), weak_priors(cls, 7.0)):
            assert priors_from_dict(json.loads(json.dumps(priors_to_dict(p)))) == p
    assert isinstance(ParetoNBDPriors().log_s, CVPrior)
    assert weak_priors(ParetoNBDPriors, 7.0).log_s == CVPrior(7.0)
    with pytest.raises(ModelSpecificationError, match="CVPrior"):
        CVPrior(0.0)
    with pytest.raises(ModelSpecificationError, match="NormalPrior"):
        ParetoNBDPriors(log_r=2.0)


def test_cv_prior_density_is_the_halfnormal_of_the_coefficient_of_variation():
    """On theta = log s the density (with the Jacobian) integrates to 1, and
    log_density is the HalfNormal of cv = exp(-theta/2), without the Jacobian."""
    from scipy import integrate, stats

    prior = CVPrior(2.0)
    theta = np.linspace(-12.0, 60.0, 200_001)
    with_jacobian = np.exp(prior.log_density(theta) - 0.5 * theta - math.log(2.0))
    assert integrate.trapezoid(with_jacobian, theta) == pytest.approx(1.0, abs=1e-6)
    np.testing.assert_allclose(
        prior.log_density(theta[::1000]),
        stats.halfnorm.logpdf(np.exp(-0.5 * theta[::1000]), scale=2.0),
        rtol=1e-12,
    )
    assert prior.center == pytest.approx(-2.0 * math.log(stats.halfnorm.median(scale=2.0)))


def test_pareto_nbd_dropout_shape_prior_has_no_plateau(cdnow):
    """Why log_s has a CVPrior: as s grows (s/beta fixed) the Pareto/NBD likelihood tends
    to a constant a few units below its maximum, so a Normal on log s leaves the posterior
    a plateau as long as the prior; the CVPrior's density on log s decays like
    exp(-log s / 2) there instead."""
    from scipy import optimize

    x, t_x, T = cdnow.frequency.astype(float), cdnow.recency, cdnow.T

    def profile(log_s):
        s = math.exp(log_s)

        def nll(th):
            return -pareto_nbd_logp(
                math.exp(th[0]), math.exp(th[1]), s, s * math.exp(th[2]), x, t_x, T
            ).sum()

        opts = {"xatol": 1e-6, "fatol": 1e-6, "maxiter": 4000}
        start = [math.log(0.5), math.log(10.0), 3.0]
        res = optimize.minimize(nll, start, method="Nelder-Mead", options=opts)
        return -res.fun

    peak, far, farther = profile(math.log(0.606)), profile(8.0), profile(12.0)
    assert 3.0 < peak - far < 8.0  # the plateau is a few log units below the peak ...
    assert abs(far - farther) < 0.05  # ... and flat
    prior = ParetoNBDPriors().log_s
    tail = [float(prior.log_density(t)) - 0.5 * t for t in (8.0, 12.0)]
    assert tail[0] - tail[1] == pytest.approx(2.0, abs=1e-2)  # e^-2 over 4 units of log s


def test_prior_predictive_purchases_are_plausible(cdnow):
    """Default BG/NBD priors: simulate customers from prior draws; typical customers
    should make between 0 and a few hundred purchases in a year of weeks, not 1e6."""
    rng = np.random.default_rng(3)
    pr = BGNBDPriors()
    from bayesclv.transforms import bgnbd_natural

    n = 4000
    theta = {
        name: getattr(pr, name).draw(rng, n)
        for name in ("log_purchase_rate", "log_r", "logit_dropout", "log_dropout_concentration")
    }
    nat = bgnbd_natural(**theta)
    lam = rng.gamma(nat["r"], 1.0 / nat["alpha"])
    p = rng.beta(nat["a"], nat["b"])
    t = 52.0
    # expected purchases in t for this customer: (1 - exp(-lam p t)) / p
    # (1 - exp(-lam p t)) / p, whose limit as p -> 0 is lam t
    expected = np.where(p > 1e-12, -np.expm1(-lam * p * t) / np.maximum(p, 1e-300), lam * t)
    med = np.median(expected)
    assert 0.01 < med < 50, med
    assert np.mean(expected > 1e4) < 0.05


def test_pareto_nbd_prior_predictive_is_plausible():
    """Default Pareto/NBD priors: prior draws of (r, alpha, s, beta), then one customer
    each. The mean lifetime and the purchases in a year of weeks should be ordinary
    (weeks to decades, a few purchases), with extreme draws rare; and the dropout
    shape's CVPrior gives the coefficient of variation HalfNormal(2) quantiles."""
    from scipy import stats

    from bayesclv.transforms import UNCONSTRAINED, pareto_nbd_natural

    rng = np.random.default_rng(4)
    pr, n = ParetoNBDPriors(), 20_000
    theta = {k: getattr(pr, k).draw(rng, n) for k in UNCONSTRAINED["pareto_nbd"]}
    nat = pareto_nbd_natural(**theta)
    cv = 1.0 / np.sqrt(nat["s"])
    for q in (0.1, 0.5, 0.9):  # Monte Carlo sd of these quantiles: ~3%, 1%, 1%
        assert np.quantile(cv, q) == pytest.approx(stats.halfnorm.ppf(q, scale=2.0), rel=0.1)
    lam = rng.gamma(nat["r"], 1.0 / nat["alpha"])
    mu = rng.gamma(nat["s"], 1.0 / nat["beta"])
    life = rng.exponential(1.0 / np.maximum(mu, 1e-300))
    purchases = rng.poisson(lam * np.minimum(life, 52.0))
    assert 1.0 < np.median(1.0 / (nat["s"] / nat["beta"])) < 1e4  # mean lifetime, weeks
    assert np.median(purchases) < 20 and np.mean(purchases > 1e4) < 0.05


def test_save_and_load_round_trip_predicts_identically(cdnow, tmp_path):
    idata = fit(build_gamma_gamma(cdnow, pooling="complete"), sampler="map", progressbar=False)
    path = save_fit(idata, tmp_path / "gg.nc")
    back = load_fit(path, expect_model="gamma_gamma")
    a, b = posterior_params(idata), posterior_params(back)
    for name in ("p", "q", "v"):
        np.testing.assert_array_equal(a[name].values, b[name].values)
    assert back.attrs["priors"] == idata.attrs["priors"]
    with pytest.raises(SavedModelError, match="not bgnbd|holds a"):
        load_fit(path, expect_model="bgnbd")
    broken = tmp_path / "broken.nc"
    broken.write_bytes(path.read_bytes()[: len(path.read_bytes()) // 3])
    with pytest.raises(SavedModelError, match="truncated or corrupt"):
        load_fit(broken)
    with pytest.raises(SavedModelError, match="No saved fit"):
        load_fit(tmp_path / "missing.nc")


def test_advi_returns_the_same_posterior_layout(cdnow):
    idata = fit(
        build_gamma_gamma(cdnow, pooling="complete"),
        sampler="advi",
        draws=200,
        random_seed=2,
        progressbar=False,
        advi_iterations=20_000,
    )
    params = posterior_params(idata)
    assert params["p"].shape == (1, 200, 1)
    # mean spend p v / (q - 1) is well identified: ADVI should land near the MLE's 35.2
    mean_spend = (params["p"] * params["v"] / (params["q"] - 1)).median()
    assert math.isclose(float(mean_spend), 6.25 * 15.44 / 2.74, rel_tol=0.1)


def test_individual_pareto_likelihood_mixes_to_the_pareto_nbd_likelihood():
    """Averaging Abe's individual-level likelihood over Gamma(r, alpha) x Gamma(s, beta)
    rates gives the Pareto/NBD likelihood (Monte Carlo oracle, 4 standard errors)."""
    from bayesclv.likelihoods import pareto_nbd_individual_logp

    rng = np.random.default_rng(5)
    r, alpha, s, beta = 0.55, 10.6, 0.61, 11.7
    lam = rng.gamma(r, 1 / alpha, 400_000)
    mu = rng.gamma(s, 1 / beta, 400_000)
    for x, t_x, T in [(0, 0.0, 38.0), (2, 30.4, 38.9), (7, 12.0, 30.0)]:
        lik = np.exp(pareto_nbd_individual_logp(lam, mu, x, t_x, T))
        mc, se = lik.mean(), lik.std() / np.sqrt(lik.size)
        exact = np.exp(pareto_nbd_logp(r, alpha, s, beta, x, t_x, T))
        assert abs(mc - exact) < 4 * se, (x, mc, exact, se)


def test_abe_model_builds_with_covariates_and_its_map_is_sensible(cdnow):
    from bayesclv.models import build_abe_pareto_nbd

    first = np.log1p(cdnow.monetary_value + 1.0)
    model = build_abe_pareto_nbd(cdnow, covariates=first)
    assert model_spec(model).model == "abe_pareto_nbd"
    point = model.initial_point()
    assert np.isfinite(model.compile_logp()(point))
    with pytest.raises(ModelSpecificationError, match="one row per customer"):
        build_abe_pareto_nbd(cdnow, covariates=first[:10])
