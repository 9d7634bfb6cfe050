"""Covariate fits scored end to end: the library consumers and the command line (issue 21).

Oracles
    Each family's own consumer methods (``p_alive``, ``expected_alive`` with
    ``customer_data``), evaluated directly on a summary and covariate table built here
    from the same files, independently of the fit folder and the CLV engine; and plain
    Pareto/NBD, which a covariate family with every effect 0 must reproduce exactly.
Data
    Simulated (runs from a plain clone): 150 customers under the dynamic-covariate
    Pareto/NBD (a seasonal share on the purchase rate, a 'vip' flag on both processes),
    weekly periods; the static table is the 'vip' flag.
"""

from __future__ import annotations

import dataclasses
import json
import shutil

import numpy as np
import pandas as pd
import pytest
import xarray as xr

from bayesclv.cli import EXIT_BAD_INPUT, main
from bayesclv.clv import score_customers
from bayesclv.covariates import (
    StaticCovariates,
    TimeVaryingCovariates,
    calendar_covariates,
    join_covariates,
)
from bayesclv.data import rfm_summary
from bayesclv.errors import DataValidationError
from bayesclv.families import FAMILIES
from bayesclv.families.pareto_nbd_dyncov import simulate_dyncov
from bayesclv.fit import load_fit
from bayesclv.predict import expected_purchases, probability_alive

CAL_END = pd.Timestamp("2021-03-31")
HORIZON = 26.0


# --------------------------------------------------------------------------- data
def _simulate(out, n=150, seed=3):
    rng = np.random.default_rng(seed)
    cal = calendar_covariates(start="2019-12-29", end="2021-12-26", freq="W-SUN",
                              high_season=[11, 12])  # fmt: skip
    ids = np.arange(1, n + 1)
    vip = rng.integers(0, 2, n).astype(float)
    frames = []
    for i, v in zip(ids, vip, strict=True):
        f = cal[["period_start", "high_season"]].copy()
        f.insert(0, "customer_id", i)
        f["vip"] = v
        frames.append(f)
    long = pd.concat(frames, ignore_index=True)
    first = pd.Timestamp("2020-01-01") + pd.to_timedelta(rng.integers(0, 150, n), unit="D")
    log, _ = simulate_dyncov(r=0.9, alpha=60.0, s=0.7, beta=300.0,
                             gamma_purchase={"high_season": 0.8, "vip": 0.6},
                             gamma_dropout={"vip": -0.5},
                             calendar=TimeVaryingCovariates.from_frame(long),
                             first_days=first, end_day="2021-06-30", random_seed=seed)  # fmt: skip
    log["amount"] = np.round(rng.gamma(4.0, 10.0, len(log)), 2)
    paths = {k: out / f"{k}.csv" for k in ("log", "static", "dynamic", "future", "short")}
    log.to_csv(paths["log"], index=False)
    pd.DataFrame({"customer_id": ids, "vip": vip}).to_csv(paths["static"], index=False)
    start = long["period_start"]
    long[start <= CAL_END].to_csv(paths["dynamic"], index=False)
    after = start > CAL_END - pd.Timedelta(days=7)  # from the period holding the end
    long[after].to_csv(paths["future"], index=False)
    long[after & (start < pd.Timestamp("2021-05-01"))].to_csv(paths["short"], index=False)
    return paths


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    return _simulate(tmp_path_factory.mktemp("covcli"))


def _fit_args(files, out, model, table, *extra):
    return ["fit", str(files["log"]), "--customer-col", "customer_id", "--date-col", "date",
            "--amount-col", "amount", "--calibration-end", str(CAL_END.date()),
            "--model", model, "--covariates", str(table), "--sampler", "map",
            "--pooling", "complete", "--no-progress", "--out", str(out), *extra]  # fmt: skip


def _summary(files):
    log = pd.read_csv(files["log"], parse_dates=["date"])
    return log, rfm_summary(log, calibration_end=CAL_END)


def _draws(idata) -> dict[str, float]:
    """The MAP point of a saved fit: every paper parameter, as floats."""
    post = idata.posterior
    fam = FAMILIES[idata.attrs["model"]].from_draws(post)
    return {n: float(post[n].values.reshape(-1)[0]) for n in fam.params}


# --------------------------------------------------------------------------- library
def _static_rfm(files):
    _, rfm = _summary(files)
    tab = StaticCovariates.from_frame(pd.read_csv(files["static"]))
    return join_covariates(rfm, tab)


