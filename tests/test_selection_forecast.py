"""Leave-future-out family choice (``compare_families(validation=...)``) and the stacking
weights it uses.

Oracles: a brute-force search over the simplex for the stacking weights; the raw
transaction log for the validation summary's counts; ``holdout_evaluation`` of an
independent fit for the validation scores.
"""

from __future__ import annotations

import itertools
import warnings

import numpy as np
import pandas as pd
import pytest

from bayesclv.data import rfm_summary
from bayesclv.datasets import load_cdnow
from bayesclv.diagnostics import holdout_evaluation
from bayesclv.errors import ModelSpecificationError
from bayesclv.fit import fit
from bayesclv.models import build_model
from bayesclv.selection import compare_families, validation_summary
from bayesclv.stacking import stacking_weights


def _mixture_score(lp, w):
    m = lp.max(axis=1, keepdims=True)
    return float((np.log(np.exp(lp - m) @ w) + m[:, 0]).sum())


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_stacking_weights_maximise_the_mixture_score(seed):
    rng = np.random.default_rng(seed)
    n = 400
    base = rng.normal(-2.0, 1.0, n)
    # three models: two with complementary errors (both get weight), one worse
    lp = np.column_stack([base + rng.normal(0, 0.6, n), base + rng.normal(0, 0.6, n),
                          base - 1.5 + rng.normal(0, 0.3, n)])
    w = stacking_weights(lp)
    assert w.shape == (3,) and np.all(w >= 0) and w.sum() == pytest.approx(1.0)
    best = _mixture_score(lp, w)
    grid = np.linspace(0, 1, 101)
    brute = max(_mixture_score(lp, np.array([a, b, 1 - a - b]))
                for a, b in itertools.product(grid, grid) if a + b <= 1 + 1e-12)
    assert best >= brute - 1e-6  # at least as good as the best grid point
    assert w[2] < 0.05 and min(w[0], w[1]) > 0.2


def test_stacking_weights_edge_cases():
    lp = np.log(np.full((10, 1), 0.3))
    assert stacking_weights(lp).tolist() == [1.0]
    # one model dominates everywhere: (almost) all weight on it
    lp = np.column_stack([np.full(50, -1.0), np.full(50, -5.0)])
    assert stacking_weights(lp)[0] > 0.99
    with pytest.raises(ModelSpecificationError, match="finite"):
        stacking_weights(np.array([[0.0, -np.inf]]))


@pytest.fixture(scope="module")
def cdnow_log():
    return load_cdnow("sample")


def test_validation_summary_counts_the_purchases_of_the_window(cdnow_log):
    val = validation_summary(cdnow_log, "1997-09-30", 13, time_unit="week")
    cut = pd.Timestamp("1997-09-30") - pd.Timedelta(days=91)
    assert val.meta["calibration_end"] == cut
    assert val.holdout_length == pytest.approx(13.0)
    log = cdnow_log.assign(day=pd.to_datetime(cdnow_log["date"]).dt.normalize())
    first = log.groupby("customer_id")["day"].min()
    assert val.n_customers == int((first <= cut).sum())
    # purchase occasions (customer-days) in (cut, calibration end], by customer
    window = log[(log["day"] > cut) & (log["day"] <= pd.Timestamp("1997-09-30"))]
    occ = window.groupby("customer_id")["day"].nunique()
    got = pd.Series(val.holdout_frequency, index=val.customer_id)
    expected = occ.reindex(got.index, fill_value=0)
    np.testing.assert_array_equal(got.to_numpy(), expected.to_numpy())
    with pytest.raises(ModelSpecificationError, match="positive"):
        validation_summary(cdnow_log, "1997-09-30", 0)


FIT = dict(sampler="nutpie", draws=100, tune=150, chains=2, progressbar=False, random_seed=4)


