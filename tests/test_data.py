"""Transaction validation, the cleaning report and the RFM summary."""

from __future__ import annotations

import json
import pickle
import warnings
from decimal import ROUND_HALF_UP, Decimal

import numpy as np
import pandas as pd
import pytest

from bayesclv.data import (
    DAYS_PER_UNIT,
    CleaningReport,
    RFMData,
    rfm_summary,
    validate_transactions,
)
from bayesclv.datasets import load_cdnow, load_cdnow_summary
from bayesclv.errors import DataValidationError

CDNOW = {"calibration_end": "1997-09-30", "observation_end": "1998-06-30", "time_unit": "week"}


def round_half_up(values, places=2):
    """The published CDNOW file rounds ties up (22.345 -> 22.35), unlike numpy."""
    q = Decimal(1).scaleb(-places)
    return np.array(
        [float(Decimal(repr(round(float(v), 9))).quantize(q, ROUND_HALF_UP)) for v in values]
    )


def small_log(**extra) -> pd.DataFrame:
    df = pd.DataFrame(
        {
            "cust": [1, 1, 1, 2, 2, 3],
            "when": pd.to_datetime(
                ["2024-01-01", "2024-01-01 15:00", "2024-01-08", "2024-01-03", "2024-01-20",
                 "2024-01-10"],
                format="ISO8601",
            ),
            "spend": [10.0, 5.0, 20.0, 7.0, 9.0, 3.0],
        }
    )
    for k, v in extra.items():
        df[k] = v
    return df


COLS = {"customer_col": "cust", "date_col": "when", "amount_col": "spend"}


# ----------------------------------------------------------------------------- oracles


@pytest.fixture(scope="module")
def cdnow_rfm() -> RFMData:
    return rfm_summary(load_cdnow(), **CDNOW)


def test_cdnow_sample_matches_published_summary_file(cdnow_rfm):
    published = load_cdnow_summary()  # cdnow_customers_summary_with_transactions.csv
    np.testing.assert_array_equal(cdnow_rfm.customer_id, published["customer_id"])
    np.testing.assert_array_equal(cdnow_rfm.frequency, published["frequency"])
    np.testing.assert_array_equal(round_half_up(cdnow_rfm.recency), published["recency"])
    np.testing.assert_array_equal(round_half_up(cdnow_rfm.T), published["T"])
    np.testing.assert_array_equal(
        round_half_up(cdnow_rfm.monetary_value), published["monetary_value"]
    )


def test_cdnow_sample_matches_published_summary_without_spend(cdnow_rfm):
    published = load_cdnow_summary(with_spend=False)  # cdnow_customers_summary.csv
    np.testing.assert_array_equal(cdnow_rfm.frequency, published["frequency"])
    np.testing.assert_array_equal(round_half_up(cdnow_rfm.recency), published["recency"])
    np.testing.assert_array_equal(round_half_up(cdnow_rfm.T), published["T"])


def test_cdnow_sample_has_2457_calibration_repeats_over_946_repeat_buyers(cdnow_rfm):
    assert int(cdnow_rfm.frequency.sum()) == 2457
    assert int((cdnow_rfm.frequency > 0).sum()) == 946
    assert cdnow_rfm.T.max() == pytest.approx(272 / 7)  # 39 weeks for a 1 January buyer


def test_cdnow_sample_holdout_has_1882_transactions_and_70976_39_dollars(cdnow_rfm):
    assert int(cdnow_rfm.holdout_frequency.sum()) == 1882
    assert round(float(cdnow_rfm.holdout_spend.sum()), 2) == 70976.39
    assert cdnow_rfm.holdout_length == pytest.approx(39.0)  # weeks 40-78
    assert cdnow_rfm.meta["n_holdout_occasions"] == 1882


def test_cdnow_sample_holdout_has_1959_records_before_same_day_merging():
    df = load_cdnow()
    in_holdout = (df["date"] > "1997-09-30") & (df["date"] <= "1998-06-30")
    assert int(in_holdout.sum()) == 1959  # so merging removes 77 same-day records