def _dataset(values: dict, model: str, segments) -> xr.Dataset:
    ds = xr.Dataset({k: (("chain", "draw", "segment"), np.full((1, 3, 1), float(v)))
                     for k, v in values.items()}, coords={"segment": list(segments)})  # fmt: skip
    ds.attrs = {"model": model}
    return ds


SPEND = {"p": 4.0, "q": 5.0, "v": 30.0}
BASE = {"r": 0.9, "alpha": 60.0 / 7, "s": 0.7, "beta": 300.0 / 7}


def test_zero_effect_covariate_families_score_exactly_like_pareto_nbd(files):
    """With every coefficient 0 a covariate customer is a Pareto/NBD customer: the whole
    score table (CLV, P(alive), expected purchases, discounted) equals plain Pareto/NBD's."""
    rfm_s = _static_rfm(files)
    log, rfm = _summary(files)
    dyn = TimeVaryingCovariates.from_frame(
        pd.concat([pd.read_csv(files["dynamic"]), pd.read_csv(files["future"])])
        .drop_duplicates(["customer_id", "period_start"]))
    rfm_d = join_covariates(rfm, dyn, transactions=log)
    kw = dict(horizon=HORIZON, discount_rate=0.1, discount_period=52.0)
    sp = _dataset(SPEND, "gamma_gamma", rfm.segment_names)
    plain = score_customers(_dataset(BASE, "pareto_nbd", rfm.segment_names), sp, rfm, **kw)
    for name, data in (("pareto_nbd_cov", rfm_s), ("pareto_nbd_dyncov", rfm_d)):
        fam = FAMILIES[name].resolve(data)
        zero = {**BASE, **dict.fromkeys(fam.scales.gammas, 0.0)}
        got = score_customers(_dataset(zero, name, rfm.segment_names), sp, data, **kw)
        for col in ("clv_mean", "p_alive", "expected_purchases"):
            np.testing.assert_allclose(got.table[col], plain.table[col], rtol=1e-9,
                                       atol=1e-12, err_msg=f"{name} {col}")  # fmt: skip
        np.testing.assert_allclose(got.totals["portfolio_total"],
                                   plain.totals["portfolio_total"], rtol=1e-9)  # fmt: skip


def test_static_scores_equal_the_family_methods_and_negative_coefficients_are_accepted(files):
    rfm = _static_rfm(files)
    th = {**BASE, "gamma_purchase_vip": 0.6, "gamma_dropout_vip": -0.5}
    pp = _dataset(th, "pareto_nbd_cov", rfm.segment_names)
    sp = _dataset(SPEND, "gamma_gamma", rfm.segment_names)
    got = score_customers(pp, sp, rfm, horizon=HORIZON, discount_rate=0.0,
                          discount_period=52.0).table  # fmt: skip
    fam = FAMILIES["pareto_nbd_cov"].resolve(rfm)
    cov = fam.customer_data(rfm)
    x = rfm.frequency.astype(float)
    pa = fam.p_alive(th, x, rfm.recency, rfm.T, **cov)
    ep = pa * fam.expected_alive(th, x, rfm.T, HORIZON, **cov)
    np.testing.assert_allclose(got["p_alive"], pa, rtol=1e-12)
    np.testing.assert_allclose(got["expected_purchases"], ep, rtol=1e-12)
    np.testing.assert_allclose(probability_alive(pp, rfm).values[0, 0], pa, rtol=1e-12)
    np.testing.assert_allclose(expected_purchases(pp, rfm, HORIZON).values[0, 0], ep,
                               rtol=1e-12)  # fmt: skip
    # the effect is there: vip customers with the same history differ from the others
    assert not np.allclose(ep, FAMILIES["pareto_nbd"].p_alive(BASE, x, rfm.recency, rfm.T)
                           * FAMILIES["pareto_nbd"].expected_alive(BASE, x, rfm.T, HORIZON))


