"""Exports that cannot be silently wrong (issue 19): umask permissions, no overwrite
without ``overwrite=True``, sidecars that never clobber a foreign file, ids as text,
Excel's row limit checked before any work, strict JSON metadata, formula prefixes
caught after NFKC normalisation, and a full disk or read-only folder reported cleanly
with the previous file untouched."""

from __future__ import annotations

import csv
import json
import os
import resource
import signal
import tempfile

import numpy as np
import openpyxl
import pandas as pd
import pytest

import bayesclv.summary
from bayesclv import export as export_module
from bayesclv.errors import OutputError
from bayesclv.export import XLSX_MAX_ROWS, check_export_target, export, read_metadata

FORMATS = ["csv", "parquet", "xlsx"]
META = {"model": "bgnbd", "horizon": 52}


def table(n=3):
    return pd.DataFrame(
        {
            "customer_id": [f"c{i}" for i in range(n)],
            "segment": "web",
            "clv_mean": np.arange(n, dtype=float),
        }
    )


def written(folder):
    return sorted(p.name for p in folder.iterdir())


class umask:
    def __init__(self, mask):
        self.mask = mask

    def __enter__(self):
        self.old = os.umask(self.mask)

    def __exit__(self, *exc):
        os.umask(self.old)


class file_size_limit:
    """RLIMIT_FSIZE: the kernel refuses writes beyond ``limit`` bytes (EFBIG) as a full
    disk refuses them (ENOSPC): a real failing write, not a mock."""

    def __init__(self, limit):
        self.limit = limit

    def __enter__(self):
        self.handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        self.old = resource.getrlimit(resource.RLIMIT_FSIZE)
        resource.setrlimit(resource.RLIMIT_FSIZE, (self.limit, self.old[1]))

    def __exit__(self, *exc):
        resource.setrlimit(resource.RLIMIT_FSIZE, self.old)
        signal.signal(signal.SIGXFSZ, self.handler)


def test_summary_re_exports_the_export_module():
    assert bayesclv.summary.export is export_module.export
    assert bayesclv.summary.read_metadata is export_module.read_metadata
    assert bayesclv.summary.atomic_write is export_module.atomic_write


# --------------------------------------------------------------------------- permissions
@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize(("mask", "mode"), [(0o022, 0o644), (0o027, 0o640), (0o077, 0o600)])
def test_new_files_get_the_mode_the_umask_gives(tmp_path, fmt, mask, mode):
    with umask(mask):
        path = export(table(), tmp_path / f"out.{fmt}", metadata=META)
    for name in written(tmp_path):  # the CSV's sidecar too
        assert (tmp_path / name).stat().st_mode & 0o777 == mode, name
    assert path.exists()


def test_a_replaced_file_keeps_its_mode(tmp_path):
    path = export(table(), tmp_path / "out.csv", metadata=META)
    path.chmod(0o640)
    with umask(0o022):
        export(table(5), path, metadata=META, overwrite=True)
    assert path.stat().st_mode & 0o777 == 0o640
    assert len(pd.read_csv(path)) == 5


# --------------------------------------------------------------------------- overwriting
@pytest.mark.parametrize("fmt", FORMATS)
def test_an_existing_file_is_replaced_only_with_overwrite(tmp_path, fmt):
    path = export(table(3), tmp_path / f"out.{fmt}", metadata={"run": "old"})
    before = {n: (tmp_path / n).read_bytes() for n in written(tmp_path)}
    with pytest.raises(OutputError, match=r"exists.*overwrite=True \(--force"):
        export(table(4), path, metadata={"run": "new"})
    assert {n: (tmp_path / n).read_bytes() for n in written(tmp_path)} == before
    export(table(4), path, metadata={"run": "new"}, overwrite=True)
    assert read_metadata(path)["run"] == "new"
    assert len(written(tmp_path)) == len(before)  # no temporary file left


def test_a_csv_is_not_written_when_only_its_sidecar_exists(tmp_path):
    sidecar = tmp_path / "out.metadata.json"
    sidecar.write_text('{"mine": true}')
    with pytest.raises(OutputError, match="out.metadata.json exists"):
        export(table(), tmp_path / "out.csv", metadata=META)
    assert written(tmp_path) == ["out.metadata.json"]
    assert json.loads(sidecar.read_text()) == {"mine": True}


@pytest.mark.parametrize(
    "foreign",
    ['{"mine": true}', '{\n  "a": 1\n}', "not json at all", "[1, 2]", ""],
    ids=["json", "json-indented", "text", "list", "empty"],
)
def test_a_foreign_sidecar_is_never_clobbered_even_with_overwrite(tmp_path, foreign):
    """Before, a CSV's sidecar overwrote any file of that name (issue 19)."""
    path = export(table(), tmp_path / "out.csv", metadata=META)
    sidecar = tmp_path / "out.metadata.json"
    sidecar.write_text(foreign)  # someone's own file, next to an old export
    data = path.read_bytes()
    with pytest.raises(OutputError, match="not written by bayesclv"):
        export(table(7), path, metadata=META, overwrite=True)
    assert sidecar.read_text() == foreign and path.read_bytes() == data