def test_cdnow_acquisition_month_segments_partition_the_sample():
    rfm = rfm_summary(load_cdnow(), segment_col="acquisition_month", **CDNOW)
    assert rfm.segment_names == ("1997-01", "1997-02", "1997-03")
    assert int(rfm.segment_sizes().sum()) == 2357
    # January buyers have had the longest time to repeat
    t_jan = rfm.T[rfm.segment == 0]
    assert t_jan.min() > rfm.T[rfm.segment == 2].max()


def test_cdnow_master_zero_dollar_repeat_buyer_is_an_explicit_choice():
    master = load_cdnow("master")
    # customer 10244 bought for $15.96, then once more for $0.00: mean repeat spend 0.
    # Kept (all 23,570 customers summarised) and listed; Gamma-Gamma excludes and counts it.
    kept = rfm_summary(master, **CDNOW)
    assert kept.n_customers == 23570
    assert kept.meta["repeat_buyers_with_zero_spend"] == [10244]
    rfm = rfm_summary(master, **CDNOW, zero_amounts="drop")
    report = rfm.meta["cleaning_report"]
    assert report.zero_removed == int((master["amount"] == 0).sum()) == 80
    lost = sum(len(v) for v in report.customers_removed.values())
    late = report.excluded_from_summary["first_purchase_after_calibration_end"]
    assert (lost, len(late)) == (68, 2)  # only purchase(s) before October were $0
    assert rfm.n_customers == 23570 - lost - len(late)
    assert not set(late) & set(rfm.customer_id.tolist())
    assert rfm.to_frame().loc[10244, "frequency"] == 0
    assert rfm.T.max() == pytest.approx(272 / 7)


def naive_summary(df, cal_end, obs_end, unit_days, period="day"):
    """Independent, loop-based reimplementation (a test oracle)."""
    rows = {}
    cal_end, obs_end = pd.Timestamp(cal_end), pd.Timestamp(obs_end)
    for cid, g in df.groupby("customer_id"):
        day = g["date"].dt.floor("D")
        if period == "day":
            key = day
        elif period == "week":
            key = day.dt.to_period("W-SUN")
        else:
            key = day.dt.to_period("M")
        cal = day <= cal_end
        if not cal.any():
            continue
        occ = g[cal].assign(day=day[cal], key=key[cal]).groupby("key").agg(
            day=("day", "min"), amount=("amount", "sum")
        ).sort_values("day")
        hold = (day > cal_end) & (day <= obs_end)
        first = occ["day"].iloc[0]
        rows[cid] = {
            "frequency": len(occ) - 1,
            "recency": (occ["day"].iloc[-1] - first).days / unit_days,
            "T": (cal_end - first).days / unit_days,
            "monetary_value": occ["amount"].iloc[1:].mean() if len(occ) > 1 else 0.0,
            "first": occ["amount"].iloc[0],
            "holdout_frequency": key[hold].nunique(),
            "holdout_spend": g.loc[hold, "amount"].sum(),
        }
    return pd.DataFrame.from_dict(rows, orient="index").sort_index()


@pytest.mark.parametrize("period", ["day", "week", "month"])
@pytest.mark.parametrize("unit", ["day", "week", "month", "year"])
def test_summary_matches_independent_loop_implementation(period, unit):
    rng = np.random.default_rng(7)
    n = 400
    df = pd.DataFrame(
        {
            "customer_id": rng.integers(0, 60, n),
            "date": pd.Timestamp("2023-01-01")
            + pd.to_timedelta(rng.integers(0, 300 * 24, n), unit="h"),
            "amount": np.round(rng.gamma(2, 10, n) + 0.01, 2),
        }
    )
    rfm = rfm_summary(
        df, calibration_end="2023-06-15", observation_end="2023-10-27", time_unit=unit,
        merge_period=period, first_purchase_value=True,
    )
    expect = naive_summary(df, "2023-06-15", "2023-10-27", DAYS_PER_UNIT[unit], period)
    got = rfm.to_frame()
    np.testing.assert_array_equal(got.index, expect.index)
    np.testing.assert_array_equal(got["frequency"], expect["frequency"])
    for col in ("recency", "T", "monetary_value", "holdout_spend"):
        np.testing.assert_allclose(got[col], expect[col], rtol=1e-12, atol=1e-9, err_msg=col)
    np.testing.assert_allclose(got["first_purchase_value"], expect["first"], rtol=1e-12)
    np.testing.assert_array_equal(got["holdout_frequency"], expect["holdout_frequency"])
    late = rfm.meta["customers_not_in_summary"].get("first_purchase_after_calibration_end", ())
    assert len(late) + rfm.n_customers == df["customer_id"].nunique()