def test_library_dynamic_scoring_needs_the_future_path_and_says_which_periods(files):
    log, rfm = _summary(files)
    cal = TimeVaryingCovariates.from_frame(pd.read_csv(files["dynamic"]))
    rfm_d = join_covariates(rfm, cal, transactions=log)
    fam = FAMILIES["pareto_nbd_dyncov"].resolve(rfm_d)
    th = {**BASE, **dict.fromkeys(fam.scales.gammas, 0.3)}
    pp = _dataset(th, "pareto_nbd_dyncov", rfm.segment_names)
    sp = _dataset(SPEND, "gamma_gamma", rfm.segment_names)
    kw = dict(horizon=HORIZON, discount_rate=0.0, discount_period=52.0)
    with pytest.raises(DataValidationError, match="after the last period"):
        score_customers(pp, sp, rfm_d, **kw)
    full = cal.extend(TimeVaryingCovariates.from_frame(pd.read_csv(files["future"])))
    got = score_customers(pp, sp, rfm_d, future_covariates=full, **kw).table
    cov = fam.customer_data(rfm_d, horizon=HORIZON, table=full)
    x = rfm.frequency.astype(float)
    ep = fam.p_alive(th, x, rfm.recency, rfm.T, **cov) * fam.expected_alive(
        th, x, rfm.T, HORIZON, **cov)
    np.testing.assert_allclose(got["expected_purchases"], ep, rtol=1e-12)


# --------------------------------------------------------------------------- command line
@pytest.fixture(scope="module")
def static_fit(files, tmp_path_factory):
    out = tmp_path_factory.mktemp("static") / "fit"
    assert main(_fit_args(files, out, "pareto_nbd_cov", files["static"])) == 0
    return out


@pytest.fixture(scope="module")
def dyn_fit(files, tmp_path_factory):
    """A MAP fit without amounts (the expected-purchases path of 'score')."""
    out = tmp_path_factory.mktemp("dyn") / "fit"
    args = _fit_args(files, out, "pareto_nbd_dyncov", files["dynamic"])
    args[args.index("amount")] = "none"
    assert main(args) == 0
    return out


def _error_line(capsys) -> str:
    """The one error line of a failed command (the log lines before it are progress)."""
    lines = capsys.readouterr().err.strip().splitlines()
    errors = [ln for ln in lines if ln.startswith("bayesclv: error:")]
    assert len(errors) == 1 and lines[-1] == errors[0], lines
    return errors[0]


def _score(fit, out, *extra):
    return main(["score", str(fit), "--method", "expected", "--horizon", str(HORIZON),
                 "--discount-rate", "0", "--out", str(out), *extra])  # fmt: skip


@pytest.mark.slow
def test_cli_static_fit_scores_equal_the_family_method_on_the_files(files, static_fit, tmp_path):
    out = tmp_path / "clv.csv"
    assert _score(static_fit, out) == 0
    table = pd.read_csv(out).set_index("customer_id")
    manifest = json.loads((static_fit / "manifest.json").read_text())
    assert "covariates.parquet" in manifest["files"]
    assert manifest["covariates"]["kind"] == "static"
    assert manifest["covariates"]["sha256"] == manifest["files"]["covariates.parquet"]["sha256"]
    # oracle: the family's consumer methods on a summary joined here from the files
    rfm = _static_rfm(files)
    th = _draws(load_fit(static_fit / "purchase_fit.nc"))
    assert th["gamma_purchase_vip"] != 0.0
    fam = FAMILIES["pareto_nbd_cov"].from_draws(th)
    cov = fam.customer_data(rfm)
    x = rfm.frequency.astype(float)
    pa = fam.p_alive(th, x, rfm.recency, rfm.T, **cov)
    ep = pa * fam.expected_alive(th, x, rfm.T, HORIZON, **cov)
    got = table.loc[rfm.customer_id]
    np.testing.assert_allclose(got["expected_purchases"], ep, rtol=1e-9)
    np.testing.assert_allclose(got["p_alive"], pa, rtol=1e-9)


@pytest.mark.slow
def test_cli_covariate_edit_in_the_fit_folder_is_refused(static_fit, tmp_path, capsys):
    edited = tmp_path / "fit"
    shutil.copytree(static_fit, edited)
    frame = pd.read_parquet(edited / "covariates.parquet")
    frame.loc[0, "vip"] = 1.0 - frame.loc[0, "vip"]
    frame.to_parquet(edited / "covariates.parquet", index=False)
    capsys.readouterr()
    assert _score(edited, tmp_path / "clv.csv") == EXIT_BAD_INPUT
    err = _error_line(capsys)
    assert "covariates.parquet" in err and "changed after it was written" in err
    assert not (tmp_path / "clv.csv").exists()