def test_our_own_sidecar_is_replaced_with_overwrite(tmp_path):
    path = export(table(), tmp_path / "out.csv", metadata={"run": 1, "nested": {"x": [1, 2]}})
    export(table(), path, metadata={"run": 2}, overwrite=True)
    assert read_metadata(path) == {"run": 2}


def test_check_export_target_names_every_problem_before_any_work(tmp_path):
    with pytest.raises(OutputError, match="does not exist.*mkdir -p"):
        check_export_target(tmp_path / "missing" / "out.csv")
    with pytest.raises(OutputError, match="format"):
        check_export_target(tmp_path / "out.txt")
    (tmp_path / "folder.csv").mkdir()
    with pytest.raises(OutputError, match="is a folder"):
        check_export_target(tmp_path / "folder.csv", overwrite=True)
    assert check_export_target(tmp_path / "out.xlsx", n_rows=XLSX_MAX_ROWS) == "xlsx"
    with pytest.raises(OutputError, match=r"1,048,576 rows do not fit.*\.csv or \.parquet"):
        check_export_target(tmp_path / "out.xlsx", n_rows=XLSX_MAX_ROWS + 1)
    assert written(tmp_path) == ["folder.csv"]  # the probe file is gone


def test_a_read_only_folder_is_an_output_error(tmp_path):
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o555)
    try:
        try:  # root ignores permission bits: use a folder the kernel refuses instead
            fd, probe = tempfile.mkstemp(dir=folder)
            os.close(fd)
            os.unlink(probe)
            folder = next(
                (p for p in map(__import__("pathlib").Path, ["/sys", "/proc"]) if _refuses(p)),
                None,
            )
            if folder is None:
                pytest.skip("no folder here refuses new files")
        except OSError:
            pass
        with pytest.raises(OutputError, match="read-only or no permission"):
            export(table(), folder / "out.csv", metadata=META)
    finally:
        (tmp_path / "ro").chmod(0o755)


def _refuses(folder):
    try:
        fd, probe = tempfile.mkstemp(dir=folder)
    except OSError:
        return True
    os.close(fd)
    os.unlink(probe)
    return False


# --------------------------------------------------------------------------- failures
class _Boom:
    """A cell that fails when written: a crash in the middle of a write."""

    def __str__(self):
        raise OSError("disk full")

    __repr__ = __str__


@pytest.mark.parametrize("fmt", FORMATS)
def test_a_write_failing_half_way_leaves_the_previous_file(tmp_path, fmt):
    path = export(table(), tmp_path / f"out.{fmt}", metadata={"run": "old"})
    before = {n: (tmp_path / n).read_bytes() for n in written(tmp_path)}
    big = pd.DataFrame({"customer_id": [f"c{i}" for i in range(5000)], "v": 1.0})
    big["bad"] = pd.Series([None] * 5000, dtype=object)
    big.loc[4000, "bad"] = _Boom()
    with pytest.raises(Exception):  # noqa: B017 - whatever the writer raises
        export(big, path, metadata={"run": "new"}, overwrite=True)
    assert {n: (tmp_path / n).read_bytes() for n in written(tmp_path)} == before


@pytest.mark.parametrize("fmt", FORMATS)
def test_a_full_disk_is_an_output_error_and_leaves_the_previous_file(tmp_path, fmt):
    path = export(table(), tmp_path / f"out.{fmt}", metadata={"run": "old"})
    before = {n: (tmp_path / n).read_bytes() for n in written(tmp_path)}
    big = table(20_000)
    with file_size_limit(50_000), pytest.raises(OutputError, match="could not write.*Free"):
        export(big, path, metadata={"run": "new"}, overwrite=True)
    assert {n: (tmp_path / n).read_bytes() for n in written(tmp_path)} == before


# --------------------------------------------------------------------------- ids
BIG_IDS = [1234567890123456789, 2**63 - 1, -(2**63) + 1, 2**53 + 1, 7]