# ----------------------------------------------------------------------- summary logic


def test_same_day_transactions_merge_into_one_purchase():
    rfm = rfm_summary(small_log(), **COLS, time_unit="day", calibration_end="2024-01-20")
    f = rfm.to_frame()
    # customer 1: Jan 1 (10 + 5 merged), Jan 8 (20): one repeat worth 20
    assert f.loc[1, "frequency"] == 1
    assert f.loc[1, "recency"] == 7.0
    assert f.loc[1, "T"] == 19.0
    assert f.loc[1, "monetary_value"] == 20.0
    assert f.loc[3, "frequency"] == 0 and f.loc[3, "monetary_value"] == 0.0
    assert not rfm.has_holdout  # calibration_end == last day


def test_calibration_end_is_inclusive_and_defaults_to_last_day():
    a = rfm_summary(small_log(), **COLS, time_unit="day")
    b = rfm_summary(small_log(), **COLS, time_unit="day", calibration_end="2024-01-20")
    np.testing.assert_array_equal(a.T, b.T)
    assert a.calibration_end == pd.Timestamp("2024-01-20")
    c = rfm_summary(small_log(), **COLS, time_unit="day", calibration_end="2024-01-19")
    f = c.to_frame()
    assert f.loc[2, "frequency"] == 0 and f.loc[2, "holdout_frequency"] == 1
    assert c.holdout_length == 1.0


def test_late_first_purchase_is_reported_not_dropped_silently():
    rfm = rfm_summary(
        small_log(), **COLS, calibration_end="2024-01-05", observation_end="2024-01-31"
    )
    assert list(rfm.customer_id) == [1, 2]
    late = rfm.meta["customers_not_in_summary"]
    assert late == {"first_purchase_after_calibration_end": (3,)}
    report = rfm.meta["cleaning_report"]
    assert report.excluded_from_summary == late
    assert report.customers_in_summary == 2
    assert "not in the summary (first_purchase_after_calibration_end): 1 [3]" in str(report)


def test_first_purchase_value_is_the_merged_first_day():
    rfm = rfm_summary(small_log(), **COLS, first_purchase_value=True)
    np.testing.assert_array_equal(rfm.first_purchase_value, [15.0, 7.0, 3.0])


def test_segments_keep_unused_categories_of_a_categorical_column():
    seg = pd.Categorical(["a", "a", "a", "b", "b", "a"], categories=["a", "b", "c"])
    rfm = rfm_summary(small_log(region=seg), **COLS, segment_col="region")
    assert rfm.segment_names == ("a", "b", "c")
    assert list(rfm.segment_sizes()) == [2, 1, 0]
    assert list(rfm.segment_labels()) == ["a", "b", "a"]


def test_validated_frame_is_used_as_is_with_its_segment_column():
    clean, report = validate_transactions(
        small_log(region=list("xxxyyx")), **COLS, segment_col="region"
    )
    assert list(clean.columns) == ["customer_id", "date", "amount", "segment"]
    rfm = rfm_summary(clean)
    assert rfm.segment_names == ("x", "y")
    assert rfm.meta["cleaning_report"].rows_in == report.rows_in


def test_validated_frame_with_rows_after_new_observation_end_is_an_error():
    clean, _ = validate_transactions(small_log(), **COLS)
    with pytest.raises(DataValidationError, match=r"column 'date': 1 row are dated after"):
        rfm_summary(clean, observation_end="2024-01-19")


