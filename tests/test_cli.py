"""The command line: help, clear errors with exit status 2, a fit flagged as bad (3),
and a fit -> score -> export round trip in which every customer appears once."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from bayesclv.cli import EXIT_BAD_FIT, EXIT_BAD_INPUT, main
from bayesclv.simulate import BGNBDParams, GammaGammaParams, simulate_transactions


@pytest.fixture(scope="module")
def orders_csv(tmp_path_factory):
    log = simulate_transactions(
        {"web": BGNBDParams(0.5, 5.0, 0.8, 2.5), "shop": BGNBDParams(0.4, 6.0, 0.9, 3.0)},
        {"web": 300, "shop": 150},
        T=(20.0, 40.0),
        spend=GammaGammaParams(6.0, 4.0, 15.0),
        random_seed=4,
    )
    path = tmp_path_factory.mktemp("cli") / "orders.csv"
    log.rename(columns={"customer_id": "user", "date": "ts", "amount": "revenue"}).to_csv(
        path, index=False
    )
    return path, log.attrs["calibration_end"]


def test_help_shows_examples(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--help"])
    assert exc.value.code == 0
    assert "bayesclv demo" in capsys.readouterr().out


def test_missing_column_exits_2_with_a_message(orders_csv, tmp_path, capsys):
    path, _ = orders_csv
    code = main(["fit", str(path), "--customer-col", "nope", "--date-col", "ts",
                 "--amount-col", "revenue", "--out", str(tmp_path / "fit")])
    assert code == EXIT_BAD_INPUT
    assert "nope" in capsys.readouterr().err


def test_fit_score_export_round_trip(orders_csv, tmp_path):
    path, cal_end = orders_csv
    fit_dir = tmp_path / "fit"
    code = main(["fit", str(path), "--customer-col", "user", "--date-col", "ts",
                 "--amount-col", "revenue", "--segment-col", "segment",
                 "--calibration-end", str(pd.Timestamp(cal_end).date()),
                 "--sampler", "map", "--out", str(fit_dir), "--no-progress"])
    assert code == 0
    # MAP is an approximation: its verdict must never read as a passed convergence check.
    diag = json.loads((fit_dir / "diagnostics.json").read_text())
    assert diag["purchase"]["verdict"] != "ok"
    out = tmp_path / "clv.csv"
    code = main(["score", str(fit_dir), "--horizon", "26", "--discount-rate", "0.1",
                 "--discount-period", "52", "--method", "expected", "--out", str(out)])
    assert code == 0
    table = pd.read_csv(out)
    customers = pd.read_parquet(fit_dir / "customers.parquet")
    assert len(table) == len(customers)
    assert table["customer_id"].is_unique
    assert (table["clv_lower"] <= table["clv_upper"]).all()
    meta = json.loads(out.with_name("clv.metadata.json").read_text())
    assert meta["horizon"] == 26 and meta["time_unit"] == "week"
    assert (tmp_path / "clv_segments.csv").exists()


def test_a_fit_that_fails_its_checks_exits_3(orders_csv, tmp_path):
    path, cal_end = orders_csv
    with pytest.raises(SystemExit) as exc:
        main(["fit", str(path), "--customer-col", "user", "--date-col", "ts",
              "--amount-col", "revenue", "--calibration-end", str(pd.Timestamp(cal_end).date()),
              "--draws", "20", "--tune", "5", "--chains", "2", "--out", str(tmp_path / "f"),
              "--no-progress"])
    assert exc.value.code == EXIT_BAD_FIT


def test_laplace_with_rounded_times_scores_every_customer(orders_csv, tmp_path):
    path, cal_end = orders_csv
    fit_dir = tmp_path / "fit"
    code = main(["fit", str(path), "--customer-col", "user", "--date-col", "ts",
                 "--amount-col", "revenue", "--segment-col", "segment",
                 "--calibration-end", str(pd.Timestamp(cal_end).date()),
                 "--sampler", "laplace", "--round-times", "1", "--draws", "100",
                 "--out", str(fit_dir), "--no-progress"])
    assert code == 0
    diag = json.loads((fit_dir / "diagnostics.json").read_text())
    assert diag["purchase"]["verdict"] != "ok"  # an approximation is never "ok"
    customers = pd.read_parquet(fit_dir / "customers.parquet")
    assert (customers["T"] % 1 == 0).all() and (customers["recency"] % 1 == 0).all()
    out = tmp_path / "clv.csv"
    code = main(["score", str(fit_dir), "--horizon", "26", "--out", str(out)])
    assert code == 0
    table = pd.read_csv(out)
    assert len(table) == len(customers) and table["customer_id"].is_unique
    assert (table["clv_lower"] <= table["clv_upper"]).all()


def test_nutpie_jax_backend_from_the_command_line(orders_csv, tmp_path):
    pytest.importorskip("jax")
    pytest.importorskip("nutpie")
    from bayesclv.fit import load_fit

    path, cal_end = orders_csv
    fit_dir = tmp_path / "fit"
    code = main(["fit", str(path), "--customer-col", "user", "--date-col", "ts",
                 "--amount-col", "revenue", "--calibration-end", str(pd.Timestamp(cal_end).date()),
                 "--sampler", "nutpie", "--nutpie-backend", "jax", "--draws", "100",
                 "--tune", "100", "--chains", "2", "--out", str(fit_dir), "--no-progress",
                 "--allow-bad-fit"])  # fmt: skip
    assert code == 0
    assert json.loads((fit_dir / "settings.json").read_text())["nutpie_backend"] == "jax"
    for role in ("purchase", "spend"):
        idata = load_fit(fit_dir / f"{role}_fit.nc")
        assert idata.attrs["nutpie_backend"] == "jax"
        assert idata.posterior.sizes["draw"] == 100
