"""Intervals, tidy tables and export (metadata, atomic writes, formula injection)."""

from __future__ import annotations

import csv
import json

import arviz as az
import numpy as np
import openpyxl
import pandas as pd
import pytest
import xarray as xr

from bayesclv.data import RFMData
from bayesclv.summary import (
    TABLE_COLUMNS,
    atomic_write,
    clv_intervals,
    customer_table,
    export,
    interval_arrays,
    read_metadata,
    segment_totals,
    totals_table,
)


def draws(shape=(2, 500, 4), seed=0):
    rng = np.random.default_rng(seed)
    return xr.DataArray(
        rng.lognormal(2.0, 0.8, shape),
        dims=("chain", "draw", "customer_id"),
        coords={"customer_id": [f"c{i}" for i in range(shape[-1])]},
    )


def small_rfm(n=4):
    return RFMData(
        customer_id=np.array([f"c{i}" for i in range(n)]),
        frequency=np.arange(n),
        recency=np.arange(n, dtype=float),
        T=np.full(n, 10.0),
        monetary_value=np.where(np.arange(n) > 0, 5.0, 0.0),
        segment=np.arange(n) % 2,
        segment_names=("a", "b"),
    )


# --------------------------------------------------------------------------- intervals
@pytest.mark.parametrize("prob", [0.5, 0.9, 0.94])
def test_eti_is_the_equal_tailed_quantile_pair(prob):
    da = draws()
    iv = clv_intervals(da, prob=prob, kind="eti")
    flat = da.values.reshape(-1, 4)
    np.testing.assert_allclose(iv["lower"], np.quantile(flat, (1 - prob) / 2, axis=0))
    np.testing.assert_allclose(iv["upper"], np.quantile(flat, (1 + prob) / 2, axis=0))
    np.testing.assert_allclose(iv["median"], np.median(flat, axis=0))
    np.testing.assert_allclose(iv["mean"], flat.mean(axis=0))
    inside = ((flat >= iv["lower"].values) & (flat <= iv["upper"].values)).mean(axis=0)
    assert np.all(np.abs(inside - prob) < 0.01)
    assert iv.attrs == {"interval_prob": prob, "interval_kind": "eti"}


@pytest.mark.parametrize("prob", [0.5, 0.89, 0.94])
def test_hdi_matches_arviz_and_is_narrower_than_eti_for_skewed_draws(prob):
    da = draws(seed=1)
    hdi = clv_intervals(da, prob=prob, kind="hdi")
    eti = clv_intervals(da, prob=prob, kind="eti")
    for i in range(4):
        ref = az.hdi(da.values[:, :, i].ravel(), hdi_prob=prob)
        assert hdi["lower"].values[i] == pytest.approx(ref[0])
        assert hdi["upper"].values[i] == pytest.approx(ref[1])
    width = lambda d: d["upper"].values - d["lower"].values  # noqa: E731
    assert np.all(width(hdi) < width(eti))  # lognormal: the HDI shifts toward 0
    assert np.all(hdi["lower"].values < eti["lower"].values)


@pytest.mark.parametrize("kind", ["eti", "hdi"])
def test_interval_variable_stacks_lower_and_upper_on_a_ci_bound_dim(kind):
    # arviz-stats layout: one variable with a ci_bound dim; lower/upper kept for tables
    da = draws(shape=(2, 300, 3))
    iv = clv_intervals(da, prob=0.8, kind=kind)
    assert iv["interval"].dims == ("customer_id", "ci_bound")
    assert list(iv["ci_bound"].values) == ["lower", "upper"]
    np.testing.assert_array_equal(iv["interval"].sel(ci_bound="lower"), iv["lower"])
    np.testing.assert_array_equal(iv["interval"].sel(ci_bound="upper"), iv["upper"])
    assert list(iv["interval"]["customer_id"].values) == ["c0", "c1", "c2"]
    assert iv.attrs == {"interval_prob": 0.8, "interval_kind": kind}
    # no dims left besides the bound: a scalar quantity (e.g. a portfolio total)
    one = clv_intervals(da.sum("customer_id"), prob=0.8, kind=kind)
    assert one["interval"].dims == ("ci_bound",)
    np.testing.assert_array_equal(one["interval"].values, [one["lower"], one["upper"]])


def test_interval_arguments_are_checked():
    with pytest.raises(ValueError, match="prob"):
        interval_arrays(np.ones((2, 5)), prob=1.0)
    with pytest.raises(ValueError, match="kind"):
        interval_arrays(np.ones((2, 5)), kind="hpd")


def test_totals_table_takes_intervals_of_per_draw_sums_not_sums_of_intervals():
    rfm = small_rfm()
    da = draws()
    tot = segment_totals(da, rfm)
    tab = totals_table(tot, prob=0.9)
    assert list(tab["segment"]) == ["a", "b", "portfolio"]
    port = da.values.reshape(-1, 4).sum(axis=1)
    assert tab["total_upper"].iloc[-1] == pytest.approx(np.quantile(port, 0.95))
    per_customer_upper = clv_intervals(da, prob=0.9)["upper"].values.sum()
    assert tab["total_upper"].iloc[-1] < per_customer_upper