def test_all_zero_repeat_spend_is_kept_listed_and_left_to_the_spend_model():
    df = small_log()
    df.loc[2, "spend"] = 0.0  # customer 1's only repeat purchase
    rfm = rfm_summary(df, **COLS)
    frame = rfm.to_frame()
    assert frame.loc[1, "frequency"] == 1 and frame.loc[1, "monetary_value"] == 0.0
    assert rfm.meta["repeat_buyers_with_zero_spend"] == [1]
    rfm = rfm_summary(df, **COLS, zero_amounts="drop")
    assert rfm.to_frame().loc[1, "frequency"] == 0
    assert rfm.meta["cleaning_report"].zero_removed == 1


def test_time_unit_divides_whole_days():
    for unit, days in DAYS_PER_UNIT.items():
        rfm = rfm_summary(small_log(), **COLS, time_unit=unit)
        assert rfm.to_frame().loc[1, "T"] == pytest.approx(19.0 / days)


# ---------------------------------------------------------------- cleaning and report


def test_cleaning_report_counts_each_removed_row_once_and_lists_lost_customers():
    df = pd.DataFrame(
        {
            "customer_id": ["a", "a", "a", "b", "c", "c", "d", "d"],
            "date": pd.to_datetime(
                ["2024-01-01", "2024-01-01", "2024-02-01", "2024-01-02", "2024-01-03",
                 "2024-03-05", "2024-01-04", "2024-01-05"],
            ),
            "amount": [5.0, 5.0, 0.0, -3.0, 4.0, 6.0, 0.0, -1.0],
        }
    )
    clean, r = validate_transactions(
        df, negative_amounts="drop", zero_amounts="drop", duplicates="drop",
        observation_end="2024-02-29", after_end="drop",
    )
    assert (r.rows_in, r.rows_out) == (8, 2)
    assert (r.negative_removed, r.zero_removed, r.after_end_removed) == (2, 2, 1)
    assert (r.duplicates_removed, r.duplicates_found) == (1, 1)
    assert r.rows_in == r.rows_out + r.negative_removed + r.zero_removed + (
        r.after_end_removed + r.duplicates_removed
    )
    assert (r.customers_in, r.customers_out) == (4, 2)
    assert dict(r.customers_removed) == {
        "negative_amount": ("b",), "negative_amount+zero_amount": ("d",)
    }
    assert list(clean.index) == [0, 4]
    assert list(clean["customer_id"]) == ["a", "c"]
    text = str(r)
    assert "8 in -> 2 out" in text and "negative_amount+zero_amount): 1 ['d']" in text
    as_json = json.loads(json.dumps(r.to_dict()))
    assert as_json["customers_removed"]["negative_amount"] == ["b"]
    assert pickle.loads(pickle.dumps(r)) == r


def test_cleaning_keeps_kept_rows_exactly():
    df = pd.DataFrame(
        {
            "customer_id": [1, 1, 2],
            "date": pd.to_datetime(["2024-01-01", "2024-01-01", "2024-01-02"]),
            "amount": [5.0, 5.0, 0.0],
        }
    )
    clean, r = validate_transactions(df, duplicates="drop", zero_amounts="drop")
    assert list(clean.index) == [0]
    assert r.customers_removed == {"zero_amount": (2,)}


def test_duplicates_are_counted_even_when_kept():
    df = pd.DataFrame(
        {
            "customer_id": [1, 1, 1],
            "date": pd.to_datetime(["2024-01-01"] * 3),
            "amount": [5.0, 5.0, -0.0 + 6.0],
        }
    )
    _, r = validate_transactions(df)
    assert (r.duplicates_found, r.duplicates_removed, r.rows_out) == (1, 0, 3)


def test_cleaning_report_is_frozen():
    r = CleaningReport(rows_in=1, rows_out=1, customers_removed={"x": [1]})
    with pytest.raises(AttributeError):
        r.rows_in = 2
    with pytest.raises(TypeError):
        r.customers_removed["y"] = (2,)
    assert r.customers_removed["x"] == (1,)


