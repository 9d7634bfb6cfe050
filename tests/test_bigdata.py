"""The DuckDB path (bayesclv.bigdata) against the pandas path (bayesclv.data.rfm_summary).

Oracle: ``rfm_summary`` on the same files read with pandas and concatenated. Every
comparison is exact (``np.array_equal`` on floats, ``==`` on the cleaning report): the
DuckDB path promises the same numbers bit for bit, not close ones.
"""

from __future__ import annotations

import os

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

pytest.importorskip("duckdb")

from bayesclv.bigdata import parquet_files, rfm_summary_parquet  # noqa: E402
from bayesclv.data import RFMData, rfm_summary  # noqa: E402
from bayesclv.datasets import load_cdnow  # noqa: E402
from bayesclv.errors import DataValidationError  # noqa: E402
from bayesclv.simulate import (  # noqa: E402
    BGNBDParams,
    GammaGammaParams,
    simulate_transactions,
)

FIELDS = (
    "customer_id",
    "frequency",
    "recency",
    "T",
    "monetary_value",
    "segment",
    "first_purchase_value",
    "holdout_frequency",
    "holdout_spend",
)
SCALARS = ("segment_names", "time_unit", "holdout_length", "calibration_end")
SETTINGS = settings(
    max_examples=10,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
    derandomize=os.environ.get("CI", "").lower() == "true",
)


def assert_identical(a: RFMData, b: RFMData) -> None:
    for name in FIELDS:
        x, y = getattr(a, name), getattr(b, name)
        if x is None or y is None:
            assert x is None and y is None, name
            continue
        assert x.dtype.kind == y.dtype.kind, (name, x.dtype, y.dtype)
        assert np.array_equal(x, y), name  # exact, floats included
    for name in SCALARS:
        assert getattr(a, name) == getattr(b, name), name
    assert a.meta.keys() == b.meta.keys()
    for key in a.meta:
        assert a.meta[key] == b.meta[key], key  # the cleaning report included


def write_parts(df: pd.DataFrame, folder, n_parts: int) -> list[str]:
    """Split a log into ``n_parts`` Parquet files (uneven sizes); return their paths."""
    os.makedirs(folder, exist_ok=True)
    cuts = np.linspace(0, len(df), n_parts + 1).astype(int)
    paths = []
    for i in range(n_parts):
        path = os.path.join(folder, f"part-{i:03d}.parquet")
        df.iloc[cuts[i] : cuts[i + 1]].to_parquet(path, index=False)
        paths.append(path)
    return paths


def pandas_oracle(paths, **kw) -> RFMData:
    frame = pd.concat([pd.read_parquet(p) for p in parquet_files(paths)], ignore_index=True)
    return rfm_summary(frame, **kw)


def both(paths, **kw) -> tuple[RFMData, RFMData]:
    return pandas_oracle(paths, **kw), rfm_summary_parquet(paths, memory_limit="256MB", **kw)


# --------------------------------------------------------------------------- CDNOW
@pytest.fixture(scope="module")
def cdnow_parquet(tmp_path_factory):
    path = tmp_path_factory.mktemp("cdnow") / "cdnow.parquet"
    load_cdnow().to_parquet(path, index=False)
    return path


@pytest.mark.parametrize("merge_period", ["day", "week", "month"])
@pytest.mark.parametrize("time_unit", ["week", "day"])
def test_cdnow_identical_to_pandas(cdnow_parquet, merge_period, time_unit):
    a, b = both(
        cdnow_parquet,
        segment_col="acquisition_month",
        calibration_end="1997-09-30",
        observation_end="1998-06-30",
        merge_period=merge_period,
        time_unit=time_unit,
        first_purchase_value=True,
    )
    assert_identical(a, b)
    if merge_period == "day" and time_unit == "week":
        # the published CDNOW sample summary (Fader, Hardie & Lee 2005)
        assert int(b.frequency.sum()) == 2457
        assert int(b.holdout_frequency.sum()) == 1882
        assert b.meta["cleaning_report"].duplicates_found == 21


