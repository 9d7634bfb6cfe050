"""Diagnostics: convergence verdicts, holdout metrics against published CDNOW figures,
holdout pmf vs Monte Carlo, coverage with known truth, tracking against FHL totals, LOO."""

from __future__ import annotations

import json
import warnings

import arviz as az
import numpy as np
import pytest
import xarray as xr
from scipy import stats

from bayesclv import diagnostics as D
from bayesclv.data import rfm_summary
from bayesclv.datasets import load_cdnow
from bayesclv.families import FAMILIES
from bayesclv.likelihoods import bgnbd_logp
from bayesclv.simulate import BGNBDParams, GammaGammaParams, ParetoNBDParams, simulate_rfm

BG_CDNOW = dict(r=0.243, alpha=4.414, a=0.793, b=2.426)  # FHL (2005)
PNBD_CDNOW = dict(r=0.553, alpha=10.578, s=0.606, beta=11.669)  # Fader & Hardie (2005)
GG_CDNOW = dict(p=6.25, q=3.74, v=15.44)


@pytest.fixture(scope="module")
def cdnow():
    tx = load_cdnow("sample")
    rfm = rfm_summary(tx, customer_col="customer_id", date_col="date", amount_col="amount",
                      segment_col="acquisition_month", time_unit="week",
                      calibration_end="1997-09-30", observation_end="1998-06-30")
    return tx, rfm


def point(model, values, segments, n_draw=1, jitter=0.0, seed=0):
    rng = np.random.default_rng(seed)
    shape = (1, n_draw, len(segments))
    ds = xr.Dataset(
        {k: (("chain", "draw", "segment"), v * np.exp(jitter * rng.standard_normal(shape)))
         for k, v in values.items()},
        coords={"chain": [0], "draw": np.arange(n_draw), "segment": list(segments)},
    )
    ds.attrs.update(model=model, time_unit="week")
    return ds


def fake_fit(post: dict, stats_: dict | None, sampler="pymc", model="bgnbd", pooling="complete"):
    idata = az.from_dict(posterior=post, sample_stats=stats_)
    idata.attrs.update(model=model, pooling=pooling, sampler=sampler, tune=1000,
                       segment_names=json.dumps(["all"]))
    return idata


# ------------------------------------------------------------------ metrics
def test_holdout_metrics_by_hand():
    m = D.holdout_metrics([0, 2, 4], [1.0, 1.0, 2.0])
    assert m["MAE"] == pytest.approx(4 / 3)
    assert m["RMSE"] == pytest.approx(np.sqrt(6 / 3))
    assert m["MSLE"] == pytest.approx(np.mean((np.log1p([1, 1, 2]) - np.log1p([0, 2, 4])) ** 2))
    assert m["BIAS"] == pytest.approx(4 / 6 - 1)  # BTYDplus: sum(pred)/sum(actual) - 1
    with pytest.raises(ValueError, match="shape"):
        D.holdout_metrics([1, 2], [1.0])


@pytest.mark.parametrize(
    "model, values, bias, mae",
    [("bgnbd", BG_CDNOW, -0.121, 0.786), ("pareto_nbd", PNBD_CDNOW, -0.115, 0.755)],
)
def test_holdout_metrics_match_FHL_2005_published_cdnow(cdnow, model, values, bias, mae):
    _, rfm = cdnow
    ev = D.holdout_evaluation(point(model, values, rfm.segment_names), rfm,
                              spend_params=point("gamma_gamma", GG_CDNOW, rfm.segment_names),
                              n_draws=100, random_seed=1)
    m = ev.metrics.loc["purchases"]
    assert m["BIAS"] == pytest.approx(bias, abs=6e-4)
    assert m["MAE"] == pytest.approx(mae, abs=6e-4)
    assert m["actual_total"] == 1882
    assert set(ev.coverage.index.get_level_values("quantity")) == {"purchases", "spend"}
    cond = ev.conditional
    assert cond["customers"].sum() == rfm.n_customers
    x0 = rfm.frequency == 0
    assert cond.loc[0, "actual"] == pytest.approx(rfm.holdout_frequency[x0].mean())
    d = ev.to_dict()
    json.dumps(d)
    assert d["metrics"]["purchases"]["n"] == rfm.n_customers


# ------------------------------------------------------------------ holdout pmf / simulation
@pytest.mark.parametrize("model", ["bgnbd", "mbgnbd", "pareto_nbd"])
def test_holdout_pmf_sums_to_one_and_matches_simulation(model):
    rng = np.random.default_rng(3)
    lam, drop, h, n = 0.4, (0.05 if model == "pareto_nbd" else 0.3), 20.0, 200_000
    ys = np.arange(0, 60)
    fam = FAMILIES[model]
    key = "mu" if model == "pareto_nbd" else "p"
    pmf = np.exp(fam.window_log_pmf({"lam": np.full(ys.shape, lam), key: np.full(ys.shape, drop)},
                                    ys, h))
    assert pmf.sum() == pytest.approx(1.0, abs=1e-9)
    sim = fam.simulate_window({"lam": np.full(n, lam), key: np.full(n, drop)}, h, rng)
    freq = np.bincount(sim, minlength=ys.size)[: ys.size] / n
    assert np.abs(freq - pmf).max() < 4 * np.sqrt(pmf.max() / n)


