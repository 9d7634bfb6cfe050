"""The built-in data sets load from the package files with the documented shapes."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from bayesclv.datasets import load_cdnow, load_cdnow_rfm, load_cdnow_summary, load_donations


def test_cdnow_sample_has_documented_records_and_customers():
    df = load_cdnow()
    assert list(df.columns) == ["customer_id", "date", "quantity", "amount", "acquisition_month"]
    assert len(df) == 6919  # CDNOW_README.md
    assert df["customer_id"].dtype == np.int64
    assert pd.api.types.is_datetime64_dtype(df["date"])
    assert df["quantity"].dtype == np.int64
    assert df["amount"].dtype == np.float64
    ids = np.sort(df["customer_id"].unique())
    np.testing.assert_array_equal(ids, np.arange(1, 2358))
    assert df["date"].min() == pd.Timestamp("1997-01-01")
    assert df["date"].max() == pd.Timestamp("1998-06-30")
    # 223 records are a second record on the same customer-day (CDNOW_README.md)
    assert int(df.duplicated(["customer_id", "date"]).sum()) == 223


def test_cdnow_acquisition_month_is_month_of_first_purchase_in_q1_1997():
    df = load_cdnow()
    assert set(df["acquisition_month"]) == {"1997-01", "1997-02", "1997-03"}
    first = df.groupby("customer_id")["date"].min()
    month = df.groupby("customer_id")["acquisition_month"].agg(["first", "nunique"])
    assert (month["nunique"] == 1).all()
    assert (first.dt.strftime("%Y-%m") == month["first"]).all()
    assert first.max() <= pd.Timestamp("1997-03-25")  # the cohort's last acquisition day


def test_cdnow_master_has_documented_records_and_customers():
    df = load_cdnow("master")
    assert len(df) == 69659
    assert df["customer_id"].nunique() == 23570
    assert df["customer_id"].min() == 1 and df["customer_id"].max() == 23570
    assert df["date"].min() == pd.Timestamp("1997-01-01")
    assert df["date"].max() == pd.Timestamp("1998-06-30")


def test_cdnow_sample_is_a_subset_of_master_by_date_and_amount():
    sample, master = load_cdnow("sample"), load_cdnow("master")
    # every sample record appears in the master (ids differ: match on date, cds, dollars)
    keys = ["date", "quantity", "amount"]
    merged = sample[keys].merge(master[keys].drop_duplicates(), on=keys, how="left", indicator=True)
    assert (merged["_merge"] == "both").all()


def test_load_cdnow_rejects_unknown_file():
    with pytest.raises(ValueError, match="'sample' or 'master'"):
        load_cdnow("full")


def test_cdnow_summary_files_agree_with_each_other():
    with_spend = load_cdnow_summary()
    plain = load_cdnow_summary(with_spend=False)
    assert list(with_spend.columns) == [
        "customer_id", "frequency", "recency", "T", "monetary_value"
    ]
    assert len(with_spend) == len(plain) == 2357
    pd.testing.assert_frame_equal(with_spend[plain.columns], plain)
    assert int(with_spend["frequency"].sum()) == 2457
    assert ((with_spend["frequency"] == 0) == (with_spend["monetary_value"] == 0)).all()


def test_donations_table_totals_11104_donors_over_six_periods():
    df = load_donations()
    assert list(df.columns) == ["frequency", "recency", "periods", "weights"]
    assert len(df) == 22
    assert int(df["weights"].sum()) == 11104
    assert (df["periods"] == 6).all()
    assert ((df["frequency"] <= df["recency"]) & (df["recency"] <= df["periods"])).all()
    assert ((df["frequency"] == 0) == (df["recency"] == 0)).all()


def test_load_cdnow_rfm_reproduces_the_published_split():
    """FHL 2005: 2,357 customers, 2,457 calibration repeat purchases by 946 repeat buyers,
    1,882 holdout repeat purchases and $70,976.39 holdout spend."""
    rfm = load_cdnow_rfm("sample")
    assert rfm.n_customers == 2357
    assert rfm.time_unit == "week"
    assert list(rfm.segment_names) == ["1997-01", "1997-02", "1997-03"]
    assert int(rfm.frequency.sum()) == 2457
    assert int((rfm.frequency > 0).sum()) == 946
    assert int(rfm.holdout_frequency.sum()) == 1882
    assert float(rfm.holdout_spend.sum()) == pytest.approx(70976.39, abs=0.01)
