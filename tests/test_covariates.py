"""The covariate data layer (bayesclv.covariates): validation, coverage, standardisation,
calendar covariates and the join to an RFMData. Every error must name what is wrong."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bayesclv.covariates import (
    Standardization,
    StaticCovariates,
    TimeVaryingCovariates,
    calendar_covariates,
    covariate_design,
    join_covariates,
)
from bayesclv.data import RFMData, rfm_summary
from bayesclv.errors import DataValidationError


# --------------------------------------------------------------------------- fixtures
def _log():
    """Three customers, weekly periods from Sunday 2021-01-03; purchases by day."""
    return pd.DataFrame(
        {
            "customer_id": ["a", "a", "a", "b", "b", "c"],
            "date": pd.to_datetime(["2021-01-05", "2021-01-20", "2021-02-17",
                                    "2021-01-10", "2021-02-01", "2021-02-10"]),
            "amount": 1.0,
        }
    )  # fmt: skip


def _weekly(ids=("a", "b", "c"), start="2021-01-03", periods=12, drop=()):
    grid = pd.date_range(start, periods=periods, freq="W-SUN")
    rows = [
        {"customer_id": c, "period_start": d, "promo": float(k % 3 == 0), "season": k / 10}
        for c in ids
        for k, d in enumerate(grid)
        if (c, k) not in drop
    ]
    return pd.DataFrame(rows)


def _rfm():
    return rfm_summary(_log(), calibration_end="2021-02-28", observation_end="2021-02-28")


# --------------------------------------------------------------------------- static
def test_static_table_validates_and_dummies_text_columns():
    tab = StaticCovariates.from_frame(pd.DataFrame({
        "customer_id": [1, 2, 3], "age": [30, 40, 50], "channel": ["web", "shop", "web"]}))
    # text -> k - 1 dummies, the first sorted level ("shop") is the reference
    assert tab.columns == ("age", "channel_web")
    np.testing.assert_array_equal(tab.values, [[30, 1], [40, 0], [50, 1]])


@pytest.mark.parametrize(
    "frame, message",
    [
        (pd.DataFrame({"customer_id": [1, 1, 2], "z": [0, 1, 0]}), r"unique.*customers 1"),
        (pd.DataFrame({"customer_id": [1, 2, 3], "z": [0, np.nan, 1]}), r"'z'.*customers 2"),
        (pd.DataFrame({"customer_id": [1, None, 3], "z": [0, 1, 1]}), r"missing customer ids"),
        (pd.DataFrame({"id": [1, 2], "z": [0, 1]}), r"missing column.*customer_id"),
        (pd.DataFrame({"customer_id": [1, 2], "g": ["m", "m"]}), r"single level"),
    ],
)
def test_static_table_errors_name_the_problem(frame, message):
    with pytest.raises(DataValidationError, match=message):
        StaticCovariates.from_frame(frame)


def test_static_join_keeps_every_customer_or_reports_who_is_dropped():
    rfm = _rfm()
    tab = StaticCovariates.from_frame(pd.DataFrame({"customer_id": ["a", "b"], "z": [0.0, 1.0]}))
    with pytest.raises(DataValidationError, match=r"1 customers have no static covariates \('c'\)"):
        join_covariates(rfm, tab)
    with pytest.warns(UserWarning, match=r"1 customers left out.*'c'"):
        out = join_covariates(rfm, tab, missing="drop")
    assert list(out.customer_id) == ["a", "b"]
    assert out.meta["customers_not_in_summary"]["no_covariates"] == ("c",)
    design = covariate_design(out)
    np.testing.assert_array_equal(design.z_purchase[:, 0], [0.0, 1.0])
    # the design is keyed by id: a subset still finds its rows
    assert design.rows(out.subset(np.array([False, True])).customer_id).tolist() == [1]


def test_static_join_refuses_a_covariate_constant_over_the_customers():
    tab = StaticCovariates.from_frame(pd.DataFrame({"customer_id": ["a", "b", "c"],
                                                    "z": [1.0, 1.0, 1.0], "w": [0, 1, 0]}))
    with pytest.raises(DataValidationError, match=r"\['z'\].*one value for every customer"):
        join_covariates(_rfm(), tab)
    design = covariate_design(join_covariates(_rfm(), tab, purchase=["w"], dropout=[]))
    assert design.purchase == ("w",) and design.dropout == ()
    with pytest.raises(DataValidationError, match="unknown covariate columns"):
        join_covariates(_rfm(), tab, purchase=["nope"])


def test_covariate_design_says_how_to_add_one():
    with pytest.raises(DataValidationError, match="join_covariates"):
        covariate_design(_rfm())


@given(
    mean=st.floats(-1e3, 1e3), sd=st.floats(1e-2, 1e3),
    coef=st.floats(-3, 3), z=st.floats(-1e3, 1e3),
)
@settings(max_examples=60, deadline=None)
def test_standardised_coefficients_give_the_same_rates_on_the_original_scale(mean, sd, coef, z):
    """``exp(c (z - m)/sd)`` = ``exp(gamma z - gamma m)`` with ``gamma = c / sd``."""
    sc = Standardization(("z",), np.array([mean]), np.array([sd]))
    (gamma,) = sc.to_original([coef])
    lhs = coef * float(sc.apply(np.array([z]))[0])
    rhs = gamma * z - sc.offset([gamma])
    assert lhs == pytest.approx(rhs, rel=1e-9, abs=1e-9 * (1 + abs(coef * z / sd)))


# --------------------------------------------------------------------------- time-varying
def test_time_varying_table_infers_the_weekly_grid():
    tab = TimeVaryingCovariates.from_frame(_weekly())
    assert tab.freq == "W-SUN" and tab.values.shape == (3, 12, 2)
    assert tab.period_end[0] == pd.Timestamp("2021-01-10")
    assert tab.period_end[-1] == tab.period_start[-1] + pd.Timedelta(days=7)
    back = tab.to_frame()
    assert len(back) == 36 and set(back.columns) == {"customer_id", "period_start", "promo",
                                                      "season"}  # fmt: skip


def test_time_varying_table_errors_name_customers_periods_and_columns():
    frame = _weekly()
    with pytest.raises(DataValidationError, match=r"repeat a.*'a' at 2021-01-03"):
        TimeVaryingCovariates.from_frame(pd.concat([frame, frame.iloc[:1]]))
    with pytest.raises(DataValidationError, match=r"gaps.*'b' \(missing '2021-01-24'\)"):
        TimeVaryingCovariates.from_frame(_weekly(drop={("b", 3)}))
    bad = frame.copy()
    bad.loc[5, "promo"] = np.nan
    with pytest.raises(DataValidationError, match=r"'promo'.*missing.*'a' at 2021-02-07"):
        TimeVaryingCovariates.from_frame(bad)
    off = frame.copy()
    off.loc[off.period_start == "2021-01-17", "period_start"] = pd.Timestamp("2021-01-18")
    with pytest.raises(DataValidationError, match=r"not a regular calendar grid.*2021-01-18"):
        TimeVaryingCovariates.from_frame(off)
    with pytest.raises(DataValidationError, match="missing column"):
        TimeVaryingCovariates.from_frame(frame, date_col="week")


def test_dynamic_join_places_purchases_and_covers_the_calibration():
    rfm = _rfm()
    tab = TimeVaryingCovariates.from_frame(_weekly())
    out = join_covariates(rfm, tab, transactions=_log())
    d = covariate_design(out)
    # pieces cover [0, T] exactly
    np.testing.assert_allclose(d.length.sum(axis=1), out.T)
    assert np.all(d.length >= 0)
    # customer a: first purchase Tue 2021-01-05 (week of 01-03): first piece to Sun 01-10
    a = list(out.customer_id).index("a")
    assert d.length[a, 0] == pytest.approx(5 / 7)
    # covariates at repeat purchases: a buys on 01-20 (week 2: promo 0, season .2) and on
    # 02-17 (week 6: promo 1, season .6)
    i_promo, i_season = tab.columns.index("promo"), tab.columns.index("season")
    assert d.at_purchase[a, i_promo] == pytest.approx(1.0)
    assert d.at_purchase[a, i_season] == pytest.approx(0.8)
    # a zero repeater has no purchase covariates
    c = list(out.customer_id).index("c")
    np.testing.assert_array_equal(d.at_purchase[c], 0.0)


def test_dynamic_join_errors_name_customers_and_periods_not_covered():
    rfm = _rfm()
    late = TimeVaryingCovariates.from_frame(_weekly(start="2021-01-10"))
    with pytest.raises(DataValidationError, match=r"before the first period.*'a'.*2021-01-05"):
        join_covariates(rfm, late, transactions=_log())
    short = TimeVaryingCovariates.from_frame(_weekly(periods=6))
    with pytest.raises(DataValidationError, match="after the last period"):
        join_covariates(rfm, short, transactions=_log())
    partial = TimeVaryingCovariates.from_frame(_weekly(ids=("a", "b")))
    with pytest.raises(DataValidationError, match=r"not in the time-varying covariates \('c'\)"):
        join_covariates(rfm, partial, transactions=_log())
    with pytest.warns(UserWarning, match="left out"):
        out = join_covariates(rfm, partial, transactions=_log(), missing="drop")
    assert out.meta["customers_not_in_summary"]["no_covariates"] == ("c",)
    with pytest.raises(DataValidationError, match="need the transaction log"):
        join_covariates(rfm, TimeVaryingCovariates.from_frame(_weekly()))
    other = _log().iloc[:-2]
    with pytest.raises(DataValidationError, match=r"does not match the summary.*'b'"):
        join_covariates(rfm, TimeVaryingCovariates.from_frame(_weekly()), transactions=other)


def test_future_paths_need_the_horizon_covered_and_extend_joins_tables():
    rfm = _rfm()
    tab = TimeVaryingCovariates.from_frame(_weekly(periods=9))  # to 2021-03-07
    d = covariate_design(join_covariates(rfm, tab, transactions=_log()))
    fut = d.future(1.0)  # 2021-02-28 .. 03-07: inside the table
    np.testing.assert_allclose(fut.length.sum(axis=1), 1.0)
    with pytest.raises(DataValidationError, match=r"4-week horizon.*after the last period.*'a'"):
        d.future(4.0)
    full = _weekly(periods=14)
    later = TimeVaryingCovariates.from_frame(full[full.period_start >= "2021-02-21"])
    longer = tab.extend(later)
    assert len(longer.period_start) == 14
    fut = d.future(4.0, table=longer)
    np.testing.assert_allclose(fut.length.sum(axis=1), 4.0)
    # the future pieces carry the table's values: the first week after 02-28 is week 8
    np.testing.assert_allclose(fut.z_purchase[:, 0, :], [[0.0, 0.8]] * 3)
    clash = later.to_frame()
    clash.loc[0, "promo"] = 5.0  # a period both tables have
    with pytest.raises(DataValidationError, match="disagree"):
        tab.extend(TimeVaryingCovariates.from_frame(clash))


# --------------------------------------------------------------------------- calendar
def test_calendar_covariates_shares_dummies_and_fourier():
    cal = calendar_covariates(start="2021-11-28", end="2021-12-26", freq="W-SUN",
                              months=True, high_season=[12], fourier=2)  # fmt: skip
    # the week of Sun 11-28 has 3 November days and 4 December days
    assert cal.loc[0, "high_season"] == pytest.approx(4 / 7)
    assert cal.loc[0, "month_12"] == pytest.approx(4 / 7)
    assert cal.loc[0, "month_11"] == pytest.approx(3 / 7)
    assert "month_1" not in cal  # January is the reference level
    np.testing.assert_allclose(cal.loc[1:, "high_season"], [1, 1, 1, 6 / 7])  # 01-01 last
    np.testing.assert_allclose(cal["sin_1"] ** 2 + cal["cos_1"] ** 2, 1.0)
    monthly = calendar_covariates(start="2021-01-01", end="2021-12-01", freq="MS", months=True)
    vals = monthly.filter(like="month_").to_numpy()
    assert set(np.unique(vals)) == {0.0, 1.0} and vals.sum() == 11
    with pytest.raises(DataValidationError, match="at least one"):
        calendar_covariates(start="2021-01-03", end="2021-02-03")
    tab = TimeVaryingCovariates.from_calendar(["a", "b"], cal)
    assert tab.values.shape == (2, 5, cal.shape[1] - 1)


@given(
    n_periods=st.integers(3, 20),
    holes=st.sets(st.tuples(st.integers(0, 2), st.integers(1, 18)), max_size=4),
)
@settings(max_examples=25, deadline=None)
def test_a_table_with_a_hole_is_refused_or_covers_every_piece(n_periods, holes):
    """Property: either the join names what is missing, or each customer's pieces sum to T
    and every piece has a value (no silent gaps)."""
    ids = ("a", "b", "c")
    drop = {(ids[i], k) for i, k in holes if k < n_periods - 1}
    try:
        tab = TimeVaryingCovariates.from_frame(_weekly(periods=n_periods, drop=drop))
    except DataValidationError as exc:
        assert "gaps" in str(exc) or "grid" in str(exc)
        return
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            out = join_covariates(_rfm(), tab, transactions=_log())
    except DataValidationError as exc:
        assert "period" in str(exc)
        return
    d = covariate_design(out)
    np.testing.assert_allclose(d.length.sum(axis=1), out.T)
    assert np.isfinite(d.z_purchase).all()


def test_rfmdata_without_calibration_end_is_refused_for_time_varying():
    rfm = RFMData(customer_id=np.array(["a"]), frequency=np.array([0]), recency=np.array([0.0]),
                  T=np.array([3.0]), monetary_value=np.array([0.0]), segment=np.array([0]))
    with pytest.raises(DataValidationError, match="calibration end"):
        join_covariates(rfm, TimeVaryingCovariates.from_frame(_weekly()), transactions=_log())
