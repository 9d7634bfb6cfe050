"""Fuzzing every entry point that takes user data (hypothesis).

Transaction logs with odd but legitimate content (unicode and very long ids, ids as
Python objects, categoricals or pandas strings; amounts as text, Decimal, int or at
1e-300 / 1e300; dates tz-aware, in several zones, as ISO text with offsets, as ``date``
objects; duplicated and shuffled rows) must be summarised with every customer accounted
for: in the summary, or in the cleaning report with a reason (set equality). Logs with
one corruption (NaN / inf / negative / boolean / complex / text amount, missing or
mixed-type id, tz-aware/naive mix, unreadable or out-of-range date) must raise the
package's :class:`~bayesclv.errors.DataValidationError` naming the column and the rows.

The same logs written to CSV (UTF-8, UTF-8 with BOM, latin-1, cp1252) and Parquet give
the same summary as the DataFrame. ``RFMData.from_frame`` gets the same treatment, and
``export`` gets hostile text (formula prefixes, control characters, unicode).

tests/test_data_properties.py covers the summary arithmetic on clean logs; this file
covers the types, encodings and values around it.
"""

from __future__ import annotations

import csv
import datetime as dt
import os
from decimal import Decimal

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from bayesclv.data import RFMData, rfm_summary, validate_transactions
from bayesclv.errors import BayesCLVError, DataValidationError
from bayesclv.summary import export, read_metadata

pytestmark = pytest.mark.filterwarnings("ignore:Could not infer format", "ignore::UserWarning")

CI = os.environ.get("CI", "").lower() == "true"
SETTINGS = settings(
    max_examples=40 if CI else 300,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    derandomize=CI,
)
FEW = settings(SETTINGS, max_examples=12 if CI else 100)
KW = {"customer_col": "cid", "date_col": "ts", "amount_col": "value"}
START = pd.Timestamp("2023-03-01")
# local times that a clock change skips or repeats: shifted, as a real clock shows them
DST = {"nonexistent": "shift_forward", "ambiguous": True}
ZONES = ["UTC", "Asia/Tokyo", "America/New_York", "Europe/Paris", "Australia/Adelaide"]

ID_STYLES = ["int", "int_object", "big_int", "unicode", "long", "category", "pd_string", "float"]
DATE_STYLES = ["naive", "tz_one", "tz_objects", "iso_text", "iso_offsets", "date_objects", "dt64_s"]
AMOUNT_STYLES = ["float", "int", "text", "decimal", "object_mix", "tiny", "huge"]
CORRUPTIONS = {  # corruption -> the column its error must name
    "nan_amount": "value",
    "inf_amount": "value",
    "negative_amount": "value",
    "bool_amount": "value",
    "complex_amount": "value",
    "text_amount": "value",
    "missing_id": "cid",
    "mixed_ids": "cid",
    "tz_naive_mix": "ts",
    "bad_date": "ts",
    "year_1500": "ts",
}


# --------------------------------------------------------------------------- strategies
def _ids(draw, style: str, n: int) -> list:
    base = list(range(n))
    if style in ("int", "int_object", "category"):
        return [7 * c + 3 for c in base]
    if style == "big_int":
        return [-(2**62) + 12_345 * c for c in base]
    if style == "float":
        return [c + 0.5 for c in base]
    if style == "long":
        return ["x" * draw(st.integers(100, 5_000)) + str(c) for c in base]
    # unicode (any category but surrogates), kept distinct; 'id-' avoids text that a CSV
    # reader would take for a missing value ('NA') or a number ('7')
    names = draw(st.lists(st.text(min_size=1, max_size=12), min_size=n, max_size=n, unique=True))
    return [f"id-{s}" for s in names]


def _dates(draw, style: str, offsets_days: list[float]) -> pd.Series:
    naive = pd.Series([START + pd.Timedelta(days=d) for d in offsets_days])
    if style == "naive":
        return naive
    if style == "dt64_s":
        return naive.astype("datetime64[s]")
    if style == "tz_one":
        return naive.dt.tz_localize(draw(st.sampled_from(ZONES)), **DST)
    if style == "tz_objects":  # each row in its own zone: an object column
        zones = draw(st.lists(st.sampled_from(ZONES), min_size=len(naive), max_size=len(naive)))
        return pd.Series(
            [ts.tz_localize(z, **DST) for ts, z in zip(naive, zones, strict=True)], dtype=object
        )
    if style == "iso_text":
        return naive.dt.strftime("%Y-%m-%dT%H:%M:%S").astype(object)
    if style == "iso_offsets":
        hours = draw(st.lists(st.integers(-11, 13), min_size=len(naive), max_size=len(naive)))
        return pd.Series(
            [f"{ts:%Y-%m-%dT%H:%M:%S}{h:+03d}:00" for ts, h in zip(naive, hours, strict=True)],
            dtype=object,
        )
    return pd.Series([ts.date() for ts in naive], dtype=object)  # date_objects


