"""A new user's first session, as a script (issue 20, "Must show").

A shop exports its orders from a German spreadsheet: ';' between fields, decimal
commas with '.' between thousands, dates day first (dd/mm/YYYY), German column names
and a sales channel. The user runs the command line as a separate process, as from a
shell, reads each error line and adds the flag it names; fits; tries the default
``score`` on the quick MAP fit (refused: one draw cannot simulate a future), scores with
``--method expected`` into one workbook; opens the workbook with openpyxl and checks its
sheets, number formats and the "about" sheet; and makes the report with the log that
runs past the calibration end.

No step may print a traceback or PyTensor's BLAS warning; every failure is one line.
"""

from __future__ import annotations

import subprocess
import sys

import openpyxl
import pandas as pd
import pytest

from bayesclv.simulate import BGNBDParams, GammaGammaParams, simulate_transactions


def bayesclv(*args, cwd):
    res = subprocess.run([sys.executable, "-m", "bayesclv.cli", *args], cwd=cwd,
                         capture_output=True, text=True, timeout=900)
    assert "Traceback" not in res.stderr, res.stderr
    assert "BLAS" not in res.stderr, res.stderr
    return res


def error_line(res):
    lines = [line for line in res.stderr.splitlines()
             if not line.startswith(("[bayesclv ", "  ", "Cleaning report"))]
    assert not any(line.startswith("bayesclv: warning") for line in lines), res.stderr
    assert res.returncode == 2 and len(lines) == 1, res.stderr
    assert lines[0].startswith("bayesclv: error: ")
    return lines[0]


def german(value: float) -> str:
    return f"{value:,.2f}".replace(",", "_").replace(".", ",").replace("_", ".")


@pytest.fixture(scope="module")
def shop(tmp_path_factory):
    log = simulate_transactions(
        {"Online": BGNBDParams(0.5, 5.0, 0.8, 2.5), "Laden": BGNBDParams(0.4, 6.0, 0.9, 3.0)},
        {"Online": 220, "Laden": 130}, T=(20.0, 40.0),
        spend=GammaGammaParams(6.0, 4.0, 600.0), holdout_length=13, random_seed=21,
    )
    cal = (log.attrs["calibration_end"].normalize() - pd.Timedelta(days=1)).date()
    orders = pd.DataFrame({
        "Kundennummer": log["customer_id"].map(lambda i: f"K{i:05d}"),
        "Bestelldatum": log["date"].dt.strftime("%d/%m/%Y"),
        "Umsatz": log["amount"].map(german),
        "Kanal": log["segment"],
    })
    assert orders["Umsatz"].str.contains(r"\.\d{3},").any()  # thousands separators too
    folder = tmp_path_factory.mktemp("shop")
    orders.to_csv(folder / "bestellungen.csv", sep=";", index=False)
    return folder, str(cal), log