def test_tz_aware_dates_are_converted_to_utc_and_noted():
    df = small_log()
    df["when"] = df["when"].dt.tz_localize("America/New_York")
    clean, r = validate_transactions(df, **COLS)
    assert clean["date"].dt.tz is None
    assert clean["date"].iloc[1] == pd.Timestamp("2024-01-01 20:00")
    assert any("UTC" in n for n in r.notes)


def test_text_dates_with_several_offsets_are_converted_to_utc():
    df = small_log()
    df["when"] = ["2024-01-01T23:00+01:00", "2024-01-01T10:00+00:00", "2024-01-08T00:00-05:00",
                  "2024-01-03T00:00+00:00", "2024-01-20T00:00+00:00", "2024-01-10T00:00+00:00"]
    clean, r = validate_transactions(df, **COLS)
    assert clean["date"].iloc[0] == pd.Timestamp("2024-01-01 22:00")
    assert clean["date"].iloc[2] == pd.Timestamp("2024-01-08 05:00")
    assert any("UTC" in n for n in r.notes)


def test_digit_dates_need_a_format():
    df = load_cdnow().head(50)
    df["date"] = df["date"].dt.strftime("%Y%m%d").astype(int)
    with pytest.raises(DataValidationError, match=r"column 'date' holds numbers.*%Y%m%d"):
        validate_transactions(df)
    clean, _ = validate_transactions(df, date_format="%Y%m%d")
    assert clean["date"].iloc[0] == pd.Timestamp("1997-01-01")


def test_csv_and_parquet_paths(tmp_path):
    df = small_log()
    df["cust"] = ["007", "007", "007", "7", "7", "12"]
    csv = tmp_path / "log.csv.gz"
    df.to_csv(csv, index=False)
    clean, _ = validate_transactions(csv, **COLS)
    assert list(clean["customer_id"].unique()) == ["007", "7", "12"]  # zero padding kept
    pq = tmp_path / "log.parquet"
    df.to_parquet(pq)
    rfm = rfm_summary(pq, **COLS)
    assert rfm.n_customers == 3
    ints = tmp_path / "ints.csv"
    small_log().to_csv(ints, index=False)
    assert rfm_summary(ints, **COLS).customer_id.dtype == np.int64


def test_string_amounts_that_are_numbers_are_accepted():
    df = small_log()
    df["spend"] = df["spend"].astype(str)
    clean, _ = validate_transactions(df, **COLS)
    assert clean["amount"].dtype == np.float64


# ------------------------------------------------------------------- error messages


def raises(match, data, **kwargs):
    with pytest.raises(DataValidationError, match=match) as info:
        validate_transactions(data, **{**COLS, **kwargs})
    return str(info.value)


def test_error_missing_columns_lists_existing_ones():
    msg = raises(r"missing column", small_log(), amount_col="revenue")
    assert "'revenue'" in msg and "'spend'" in msg and "amount_col=" in msg


def test_error_missing_columns_in_files(tmp_path):
    small_log().to_csv(tmp_path / "a.csv", index=False)
    small_log().to_parquet(tmp_path / "a.parquet")
    for name in ("a.csv", "a.parquet"):
        raises(r"missing column \['revenue'\].*'spend'", tmp_path / name, amount_col="revenue")


def test_error_unreadable_or_unknown_files(tmp_path):
    raises(r"not found", tmp_path / "nope.csv")
    (tmp_path / "a.json").write_text("x")
    raises(r"cannot tell the format", tmp_path / "a.json")
    (tmp_path / "a.xlsx").write_text("x")  # .xlsx is read; a damaged one is named
    raises(r"could not read transaction file '.*a\.xlsx'", tmp_path / "a.xlsx")
    (tmp_path / "a.xls").write_text("x")
    raises(r"old-style Excel \.xls", tmp_path / "a.xls")
    raises(r"must be a pandas DataFrame or the path", [1, 2, 3])


def test_error_empty_input():
    raises(r"empty \(0 rows\)", small_log().iloc[:0])