def _amounts(draw, style: str, n: int) -> pd.Series:
    cents = draw(st.lists(st.integers(1, 10**7), min_size=n, max_size=n))
    if style == "int":
        return pd.Series(cents, dtype=np.int64)
    if style == "text":
        return pd.Series([f"{c / 100:.2f}" for c in cents], dtype=object)
    if style == "decimal":
        return pd.Series([Decimal(c) / 100 for c in cents], dtype=object)
    if style == "object_mix":
        return pd.Series([[c, c / 100, str(c), Decimal(c)][c % 4] for c in cents], dtype=object)
    if style == "tiny":
        return pd.Series([c * 1e-307 for c in cents])  # down to 1e-307, subnormal sums
    if style == "huge":
        return pd.Series([c * 1e293 for c in cents])  # up to 1e300
    return pd.Series([c / 100 for c in cents])


@st.composite
def odd_logs(draw, corruption=None):
    """(frame, ids) with one row per transaction; ids as given, in a list."""
    n = draw(st.integers(1, 6))
    id_style = draw(st.sampled_from(ID_STYLES))
    ids = _ids(draw, id_style, n)
    rows_per = draw(st.lists(st.integers(1, 4), min_size=n, max_size=n))
    cust = [ids[i] for i, k in enumerate(rows_per) for _ in range(k)]
    days = draw(
        st.lists(st.floats(0, 400, allow_nan=False), min_size=len(cust), max_size=len(cust))
    )
    df = pd.DataFrame(
        {
            "cid": pd.Series(cust, dtype=object),
            "ts": _dates(draw, draw(st.sampled_from(DATE_STYLES)), days),
            "value": _amounts(draw, draw(st.sampled_from(AMOUNT_STYLES)), len(cust)),
        }
    )
    if id_style == "int":
        df["cid"] = df["cid"].astype(np.int64)
    elif id_style == "float":
        df["cid"] = df["cid"].astype(np.float64)
    elif id_style == "category":
        df["cid"] = pd.Categorical(df["cid"])
    elif id_style == "pd_string":
        df["cid"] = df["cid"].astype(str).astype("string")
    # exact duplicates of some rows, then any order
    dup = draw(st.lists(st.integers(0, len(df) - 1), max_size=3))
    df = pd.concat([df, df.iloc[dup]], ignore_index=True)
    df = df.iloc[draw(st.permutations(range(len(df))))].reset_index(drop=True)
    if corruption is not None:
        df = _corrupt(draw, df, corruption)
    return df


def _corrupt(draw, df: pd.DataFrame, kind: str) -> pd.DataFrame:
    df = df.copy()
    row = draw(st.integers(0, len(df) - 1))
    if kind in ("nan_amount", "inf_amount", "negative_amount"):
        values = df["value"].astype(object)
        values.iloc[row] = {"nan_amount": np.nan, "inf_amount": np.inf, "negative_amount": -12.5}[
            kind
        ]
        df["value"] = pd.to_numeric(values) if draw(st.booleans()) else values
    elif kind in ("bool_amount", "complex_amount", "text_amount"):
        values = df["value"].astype(object)
        values.iloc[row] = {
            "bool_amount": True,
            "complex_amount": 3 + 1j,
            "text_amount": "12,50 EUR",
        }[kind]
        df["value"] = values
    elif kind == "missing_id":
        ids = df["cid"].astype(object)
        ids.iloc[row] = draw(st.sampled_from([None, np.nan]))
        df["cid"] = ids
    elif kind == "mixed_ids":
        df = pd.concat([df, df.iloc[[row]]], ignore_index=True)  # a mix needs two rows
        ids = df["cid"].astype(object)
        first = ids.iloc[0]
        ids.iloc[-1] = 424242 if isinstance(first, str) else f"{first}"
        df["cid"] = ids
    elif kind == "tz_naive_mix":
        df = pd.concat([df, df.iloc[[row]]], ignore_index=True)
        ts = pd.to_datetime(df["ts"], utc=True, format="ISO8601").astype(object)
        ts.iloc[-1] = ts.iloc[-1].tz_localize(None)
        df["ts"] = ts
    elif kind == "bad_date":
        ts = df["ts"].astype(str).astype(object)
        ts.iloc[row] = draw(st.sampled_from(["2024-02-30", "yesterday", "31/31/2024", ""]))
        df["ts"] = ts
    elif kind == "year_1500":
        ts = df["ts"].astype(str).astype(object)
        ts.iloc[row] = "1500-06-01"
        df["ts"] = ts
    return df