@pytest.mark.slow
def test_cli_dynamic_fit_without_or_with_a_short_future_path_exits_2_naming_the_flag(
    files, dyn_fit, tmp_path, capsys
):
    capsys.readouterr()
    assert _score(dyn_fit, tmp_path / "a.csv") == EXIT_BAD_INPUT
    err = _error_line(capsys)
    assert "--future-covariates is needed" in err and "--horizon" in err
    assert _score(dyn_fit, tmp_path / "b.csv", "--future-covariates",
                  str(files["short"])) == EXIT_BAD_INPUT  # fmt: skip
    err = _error_line(capsys)
    assert f"--future-covariates {files['short']}" in err and "after the last period" in err
    assert not (tmp_path / "a.csv").exists() and not (tmp_path / "b.csv").exists()


@pytest.mark.slow
def test_cli_dynamic_fit_scored_along_the_future_path_equals_the_family_method(
    files, dyn_fit, tmp_path
):
    out = tmp_path / "purchases.csv"
    assert _score(dyn_fit, out, "--future-covariates", str(files["future"])) == 0
    table = pd.read_csv(out).set_index("customer_id")
    log, rfm = _summary(files)
    full = TimeVaryingCovariates.from_frame(
        pd.concat([pd.read_csv(files["dynamic"]), pd.read_csv(files["future"])])
        .drop_duplicates(["customer_id", "period_start"]))
    rfm_d = join_covariates(rfm, full, transactions=log)
    th = _draws(load_fit(dyn_fit / "purchase_fit.nc"))
    fam = FAMILIES["pareto_nbd_dyncov"].from_draws(th)
    cov = fam.customer_data(rfm_d, horizon=HORIZON)
    x = rfm.frequency.astype(float)
    pa = fam.p_alive(th, x, rfm.recency, rfm.T, **cov)
    ep = pa * fam.expected_alive(th, x, rfm.T, HORIZON, **cov)
    got = table.loc[rfm.customer_id]
    np.testing.assert_allclose(got["purchases_mean"], ep, rtol=1e-9)
    np.testing.assert_allclose(got["p_alive"], pa, rtol=1e-9)
    manifest = json.loads((dyn_fit / "manifest.json").read_text())
    assert {"covariates.parquet", "calibration_purchases.parquet"} <= set(manifest["files"])


@pytest.mark.parametrize(
    "model, table, extra, words",
    [
        ("pareto_nbd_cov", None, (), "needs --covariates FILE"),
        ("bgnbd", "static", (), "--covariates: --model bgnbd takes no covariates"),
        ("auto", "static", ("--sampler", "nutpie"), "--covariates: the automatic choice"),
        ("pareto_nbd_cov", "dynamic", (), "--covariates"),
        ("pareto_nbd_cov", "static", ("--purchase-covariates", "nope"), "unknown covariate"),
        ("pareto_nbd_dyncov", "dynamic", ("--round-times", "1"), "--round-times"),
    ],
)
def test_cli_covariate_flags_are_checked_before_fitting(files, tmp_path, capsys, model, table,
                                                       extra, words):
    args = _fit_args(files, tmp_path / "fit", model, files.get(table, "x"), *extra)
    if table is None:
        i = args.index("--covariates")
        del args[i:i + 2]
    capsys.readouterr()
    assert main(args) == EXIT_BAD_INPUT
    err = _error_line(capsys)
    assert words in err, err
    assert not (tmp_path / "fit" / "manifest.json").exists()


def test_static_table_missing_a_customer_names_the_flag_and_the_customer(files, tmp_path,
                                                                         capsys):
    short = tmp_path / "static.csv"
    pd.read_csv(files["static"]).iloc[1:].to_csv(short, index=False)
    capsys.readouterr()
    assert main(_fit_args(files, tmp_path / "fit", "pareto_nbd_cov", short)) == EXIT_BAD_INPUT
    err = _error_line(capsys)
    assert err.startswith(f"bayesclv: error: --covariates {short}: join_covariates: 1 "
                          f"customers have no static covariates (1)")  # fmt: skip


def test_dataclass_round_trip_of_covariate_options():
    from bayesclv.workflow import CovariateOptions

    opts = CovariateOptions("x.csv", purchase=("a",), dropout=())
    assert dataclasses.asdict(opts)["dropout"] == ()