def test_compare_families_by_leave_future_out(cdnow_log):
    rfm = rfm_summary(cdnow_log, time_unit="week", calibration_end="1997-09-30",
                      observation_end="1998-06-30")
    val = validation_summary(cdnow_log, "1997-09-30", 13)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cmp = compare_families(rfm, ["bgnbd", "mbgnbd"], pooling="complete", validation=val,
                               fit_kwargs=FIT, random_seed=3, validation_draws=150)
        # oracle for the scores: the validation fit made independently, same settings
        ref = holdout_evaluation(fit(build_model("bgnbd", val, None, "complete"), **FIT), val,
                                 n_draws=150, random_seed=3, probs=())
    t = cmp.table
    assert t.attrs["criterion"] == "leave-future-out"
    assert list(t.columns[:6]) == ["rank", "elpd_forecast", "se", "elpd_diff", "dse", "weight"]
    assert t.loc["bgnbd", "elpd_forecast"] == pytest.approx(ref.log_predictive_density,
                                                            rel=1e-12)
    assert t["elpd_forecast"].is_monotonic_decreasing and t["elpd_diff"].iloc[0] == 0
    assert t["weight"].sum() == pytest.approx(1.0)
    assert cmp.best == t.index[0]
    # only families with weight are fitted to the calibration summary, and the stack is theirs
    weighted = [k for k in t.index if cmp.stack.weights.get(k, 0) > 0]
    assert set(cmp.fits) == set(weighted) == set(cmp.stack.weights)
    for k in cmp.fits:
        assert cmp.fits[k].attrs["n_customers"] == rfm.n_customers
    text = cmp.summary()
    assert "leave-future-out" in text and "up to 1997-07-01" in text and "13 weeks" in text


def test_cli_choose_by_forecast_records_the_criterion(tmp_path, capsys):
    """``bayesclv fit --model auto --choose-by forecast``: the comparison is by
    leave-future-out over the default window (a third of the calibration span), saved
    in the sealed folder, and named in the scores' metadata; with one --model it is
    refused, naming the flag."""
    import json

    from bayesclv.cli import main
    from bayesclv.export import read_metadata
    from bayesclv.simulate import BGNBDParams, simulate_transactions

    log = simulate_transactions({"all": BGNBDParams(0.5, 5.0, 0.8, 2.5)}, {"all": 300},
                                T=(30.0, 45.0), random_seed=4)
    path = tmp_path / "orders.csv"
    log.to_csv(path, index=False)
    cal_end = pd.Timestamp(log.attrs["calibration_end"]).date().isoformat()
    base = ["fit", str(path), "--customer-col", "customer_id", "--date-col", "date",
            "--amount-col", "none", "--calibration-end", cal_end,
            "--no-progress"]
    assert main([*base, "--model", "bgnbd", "--choose-by", "forecast",
                 "--out", str(tmp_path / "x")]) == 2
    assert "--choose-by" in capsys.readouterr().err
    out = tmp_path / "fit"
    code = main([*base, "--model", "auto", "--candidates", "bgnbd,mbgnbd", "--choose-by",
                 "forecast", "--pooling", "complete", "--sampler", "nutpie", "--draws", "80",
                 "--tune", "120", "--chains", "2", "--allow-bad-fit", "--out", str(out)])
    assert code == 0
    printed = capsys.readouterr().out
    assert "family choice by leave-future-out forecast" in printed
    rec = json.loads((out / "comparison.json").read_text())
    assert rec["criterion"] == "leave-future-out"
    first = pd.to_datetime(log["date"]).min()
    span = (pd.Timestamp(cal_end) - first).days / 7.0
    assert rec["validation"]["length"] == pytest.approx(round(span / 3))
    assert {r["family"] for r in rec["table"]} == {"bgnbd", "mbgnbd"}
    assert all("elpd_forecast" in r for r in rec["table"])
    scores = tmp_path / "scores.csv"
    assert main(["score", str(out), "--method", "expected", "--allow-bad-fit",
                 "--out", str(scores)]) == 0
    about = json.dumps(read_metadata(scores))
    assert "leave-future-out" in about
