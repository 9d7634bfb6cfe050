"""The analyst's report and the plots it draws (issue 20).

* Plots say what they show: segment totals are "total CLV of the segment", the interval
  says whether it is a credible interval of expected CLV or a predictive interval of
  realised CLV, and "shrinkage across pooling levels" is claimed only when several
  levels are drawn; a stack's P(alive) matrix is the mixture's posterior mean.
* ``build_report`` on a real (MAP) fit: the holdout check agrees with
  ``holdout_evaluation`` called directly, the one-page HTML embeds every plot, the PNG
  page and the JSON numbers exist; a log that does not reproduce the fit is refused; a
  log without a holdout gives a report that says so.
"""

from __future__ import annotations

import json

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402
import xarray as xr  # noqa: E402

from bayesclv import plotting as P  # noqa: E402
from bayesclv.stacking import PurchaseStack  # noqa: E402

pytestmark = pytest.mark.filterwarnings(
    "ignore:PyTensor could not link to a BLAS:UserWarning",
    "ignore::bayesclv.diagnostics.ConvergenceWarning",
)


@pytest.fixture(autouse=True)
def _close():
    yield
    plt.close("all")


def draws(model, values, n_draw=200, segments=("web", "store"), seed=0):
    rng = np.random.default_rng(seed)
    shape = (2, n_draw, len(segments))
    ds = xr.Dataset(
        {k: (("chain", "draw", "segment"), v * np.exp(0.05 * rng.standard_normal(shape)))
         for k, v in values.items()},
        coords={"chain": [0, 1], "draw": np.arange(n_draw), "segment": list(segments)},
    )
    ds.attrs.update(model=model, time_unit="week")
    return ds


BG = draws("bgnbd", dict(r=0.243, alpha=4.414, a=0.793, b=2.426))
PNBD = draws("pareto_nbd", dict(r=0.55, alpha=10.6, s=0.61, beta=11.7), seed=1)


def test_segment_totals_are_labelled_as_totals_with_the_interval_kind(tmp_path):
    totals = xr.DataArray(np.random.default_rng(0).gamma(5, 100, (2, 300, 2)),
                          dims=("chain", "draw", "segment"),
                          coords={"segment": ["web", "store"]})
    ax = P.plot_clv_distribution(totals, label="total CLV of the segment", currency="EUR",
                                 interval="credible interval of expected CLV")
    assert ax.get_ylabel() == "total CLV of the segment (EUR)"
    assert "total CLV of the segment" in ax.get_title()
    assert "94% credible interval of expected CLV" in ax.get_title()
    ax.figure.savefig(tmp_path / "clv.png")


def test_shrinkage_across_pooling_levels_is_claimed_only_when_several_are_drawn():
    one = P.plot_segment_shrinkage({"partial": BG}, "r")
    assert "across pooling levels" not in one.get_title()
    assert "Segment estimates of 'r', partial pooling" in one.get_title()
    plt.close("all")
    complete = BG.isel(segment=[0]).assign_coords(segment=["all"])
    several = P.plot_segment_shrinkage({"none": BG, "partial": BG, "complete": complete}, "r")
    assert "Shrinkage of 'r' across pooling levels" in several.get_title()


def test_a_stacks_p_alive_matrix_is_the_mixture_of_its_families():
    stack = PurchaseStack({"bgnbd": BG, "pareto_nbd": PNBD},
                          {"bgnbd": 0.7, "pareto_nbd": 0.3}, random_seed=3)
    mix = P.probability_alive_matrix(stack, 39.0, max_frequency=8, n_recency=10,
                                     segment="web")
    # independently: each family's mean over exactly the draws the stack gives it
    expect = np.zeros(mix.shape)
    for _, pos, sub in stack.components():
        m = P.probability_alive_matrix(sub, 39.0, max_frequency=8, n_recency=10,
                                       segment="web").to_numpy()
        expect = expect + np.nan_to_num(m) * len(pos) / stack.n_draws
    np.testing.assert_allclose(np.nan_to_num(mix.to_numpy()), expect, rtol=1e-12)
    bg = P.probability_alive_matrix(BG, 39.0, max_frequency=8, n_recency=10, segment="web")
    pn = P.probability_alive_matrix(PNBD, 39.0, max_frequency=8, n_recency=10,
                                    segment="web")
    assert not np.allclose(np.nan_to_num(bg), np.nan_to_num(pn))  # the mix is not trivial
    only = PurchaseStack({"bgnbd": BG, "pareto_nbd": PNBD}, {"bgnbd": 1.0, "pareto_nbd": 0.0})
    np.testing.assert_allclose(
        np.nan_to_num(P.probability_alive_matrix(only, 39.0, max_frequency=8, n_recency=10,
                                                 segment="web")), np.nan_to_num(bg))
    ax = P.plot_probability_alive_matrix(stack, 39.0, segment="web")
    assert "stack of BG/NBD 0.70 + Pareto/NBD 0.30" in ax.get_title()


def test_pit_histogram_and_family_comparison_plots(tmp_path):
    u = np.random.default_rng(0).random(500)
    ax = P.plot_pit_histogram(u)
    heights = [p.get_height() for p in ax.patches if p.get_width() < 0.2]
    assert sum(heights) == 500 and len(heights) == 10
    assert "flat = calibrated" in ax.get_title()
    ax.figure.savefig(tmp_path / "pit.png", dpi=80)
    table = pd.DataFrame({"elpd_loo": [-100.0, -104.0], "se": [10.0, 10.0],
                          "elpd_diff": [0.0, 4.0], "dse": [1.5, 1.5],
                          "weight": [0.8, 0.2]}, index=["pareto_nbd", "bgnbd"])
    ax = P.plot_family_comparison(table)
    labels = [t.get_text() for t in ax.get_yticklabels()]
    assert labels == ["Pareto/NBD\nweight 0.80", "BG/NBD\nweight 0.20"]
    assert {t.get_text() for t in ax.texts} == {"best", "-4.0 +- 1.5"}
    ax.figure.savefig(tmp_path / "cmp.png", dpi=80)