def test_error_unparsable_dates_name_column_count_and_values():
    df = small_log()
    df["when"] = ["2024-01-01", "not a date", "2024-01-08", "2024-13-45", "2024-01-20", "x"]
    msg = raises(r"column 'when': 3 rows could not be read as dates", df)
    assert "'not a date'" in msg and "first rows: 1, 3, 5" in msg and "date_format" in msg


def test_error_missing_dates():
    df = small_log()
    df.loc[[2, 4], "when"] = pd.NaT
    raises(r"column 'when': 2 rows have a missing date \(first rows: 2, 4\)", df)


def test_error_mixed_tz_aware_and_naive_dates():
    df = small_log()
    df["when"] = ["2024-01-01T00:00+01:00", "2024-01-01", "2024-01-08", "2024-01-03",
                  "2024-01-20", "2024-01-10"]
    msg = raises(r"column 'when': 1 row carry a time zone while 5 other rows do not", df)
    assert "tz_localize" in msg
    df["when"] = [pd.Timestamp("2024-01-01", tz="UTC")] + [pd.Timestamp("2024-01-02")] * 5
    raises(r"column 'when': 1 row carry a time zone", df)


def test_error_mixed_tz_among_several_offsets():
    df = small_log()
    df["when"] = ["2024-01-01T00:00+01:00", "2024-01-01T00:00+02:00", "2024-01-08", "2024-01-03",
                  "2024-01-20", "2024-01-10"]
    raises(r"column 'when': 2 rows carry a time zone", df)


def test_error_nan_amounts():
    df = small_log()
    df.loc[[1, 3], "spend"] = np.nan
    msg = raises(r"column 'spend': 2 rows have a missing \(NaN\) amount \(first rows: 1, 3\)", df)
    assert "never dropped for you" in msg


def test_error_infinite_amounts():
    df = small_log()
    df.loc[5, "spend"] = np.inf
    raises(r"column 'spend': 1 row have an infinite amount \(first rows: 5\)", df)


def test_error_non_numeric_amounts():
    df = small_log()
    df["spend"] = ["10", "$5.00", "20", "7", "1,000", "3"]
    msg = raises(r"column 'spend': 2 rows are not numbers \(values: '\$5.00', '1,000'\)", df)
    assert "pd.to_numeric" in msg
    df["spend"] = [True] * 6
    raises(r"column 'spend' is boolean", df)


def test_error_negative_amounts_explains_the_choice():
    df = small_log()
    df.loc[4, "spend"] = -9.0
    msg = raises(r"column 'spend': 1 row have a negative amount \(returns or refunds\?\)", df)
    assert "negative_amounts='drop'" in msg and "net each return" in msg


def test_error_missing_ids():
    df = small_log()
    df["cust"] = pd.array([1, None, 1, 2, 2, None], dtype="Int64")
    raises(r"column 'cust': 2 rows have a missing id \(first rows: 1, 5\)", df)


def test_error_mixed_id_types():
    df = small_log()
    df["cust"] = pd.Series([1, 1, "1", 2, 2, "3"], dtype=object)
    msg = raises(r"column 'cust': 2 rows have a id whose type differs", df)
    assert "int (4 rows), str (2 rows)" in msg and "first rows: 2, 5" in msg
    assert "astype(str)" in msg


def test_error_unsupported_id_type():
    df = small_log()
    df["cust"] = pd.Series([(1,), (1,), (1,), (2,), (2,), (3,)], dtype=object)
    raises(r"column 'cust': ids of type tuple are not supported", df)


def test_error_missing_segment_values():
    msg = raises(
        r"column 'region': 1 row have a missing segment \(first rows: 3\)",
        small_log(region=["a", "a", "a", None, "b", "c"]),
        segment_col="region",
    )
    assert "'unknown'" in msg


def test_error_customer_in_two_segments():
    msg = raises(
        r"column 'region': 3 rows belong to 1 customers that appear in more than one segment "
        r"\(customers 1\)",
        small_log(region=["a", "a", "b", "b", "b", "c"]),
        segment_col="region",
    )
    assert "transform('first')" in msg


def test_error_mixed_segment_types():
    raises(
        r"column 'region': 1 row have a segment whose type differs",
        small_log(region=pd.Series(["a", "a", "a", 1, "b", "c"], dtype=object)),
        segment_col="region",
    )