def test_a_new_user_from_a_german_csv_to_the_workbook_and_the_report(shop):
    folder, cal, log = shop
    fit = ["fit", "bestellungen.csv", "--customer-col", "Kundennummer", "--date-col",
           "Bestelldatum", "--amount-col", "Umsatz", "--segment-col", "Kanal",
           "--calibration-end", cal, "--out", "fit", "--no-progress"]
    # 1. each error names the flag that fixes it, written as a flag
    line = error_line(bayesclv(*fit, cwd=folder))
    assert "--sep ';'" in line
    fit += ["--sep", ";"]
    res = bayesclv(*fit, cwd=folder)
    line = error_line(res)
    assert "--decimal ','" in line and "decimal=" not in line
    # the first date (day 25) told pandas the format: said once, as a flag
    assert "guessed from the first date; pass --date-format '%d/%m/%Y'" in res.stderr
    assert "dayfirst" not in res.stderr
    fit += ["--decimal", ",", "--date-format", "%d/%m/%Y"]
    # 2. the quick fit: one family, the posterior mode (MAP) only
    res = bayesclv(*fit, "--model", "bgnbd", "--sampler", "map", cwd=folder)
    assert res.returncode == 0, res.stderr
    # 3. the default score simulates futures: refused on a one-draw fit, with the fix
    line = error_line(bayesclv("score", "fit", "--out", "clv.xlsx", cwd=folder))
    assert "--method expected" in line and "one-draw" in line
    assert not (folder / "clv.xlsx").exists()
    res = bayesclv("score", "fit", "--method", "expected", "--currency", "EUR",
                   "--margin", "0.3", "--out", "clv.xlsx", cwd=folder)
    assert res.returncode == 0, res.stderr
    assert f"scores as of {cal}" in res.stdout
    assert "WARNING" in res.stdout  # a MAP fit: the intervals have zero width
    # 4. the workbook
    wb = openpyxl.load_workbook(folder / "clv.xlsx")
    assert [s for s in wb.sheetnames if wb[s].sheet_state == "visible"] == [
        "customers", "segments", "about"]
    ws = wb["customers"]
    header = [c.value for c in ws[1]]
    col = {name: i + 1 for i, name in enumerate(header)}
    assert ws.freeze_panes == "B2"
    assert ws.auto_filter.ref == f"A1:{ws.cell(1, len(header)).column_letter}{ws.max_row}"
    n_customers = log["customer_id"][log["date"] < pd.Timestamp(cal)
                                     + pd.Timedelta(days=1)].nunique()
    assert ws.max_row - 1 == n_customers
    assert ws.cell(2, col["customer_id"]).value.startswith("K")
    assert ws.cell(2, col["clv_mean"]).number_format == '#,##0.00 "EUR"'
    assert ws.cell(2, col["p_alive"]).number_format == "0.0%"
    assert ws.cell(2, col["p_top_10pct"]).number_format == "0.0%"
    assert ws.cell(2, col["interval_meaning"]).value == (
        "94% equal-tailed credible interval of expected CLV")
    assert str(ws.cell(2, col["as_of"]).value) == cal
    seg = wb["segments"]
    names = [seg.cell(r, 1).value for r in range(2, seg.max_row + 1)]
    assert names == ["Laden", "Online", "portfolio"]
    seg_col = {c.value: c.column for c in seg[1]}
    assert seg.cell(2, seg_col["total_mean"]).number_format == '#,##0.00 "EUR"'
    assert "total CLV of the segment" in seg.cell(2, seg_col["interval_meaning"]).value
    about = {r[0]: r[1] for r in wb["about"].iter_rows(min_row=2, values_only=True)}
    assert about["As of"].startswith(cal)
    assert about["Source file"].endswith("bestellungen.csv")
    mapping = about["Column mapping"]
    for text in ("'Kundennummer'", "'Bestelldatum' (written %d/%m/%Y)", "decimal mark ','",
                 "'Kanal'", "separated by ';'"):
        assert text in mapping
    assert about["Purchase model"].startswith("BG/NBD")
    assert about["Horizon"].startswith("52 weeks (1 year)")
    assert "per 52 weeks (1 year)" in about["Discounting"]
    assert about["Margin"].startswith("30%")
    assert about["Currency"].startswith("EUR")
    assert about["Interval"].startswith("94% equal-tailed credible interval of expected CLV")
    assert "not assessed" in about["Convergence"]
    for item in ("Priors", "Seeds", "Created", "Software", "Pooling"):
        assert about[item]
    from bayesclv.export import read_metadata

    meta = read_metadata(folder / "clv.xlsx")  # the hidden machine-readable copy
    assert meta["as_of"] == cal and meta["currency"] == "EUR"
    assert meta["column_mapping"]["amount"] == "Umsatz" and meta["column_mapping"]["sep"] == ";"
    assert meta["about"]["As of"] == about["As of"]
    # 5. the report, with the log that runs 13 weeks past the calibration end
    res = bayesclv("report", "fit", "--log", "bestellungen.csv", "--out", "bericht",
                   "--currency", "EUR", cwd=folder)
    assert res.returncode == 0, res.stderr
    assert "holdout: 13" in res.stdout
    for name in ("report.html", "report.png", "clv_by_segment.png", "pit_histogram.png"):
        assert (folder / "bericht" / name).stat().st_size > 10_000