@pytest.mark.parametrize("fmt", FORMATS)
def test_ids_beyond_2_53_are_written_exactly_as_text(tmp_path, fmt):
    """Excel stores numbers as doubles: 1234567890123456789 became 1234567890123457024."""
    t = pd.DataFrame({"customer_id": np.array(BIG_IDS, dtype=np.int64), "clv_mean": 1.0})
    path = export(t, tmp_path / f"out.{fmt}", metadata=META)
    expected = [str(i) for i in BIG_IDS]
    if fmt == "xlsx":  # text; a negative one starts with '-' and is escaped like a formula
        expected = [str(i) if i >= 0 else "'" + str(i) for i in BIG_IDS]
        ws = openpyxl.load_workbook(path)["customers"]
        cells = [ws.cell(row=r, column=1) for r in range(2, len(BIG_IDS) + 2)]
        assert [c.data_type for c in cells] == ["s"] * len(BIG_IDS)
        assert [c.value for c in cells] == expected
    elif fmt == "parquet":
        assert pd.read_parquet(path)["customer_id"].tolist() == expected
    else:
        with open(path, newline="") as fh:
            assert [row[0] for row in list(csv.reader(fh))[1:]] == expected


def test_other_integers_beyond_2_53_go_to_excel_as_text_and_small_ones_as_numbers(tmp_path):
    t = pd.DataFrame({"customer_id": ["a", "b"], "order_no": [2**60 + 1, 3], "n": [1, 2]})
    ws = openpyxl.load_workbook(export(t, tmp_path / "o.xlsx", metadata=META))["customers"]
    assert [ws.cell(row=r, column=2).value for r in (2, 3)] == [str(2**60 + 1), "3"]
    assert [ws.cell(row=r, column=3).value for r in (2, 3)] == [1, 2]


def test_xlsx_beyond_its_row_limit_is_refused_before_any_work(tmp_path):
    """Before, 1,100,000 rows failed deep in openpyxl (IndexError: At least one sheet
    must be visible) after minutes of work."""
    big = pd.DataFrame({"customer_id": np.arange(1_100_000), "clv_mean": 0.0})
    with pytest.raises(OutputError, match=r"1,100,000 rows do not fit in an \.xlsx"):
        export(big, tmp_path / "clv.xlsx", metadata=META)
    assert written(tmp_path) == []


# --------------------------------------------------------------------------- metadata
def _strict(text):
    def refuse(name):
        raise ValueError(f"not strict JSON: {name}")

    return json.loads(text, parse_constant=refuse)


@pytest.mark.parametrize("fmt", FORMATS)
def test_metadata_is_strict_json_with_a_note_for_non_finite_values(tmp_path, fmt):
    meta = {
        "ok": 1.5,
        "nan": float("nan"),
        "inf": np.float64(np.inf),
        "nested": {"x": [1.0, -np.inf], "arr": np.array([np.nan, 2.0])},
    }
    path = export(table(), tmp_path / f"out.{fmt}", metadata=meta)
    if fmt == "csv":
        raw = _strict((tmp_path / "out.metadata.json").read_text())
    elif fmt == "parquet":
        import pyarrow.parquet as pq

        raw = _strict(pq.read_schema(path).metadata[b"bayesclv"])
    else:
        rows = pd.read_excel(path, sheet_name="metadata", dtype=str, keep_default_na=False)
        raw = {k: _strict(v) for k, v in zip(rows["key"], rows["value"], strict=True)}
    assert raw["ok"] == 1.5 and raw["nan"] is None and raw["inf"] is None
    assert raw["nested"] == {"x": [1.0, None], "arr": [None, 2.0]}
    assert raw["nonfinite_as_null"] == {
        "nan": "NaN",
        "inf": "Infinity",
        "nested.x[1]": "-Infinity",
        "nested.arr[0]": "NaN",
    }
    assert read_metadata(path) == raw


def test_xlsx_metadata_round_trips_negative_numbers_and_formula_like_text(tmp_path):
    meta = {"discount_rate": -0.5, "note": "=not a formula", "n": 3, "none": None}
    path = export(table(), tmp_path / "out.xlsx", metadata=meta)
    ws = openpyxl.load_workbook(path)["metadata"]
    assert all(c.data_type != "f" for row in ws.iter_rows() for c in row)
    assert read_metadata(path) == meta


# --------------------------------------------------------------------------- formulas
LOOKALIKES = ["＝1+1", "﹦cmd|' /C calc'!A0", "⁼SUM(A1)", "＋1", "－2", "＠SUM(A1)", "﹢1", "﹣1"]


@pytest.mark.parametrize("fmt", ["csv", "xlsx"])
def test_formula_prefixes_are_caught_after_nfkc_normalisation(tmp_path, fmt):
    """'＝' (fullwidth) and its NFKC kin are '=' to a spreadsheet that normalises input;
    before, only the ASCII prefixes were escaped (issue 19)."""
    ids = [*LOOKALIKES, "=plain", "１２３", "ok", "ｏｋ"]
    t = pd.DataFrame({"customer_id": ids, "clv_mean": 1.0})
    path = export(t, tmp_path / f"out.{fmt}", metadata=META)
    if fmt == "csv":
        with open(path, newline="", encoding="utf-8") as fh:
            cells = [row[0] for row in list(csv.reader(fh))[1:]]
    else:
        ws = openpyxl.load_workbook(path)["customers"]
        cells = [ws.cell(row=r, column=1).value for r in range(2, len(ids) + 2)]
        assert all(ws.cell(row=r, column=1).data_type == "s" for r in range(2, len(ids) + 2))
    n = len(LOOKALIKES) + 1
    assert cells[:n] == ["'" + v for v in ids[:n]]
    assert cells[n:] == ids[n:]  # fullwidth digits and letters are not formulas


