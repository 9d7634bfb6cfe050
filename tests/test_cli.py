"""The command line: help, clear errors with exit status 2, a fit flagged as bad (3),
and a fit -> score -> export round trip in which every customer appears once.

Every failure path (issue 19) exits 2 with exactly one line on stderr naming the fix:
bad option values, ambiguous dates (``--date-format``), a missing, read-only or full
target, outputs or a fit folder that exist (``--force``); an internal error exits 1 with
one line. None prints a traceback, and none leaves a file behind."""

from __future__ import annotations

import json

import numpy as np
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


# --------------------------------------------------------------------------- failure paths
# Issue 19: every failure of the command line exits 2 with one line that says what to
# do (naming the flag that fixes it), never a traceback.
def _error_line(err):
    lines = [line for line in err.splitlines() if not line.startswith("[bayesclv ")]
    assert len(lines) == 1, err
    assert lines[0].startswith("bayesclv: error: "), err
    assert "Traceback" not in err
    return lines[0]


@pytest.fixture(scope="module")
def day_first(orders_csv, tmp_path_factory):
    """The orders with dates written day first (dd/mm/YYYY), keeping only days <= 12, so
    that every date also reads month first; and ids '-0' and '01' beside '0' and '1'."""
    path, _ = orders_csv
    log = pd.read_csv(path, parse_dates=["ts"])
    log = log[log["ts"].dt.day <= 12].copy()
    assert {0, 1} <= set(log["user"])
    others = sorted(set(log["user"]) - {0, 1})[:2]
    log["user"] = log["user"].astype(str).replace({str(others[0]): "-0", str(others[1]): "01"})
    log["ts"] = log["ts"].dt.strftime("%d/%m/%Y")
    out = tmp_path_factory.mktemp("dayfirst") / "orders_dayfirst.csv"
    log.to_csv(out, index=False)
    return out


def _fit_args(csv_path, out, *extra):
    return ["fit", str(csv_path), "--customer-col", "user", "--date-col", "ts",
            "--amount-col", "revenue", "--segment-col", "segment", "--out", str(out),
            "--no-progress", *extra]  # fmt: skip


@pytest.fixture(scope="module")
def fitted(day_first, tmp_path_factory):
    """One real MAP fit for the failure-path tests, read with --date-format."""
    out = tmp_path_factory.mktemp("fitted") / "fit"
    assert main(_fit_args(day_first, out, "--sampler", "map", "--date-format", "%d/%m/%Y")) == 0
    return out


def test_ambiguous_dates_exit_2_naming_date_format_and_the_flag_fixes_it(
    day_first, fitted, tmp_path, capsys
):
    """Before, day-first dates with every day <= 12 were read month first without a word."""
    assert main(_fit_args(day_first, tmp_path / "f", "--sampler", "map")) == EXIT_BAD_INPUT
    line = _error_line(capsys.readouterr().err)
    assert "ambiguous" in line and "--date-format '%d/%m/%Y'" in line
    assert not (tmp_path / "f" / "purchase_fit.nc").exists()
    # with the flag: the fit read the dates day first, not month first
    from bayesclv.data import rfm_summary

    kw = dict(customer_col="user", date_col="ts", amount_col="revenue", segment_col="segment")
    day = rfm_summary(day_first, date_format="%d/%m/%Y", **kw).to_frame()
    month = rfm_summary(day_first, date_format="%m/%d/%Y", **kw).to_frame()
    customers = pd.read_parquet(fitted / "customers.parquet").set_index("customer_id")
    customers = customers.loc[day.index]
    np.testing.assert_array_equal(customers["T"].to_numpy(), day["T"].to_numpy())
    assert not np.array_equal(customers["T"].to_numpy(), month.loc[day.index, "T"].to_numpy())


def test_ids_0_and_minus_0_stay_two_customers_through_fit_and_score(day_first, fitted, tmp_path):
    """Before, '0' and '-0' (and '01' and '1') became one integer: one customer lost."""
    customers = pd.read_parquet(fitted / "customers.parquet")
    ids = set(customers["customer_id"])
    assert {"0", "-0", "1", "01"} <= ids
    assert len(ids) == len(customers) == pd.read_csv(day_first, dtype=str)["user"].nunique()
    out = tmp_path / "clv.csv"
    assert main(["score", str(fitted), "--method", "expected", "--out", str(out)]) == 0
    table = pd.read_csv(out, dtype={"customer_id": str}, keep_default_na=False)
    assert table["customer_id"].is_unique and "'-0" in set(table["customer_id"])
    # text starting with '-' gets the documented anti-formula apostrophe in a CSV
    back = {c[1:] if c.startswith("'-") else c for c in table["customer_id"]}
    assert back == ids


BAD_OPTIONS = [
    ("score", "--horizon", "-1"),
    ("score", "--horizon", "0"),
    ("score", "--horizon", "inf"),
    ("score", "--prob", "1.5"),
    ("score", "--prob", "0"),
    ("score", "--prob", "abc"),
    ("score", "--discount-rate", "-0.1"),
    ("score", "--discount-period", "0"),
    ("score", "--margin", "-1"),
    ("score", "--seed", "-1"),
    ("score", "--interval", "nope"),
    ("fit", "--draws", "0"),
    ("fit", "--chains", "0"),
    ("fit", "--tune", "-5"),
    ("fit", "--target-accept", "1"),
    ("fit", "--round-times", "-1"),
    ("fit", "--model", "nope"),
]