# --------------------------------------------------------------------------- tables
def test_customer_table_has_one_row_per_customer_and_the_documented_columns():
    rfm = small_rfm()
    da = draws()
    da.attrs["horizon"] = 52.0
    pa = xr.full_like(da, 0.25)
    tab = customer_table(da, rfm, p_alive=pa, prob=0.8, kind="hdi")
    assert tuple(tab.columns) == TABLE_COLUMNS
    assert list(tab["customer_id"]) == list(rfm.customer_id)
    assert list(tab["segment"]) == ["a", "b", "a", "b"]
    assert (tab["p_alive"] == 0.25).all() and tab["expected_purchases"].isna().all()
    assert (tab["horizon"] == 52.0).all() and (tab["time_unit"] == "week").all()
    assert (tab["interval_kind"] == "hdi").all() and (tab["interval_prob"] == 0.8).all()
    assert np.all(tab["clv_lower"] <= tab["clv_median"])
    assert np.all(tab["clv_median"] <= tab["clv_upper"])
    with pytest.raises(ValueError, match="customers"):
        customer_table(da.isel(customer_id=slice(0, 3)), rfm)
    with pytest.raises(ValueError, match="same order"):
        customer_table(da.isel(customer_id=[1, 0, 2, 3]), rfm)


# --------------------------------------------------------------------------- export
def nasty_table():
    return pd.DataFrame(
        {
            "customer_id": ["=HYPERLINK(\"http://x\")", "+1", "-2+3", "@SUM(A1)", "\tTAB", "ok"],
            "segment": ["a", "b", "a", "b", "a", "=cmd|' /C calc'!A0"],
            "clv_mean": [1.0, -2.0, 3.5, 0.0, 2.0, 1.0],  # negative numbers stay numbers
        }
    )


META = {"model": "bgnbd", "horizon": 52, "discount": {"rate": 0.1, "period": 52},
        "convergence": "ok", "version": "0.1.0"}


def test_csv_export_escapes_formulas_and_writes_sidecar_metadata(tmp_path):
    path = export(nasty_table(), tmp_path / "out.csv", metadata=META)
    with open(path, newline="") as fh:
        rows = list(csv.reader(fh))
    cells = [c for row in rows[1:] for c in row[:2]]
    for c in cells:
        assert not c.startswith(("=", "+", "-", "@", "\t", "\r")), c
    assert rows[1][0] == "'=HYPERLINK(\"http://x\")" and rows[6][0] == "ok"
    assert rows[2][2] == "-2.0"  # a number, not escaped
    assert json.loads((tmp_path / "out.metadata.json").read_text()) == META
    assert read_metadata(path) == META


def test_excel_export_escapes_formulas_and_has_metadata_sheet(tmp_path):
    path = export(nasty_table(), tmp_path / "out.xlsx", metadata=META)
    wb = openpyxl.load_workbook(path)
    assert wb.sheetnames == ["customers", "metadata"]
    ws = wb["customers"]
    for row in ws.iter_rows(min_row=2, values_only=True):
        for v in row[:2]:
            assert isinstance(v, str) and not v.startswith(("=", "+", "-", "@", "\t")), v
        assert isinstance(row[2], float | int)
    assert ws.cell(row=2, column=1).data_type == "s"  # stored as text, not a formula
    assert read_metadata(path)["discount"] == {"rate": 0.1, "period": 52}


def test_parquet_export_keeps_values_and_stores_schema_metadata(tmp_path):
    table = nasty_table()
    path = export(table, tmp_path / "out.parquet", metadata=META)
    pd.testing.assert_frame_equal(pd.read_parquet(path), table)
    assert read_metadata(path) == META


def test_export_rejects_unknown_format(tmp_path):
    with pytest.raises(ValueError, match="format"):
        export(nasty_table(), tmp_path / "out.txt", metadata={})


class _Boom:
    """A cell that fails when written: simulates a crash in the middle of a write."""

    def __str__(self):
        raise OSError("disk full")

    __repr__ = __str__


@pytest.mark.parametrize("suffix", ["csv", "xlsx", "parquet"])
def test_failed_export_leaves_previous_file_and_no_partial_file(tmp_path, suffix):
    path = tmp_path / f"out.{suffix}"
    path.write_bytes(b"previous version")
    big = pd.DataFrame({"customer_id": [f"c{i}" for i in range(5000)], "v": 1.0})
    big["bad"] = None
    big["bad"] = big["bad"].astype(object)
    big.loc[4000, "bad"] = _Boom()
    with pytest.raises(Exception):  # noqa: B017 - any writer error
        export(big, path, metadata=META)
    assert path.read_bytes() == b"previous version"
    leftovers = sorted(p.name for p in tmp_path.iterdir())
    assert leftovers in (["out." + suffix], ["out.csv", "out.metadata.json"])


def test_atomic_write_removes_the_temporary_file_when_the_writer_fails(tmp_path):
    target = tmp_path / "t.bin"

    def writer(tmp):
        with open(tmp, "wb") as fh:
            fh.write(b"partial")
            raise RuntimeError("crash after a partial write")

    with pytest.raises(RuntimeError):
        atomic_write(target, writer)
    assert list(tmp_path.iterdir()) == []
    atomic_write(target, lambda tmp: tmp.write_bytes(b"done"))
    assert target.read_bytes() == b"done" and list(tmp_path.iterdir()) == [target]