def test_parquet_is_typed_data_and_keeps_lookalikes_as_they_are(tmp_path):
    t = pd.DataFrame({"customer_id": LOOKALIKES, "clv_mean": 1.0})
    path = export(t, tmp_path / "out.parquet", metadata=META)
    assert pd.read_parquet(path)["customer_id"].tolist() == LOOKALIKES


# --------------------------------------------------------------------------- workbook
# Issue 20: one analyst workbook (customers, segments and an "about" sheet in words),
# with number formats and currency, a frozen header and filters; metadata on a hidden
# sheet, the same JSON as export() writes.
def _workbook(tmp_path, **kw):
    from bayesclv.export import currency_format, export_workbook

    customers = pd.DataFrame({
        "customer_id": [12345678901234567890, 2, 3],
        "segment": ["=web", "shop", "shop"],
        "clv_mean": [10.5, 2.25, 1234.5],
        "p_alive": [0.5, 0.25, 1.0],
    })
    segments = pd.DataFrame({"segment": ["shop", "web", "portfolio"],
                             "total_mean": [3.0, 10.5, 13.5]})
    about = pd.DataFrame({"item": ["As of", "Interval"],
                          "value": ["2024-09-30: the end of calibration",
                                    "94% credible interval of expected CLV"]})
    path = export_workbook(
        {"customers": customers, "segments": segments}, tmp_path / "clv.xlsx",
        metadata={"as_of": "2024-09-30", "horizon": 52, "nan": float("nan")}, about=about,
        number_formats={"customers": {"clv_mean": currency_format("EUR"), "p_alive": "0.0%"},
                        "segments": {"total_mean": currency_format("EUR")}},
        **kw,
    )
    return path, customers


def test_workbook_sheets_formats_frozen_header_filters_and_hidden_metadata(tmp_path):
    path, customers = _workbook(tmp_path)
    wb = openpyxl.load_workbook(path)
    assert wb.sheetnames == ["customers", "segments", "about", "metadata"]
    assert [wb[s].sheet_state for s in wb.sheetnames] == ["visible"] * 3 + ["hidden"]
    ws = wb["customers"]
    assert ws.freeze_panes == "B2" and ws.auto_filter.ref == "A1:D4"
    assert [c.value for c in ws[1]] == list(customers.columns)
    assert all(c.font.bold for c in ws[1])
    assert ws["C2"].number_format == '#,##0.00 "EUR"' and ws["C4"].value == 1234.5
    assert ws["D2"].number_format == "0.0%"
    assert ws["A2"].value == "12345678901234567890" and ws["A2"].data_type == "s"
    assert ws["B2"].value == "'=web"  # formula-like text escaped
    assert wb["segments"]["B2"].number_format == '#,##0.00 "EUR"'
    assert wb["segments"].auto_filter.ref == "A1:B4"
    about = {r[0]: r[1] for r in wb["about"].iter_rows(min_row=2, values_only=True)}
    assert about["As of"].startswith("2024-09-30")
    assert wb["about"]["B2"].alignment.wrap_text
    meta = read_metadata(path)
    assert meta["as_of"] == "2024-09-30" and meta["horizon"] == 52
    assert meta["nan"] is None and meta["nonfinite_as_null"] == {"nan": "NaN"}


def test_workbook_overwrite_rules_and_reserved_sheet_names(tmp_path):
    from bayesclv.export import export_workbook

    path, _ = _workbook(tmp_path)
    before = path.read_bytes()
    with pytest.raises(OutputError, match="exists"):
        _workbook(tmp_path)
    assert path.read_bytes() == before
    _workbook(tmp_path, overwrite=True)
    with pytest.raises(OutputError, match="about"):
        export_workbook({"about": table()}, tmp_path / "x.xlsx", metadata={})
    assert not (tmp_path / "x.xlsx").exists()


def test_currency_formats_put_a_code_after_and_a_symbol_before():
    from bayesclv.export import currency_format

    assert currency_format("EUR") == '#,##0.00 "EUR"'
    assert currency_format("$") == '"$"#,##0.00'
    assert currency_format("€", decimals=0) == '"€"#,##0'
    assert currency_format(None) == "#,##0.00"
