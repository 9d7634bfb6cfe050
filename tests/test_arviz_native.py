"""Fits as ArviZ expects them (issue 20): a ``log_likelihood`` group so ``az.loo`` and
``az.compare`` work on fits directly, internals out of ``posterior``, a
``posterior_predictive`` group from the family simulator, and all of it through
save/load.

Oracles: the model's own compiled ``pm.Potential`` (the summed log-likelihood NUTS
samples) at the posterior's paper parameters, and ``pointwise_log_likelihood``.
"""

from __future__ import annotations

import warnings

import arviz as az
import numpy as np
import pytensor
import pytensor.tensor as pt
import pytest

from bayesclv.diagnostics import (
    pointwise_log_likelihood,
    posterior_predictive,
    with_log_likelihood,
)
from bayesclv.fit import fit
from bayesclv.models import build_model
from bayesclv.saved import load_fit, save_fit
from bayesclv.simulate import BGNBDParams, simulate_rfm

NUTS = dict(sampler="nutpie", draws=100, tune=100, chains=2, progressbar=False)


@pytest.fixture(scope="module")
def rfm():
    return simulate_rfm(
        {"a": BGNBDParams(0.9, 6.0, 0.6, 1.2), "b": BGNBDParams(0.7, 5.0, 0.6, 1.5)},
        {"a": 180, "b": 120},
        T=(20.0, 40.0),
        random_seed=1,
    )


@pytest.fixture(scope="module")
def fits(rfm):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        out = {}
        for name in ("bgnbd", "pareto_nbd"):
            model = build_model(name, rfm, pooling="complete")
            out[name] = (model, fit(model, random_seed=3, **NUTS))
        model = build_model("bgnbd", rfm, pooling="partial")
        out["partial"] = (model, fit(model, random_seed=3, **NUTS))
    return out


def _potential_at_draws(model, idata, n=3):
    """The model's compiled Potential with its paper parameters as inputs, at the first
    ``n`` draws of chain 0 (independent of the pointwise code)."""
    spec_params = [v for v in ("r", "alpha", "a", "b", "s", "beta") if v in model.named_vars]
    inputs = [pt.vector(name) for name in spec_params]
    (pot,) = model.potentials
    graph = pytensor.clone_replace(
        pot, replace={model[name]: x for name, x in zip(spec_params, inputs, strict=True)}
    )
    # Python linker: no C compilation (which takes a minute on a small machine)
    mode = pytensor.compile.mode.Mode(linker="py", optimizer="fast_compile")
    fn = pytensor.function(inputs, graph, on_unused_input="ignore", mode=mode)
    return [
        float(fn(*(idata.posterior[p].values[0, k] for p in spec_params))) for k in range(n)
    ]


@pytest.mark.parametrize("which", ["bgnbd", "pareto_nbd", "partial"])
def test_native_log_likelihood_sums_to_the_models_potential(fits, rfm, which):
    model, idata = fits[which]
    ll = idata.log_likelihood["purchases"]
    assert ll.dims == ("chain", "draw", "customer_id")
    assert ll.sizes["customer_id"] == rfm.n_customers
    np.testing.assert_array_equal(ll["customer_id"].values, rfm.customer_id)
    assert idata.attrs["log_likelihood"] == "stored"
    ref = _potential_at_draws(model, idata)
    np.testing.assert_allclose(ll.values[0, :3].sum(axis=-1), ref, rtol=1e-9)