def _sim_rfm(params, seed, n=2000):
    return simulate_rfm({"a": params}, {"a": n}, T=(20.0, 40.0), holdout_length=30.0,
                        spend=GammaGammaParams(6.0, 4.0, 15.0), random_seed=seed)


@pytest.mark.parametrize(
    "model, truth",
    [("bgnbd", BGNBDParams(**BG_CDNOW)), ("pareto_nbd", ParetoNBDParams(**PNBD_CDNOW))],
)
def test_coverage_and_lpd_with_known_truth(model, truth):
    rfm = _sim_rfm(truth, seed=11)
    vals = dict(vars(truth))
    good = point(model, vals, ("a",))
    wrong = point(model, {**vals, "r": vals["r"] * 5}, ("a",))  # 5x prior purchase rate
    spend = point("gamma_gamma", dict(p=6.0, q=4.0, v=15.0), ("a",))
    ev = D.holdout_evaluation(good, rfm, spend_params=spend, n_draws=200, random_seed=2)
    bad = D.holdout_evaluation(wrong, rfm, n_draws=200, probs=(), random_seed=2)
    cov = ev.coverage["coverage"]
    for p in (0.5, 0.8, 0.95):
        # discrete counts: a calibrated closed interval covers at least p (up to noise)
        assert cov[("purchases", p)] >= p - 0.03
        assert cov[("spend", p)] >= p - 0.03
    assert cov[("purchases", 0.95)] < 0.995
    good_bias = ev.metrics.loc["purchases", "BIAS"]
    assert abs(good_bias) < 0.15  # 2,000 customers: the aggregate holdout is noisy
    assert bad.metrics.loc["purchases", "BIAS"] > good_bias + 0.2
    assert ev.log_predictive_density > bad.log_predictive_density + 100


# ------------------------------------------------------------------ posterior predictive
def test_ppc_frequency_flags_wrong_parameters():
    truth = BGNBDParams(**BG_CDNOW)
    rfm = _sim_rfm(truth, seed=5)
    good = D.posterior_predictive_frequency(point("bgnbd", BG_CDNOW, ("a",)), rfm,
                                            n_draws=100, random_seed=1)
    bad = D.posterior_predictive_frequency(
        point("bgnbd", {**BG_CDNOW, "a": 0.1}, ("a",)), rfm, n_draws=100, random_seed=1)
    np.testing.assert_array_equal(good.observed[0], np.bincount(np.minimum(rfm.frequency, 7),
                                                                minlength=8))
    assert good.simulated.sum(axis=-1).max() == rfm.n_customers
    assert good.p_values()["all"] > 0.05
    assert bad.p_values()["all"] < 0.01
    tab = good.table(0.9)
    assert tab["inside"].mean() > 0.7
    assert list(tab["bin"][:8]) == ["0", "1", "2", "3", "4", "5", "6", "7+"]


# ------------------------------------------------------------------ tracking
def test_tracking_totals_match_FHL_cdnow(cdnow):
    tx, rfm = cdnow
    tab = D.tracking(point("bgnbd", BG_CDNOW, rfm.segment_names), rfm, tx)
    assert len(tab) == 78
    assert tab.attrs["calibration_end"] == pytest.approx(39.0)
    # FHL (2005): 2,457 repeat transactions in calibration, 1,882 in the holdout.
    assert tab["cum_actual"].iloc[38] == 2457
    assert tab["cum_actual"].iloc[-1] == 2457 + 1882
    assert tab["actual"].sum() == tab["cum_actual"].iloc[-1]
    assert np.all(np.diff(tab["cum_expected"]) >= 0)
    # the model's expected calibration total is close to the actual (FHL fig. 2)
    assert tab["cum_expected"].iloc[38] == pytest.approx(2457, rel=0.05)


# ------------------------------------------------------------------ convergence
def _good_draws(rng, chains=4, draws=500, shift=None):
    base = rng.standard_normal((chains, draws))
    if shift is not None:
        base = base + np.asarray(shift)[:, None]
    return {"r": np.exp(0.1 * base - 1.4)[..., None],
            "alpha": np.exp(0.1 * rng.standard_normal((chains, draws)) + 1.5)[..., None],
            "a": np.exp(0.1 * rng.standard_normal((chains, draws)))[..., None],
            "b": np.exp(0.1 * rng.standard_normal((chains, draws)) + 0.9)[..., None]}


def _stats(rng, chains=4, draws=500, diverging=0, depth_key="reached_max_treedepth"):
    div = np.zeros((chains, draws), dtype=bool)
    div.flat[:diverging] = True
    return {"diverging": div, "energy": rng.standard_normal((chains, draws)),
            depth_key: np.zeros((chains, draws), dtype=bool)}


