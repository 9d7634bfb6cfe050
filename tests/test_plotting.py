"""Plots: each returns its ax, writes a PNG, and shows the values it was given."""

from __future__ import annotations

import json

import matplotlib

matplotlib.use("Agg")

import arviz as az  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402
import xarray as xr  # noqa: E402

from bayesclv import diagnostics as D  # noqa: E402
from bayesclv import plotting as P  # noqa: E402
from bayesclv.predict import log_p_alive  # noqa: E402
from bayesclv.simulate import BGNBDParams, GammaGammaParams, simulate_transactions  # noqa: E402

BG = dict(r=0.243, alpha=4.414, a=0.793, b=2.426)
SEGS = ("web", "store")


def draws(n_draw=200, segments=SEGS, jitter=0.05, seed=0, model="bgnbd", values=BG):
    rng = np.random.default_rng(seed)
    shape = (2, n_draw, len(segments))
    ds = xr.Dataset(
        {k: (("chain", "draw", "segment"), v * np.exp(jitter * rng.standard_normal(shape)))
         for k, v in values.items()},
        coords={"chain": [0, 1], "draw": np.arange(n_draw), "segment": list(segments)},
    )
    ds.attrs.update(model=model, time_unit="week")
    return ds


@pytest.fixture(autouse=True)
def _close():
    yield
    plt.close("all")


def save(ax, tmp_path, name):
    path = tmp_path / f"{name}.png"
    ax.figure.savefig(path, dpi=80)
    assert path.stat().st_size > 5_000
    return path


def test_p_alive_matrix_values_and_plot(tmp_path):
    params = draws()
    mat = P.probability_alive_matrix(params, 39.0, max_frequency=10, n_recency=20,
                                     segment="web")
    assert mat.shape == (11, 20)
    assert mat.iloc[0, 0] == pytest.approx(1.0)  # BG/NBD: no repeat purchase -> alive
    assert np.isnan(mat.iloc[0, 1:]).all()  # x = 0 with recency > 0 cannot occur
    vals = mat.iloc[1:].to_numpy()
    assert np.all((vals > 0) & (vals <= 1))
    assert np.all(np.diff(vals, axis=1) >= -1e-12)  # more recent -> more likely alive
    # independent check of one cell: mean over draws of the closed form
    th = {k: params[k].sel(segment="web").values.ravel() for k in BG}
    t_x = mat.columns[5]
    ref = np.exp(log_p_alive("bgnbd", th, 3.0, t_x, 39.0)).mean()
    assert mat.loc[3, t_x] == pytest.approx(ref, rel=1e-10)
    ax = P.plot_probability_alive_matrix(params, 39.0, segment="web")
    assert "P(alive)" in ax.get_title() and "web" in ax.get_title()
    save(ax, tmp_path, "p_alive")
    with pytest.raises(ValueError, match="segment="):
        P.probability_alive_matrix(params, 39.0)


def test_matrices_chunk_over_draws(tmp_path, monkeypatch):
    # Memory: at most _CHUNK (draw x cell) values at once. With a tiny chunk the
    # result (summed over many blocks) must equal the one-block result.
    many = draws(n_draw=2_000, segments=("all",))
    whole = P.probability_alive_matrix(many, 39.0)
    monkeypatch.setattr(P, "_CHUNK", 5_000)  # 4 draws per block, 1000 blocks
    chunked = P.probability_alive_matrix(many, 39.0)
    np.testing.assert_allclose(chunked.to_numpy(), whole.to_numpy(), rtol=1e-12)
    assert whole.shape == (31, 40)
    monkeypatch.undo()
    params = draws(segments=("all",))
    mat = P.expected_purchases_matrix(params, 39.0, 39.0)
    assert np.nanmax(mat.to_numpy()) > 5 and np.nanmin(mat.to_numpy()) >= 0
    ax = P.plot_expected_purchases_matrix(params, 39.0, 39.0)
    assert "expected purchases" in ax.get_title()
    save(ax, tmp_path, "expected")


def test_clv_distribution_from_dataarray_and_mapping(tmp_path):
    rng = np.random.default_rng(1)
    da = xr.DataArray(rng.gamma(2.0, [100.0, 300.0], size=(2, 500, 2)),
                      dims=("chain", "draw", "segment"), coords={"segment": list(SEGS)})
    ax = P.plot_clv_distribution(da, currency="USD")
    assert [t.get_text() for t in ax.get_xticklabels()] == list(SEGS)
    assert "USD" in ax.get_ylabel()
    save(ax, tmp_path, "clv")
    ax2 = P.plot_clv_distribution({"a": rng.normal(size=100), "b": rng.normal(size=100)})
    assert len(ax2.get_xticklabels()) == 2


def test_segment_shrinkage(tmp_path):
    est = {"none": draws(jitter=0.3, seed=1), "partial": draws(jitter=0.1, seed=2),
           "complete": draws(jitter=0.05, seed=3)}
    ax = P.plot_segment_shrinkage(est, "r", segment_sizes={"web": 120, "store": 3400})
    labels = [t.get_text() for t in ax.get_xticklabels()]
    assert labels == ["web\nn = 120", "store\nn = 3,400"]
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert any("complete" in t for t in legend) and any("partial" in t for t in legend)
    save(ax, tmp_path, "shrinkage")
    wide = {"none": draws(jitter=3.0, seed=1), "partial": draws(jitter=0.1, seed=2)}
    assert P.plot_segment_shrinkage(wide, "a").get_yscale() == "log"


def test_tracking_and_conditional_plots_from_simulated_log(tmp_path):
    tx = simulate_transactions({"all": BGNBDParams(**BG)}, 400, T=(26.0, 39.0),
                               spend=GammaGammaParams(6.0, 4.0, 15.0), holdout_length=26.0,
                               random_seed=3)
    from bayesclv.data import rfm_summary

    cal_end = tx.attrs["calibration_end"].floor("D")
    rfm = rfm_summary(tx, calibration_end=cal_end,
                      observation_end=cal_end + pd.Timedelta(days=182))
    params = draws(segments=("all",), jitter=0.02)
    tab = D.tracking(params, rfm, tx)
    assert tab["cum_actual"].iloc[-1] == rfm.frequency.sum() + rfm.holdout_frequency.sum()
    for kind in ("cumulative", "incremental"):
        ax = P.plot_tracking(tab, kind=kind)
        assert kind in ax.get_title()
        assert any("calibration" in t.get_text() for t in ax.texts)
        save(ax, tmp_path, f"tracking_{kind}")
    cond = D.conditional_expectations(params, rfm)
    ax = P.plot_conditional_expectations(cond)
    save(ax, tmp_path, "conditional")
    check = D.posterior_predictive_frequency(params, rfm, n_draws=30, random_seed=1)
    ax = P.plot_frequency_check(check)
    assert "p =" in ax.get_title()
    save(ax, tmp_path, "ppc")
    with pytest.raises(ValueError, match="group"):
        P.plot_frequency_check(check, group="nope")


def test_trace_and_rank_through_arviz(tmp_path):
    params = draws(n_draw=100)
    idata = az.InferenceData(posterior=params)
    idata.attrs["segment_names"] = json.dumps(list(SEGS))
    axes = P.plot_trace(idata, var_names=["r", "a"])
    assert np.asarray(axes).shape == (2, 2)
    save(np.ravel(axes)[0], tmp_path, "trace")
    axes = P.plot_rank(idata, var_names=["r"])
    save(np.ravel(axes)[0], tmp_path, "rank")