def _plain(values) -> set:
    return {v.item() if isinstance(v, np.generic) else v for v in list(values)}


def _accounted(rfm: RFMData) -> tuple[set, set]:
    report = rfm.meta["cleaning_report"]
    reported = [c for ids in report.customers_removed.values() for c in ids]
    reported += [c for ids in report.excluded_from_summary.values() for c in ids]
    return _plain(rfm.customer_id), _plain(reported)


# --------------------------------------------------------------------------- DataFrames
@SETTINGS
@given(
    df=odd_logs(),
    negatives=st.sampled_from(["error", "drop"]),
    duplicates=st.sampled_from(["keep", "drop"]),
    zeros=st.sampled_from(["keep", "drop"]),
)
def test_odd_but_valid_logs_account_for_every_customer(df, negatives, duplicates, zeros):
    rfm = rfm_summary(
        df, **KW, negative_amounts=negatives, duplicates=duplicates, zero_amounts=zeros
    )
    summarised, reported = _accounted(rfm)
    assert len(summarised) == rfm.n_customers  # each customer once
    assert not summarised & reported
    assert summarised | reported == _plain(df["cid"])
    report = rfm.meta["cleaning_report"]
    assert report.rows_in == len(df)
    for arr in (rfm.frequency, rfm.recency, rfm.T, rfm.monetary_value):
        assert np.all(np.isfinite(arr))
    assert np.all(rfm.monetary_value >= 0) and np.all(rfm.recency <= rfm.T + 1e-9)


@SETTINGS
@given(data=st.data(), kind=st.sampled_from(sorted(CORRUPTIONS)))
def test_one_corruption_gives_the_package_error_naming_column_and_rows(data, kind):
    df = data.draw(odd_logs(corruption=kind))
    with pytest.raises(DataValidationError) as info:
        rfm_summary(df, **KW)
    assert isinstance(info.value, BayesCLVError) and isinstance(info.value, ValueError)
    message = str(info.value)
    assert f"'{CORRUPTIONS[kind]}'" in message, message
    assert "row" in message, message


@SETTINGS
@given(df=odd_logs())
def test_dropping_negative_amounts_reports_the_customers_who_had_only_those(df):
    df = df.copy()
    df["value"] = pd.to_numeric(df["value"].astype(object)).astype(np.float64)
    flip = df.index[::2]
    df.loc[flip, "value"] = -df.loc[flip, "value"]
    assume((df["value"] > 0).any())
    rfm = rfm_summary(df, **KW, negative_amounts="drop")
    summarised, reported = _accounted(rfm)
    assert summarised | reported == _plain(df["cid"])
    only_negative = _plain(df["cid"]) - _plain(df.loc[df["value"] > 0, "cid"])
    removed = rfm.meta["cleaning_report"].customers_removed
    assert _plain(removed.get("negative_amount", ())) == only_negative


# --------------------------------------------------------------------------- files
ENCODINGS = ["utf-8", "utf-8-sig", "latin-1", "cp1252"]