def test_convergence_ok_on_iid_draws():
    rng = np.random.default_rng(0)
    rep = D.convergence_report(fake_fit(_good_draws(rng), _stats(rng)))
    assert rep.verdict == "ok", str(rep)
    assert rep.rhat_max < 1.01 and rep.ess_bulk_min > 400
    assert rep.divergences == 0 and rep.treedepth_saturation == 0.0
    assert len(rep.bfmi) == 4
    assert D.warn_if_bad(rep) is False
    json.dumps(rep.to_dict())


def test_convergence_flags_stuck_chains_and_divergences():
    rng = np.random.default_rng(1)
    stuck = D.convergence_report(
        fake_fit(_good_draws(rng, shift=[0, 0, 0, 3.0]), _stats(rng)))
    assert stuck.verdict == "fail"
    assert "R-hat" in " ".join(stuck.problems)
    assert any("longer" in a for a in stuck.advice)
    div = D.convergence_report(
        fake_fit(_good_draws(rng), _stats(rng, diverging=5), pooling="partial"))
    assert div.verdict == "warning" and div.divergences == 5
    assert any("target_accept" in a for a in div.advice)
    assert any("noncentered" in a for a in div.advice)
    many = D.convergence_report(fake_fit(_good_draws(rng), _stats(rng, diverging=100)))
    assert many.verdict == "fail"
    with pytest.warns(D.ConvergenceWarning, match="FAIL"):
        assert D.warn_if_bad(many)


def test_convergence_reads_nutpie_treedepth_names():
    rng = np.random.default_rng(2)
    st = _stats(rng, depth_key="maxdepth_reached")
    st["maxdepth_reached"][:, :100] = True
    rep = D.convergence_report(fake_fit(_good_draws(rng), st, sampler="nutpie"))
    assert rep.treedepth_saturation == pytest.approx(0.2)
    assert rep.verdict == "warning"
    assert "tree depth" in str(rep)


def test_convergence_map_is_not_assessed():
    rng = np.random.default_rng(3)
    post = {k: v[:1, :1] for k, v in _good_draws(rng).items()}
    rep = D.convergence_report(fake_fit(post, None, sampler="map"))
    assert rep.verdict == D.NOT_ASSESSED
    assert not rep.ok
    assert "approximation" in str(rep)
    with pytest.warns(D.ConvergenceWarning):
        D.warn_if_bad(rep)


@pytest.mark.slow
def test_real_fits_short_tuning_fails_and_loo_compares(cdnow):
    from bayesclv.fit import fit
    from bayesclv.models import build_bgnbd

    _, rfm = cdnow
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        # cores=1: no worker processes to start, faster for fits this small; one model,
        # so the second fit reuses the compiled functions
        model = build_bgnbd(rfm, pooling="complete")
        ok = fit(model, draws=200, tune=200, chains=2, random_seed=4, progressbar=False,
                 cores=1)
        bad = fit(model, draws=50, tune=5, chains=2, random_seed=4, progressbar=False, cores=1)
    rep_ok = D.convergence_report(ok)
    rep_bad = D.convergence_report(bad)
    assert rep_ok.verdict != "fail", str(rep_ok)
    assert rep_ok.rhat_max < 1.05
    assert rep_bad.verdict == "fail", str(rep_bad)
    assert any("tune=5" in a for a in rep_bad.advice)

    with_ll = D.pointwise_log_likelihood(ok, rfm)
    ll = with_ll.log_likelihood["purchases"]
    assert ll.dims == ("chain", "draw", "customer_id")
    assert ll.sizes["customer_id"] == rfm.n_customers
    p = ok.posterior
    direct = bgnbd_logp(*(float(p[n].values[0, 7, 0]) for n in ("r", "alpha", "a", "b")),
                        rfm.frequency, rfm.recency, rfm.T)
    np.testing.assert_allclose(ll.values[0, 7], direct, rtol=1e-10)
    table = D.compare_models({"complete": ok, "short": bad}, rfm)
    assert set(table.index) == {"complete", "short"}
    assert {"elpd_loo", "p_loo", "n_bad_k", "model", "pooling"} <= set(table.columns)
    with pytest.raises(ValueError, match="cannot be compared"):
        D.compare_models({"a": ok, "b": fake_fit(
            {"p": np.ones((1, 20, 1)), "q": 2 * np.ones((1, 20, 1)), "v": np.ones((1, 20, 1))},
            None, model="gamma_gamma")}, rfm)


def test_holdout_requires_holdout():
    truth = BGNBDParams(**BG_CDNOW)
    rfm = simulate_rfm(truth, 100, T=30.0, spend=GammaGammaParams(6.0, 4.0, 15.0),
                       random_seed=1)
    with pytest.raises(ValueError, match="holdout"):
        D.holdout_evaluation(point("bgnbd", BG_CDNOW, ("all",)), rfm)


def test_pmf_is_a_poisson_without_dropout():
    # Pareto/NBD with mu -> 0 is a Poisson count (oracle: scipy)
    ys = np.arange(10)
    lp = FAMILIES["pareto_nbd"].window_log_pmf(
        {"lam": np.full(10, 0.3), "mu": np.full(10, 1e-12)}, ys, 7.0
    )
    np.testing.assert_allclose(lp, stats.poisson.logpmf(ys, 2.1), atol=1e-9)
