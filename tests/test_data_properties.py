"""Property-based tests of the data layer (hypothesis).

Any valid log: every customer ends up exactly once in the summary or in the report with
a reason, every dollar is accounted for, and the summary agrees with a direct count.
Any corrupted log: DataValidationError, never another exception.
"""

from __future__ import annotations

import os

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bayesclv.data import DAYS_PER_UNIT, rfm_summary, validate_transactions
from bayesclv.errors import DataValidationError

# pandas warns when it falls back to dateutil for one-row text dates: expected here.
pytestmark = pytest.mark.filterwarnings("ignore:Could not infer format")

START = pd.Timestamp("2024-01-01")
# In CI (CI=true) the examples are derandomised: the same inputs every run, so a
# submission is judged on its code, not on the draw. Locally hypothesis explores anew.
SETTINGS = settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
    derandomize=os.environ.get("CI", "").lower() == "true",
)


@st.composite
def valid_logs(draw):
    n_customers = draw(st.integers(1, 10))
    id_kind = draw(st.sampled_from(["int", "str"]))
    ids = [c * 7 + 3 for c in range(n_customers)]
    if id_kind == "str":
        ids = [f"C{i:03d}" for i in ids]
    segments = draw(st.lists(st.sampled_from(["a", "b", "c"]), min_size=n_customers,
                             max_size=n_customers))
    rows = []
    for cid, seg in zip(ids, segments, strict=True):
        k = draw(st.integers(1, 5))
        for _ in range(k):
            day = draw(st.integers(0, 60))
            minute = draw(st.integers(0, 24 * 60 - 1))
            cents = draw(st.integers(1, 100_000))
            rows.append((cid, START + pd.Timedelta(days=day, minutes=minute), cents / 100, seg))
    order = draw(st.permutations(range(len(rows))))
    df = pd.DataFrame([rows[i] for i in order], columns=["cid", "ts", "value", "seg"])
    if id_kind == "str":
        df["cid"] = df["cid"].astype(object)
    cal = draw(st.integers(0, 60))
    obs = draw(st.integers(cal, 61))
    return df, cal, obs


KW = {"customer_col": "cid", "date_col": "ts", "amount_col": "value"}


@SETTINGS
@given(
    data=valid_logs(),
    with_segment=st.booleans(),
    time_unit=st.sampled_from(sorted(DAYS_PER_UNIT)),
    prevalidate=st.booleans(),
)
def test_every_customer_is_summarised_once_or_reported(data, with_segment, time_unit, prevalidate):
    df, cal, obs = data
    cal_end, obs_end = START + pd.Timedelta(days=cal), START + pd.Timedelta(days=obs)
    seg_col = "seg" if with_segment else None
    source = df
    ends = {"observation_end": obs_end, "after_end": "drop"}  # rows after it: reported
    day = (df["ts"].dt.floor("D") - START).dt.days
    if not (day <= cal).any():  # nothing to summarise: a clear error, not an empty result
        with pytest.raises(DataValidationError, match="no transactions left|no customer made"):
            rfm_summary(source, **KW, calibration_end=cal_end, **ends)
        return
    if prevalidate:
        source, _ = validate_transactions(df, **KW, segment_col=seg_col, **ends)
    rfm = rfm_summary(
        source, **KW, segment_col=seg_col, time_unit=time_unit, calibration_end=cal_end,
        first_purchase_value=True, **ends,
    )
    report = rfm.meta["cleaning_report"]
    summarised = rfm.customer_id.tolist()
    reported = [c for ids in report.excluded_from_summary.values() for c in ids]
    reported += [c for ids in report.customers_removed.values() for c in ids]
    assert len(summarised) == len(set(summarised))
    assert sorted(summarised + reported, key=str) == sorted(set(df["cid"]), key=str)
    assert report.rows_in == len(df)
    assert report.after_end_removed == int((day > obs).sum()) == report.rows_removed
    gone = set(report.customers_removed.get("after_observation_end", ()))
    assert gone == set(df["cid"]) - set(df.loc[day <= obs, "cid"])
    df, day = df[day <= obs], day[day <= obs]
    first = day.groupby(df["cid"]).min()
    late = set(report.excluded_from_summary.get("first_purchase_after_calibration_end", ()))
    assert late == set(first.index[first > cal])
    assert not late & gone

    # direct count of purchase days, per customer
    in_cal = df[day <= cal].assign(day=day)
    occasions = in_cal.groupby("cid")["day"].nunique()
    f = rfm.to_frame()
    np.testing.assert_array_equal(f["frequency"], occasions.loc[f.index] - 1)
    np.testing.assert_allclose(f["T"] * DAYS_PER_UNIT[time_unit], cal - first.loc[f.index])
    assert ((f["recency"] <= f["T"]) & (f["recency"] >= 0)).all()

    # every dollar of the summarised customers is accounted for exactly once
    total = df.groupby("cid")["value"].sum().loc[f.index]
    calib = f["first_purchase_value"] + f["monetary_value"] * f["frequency"]
    holdout = f["holdout_spend"] if rfm.has_holdout else 0.0
    np.testing.assert_allclose(calib + holdout, total, rtol=1e-9)
    assert rfm.has_holdout == (obs > cal)
    if with_segment:
        seg = df.groupby("cid")["seg"].first().loc[f.index]
        assert list(rfm.segment_labels()) == list(seg)