@FEW
@given(df=odd_logs(), encoding=st.sampled_from(ENCODINGS), data=st.data())
def test_csv_in_any_encoding_and_parquet_give_the_same_summary_as_the_frame(
    tmp_path_factory, df, encoding, data
):
    # A file holds text: ids of an object column are written as text and read back as
    # text (or as integers when all are plain integers, like the int styles).
    df = df.assign(cid=df["cid"].astype(str) if df["cid"].dtype != np.int64 else df["cid"])
    df = df.assign(value=pd.to_numeric(df["value"].astype(object)).astype(np.float64))
    if isinstance(df["ts"].dtype, pd.DatetimeTZDtype) or df["ts"].dtype == object:
        df = df.assign(ts=pd.to_datetime(df["ts"], utc=True, format="ISO8601").dt.tz_localize(None))
    try:
        df["cid"].astype(str).str.encode(encoding)
    except UnicodeEncodeError:
        assume(False)  # this encoding cannot hold these ids (e.g. emoji in latin-1)
    ref = rfm_summary(df, **KW)
    folder = tmp_path_factory.mktemp("logs")
    csv_path = folder / "log.csv"
    # floats written with repr: the file holds the exact values; CRLF line ends so that
    # an id holding a lone "\r" is quoted (with "\n" pandas leaves it bare and every
    # reader, ours included, sees a broken row: a clear error, but not this test's point)
    df.to_csv(csv_path, index=False, encoding=encoding, lineterminator="\r\n")
    pq_path = folder / "log.parquet"
    df.to_parquet(pq_path)
    for path, enc in ((csv_path, encoding), (pq_path, "utf-8")):
        got = rfm_summary(path, **KW, encoding=enc)
        # ids that are all plain integers come back as integers (documented), so the
        # order may differ (3 < 10 but "10" < "3"): compare customer by customer
        a, b = (r.to_frame().rename(index=str).sort_index() for r in (got, ref))
        assert list(a.index) == list(b.index)
        for name in ("frequency", "recency", "T"):
            np.testing.assert_array_equal(a[name], b[name], err_msg=name)
        np.testing.assert_allclose(a["monetary_value"], b["monetary_value"], rtol=1e-12)
    if encoding in ("latin-1", "cp1252") and not df["cid"].astype(str).str.isascii().all():
        with pytest.raises(DataValidationError, match="encoding"):
            rfm_summary(csv_path, **KW)  # read as UTF-8: an error saying what to pass


def test_csv_row_with_an_extra_field_is_an_error_not_a_silently_shorter_amount(tmp_path):
    path = tmp_path / "log.csv"
    # an unquoted decimal comma: "1,50" would otherwise be read as an amount of 1
    path.write_text("cid,ts,value\na,2024-01-01,1,50\na,2024-01-05,2.00\n", encoding="utf-8")
    with pytest.raises(DataValidationError, match="number of fields"):
        rfm_summary(path, **KW)


def test_amounts_whose_sum_overflows_name_the_customer():
    df = pd.DataFrame(
        {
            "cid": ["big", "big", "big", "ok"],
            "ts": pd.to_datetime(["2024-01-01", "2024-01-02", "2024-01-03", "2024-01-03"]),
            "value": [1.0, 1.5e308, 1.5e308, 2.0],
        }
    )
    with pytest.raises(DataValidationError, match=r"'value'.*'big'"):
        rfm_summary(df, **KW)


# --------------------------------------------------------------------------- RFMData
NUMERIC_CORRUPTIONS = {
    "text": "twelve",
    "nan": np.nan,
    "inf": np.inf,
    "negative": -3.0,
    "huge": 1e30,
    "fraction": 0.5,
    "bool": True,
    "complex": 1 + 2j,
}


@SETTINGS
@given(
    n=st.integers(1, 8),
    id_style=st.sampled_from(["int", "unicode", "long"]),
    column=st.sampled_from(["frequency", "recency", "T", "monetary_value", "cid"]),
    corruption=st.sampled_from([None, *NUMERIC_CORRUPTIONS, "missing"]),
    data=st.data(),
)
def test_rfm_from_frame_accepts_valid_tables_and_refuses_bad_values(
    n, id_style, column, corruption, data
):
    ids = _ids(data.draw, id_style, n)
    x = np.array(data.draw(st.lists(st.integers(0, 50), min_size=n, max_size=n)))
    T = np.array(data.draw(st.lists(st.floats(0.5, 200.0), min_size=n, max_size=n)))
    u = np.array(data.draw(st.lists(st.floats(0.0, 1.0), min_size=n, max_size=n)))
    df = pd.DataFrame(
        {
            "cid": pd.Series(ids, dtype=object),
            "frequency": x,
            "recency": np.where(x > 0, T * u, 0.0),
            "T": T,
            "monetary_value": np.where(x > 0, 1 + 100 * u, 0.0),
        }
    )
    if corruption is None:
        rfm = RFMData.from_frame(df, customer_id="cid")
        assert _plain(rfm.customer_id) == _plain(df["cid"]) and rfm.n_customers == n
        return
    # every (column, corruption) pair drawn here is invalid whatever the row
    if column == "cid":
        # a missing id is always wrong; a bool, complex or (among integers) text id is
        # wrong as a mix of types, which needs a second customer
        mix = corruption in ("bool", "complex") or (corruption == "text" and id_style == "int")
        assume(corruption in ("missing", "nan") or (mix and n > 1))
    else:
        assume(corruption not in ("huge", "fraction") or column == "frequency")
    row = data.draw(st.integers(0, n - 1))
    bad = df[column].astype(object)
    bad.iloc[row] = None if corruption == "missing" else NUMERIC_CORRUPTIONS[corruption]
    df[column] = bad
    with pytest.raises(DataValidationError) as info:
        RFMData.from_frame(df, customer_id="cid")
    message = str(info.value)
    name = "customer" if column == "cid" else column
    assert name in message, message