# --------------------------------------------------------------------------- the report
@pytest.fixture(scope="module")
def map_fit(tmp_path_factory):
    """A real MAP fit (BG/NBD + Gamma-Gamma, partial pooling over two segments) of a
    simulated log with 13 weeks after the calibration end, made as 'bayesclv fit' does."""
    from bayesclv.simulate import BGNBDParams, GammaGammaParams, simulate_transactions
    from bayesclv.workflow import FitSettings, ReadOptions, fit_models, read_log

    log = simulate_transactions(
        {"web": BGNBDParams(0.5, 5.0, 0.8, 2.5), "shop": BGNBDParams(0.4, 6.0, 0.9, 3.0)},
        {"web": 200, "shop": 120}, T=(20.0, 40.0), spend=GammaGammaParams(6.0, 4.0, 15.0),
        holdout_length=13, random_seed=11,
    )
    folder = tmp_path_factory.mktemp("report")
    csv = folder / "orders.csv"
    log.to_csv(csv, index=False)
    cal = str((log.attrs["calibration_end"].normalize() - pd.Timedelta(days=1)).date())
    read = ReadOptions(source=str(csv), customer_col="customer_id", date_col="date",
                       amount_col="amount", segment_col="segment", calibration_end=cal)
    rfm = read_log(read)
    out = folder / "fit"
    fit_models(rfm, FitSettings(model="bgnbd", sampler="map", progressbar=False), out,
               allow_bad_fit=True, read=read)
    return out, csv, cal


def test_report_holdout_plots_html_and_png(map_fit, tmp_path):
    from bayesclv.diagnostics import holdout_evaluation
    from bayesclv.report import build_report, read_holdout
    from bayesclv.workflow import ScoreOptions, load_fit_dir

    fit_dir, csv, cal = map_fit
    folder = load_fit_dir(fit_dir)
    rfm_h, log = read_holdout(folder, csv)
    assert rfm_h.has_holdout and rfm_h.holdout_length == pytest.approx(13, abs=0.2)
    out = tmp_path / "report"
    options = ScoreOptions(method="expected", currency="EUR", random_seed=5)
    rep = build_report(folder, out, rfm_holdout=rfm_h, log=log, options=options)
    direct = holdout_evaluation(folder.purchase_params(), rfm_h,
                                spend_params=folder.spend_params(), n_draws=300,
                                random_seed=5)
    assert rep.holdout.log_predictive_density == pytest.approx(direct.log_predictive_density)
    numbers = json.loads((out / "report.json").read_text())
    assert numbers["as_of"] == cal
    assert numbers["holdout"]["metrics"]["purchases"]["MAE"] == pytest.approx(
        float(direct.metrics.loc["purchases", "MAE"]))
    assert any("BIAS" in line for line in rep.lines)
    for name in ("p_alive_matrix.png", "clv_by_segment.png", "segment_parameters.png",
                 "conditional_expectations.png", "pit_histogram.png",
                 "tracking_cumulative.png", "report.png"):
        assert (out / name).stat().st_size > 10_000, name
    assert not (out / "family_comparison.png").exists()  # one family: nothing compared
    page = (out / "report.html").read_text()
    assert page.count("data:image/png;base64,") == 6
    assert "credible interval of expected CLV" in page
    assert "total CLV of the segment" in page
    assert "WARNING: no uncertainty" in page  # a MAP fit says its intervals are points
    assert f"scores as of\n{cal}" in page or f"scores as of {cal}" in page
    text = (out / "holdout.txt").read_text()
    assert "pit_calibration" in text and "log predictive density" in text


def test_a_log_that_does_not_reproduce_the_fit_is_refused(map_fit, tmp_path):
    from bayesclv.errors import DataValidationError
    from bayesclv.report import read_holdout
    from bayesclv.workflow import load_fit_dir

    fit_dir, csv, _ = map_fit
    folder = load_fit_dir(fit_dir)
    log = pd.read_csv(csv)
    other = tmp_path / "other.csv"
    log[log["customer_id"] % 7 != 0].to_csv(other, index=False)
    with pytest.raises(DataValidationError, match="does not reproduce the fitted customers"):
        read_holdout(folder, other)


def test_a_log_without_a_holdout_gives_a_report_that_says_so(map_fit, tmp_path):
    from bayesclv.report import build_report, check_report_folder, read_holdout
    from bayesclv.workflow import ScoreOptions, load_fit_dir

    fit_dir, csv, cal = map_fit
    folder = load_fit_dir(fit_dir)
    log = pd.read_csv(csv, parse_dates=["date"])
    short = tmp_path / "short.csv"
    log[log["date"] < pd.Timestamp(cal) + pd.Timedelta(days=1)].to_csv(short, index=False)
    rfm_h, clean = read_holdout(folder, short)
    assert not rfm_h.has_holdout
    out = tmp_path / "r"
    rep = build_report(folder, out, rfm_holdout=rfm_h, log=clean,
                       options=ScoreOptions(method="expected"))
    assert rep.holdout is None and any("no holdout check" in line for line in rep.lines)
    assert not (out / "pit_histogram.png").exists()
    assert "no holdout check" in (out / "report.html").read_text()
    from bayesclv.errors import OutputError

    with pytest.raises(OutputError, match="--force"):
        check_report_folder(out, overwrite=False)