def test_error_rows_after_observation_end():
    msg = raises(
        r"column 'when': 2 rows are dated after observation_end=2024-01-09 "
        r"\(first rows: 4, 5\)",
        small_log(),
        observation_end="2024-01-09",
    )
    assert "after_end='drop'" in msg
    clean, r = validate_transactions(
        small_log(), **COLS, observation_end="2024-01-09", after_end="drop"
    )
    assert r.after_end_removed == 2 and len(clean) == 4


def test_error_bad_options_and_dates():
    raises(r"negative_amounts='keep' is not valid.*returns", small_log(), negative_amounts="keep")
    raises(r"duplicates='first' is not valid", small_log(), duplicates="first")
    raises(r"observation_end='soon' is not a date", small_log(), observation_end="soon")
    raises(r"observation_end='2024-01-09 12:00' has a time of day", small_log(),
           observation_end="2024-01-09 12:00")
    raises(r"must be different", small_log(), amount_col="cust")


def test_error_everything_removed():
    df = small_log()
    df["spend"] = -1.0
    raises(r"no transactions left after cleaning: all 6 rows", df, negative_amounts="drop")


def test_summary_errors():
    with pytest.raises(DataValidationError, match=r"calibration_end=2024-01-25 is after"):
        rfm_summary(small_log(), **COLS, calibration_end="2024-01-25")
    with pytest.raises(DataValidationError, match=r"no customer made a first purchase"):
        rfm_summary(small_log(), **COLS, calibration_end="2023-12-31")
    with pytest.raises(DataValidationError, match=r"time_unit='fortnight'"):
        rfm_summary(small_log(), **COLS, time_unit="fortnight")
    with pytest.raises(DataValidationError, match=r"merge_period='hour'"):
        rfm_summary(small_log(), **COLS, merge_period="hour")
    clean, _ = validate_transactions(small_log(), **COLS)
    with pytest.raises(DataValidationError, match=r"has no 'segment' column"):
        rfm_summary(clean, segment_col="region")
    with pytest.raises(DataValidationError, match=r"missing column"):
        rfm_summary(small_log())  # default names do not exist


@pytest.mark.parametrize(
    "ids",
    [
        [5, 3, 5, 9, 3],  # compact range: lookup-table path
        [-4, 10**15, -4, 7],  # wide range: hash path
        np.array([7, 2, 2], dtype=np.uint32),
    ],
)
def test_integer_id_fast_path_agrees_with_pandas_factorize(ids):
    n = len(ids)
    df = pd.DataFrame(
        {"customer_id": ids, "date": pd.Timestamp("2024-01-01"), "amount": np.arange(1.0, n + 1)}
    )
    rfm = rfm_summary(df)
    expect_codes, expect_uniques = pd.factorize(pd.Series(ids), sort=True)
    np.testing.assert_array_equal(rfm.customer_id, np.asarray(expect_uniques))
    assert rfm.customer_id.dtype == np.asarray(ids).dtype


def test_round_times_moves_each_time_by_at_most_half_a_step_and_keeps_everyone():
    from bayesclv.data import round_times

    rng = np.random.default_rng(5)
    n = 500
    T = rng.uniform(0.01, 52.0, n)
    x = rng.integers(0, 6, n)
    recency = np.where(x > 0, rng.uniform(0, 1, n) * T, 0.0)
    rfm = RFMData(
        customer_id=np.arange(n),
        frequency=x,
        recency=recency,
        T=T,
        monetary_value=np.where(x > 0, 10.0, 0.0),
        segment=np.zeros(n, dtype=int),
    )
    out = round_times(rfm, 1.0)
    assert out.n_customers == n and np.array_equal(out.customer_id, rfm.customer_id)
    assert np.array_equal(out.frequency, rfm.frequency)
    assert np.allclose(out.T, np.round(out.T)) and np.allclose(out.recency, np.round(out.recency))
    young = T < 0.5
    assert np.all(np.abs(out.T - T)[~young] <= 0.5 + 1e-12) and np.all(out.T[young] == 1.0)
    assert np.all(np.abs(out.recency - recency) <= 0.5 + 1e-12)
    assert np.all(out.recency <= out.T) and np.all(out.recency[x == 0] == 0)
    assert out.meta["time_rounding"] == 1.0
    # fewer distinct rows: the point of rounding
    rows_after = len({*zip(out.frequency, out.recency, out.T, strict=True)})
    assert rows_after < 0.9 * len({*zip(x, recency, T, strict=True)})
    with pytest.raises(DataValidationError, match="step > 0"):
        round_times(rfm, 0.0)