def _corrupt(df: pd.DataFrame, kind: str, row: int) -> tuple[pd.DataFrame, dict]:
    df = df.copy()
    extra: dict = {}
    ids_are_str = isinstance(df["cid"].iloc[0], str)
    if kind == "missing_column":
        df = df.drop(columns="value")
    elif kind == "nan_amount":
        df.loc[row, "value"] = np.nan
    elif kind == "inf_amount":
        df.loc[row, "value"] = -np.inf
    elif kind == "text_amount":
        df["value"] = df["value"].astype(object)
        df.loc[row, "value"] = "twelve"
    elif kind == "negative_amount":
        df.loc[row, "value"] = -df.loc[row, "value"]
    elif kind == "bad_date":
        df["ts"] = df["ts"].astype(str).astype(object)
        df.loc[row, "ts"] = "2024-02-30"
    elif kind == "missing_date":
        df.loc[row, "ts"] = pd.NaT
    elif kind == "tz_mix":
        df["ts"] = df["ts"].astype(object)
        df.loc[row, "ts"] = pd.Timestamp(df.loc[row, "ts"]).tz_localize("Europe/Paris")
        if len(df) == 1:  # a mix needs two rows
            df = pd.concat([df, df.assign(ts=[pd.Timestamp("2024-01-05")])], ignore_index=True)
    elif kind == "mixed_ids":
        if len(df) == 1:  # a mix needs two rows (hypothesis found the 1-row case)
            df = pd.concat([df, df], ignore_index=True)
        df["cid"] = df["cid"].astype(object)
        df.loc[row, "cid"] = 999 if ids_are_str else "C999"
    elif kind == "missing_id":
        df["cid"] = df["cid"].astype(object)
        df.loc[row, "cid"] = None
    elif kind == "missing_segment":
        df.loc[row, "seg"] = None
        extra["segment_col"] = "seg"
    elif kind == "two_segments":
        other = df.iloc[[row]].assign(seg="zzz")  # same customer, another segment
        df = pd.concat([df, other], ignore_index=True)
        extra["segment_col"] = "seg"
    elif kind == "empty":
        df = df.iloc[:0]
    elif kind == "after_end":
        extra["observation_end"] = df["ts"].max().normalize() - pd.Timedelta(days=1)
    return df, extra


CORRUPTIONS = [
    "missing_column", "nan_amount", "inf_amount", "text_amount", "negative_amount",
    "bad_date", "missing_date", "tz_mix", "mixed_ids", "missing_id", "missing_segment",
    "two_segments", "empty", "after_end",
]


@SETTINGS
@given(data=valid_logs(), kind=st.sampled_from(CORRUPTIONS), pick=st.integers(0, 10_000))
def test_any_corrupted_log_raises_data_validation_error(data, kind, pick):
    df, _, _ = data
    bad, extra = _corrupt(df, kind, pick % len(df))
    with pytest.raises(DataValidationError):
        rfm_summary(bad, **KW, **extra)


@SETTINGS
@given(data=valid_logs(), kind=st.sampled_from(CORRUPTIONS), pick=st.integers(0, 10_000))
def test_corruption_message_names_the_column(data, kind, pick):
    df, _, _ = data
    bad, extra = _corrupt(df, kind, pick % len(df))
    with pytest.raises(DataValidationError) as info:
        validate_transactions(bad, **KW, **extra)
    column = {
        "missing_column": "value", "nan_amount": "value", "inf_amount": "value",
        "text_amount": "value", "negative_amount": "value", "bad_date": "ts",
        "missing_date": "ts", "tz_mix": "ts", "mixed_ids": "cid", "missing_id": "cid",
        "missing_segment": "seg", "two_segments": "seg", "after_end": "ts",
    }.get(kind)
    if column is not None:
        assert f"'{column}'" in str(info.value)
    if kind not in ("missing_column", "empty"):
        assert "row" in str(info.value)