# --------------------------------------------------------------------------- export
HOSTILE = st.one_of(
    st.text(max_size=20),
    st.builds(
        lambda p, s: p + s,
        st.sampled_from(["=", "+", "-", "@", "\t", "\r", " ="]),
        st.sampled_from(["1+1", 'HYPERLINK("http://x")', "cmd|' /C calc'!A0", "SUM(A1)"]),
    ),
)


@FEW
@given(
    ids=st.lists(HOSTILE, min_size=1, max_size=8, unique=True),
    segment=HOSTILE,
    fmt=st.sampled_from(["csv", "xlsx", "parquet"]),
)
def test_export_never_writes_a_formula_and_keeps_every_row(tmp_path_factory, ids, segment, fmt):
    table = pd.DataFrame(
        {"customer_id": ids, "segment": segment, "clv_mean": np.arange(len(ids), dtype=float) - 1.0}
    )
    path = tmp_path_factory.mktemp("export") / f"clv.{fmt}"
    illegal = any(any(ord(ch) < 32 and ch not in "\t\n\r" for ch in s) for s in [*ids, segment])
    if fmt == "xlsx" and illegal:
        with pytest.raises(DataValidationError, match="control characters"):
            export(table, path, metadata={"run": "fuzz"})
        assert not path.exists()
        return
    export(table, path, metadata={"run": "fuzz", "note": "=not a formula"})
    assert read_metadata(path)["run"] == "fuzz"
    formula = ("=", "+", "-", "@", "\t", "\r")
    if fmt == "csv":
        with open(path, newline="", encoding="utf-8") as fh:
            rows = list(csv.reader(fh))
        cells = [c for row in rows[1:] for c in row[:2]]
        assert not any(c.startswith(formula) for c in cells)
        back = [
            c[1:] if c.startswith("'") and c[1:].startswith(formula) else c
            for c in (row[0] for row in rows[1:])
        ]
        assert back == ids
    elif fmt == "xlsx":
        import openpyxl

        wb = openpyxl.load_workbook(path)
        for ws in wb.worksheets:
            for row in ws.iter_rows():
                for cell in row:
                    assert cell.data_type != "f", (ws.title, cell.coordinate, cell.value)
        assert ws.max_row >= 2
        assert wb["customers"].max_row == len(ids) + 1
    else:
        back = pd.read_parquet(path)
        assert back["customer_id"].tolist() == ids  # typed data: written as is


def test_validate_transactions_report_is_consistent_for_a_simple_odd_log():
    """A worked example of the properties above, readable without hypothesis."""
    df = pd.DataFrame(
        {
            "cid": pd.Series(["Zoë", "Zoë", "李", "\U0001f600" * 300, "Zoë"], dtype=object),
            "ts": pd.Series(
                [
                    dt.datetime(2024, 1, 1, 23, tzinfo=dt.UTC),
                    pd.Timestamp("2024-01-05 08:00", tz="Asia/Tokyo"),
                    pd.Timestamp("2024-01-03", tz="America/New_York"),
                    pd.Timestamp("2024-01-04", tz="UTC"),
                    pd.Timestamp("2024-01-05 08:00", tz="Asia/Tokyo"),
                ],
                dtype=object,
            ),
            "value": pd.Series([Decimal("10.50"), "1e-300", 3, 1e300, Decimal("2")], dtype=object),
        }
    )
    clean, report = validate_transactions(df, **KW)
    assert report.rows_in == 5 and report.duplicates_found == 0
    assert any("UTC" in note for note in report.notes)
    rfm = rfm_summary(clean)
    assert _plain(rfm.customer_id) == {"Zoë", "李", "\U0001f600" * 300}
    zoe = rfm.to_frame().loc["Zoë"]
    assert zoe["frequency"] == 1 and zoe["monetary_value"] == pytest.approx(1e-300 + 2.0)