# --------------------------------------------------------------------------- issue 19
@pytest.mark.parametrize(
    ("ids", "n"),
    [
        (["0", "-0", "1"], 3),  # merged into two customers before
        (["01", "1", "2"], 3),
        (["0", "1", "-5", "123456789012345678"], 4),  # canonical: read as integers
    ],
    ids=["0 and -0", "01 and 1", "canonical"],
)
def test_csv_ids_stay_text_when_integers_would_merge_them(tmp_path, ids, n):
    path = tmp_path / "orders.csv"
    pd.DataFrame(
        {"cust": ids, "when": "2024-01-01", "amount": 10.0}
    ).to_csv(path, index=False)
    clean, report = validate_transactions(path, customer_col="cust", date_col="when",
                                          amount_col="amount")  # fmt: skip
    assert report.customers_in == n == clean["customer_id"].nunique()
    rfm = rfm_summary(path, customer_col="cust", date_col="when", amount_col="amount")
    assert rfm.n_customers == n
    if n == 4:  # all canonical: integers, which print back to the same text
        assert rfm.customer_id.dtype.kind == "i"
        assert sorted(map(str, rfm.customer_id)) == sorted(ids)
    else:
        assert sorted(rfm.customer_id) == sorted(ids)


def _dated(dates):
    return pd.DataFrame({"cust": range(len(dates)), "when": dates, "amount": 1.0})


@pytest.mark.parametrize(
    "dates",
    [
        ["03/04/2024", "05/06/2024", "01/02/2024"],
        ["03.04.2024 10:00", "11.12.2024 09:30"],
        ["03/04/24", "05/06/24"],
    ],
    ids=["slash", "dot-with-time", "two-digit-year"],
)
def test_dates_that_read_both_day_and_month_first_are_refused_naming_the_fix(dates):
    """A day-first file whose days are all <= 12 was read month first, silently."""
    with pytest.raises(DataValidationError) as exc:
        validate_transactions(_dated(dates), customer_col="cust", date_col="when",
                              amount_col="amount")  # fmt: skip
    msg = str(exc.value)
    assert "'when'" in msg and "ambiguous" in msg
    assert "date_format=" in msg and "--date-format" in msg
    assert "read month first" in msg and "read day first" in msg


def test_an_ambiguous_date_format_given_is_obeyed():
    dates = ["03/04/2024", "05/06/2024"]
    for fmt, first in (("%d/%m/%Y", "2024-04-03"), ("%m/%d/%Y", "2024-03-04")):
        clean, _ = validate_transactions(_dated(dates), customer_col="cust", date_col="when",
                                         amount_col="amount", date_format=fmt)  # fmt: skip
        assert str(clean["date"].min().date()) == first


@pytest.mark.parametrize(
    "dates",
    [
        ["2024-03-04", "2024-05-06"],  # ISO 8601: year first, never day first
        ["03/03/2024", "05/05/2024"],  # day == month: both readings agree
        ["13/04/2024", "05/06/2024"],  # a day > 12: only day first reads
        ["Mar 3 2024", "May 5 2024"],  # month names
    ],
    ids=["iso", "day-equals-month", "day-over-12", "month-names"],
)
def test_unambiguous_dates_are_not_refused(dates):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # pandas' day-first inference note
        clean, _ = validate_transactions(_dated(dates), customer_col="cust", date_col="when",
                                         amount_col="amount")  # fmt: skip
    assert len(clean) == len(dates)