def test_cdnow_late_calibration_end_excludes_customers(cdnow_parquet):
    # calibration ends before the last first purchase: late customers are reported
    a, b = both(cdnow_parquet, calibration_end="1997-02-15", observation_end="1998-06-30")
    assert_identical(a, b)
    late = b.meta["customers_not_in_summary"]["first_purchase_after_calibration_end"]
    assert len(late) > 0 and len(late) + b.n_customers == 2357


def test_cdnow_in_many_files_and_duplicates_dropped(cdnow_parquet, tmp_path):
    paths = write_parts(pd.read_parquet(cdnow_parquet), tmp_path / "parts", 7)
    kw = dict(calibration_end="1997-09-30", duplicates="drop")
    assert_identical(*both(paths, **kw))
    # a directory and a glob name the same files in the same order
    assert_identical(*both(str(tmp_path / "parts" / "*.parquet"), **kw))
    b = rfm_summary_parquet(tmp_path / "parts", **kw)
    assert b.meta["cleaning_report"].duplicates_removed == 21


# --------------------------------------------------------------------------- simulated
def simulated_log(seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    tx = simulate_transactions(
        {"web": BGNBDParams(0.6, 4.0, 0.8, 2.5), "shop": BGNBDParams(0.9, 6.0, 0.5, 3.0)},
        {"web": 120, "shop": 80},
        T=(10.0, 30.0),
        spend=GammaGammaParams(6.0, 4.0, 15.0),
        holdout_length=8.0,
        random_seed=seed,
    )
    tx["segment"] = tx["segment"].astype(str)
    # Edge cases on top of the simulation: same-day repeats with other amounts, exact
    # duplicate rows, a zero amount, and a customer whose first purchase is after the
    # end of calibration.
    pick = rng.choice(len(tx), size=20, replace=False)
    same_day = tx.iloc[pick[:10]].copy()
    same_day["amount"] = np.round(rng.gamma(2.0, 10.0, 10), 2)
    same_day["date"] += pd.to_timedelta(rng.integers(0, 3600, 10), unit="s")
    exact = tx.iloc[pick[10:15]].copy()
    zero = tx.iloc[pick[15:16]].copy()
    zero["amount"] = 0.0
    late = pd.DataFrame(
        {
            "customer_id": [10_000, 10_000],
            "date": [tx.attrs["calibration_end"] + pd.Timedelta(days=2)] * 2,
            "amount": [5.0, 7.5],
            "segment": ["web", "web"],
        }
    )
    log = pd.concat([tx, same_day, exact, zero, late], ignore_index=True)
    return log.iloc[rng.permutation(len(log))].reset_index(drop=True)


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("merge_period", ["day", "week"])
def test_simulated_logs_identical(tmp_path, seed, merge_period):
    log = simulated_log(seed)
    cal = log["date"].min().normalize() + pd.Timedelta(days=7 * 26)
    obs = log["date"].max().normalize()
    paths = write_parts(log, tmp_path, 3)
    a, b = both(
        paths,
        segment_col="segment",
        calibration_end=cal,
        observation_end=obs,
        merge_period=merge_period,
        first_purchase_value=True,
    )
    assert_identical(a, b)
    assert b.meta["cleaning_report"].duplicates_found >= 5
    assert 10_000 in b.meta["customers_not_in_summary"]["first_purchase_after_calibration_end"]
    # single-purchase customers are there, with frequency 0 and spend 0
    assert ((b.frequency == 0) & (b.monetary_value == 0)).any()


def test_cleaning_options_identical_with_removed_customers(tmp_path):
    log = simulated_log(5)
    obs = log["date"].max().normalize() - pd.Timedelta(days=20)
    extra = pd.DataFrame(
        {
            "customer_id": [20_001, 20_002, 20_002, 20_003, 20_004],
            "date": pd.to_datetime(
                ["2020-02-01", "2020-02-02", "2020-02-03", "2030-01-01", "2020-03-01"]
            ),
            "amount": [-5.0, 0.0, -1.0, 3.0, 0.0],
            "segment": ["web", "shop", "shop", "web", "web"],
        }
    )
    log = pd.concat([log, extra], ignore_index=True)
    paths = write_parts(log, tmp_path, 2)
    kw = dict(
        segment_col="segment",
        observation_end=obs,
        calibration_end=obs - pd.Timedelta(days=60),
        negative_amounts="drop",
        zero_amounts="drop",
        after_end="drop",
        duplicates="drop",
    )
    a, b = both(paths, **kw)
    assert_identical(a, b)
    removed = b.meta["cleaning_report"].customers_removed
    assert removed["negative_amount"] == (20_001,)
    assert removed["negative_amount+zero_amount"] == (20_002,)
    assert 20_003 in removed["after_observation_end"]
    assert removed["zero_amount"] == (20_004,)


def test_string_ids_and_time_zones(tmp_path):
    log = simulated_log(3)
    log["customer_id"] = "C" + log["customer_id"].astype(str).str.zfill(6)
    log["date"] = log["date"].dt.tz_localize("UTC").dt.tz_convert("Europe/Berlin")
    path = tmp_path / "tz.parquet"
    log.to_parquet(path, index=False)
    cal = pd.Timestamp("2020-06-30")
    a, b = both(path, segment_col="segment", calibration_end=cal)
    assert_identical(a, b)
    assert b.customer_id.dtype == object and b.customer_id[0].startswith("C")


@st.composite
def small_logs(draw):
    n = draw(st.integers(1, 8))
    rows = []
    for cid in range(n):
        for _ in range(draw(st.integers(1, 5))):
            day = draw(st.integers(0, 70))
            minute = draw(st.sampled_from([0, 1, 600]))  # collisions -> duplicates
            cents = draw(st.sampled_from([0, 1, 999, 1999, 12345]))
            rows.append(
                (
                    cid * 3 + 1,
                    pd.Timestamp("2024-01-01") + pd.Timedelta(days=day, minutes=minute),
                    cents / 100.0,
                    "ab"[cid % 2],
                )
            )
    df = pd.DataFrame(rows, columns=["cid", "ts", "value", "seg"])
    order = draw(st.permutations(range(len(df))))
    cal = draw(st.integers(0, 70))
    obs = draw(st.integers(cal, 71))
    parts = draw(st.integers(1, 3))
    return df.iloc[list(order)].reset_index(drop=True), cal, obs, parts


@SETTINGS
@given(
    case=small_logs(),
    merge_period=st.sampled_from(["day", "week", "month"]),
    duplicates=st.sampled_from(["keep", "drop"]),
    zero_amounts=st.sampled_from(["keep", "drop"]),
)
def test_property_any_log_identical(tmp_path_factory, case, merge_period, duplicates, zero_amounts):
    df, cal, obs, parts = case
    paths = write_parts(df, tmp_path_factory.mktemp("prop"), min(parts, len(df)))
    start = pd.Timestamp("2024-01-01")
    kw = dict(
        customer_col="cid",
        date_col="ts",
        amount_col="value",
        segment_col="seg",
        calibration_end=start + pd.Timedelta(days=cal),
        observation_end=start + pd.Timedelta(days=obs),
        merge_period=merge_period,
        duplicates=duplicates,
        zero_amounts=zero_amounts,
        after_end="drop",
        time_unit="day",
    )
    try:
        expected = pandas_oracle(paths, **kw)
    except DataValidationError:
        with pytest.raises(DataValidationError):
            rfm_summary_parquet(paths, **kw)
        return
    assert_identical(expected, rfm_summary_parquet(paths, **kw))


# --------------------------------------------------------------------------- errors
def test_errors_a_user_can_act_on(tmp_path):
    df = pd.DataFrame(
        {
            "customer_id": [1, 1, 2],
            "date": pd.to_datetime(["2024-01-01", "2024-02-01", "2024-03-01"]),
            "amount": [5.0, -2.0, 3.0],
        }
    )
    path = tmp_path / "neg.parquet"
    df.to_parquet(path, index=False)
    with pytest.raises(
        DataValidationError, match=r"\(0, 1\).*negative amount.*negative_amounts='drop'"
    ):
        rfm_summary_parquet(path)
    with pytest.raises(DataValidationError, match="missing column"):
        rfm_summary_parquet(path, amount_col="revenue")
    with pytest.raises(DataValidationError, match="no Parquet file"):
        rfm_summary_parquet(tmp_path / "nothing-*.parquet")
    df["date"] = df["date"].dt.strftime("%Y-%m-%d")
    df.to_parquet(path, index=False)
    with pytest.raises(DataValidationError, match="not as dates"):
        rfm_summary_parquet(path)