@pytest.mark.parametrize(("command", "flag", "value"), BAD_OPTIONS)
def test_bad_options_exit_2_with_one_line_naming_the_flag(
    fitted, day_first, tmp_path, capsys, command, flag, value
):
    """Before, --horizon -1 and --prob 1.5 gave a ValueError traceback after loading."""
    if command == "score":
        argv = ["score", str(fitted), "--out", str(tmp_path / "clv.csv"), flag, value]
    else:
        argv = _fit_args(day_first, tmp_path / "f", flag, value)
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == EXIT_BAD_INPUT
    line = _error_line(capsys.readouterr().err)
    assert f"argument {flag}" in line and "--help" in line
    assert list(tmp_path.iterdir()) == []


def test_score_into_a_missing_folder_fails_before_loading_or_scoring(fitted, tmp_path, capsys):
    """Before, the error came after scoring every customer."""
    code = main(["score", str(fitted), "--out", str(tmp_path / "nope" / "clv.csv")])
    assert code == EXIT_BAD_INPUT
    err = capsys.readouterr().err
    line = _error_line(err)
    assert "does not exist" in line and "mkdir -p" in line
    assert "scoring" not in err  # the log line score_and_export writes first


@pytest.mark.parametrize("suffix", ["csv", "parquet", "xlsx"])
def test_score_replaces_outputs_only_with_force(fitted, tmp_path, capsys, suffix):
    out = tmp_path / f"clv.{suffix}"
    argv = ["score", str(fitted), "--method", "expected", "--out", str(out)]
    assert main(argv) == 0
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    assert main([*argv, "--horizon", "13"]) == EXIT_BAD_INPUT
    line = _error_line(capsys.readouterr().err)
    assert "exists" in line and "--force" in line
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before
    assert main([*argv, "--horizon", "13", "--force"]) == 0
    from bayesclv.summary import read_metadata

    assert read_metadata(out)["horizon"] == 13
    assert read_metadata(tmp_path / f"clv_segments.{suffix}")["horizon"] == 13


def test_fit_into_a_folder_holding_a_fit_needs_force(fitted, day_first, capsys):
    before = (fitted / "manifest.json").read_bytes()
    code = main(_fit_args(day_first, fitted, "--sampler", "map", "--date-format", "%d/%m/%Y"))
    assert code == EXIT_BAD_INPUT
    line = _error_line(capsys.readouterr().err)
    assert "already holds a fit" in line and "--force" in line
    assert (fitted / "manifest.json").read_bytes() == before


def test_other_score_mistakes_exit_2_with_one_line(fitted, tmp_path, capsys):
    cases = [
        (["score", str(fitted), "--out", str(tmp_path / "clv.txt")], "--out"),
        (["score", str(tmp_path / "nofit"), "--out", str(tmp_path / "a.csv")], "bayesclv fit"),
        (["score", str(fitted / "settings.json"), "--out", str(tmp_path / "a.csv")], "folder"),
    ]
    for argv, words in cases:
        assert main(argv) == EXIT_BAD_INPUT
        assert words in _error_line(capsys.readouterr().err)
    assert list(tmp_path.iterdir()) == []


def _refused_folder(tmp_path):
    """A folder the kernel refuses new files in: mode 0555, or, for root (which ignores
    mode bits), /sys; None if there is none."""
    import os
    import tempfile
    from pathlib import Path

    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o555)
    for candidate in (folder, Path("/sys")):
        try:
            fd, probe = tempfile.mkstemp(dir=candidate)
        except OSError:
            return candidate
        os.close(fd)
        os.unlink(probe)
    return None


def test_a_read_only_target_exits_2_before_any_work(fitted, day_first, tmp_path, capsys):
    """Before, a read-only target gave a raw OSError (or h5py RuntimeError) traceback."""
    folder = _refused_folder(tmp_path)
    if folder is None:
        pytest.skip("no folder here refuses new files")
    try:
        assert main(["score", str(fitted), "--out", str(folder / "clv.csv")]) == EXIT_BAD_INPUT
        err = capsys.readouterr().err
        assert "read-only" in _error_line(err) and "scoring" not in err
        assert main(_fit_args(day_first, folder / "fit", "--sampler", "map")) == EXIT_BAD_INPUT
        err = capsys.readouterr().err
        line = _error_line(err)
        assert "read-only" in line and "--out" in line and "fitting" not in err
    finally:
        (tmp_path / "ro").chmod(0o755)


def test_a_full_disk_while_writing_scores_exits_2_and_leaves_nothing(fitted, tmp_path, capsys):
    """RLIMIT_FSIZE makes the kernel refuse writes past 20 kB (EFBIG), as a full disk
    refuses them (ENOSPC): a real failing write."""
    import resource
    import signal

    out = tmp_path / "clv.csv"
    handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    old = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (20_000, old[1]))
    try:
        code = main(["score", str(fitted), "--method", "expected", "--out", str(out)])
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, old)
        signal.signal(signal.SIGXFSZ, handler)
    assert code == EXIT_BAD_INPUT
    line = _error_line(capsys.readouterr().err)
    assert "could not write" in line and "space" in line
    assert list(tmp_path.iterdir()) == []


def test_an_internal_error_is_one_line_and_exit_1(fitted, tmp_path, capsys, monkeypatch):
    """A bug (here: an exception planted in the folder reader) still prints one line;
    BAYESCLV_DEBUG=1 shows the traceback."""
    import bayesclv.cli as cli

    def broken(fit_dir):
        raise RuntimeError("planted bug\nsecond line")

    monkeypatch.setattr(cli, "_load_fit_dir", broken)
    argv = ["score", str(fitted), "--out", str(tmp_path / "clv.csv")]
    assert main(argv) == cli.EXIT_INTERNAL
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "internal error (RuntimeError: planted bug)" in err
    assert "BAYESCLV_DEBUG=1" in err and "Traceback" not in err
    monkeypatch.setenv("BAYESCLV_DEBUG", "1")
    with pytest.raises(RuntimeError, match="planted bug"):
        main(argv)