def test_loo_works_on_a_fit_and_equals_the_helper(fits, rfm):
    _, idata = fits["bgnbd"]
    helper = pointwise_log_likelihood(idata, rfm)
    np.testing.assert_allclose(
        idata.log_likelihood["purchases"].values,
        helper.log_likelihood["purchases"].values,
        rtol=0,
        atol=0,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        native, recomputed = az.loo(idata), az.loo(helper)
    assert np.isfinite(native.elpd_loo)
    assert native.elpd_loo == pytest.approx(recomputed.elpd_loo, rel=1e-12)
    # the fit's own group is used where it was computed on these customers, not otherwise
    assert with_log_likelihood(idata, rfm) is idata
    sub = rfm.subset(np.arange(rfm.n_customers) < 200)
    assert with_log_likelihood(idata, sub).log_likelihood.sizes["customer_id"] == 200


def test_compare_works_on_two_fits(fits):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        table = az.compare({"bgnbd": fits["bgnbd"][1], "pareto_nbd": fits["pareto_nbd"][1]})
    assert set(table.index) == {"bgnbd", "pareto_nbd"}
    assert np.isfinite(table["elpd_loo"]).all()
    # on BG/NBD data the BG/NBD fit is not worse by more than its standard error
    assert table.loc["bgnbd", "elpd_diff"] <= table.loc["bgnbd", "dse"] + 1e-9


def test_posterior_holds_no_sampler_internals(fits):
    _, idata = fits["partial"]
    post, unc = idata.posterior, idata.unconstrained_posterior
    names = list(post.data_vars)
    assert not [n for n in names if n.endswith(("_z", "_nu", "_cv", "__"))], names
    assert not [d for d in post.dims if "_dim_" in d], dict(post.sizes)
    for name in ("r", "alpha", "a", "b", "log_r", "log_r_mu", "log_r_sigma"):
        assert name in post, name
    assert post["r"].dims == ("chain", "draw", "segment")
    assert "log_r_z" in unc and unc["log_r_z"].dims == ("chain", "draw", "segment")
    assert unc.sizes["draw"] == post.sizes["draw"]
    # complete pooling the same way: nutpie's transformed copies are gone, the sampling
    # coordinates behind log s and log(dropout rate) are moved, the parameters stay
    _, pnbd = fits["pareto_nbd"]
    complete, unc = pnbd.posterior, pnbd.unconstrained_posterior
    names = list(complete.data_vars)
    assert not [n for n in names if n.endswith(("_z", "_nu", "_cv", "_per_s", "__"))], names
    for name in ("r", "alpha", "s", "beta", "log_r", "log_purchase_rate", "log_s",
                 "log_dropout_rate"):  # fmt: skip
        assert name in complete, name
    assert set(unc.data_vars) == {"s_cv", "log_dropout_rate_per_s"}, list(unc.data_vars)
    assert unc["s_cv"].dims == ("chain", "draw")
    # the moved draws are the ones the parameters were computed from: log s = -2 log cv,
    # log(dropout rate) = log s + log(rate per unit of s)
    np.testing.assert_allclose(complete["log_s"], -2 * np.log(unc["s_cv"]), rtol=1e-10)
    np.testing.assert_allclose(complete["log_dropout_rate"],
                               complete["log_s"] + unc["log_dropout_rate_per_s"], rtol=1e-10)


def test_no_pooling_moves_its_sampling_coordinates_too(rfm, tmp_path):
    # MAP: one draw through the same grouping; per-segment coordinates keep dim segment
    model = build_model("pareto_nbd", rfm, pooling="none")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        idata = fit(model, sampler="map", progressbar=False)
    post, unc = idata.posterior, idata.unconstrained_posterior
    assert "s_cv" not in post and "log_dropout_rate_per_s" not in post
    assert {"r", "alpha", "s", "beta", "log_s", "log_dropout_rate"} <= set(post.data_vars)
    assert unc["s_cv"].dims == ("chain", "draw", "segment")
    assert list(unc["segment"].values) == list(rfm.segment_names)
    np.testing.assert_allclose(post["log_s"], -2 * np.log(unc["s_cv"]), rtol=1e-10)
    back = load_fit(save_fit(idata, tmp_path / "fit.nc"))
    assert "unconstrained_posterior" in back.groups()
    np.testing.assert_array_equal(back.unconstrained_posterior["s_cv"].values,
                                  unc["s_cv"].values)


def test_log_likelihood_option(rfm):
    model = build_model("bgnbd", rfm, pooling="complete")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        off = fit(model, random_seed=3, log_likelihood=False, **{**NUTS, "draws": 20,
                                                                   "tune": 20})
    assert "log_likelihood" not in off.groups()
    assert "log_likelihood=False" in off.attrs["log_likelihood"]
    with pytest.raises(Exception, match="log_likelihood"):
        fit(model, log_likelihood="always", **NUTS)


def test_posterior_predictive_group_and_plot_ppc(fits, rfm):
    import matplotlib

    matplotlib.use("Agg")
    _, idata = fits["bgnbd"]
    out = posterior_predictive(idata, rfm, n_draws=40, random_seed=2)
    pp, obs = out.posterior_predictive["purchases"], out.observed_data["purchases"]
    assert pp.dims == ("chain", "draw", "customer_id")
    assert pp.shape == (2, 20, rfm.n_customers)
    np.testing.assert_array_equal(obs.values, rfm.frequency)
    assert set(pp["draw"].values) <= set(idata.posterior["draw"].values)
    # the model reproduces the mean repeat-purchase count of the data it was fitted to
    assert float(pp.mean()) == pytest.approx(float(obs.mean()), rel=0.2)
    # seeded
    again = posterior_predictive(idata, rfm, n_draws=40, random_seed=2)
    np.testing.assert_array_equal(again.posterior_predictive["purchases"].values, pp.values)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        az.plot_ppc(out, num_pp_samples=10, kind="cumulative")
    assert "posterior_predictive" not in idata.groups()


def test_saved_fit_keeps_the_arviz_groups(fits, rfm, tmp_path):
    _, idata = fits["partial"]
    full = posterior_predictive(idata, rfm, n_draws=20, random_seed=0)
    back = load_fit(save_fit(full, tmp_path / "fit.nc"))
    assert set(back.groups()) == set(full.groups()) >= {
        "posterior", "log_likelihood", "unconstrained_posterior", "posterior_predictive",
        "observed_data", "sample_stats",
    }
    np.testing.assert_array_equal(
        back.log_likelihood["purchases"].values, full.log_likelihood["purchases"].values
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert az.loo(back).elpd_loo == pytest.approx(az.loo(full).elpd_loo, rel=1e-12)
    assert with_log_likelihood(back, rfm) is back
