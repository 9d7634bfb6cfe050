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
                 "--calibration-end", str(pd.Timestamp(cal_end).date()), "--model", "bgnbd",
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
              "--model", "bgnbd",
              "--draws", "20", "--tune", "5", "--chains", "2", "--out", str(tmp_path / "f"),
              "--no-progress"])
    assert exc.value.code == EXIT_BAD_FIT


def test_laplace_with_rounded_times_scores_every_customer(orders_csv, tmp_path):
    path, cal_end = orders_csv
    fit_dir = tmp_path / "fit"
    code = main(["fit", str(path), "--customer-col", "user", "--date-col", "ts",
                 "--amount-col", "revenue", "--segment-col", "segment",
                 "--calibration-end", str(pd.Timestamp(cal_end).date()),
                 "--model", "bgnbd", "--sampler", "laplace", "--round-times", "1",
                 "--draws", "100",
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
                 "--model", "bgnbd", "--sampler", "nutpie", "--nutpie-backend", "jax",
                 "--draws", "100",
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
            "--model", "bgnbd", "--no-progress", *extra]  # fmt: skip


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
    if suffix == "xlsx":  # one workbook: the segments are a sheet of it
        assert sorted(p.name for p in tmp_path.iterdir()) == ["clv.xlsx"]
        assert pd.read_excel(out, sheet_name="segments")["segment"].iloc[-1] == "portfolio"
    else:
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
    import bayesclv.workflow as workflow

    def broken(fit_dir):
        raise RuntimeError("planted bug\nsecond line")

    monkeypatch.setattr(workflow, "load_fit_dir", broken)
    argv = ["score", str(fitted), "--out", str(tmp_path / "clv.csv")]
    assert main(argv) == cli.EXIT_INTERNAL
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "internal error (RuntimeError: planted bug)" in err
    assert "BAYESCLV_DEBUG=1" in err and "Traceback" not in err
    monkeypatch.setenv("BAYESCLV_DEBUG", "1")
    with pytest.raises(RuntimeError, match="planted bug"):
        main(argv)


# --------------------------------------------------------------------------- issue 20
# What a new user meets: flags for everything the errors ask for, European CSVs and
# Excel input, defaults that follow the time unit, a clear refusal of --method simulate
# on a one-draw fit, scores that say what date they are as of, the automatic family
# choice, --version, help for every flag, and no PyTensor BLAS warning.
def _parse(argv):
    from bayesclv.cli import build_parser

    return build_parser().parse_args(argv)


def test_version_prints_the_package_version(capsys):
    from bayesclv import __version__

    with pytest.raises(SystemExit) as exc:
        main(["--version"])
    assert exc.value.code == 0
    assert capsys.readouterr().out.strip() == f"bayesclv {__version__}"


def test_every_flag_has_help_text_and_shows_its_default(capsys):
    import argparse

    from bayesclv.cli import build_parser

    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    assert set(sub.choices) == {"demo", "fit", "score", "report"}
    for name, p in sub.choices.items():
        for action in p._actions:
            assert action.help, f"{name} {action.option_strings or action.dest} has no help"
        formatter = p._get_formatter()
        for action in p._actions:
            if action.option_strings and action.default not in (None, False,
                                                                argparse.SUPPRESS):
                assert "%(default)" in formatter._get_help_string(action), (name, action.dest)
    fit_help = " ".join(sub.choices["fit"].format_help().split())
    for flag in ("--after-end", "--negative-amounts", "--zero-amounts", "--duplicates",
                 "--sep", "--decimal", "--date-format", "--candidates", "--model"):
        assert flag in fit_help
    assert "(default: auto)" in fit_help and "(default: error)" in fit_help
    assert "BLAS" in parser.format_help()  # the note on the silenced warning


def test_the_model_choices_come_from_the_registry():
    from bayesclv.families import purchase_families

    args = _parse(["fit", "x.csv", "--customer-col", "a", "--date-col", "b", "--amount-col",
                   "c", "--out", "o"])
    assert args.model == "auto"
    for name in purchase_families():
        assert _parse(["fit", "x.csv", "--customer-col", "a", "--date-col", "b",
                       "--amount-col", "c", "--out", "o", "--model", name]).model == name


def test_library_advice_is_rewritten_as_flags():
    from bayesclv.cli import in_flags

    assert in_flags("pass date_format='%d/%m/%Y' (--date-format '%d/%m/%Y' on the command "
                    "line) or fix") == "pass --date-format '%d/%m/%Y' or fix"
    assert in_flags("or after_end='drop' to remove them") == "or --after-end 'drop' to remove them"
    assert in_flags("Pass overwrite=True (--force on the command line) to replace it") == (
        "Pass --force to replace it")
    assert in_flags("encoding='latin-1' (or --encoding latin-1 on the command line)") == (
        "--encoding 'latin-1'")
    assert in_flags("nothing to rewrite: x=1") == "nothing to rewrite: x=1"


@pytest.fixture(scope="module")
def euro_csv(orders_csv, tmp_path_factory):
    """The orders as a European spreadsheet writes them: ';' between fields, amounts x 100
    with a decimal comma and '.' between thousands, dates day first."""
    path, _ = orders_csv
    log = pd.read_csv(path, parse_dates=["ts"])
    amounts = (log["revenue"] * 100).map(
        lambda v: f"{v:,.2f}".replace(",", "_").replace(".", ",").replace("_", ".")
    )
    assert amounts.str.contains(r"\.").any() and amounts.str.contains(",").all()
    euro = log.assign(ts=log["ts"].dt.strftime("%d/%m/%Y"), revenue=amounts)
    out = tmp_path_factory.mktemp("euro") / "orders_euro.csv"
    euro.to_csv(out, sep=";", index=False)
    return out


def _read_argv(path, *extra):
    return ["fit", str(path), "--customer-col", "user", "--date-col", "ts", "--amount-col",
            "revenue", "--segment-col", "segment", "--out", "unused", *extra]


def test_sep_decimal_and_xlsx_input_give_the_same_customers(orders_csv, euro_csv, tmp_path):
    from bayesclv.cli import _read_options
    from bayesclv.workflow import read_log

    path, _ = orders_csv
    plain = read_log(_read_options(_parse(_read_argv(path, "--time-unit", "day")))).to_frame()
    euro = read_log(_read_options(_parse(_read_argv(
        euro_csv, "--sep", ";", "--decimal", ",", "--date-format", "%d/%m/%Y",
        "--time-unit", "day")))).to_frame()
    assert list(euro.index) == list(plain.index)
    for col in ("frequency", "recency", "T"):
        np.testing.assert_array_equal(euro[col], plain[col])
    np.testing.assert_allclose(euro["monetary_value"], 100 * plain["monetary_value"], atol=0.006)
    xlsx = tmp_path / "orders.xlsx"
    pd.read_csv(path).to_excel(xlsx, index=False)
    book = read_log(_read_options(_parse(_read_argv(xlsx, "--time-unit", "day")))).to_frame()
    assert list(book.index) == list(plain.index)
    np.testing.assert_allclose(book["monetary_value"], plain["monetary_value"])
    np.testing.assert_array_equal(book["T"], plain["T"])


def test_reading_errors_name_the_flag_that_fixes_them(euro_csv, tmp_path, capsys):
    """Before, the advice was Python (after_end='drop', a regex turning 230,30 into
    23030) and the command line had no such flags."""
    out = tmp_path / "f"
    base = ["fit", str(euro_csv), "--customer-col", "user", "--date-col", "ts",
            "--amount-col", "revenue", "--out", str(out), "--date-format", "%d/%m/%Y"]
    assert main(base) == EXIT_BAD_INPUT
    assert "--sep ';'" in _error_line(capsys.readouterr().err)
    assert main([*base, "--sep", ";"]) == EXIT_BAD_INPUT
    line = _error_line(capsys.readouterr().err)
    assert "--decimal ','" in line and "decimal=" not in line
    # a refund and a row after the observation end: each error names its flag
    log = pd.read_csv(euro_csv, sep=";", dtype=str)
    log.loc[3, "revenue"] = "-12,50"
    bad = tmp_path / "refund.csv"
    log.to_csv(bad, sep=";", index=False)
    argv = ["fit", str(bad), "--customer-col", "user", "--date-col", "ts", "--amount-col",
            "revenue", "--out", str(out), "--sep", ";", "--decimal", ",", "--date-format",
            "%d/%m/%Y"]
    assert main(argv) == EXIT_BAD_INPUT
    assert "--negative-amounts 'drop'" in _error_line(capsys.readouterr().err)
    last = pd.to_datetime(log["ts"], format="%d/%m/%Y").max()
    early = str((last - pd.Timedelta(days=10)).date())
    assert main([*argv, "--negative-amounts", "drop", "--observation-end", early]) == 2
    assert "--after-end 'drop'" in _error_line(capsys.readouterr().err)
    assert not (out / "manifest.json").exists()
    # and the flags do fix them
    from bayesclv.cli import _read_options
    from bayesclv.workflow import read_log

    rfm = read_log(_read_options(_parse([*argv, "--negative-amounts", "drop",
                                         "--observation-end", early, "--after-end", "drop"])))
    report = rfm.meta["cleaning_report"]
    assert report.negative_removed == 1 and report.after_end_removed > 0


def test_auto_with_a_map_sampler_is_refused_before_any_work(orders_csv, tmp_path, capsys):
    path, _ = orders_csv
    argv = ["fit", str(path), "--customer-col", "user", "--date-col", "ts", "--amount-col",
            "revenue", "--sampler", "map", "--out", str(tmp_path / "f")]
    assert main(argv) == EXIT_BAD_INPUT
    line = _error_line(capsys.readouterr().err)
    assert "PSIS-LOO" in line and "--model bgnbd" in line
    assert not (tmp_path / "f").exists()
    assert main([*argv, "--model", "bgnbd", "--candidates", "bgnbd"]) == EXIT_BAD_INPUT
    assert "--candidates" in _error_line(capsys.readouterr().err)


def test_simulate_on_a_map_fit_is_refused_with_the_fix(fitted, tmp_path, capsys):
    """Before, 'score' (default --method simulate) on a MAP fit simulated one future per
    customer: 73% got CLV 0 and every interval had zero width, without a word."""
    out = tmp_path / "clv.csv"
    assert main(["score", str(fitted), "--out", str(out)]) == EXIT_BAD_INPUT
    line = _error_line(capsys.readouterr().err)
    assert "one-draw" in line and "--method expected" in line
    assert list(tmp_path.iterdir()) == []


def test_scores_say_their_as_of_date_and_defaults_follow_the_time_unit(fitted, tmp_path,
                                                                       capsys):
    from bayesclv.export import read_metadata

    out = tmp_path / "clv.csv"
    assert main(["score", str(fitted), "--method", "expected", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    settings = json.loads((fitted / "settings.json").read_text())
    as_of = settings["calibration_end"]
    assert as_of and f"scores as of {as_of}" in printed
    meta = read_metadata(out)
    assert meta["as_of"] == as_of and meta["horizon"] == 52 and meta["discount_period"] == 52
    assert meta["about"]["Horizon"].startswith("52 weeks (1 year)")
    assert "per 52 weeks (1 year)" in meta["about"]["Discounting"]
    assert meta["interval"]["meaning"] == "94% equal-tailed credible interval of expected CLV"
    assert "WARNING: no uncertainty" in meta["about"]  # a MAP fit: zero-width intervals
    table = pd.read_csv(out)
    assert (table["as_of"] == as_of).all()
    assert (table["interval_meaning"] == meta["interval"]["meaning"]).all()
    segs = pd.read_csv(tmp_path / "clv_segments.csv")
    assert segs["interval_meaning"].str.contains("total CLV of the segment").all()
    from bayesclv.workflow import ScoreOptions, describe_period

    month = ScoreOptions().resolved("month")
    assert (month.horizon, month.discount_period) == (12, 12)
    assert describe_period(12, "month") == "12 months (1 year)"
    assert describe_period(365, "day") == "365 days (1 year)"
    assert describe_period(26, "week") == "26 weeks (0.5 years)"


def test_a_log_without_amounts_fits_purchase_models_only(orders_csv, tmp_path, capsys):
    """--amount-col none: no spend model; the scores are expected purchases, in months."""
    from bayesclv.export import read_metadata

    path, _ = orders_csv
    fit_dir = tmp_path / "fit"
    assert main(["fit", str(path), "--customer-col", "user", "--date-col", "ts",
                 "--amount-col", "none", "--time-unit", "month", "--model", "bgnbd",
                 "--sampler", "map", "--pooling", "complete", "--out", str(fit_dir),
                 "--no-progress"]) == 0  # fmt: skip
    assert not (fit_dir / "spend_fit.nc").exists()
    manifest = json.loads((fit_dir / "manifest.json").read_text())
    assert manifest["models"] == {"purchase": "bgnbd", "spend": None}
    capsys.readouterr()
    out = tmp_path / "purchases.csv"
    assert main(["score", str(fit_dir), "--method", "simulate", "--out", str(out)]) == 2
    assert "--method expected" in _error_line(capsys.readouterr().err)
    assert main(["score", str(fit_dir), "--method", "expected", "--out", str(out)]) == 0
    table = pd.read_csv(out)
    meta = read_metadata(out)
    assert meta["horizon"] == 12 and meta["time_unit"] == "month"
    assert meta["value"] == "expected purchases"
    assert meta["about"]["Horizon"].startswith("12 months (1 year)")
    assert {"purchases_mean", "purchases_lower", "purchases_upper", "p_alive"} <= set(table)
    assert not any(c.startswith("clv_") for c in table.columns)
    assert (table["purchases_mean"] > 0).all()


def test_p_top_is_the_share_of_draws_in_the_top_with_rank_intervals():
    from bayesclv.workflow import top_share_columns

    rng = np.random.default_rng(0)
    n_draws, n = 2000, 50
    draws = rng.normal(size=(n_draws, n))
    draws[:, 0] += 100.0  # always first
    draws[:, 1] -= 100.0  # always last
    res = top_share_columns(draws, 0.1, 0.9, random_seed=1)
    assert res["n_top"] == 5
    assert res["p_top"][0] == 1.0 and res["p_top"][1] == 0.0
    assert res["rank_lower"][0] == res["rank_upper"][0] == 1
    assert res["rank_lower"][1] == res["rank_upper"][1] == n
    # brute force for the others: rank within each draw, count the top 5
    ranks = (-draws).argsort(axis=1).argsort(axis=1) + 1
    np.testing.assert_allclose(res["p_top"], (ranks <= 5).mean(axis=0))
    assert np.isclose(res["p_top"].sum(), 5.0)  # five customers in the top of every draw
    np.testing.assert_allclose(res["p_top_mcse"],
                               np.sqrt(res["p_top"] * (1 - res["p_top"]) / n_draws))
    # ties (e.g. many simulated CLVs of 0) are broken at random, not by position
    tied = np.zeros((4000, 20))
    p = top_share_columns(tied, 0.25, 0.9, random_seed=2)["p_top"]
    np.testing.assert_allclose(p, 0.25, atol=0.04)


def test_the_blas_warning_is_silenced_in_the_cli(monkeypatch):
    import warnings

    import bayesclv.cli as cli

    monkeypatch.delenv("BAYESCLV_DEBUG", raising=False)
    monkeypatch.setenv("PYTHONWARNINGS", "")
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("default")
        with pytest.raises(SystemExit):
            main(["--version"])
        warnings.warn(f"{cli._BLAS} installation. Operations ...", UserWarning, stacklevel=1)
        warnings.warn("another warning", UserWarning, stacklevel=1)
    assert [str(w.message) for w in seen] == ["another warning"]
    import os

    assert f"ignore:{cli._BLAS}:UserWarning" in os.environ["PYTHONWARNINGS"]  # for workers


# --------------------------------------------------------------------------- --model auto
@pytest.fixture(scope="module")
def auto_fit(orders_csv, tmp_path_factory):
    """A real automatic choice: BG/NBD and MBG/NBD, PyMC 2 x 100 draws (the checks fail
    at this size, hence --allow-bad-fit), the last 8 weeks kept as holdout."""
    path, cal_end = orders_csv
    early = str((pd.Timestamp(cal_end) - pd.Timedelta(weeks=8)).date())
    out = tmp_path_factory.mktemp("auto") / "fit"
    code = main(["fit", str(path), "--customer-col", "user", "--date-col", "ts",
                 "--amount-col", "revenue", "--segment-col", "segment", "--calibration-end",
                 early, "--candidates", "bgnbd,mbgnbd", "--pooling", "complete",
                 "--sampler", "pymc", "--draws", "100", "--tune", "100", "--chains", "2",
                 "--allow-bad-fit", "--no-progress", "--out", str(out)])  # fmt: skip
    assert code == 0
    return out, path


def test_auto_saves_every_candidate_and_the_comparison_in_the_sealed_folder(auto_fit):
    from bayesclv.saved import open_folder
    from bayesclv.workflow import load_fit_dir

    fit_dir, _ = auto_fit
    manifest = open_folder(fit_dir)
    assert manifest["models"]["purchase"] == "auto"
    assert sorted(manifest["models"]["candidates"]) == ["bgnbd", "mbgnbd"]
    assert {"purchase_bgnbd.nc", "purchase_mbgnbd.nc", "spend_fit.nc", "comparison.json"} <= set(
        manifest["files"])
    comparison = json.loads((fit_dir / "comparison.json").read_text())
    weights = comparison["stack"]["weights"]
    assert np.isclose(sum(weights), 1.0) and all(w >= 0 for w in weights)
    assert comparison["summary"].startswith("family choice by PSIS-LOO")
    assert comparison["best"] == comparison["table"][0]["family"]
    folder = load_fit_dir(fit_dir)
    stack = folder.purchase_params()
    assert dict(stack.weights) == dict(zip(comparison["stack"]["families"], weights,
                                           strict=True))
    # the comparison is part of the seal: an edited weight is refused
    import shutil

    copy = fit_dir.parent / "edited"
    shutil.copytree(fit_dir, copy)
    edited = json.loads((copy / "comparison.json").read_text())
    edited["stack"]["weights"] = [1.0, 0.0]
    (copy / "comparison.json").write_text(json.dumps(edited))
    assert main(["score", str(copy), "--out", str(copy / "x.csv"), "--allow-bad-fit"]) == 2


def test_score_of_an_auto_fit_uses_the_stack_and_says_which_family_won(auto_fit, tmp_path,
                                                                       capsys):
    from bayesclv.export import read_metadata

    fit_dir, _ = auto_fit
    out = tmp_path / "clv.parquet"
    argv = ["score", str(fit_dir), "--method", "expected", "--allow-bad-fit"]
    assert main([*argv, "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    comparison = json.loads((fit_dir / "comparison.json").read_text())
    assert comparison["summary"].splitlines()[0] in printed
    meta = read_metadata(out)
    assert meta["family_choice"] == comparison["summary"]
    assert meta["models"]["purchase"] == "auto"
    assert sum(meta["stacking_weights"].values()) == pytest.approx(1.0)
    stack = pd.read_parquet(out)
    one = tmp_path / "mbgnbd.parquet"
    assert main([*argv, "--model", "mbgnbd", "--out", str(one)]) == 0
    assert read_metadata(one)["models"]["families"] == ["mbgnbd"]
    single = pd.read_parquet(one)
    assert list(single["customer_id"]) == list(stack["customer_id"])
    if comparison["stack"]["weights"][comparison["stack"]["families"].index("mbgnbd")] < 1:
        assert not np.allclose(single["clv_mean"], stack["clv_mean"])
    assert main([*argv, "--model", "pareto_nbd", "--out", str(tmp_path / "p.csv")]) == 2
    assert "holds fits of" in _error_line(capsys.readouterr().err)


def test_report_of_an_auto_fit_checks_the_holdout_of_each_family(auto_fit, tmp_path, capsys):
    fit_dir, log = auto_fit
    out = tmp_path / "report"
    assert main(["report", str(fit_dir), "--log", str(log), "--out", str(out),
                 "--allow-bad-fit"]) == 0
    printed = capsys.readouterr().out
    assert "holdout: 8 weeks" in printed and "BIAS" in printed
    numbers = json.loads((out / "report.json").read_text())
    assert {r["family"] for r in numbers["holdout_by_family"]} == {"bgnbd", "mbgnbd"}
    assert numbers["family_choice"].startswith("family choice by PSIS-LOO")
    page = (out / "report.html").read_text()
    assert "Which family" in page and "data:image/png;base64," in page
    for name in ("family_comparison.png", "pit_histogram.png", "conditional_expectations.png",
                 "tracking_cumulative.png", "report.png"):
        assert (out / name).stat().st_size > 10_000, name
    # again without --force: refused, nothing replaced
    before = (out / "report.html").read_bytes()
    assert main(["report", str(fit_dir), "--log", str(log), "--out", str(out),
                 "--allow-bad-fit"]) == 2
    assert "--force" in _error_line(capsys.readouterr().err)
    assert (out / "report.html").read_bytes() == before
