"""Maximum-likelihood fits against published CDNOW estimates; textbook CLV by hand."""

from __future__ import annotations

from importlib import resources

import numpy as np
import pandas as pd
import pytest

from bayesclv.classic import (
    fit_bgnbd,
    fit_gamma_gamma,
    fit_mbgnbd,
    fit_pareto_nbd,
    historical_clv,
    retention_clv,
    textbook_clv,
    textbook_clv_rfm,
)
from bayesclv.data import RFMData
from bayesclv.errors import DataValidationError, ModelSpecificationError
from bayesclv.likelihoods import bgnbd_logp

REL = 0.005  # published estimates are rounded to 3-4 significant digits


@pytest.fixture(scope="module")
def cdnow() -> RFMData:
    path = (
        resources.files("bayesclv.datasets")
        / "data"
        / "cdnow_customers_summary_with_transactions.csv"
    )
    df = pd.read_csv(path)
    return RFMData.from_frame(
        df, customer_id="ID", frequency="x", recency="t_x", T="T", monetary_value="zbar"
    )


def test_mle_matches_published_cdnow_bgnbd(cdnow):
    """Fader, Hardie & Lee (2005), 'Counting your customers the easy way', section 5."""
    res = fit_bgnbd(cdnow)
    assert res.converged, res.message
    for k, v in {"r": 0.243, "alpha": 4.414, "a": 0.793, "b": 2.426}.items():
        assert res.params[k] == pytest.approx(v, rel=REL), k
    assert res.log_likelihood == pytest.approx(-9582.4, abs=0.05)
    assert res.n_customers == 2357
    # the reported log-likelihood is the log-density summed at the estimate
    lp = bgnbd_logp(*res.params.values(), cdnow.frequency, cdnow.recency, cdnow.T)
    assert res.log_likelihood == pytest.approx(lp.sum(), abs=1e-9)


def test_mle_matches_published_cdnow_pareto_nbd(cdnow):
    """Fader, Hardie & Lee (2005), 'A note on deriving the Pareto/NBD model', section 5."""
    res = fit_pareto_nbd(cdnow)
    assert res.converged, res.message
    for k, v in {"r": 0.553, "alpha": 10.578, "s": 0.606, "beta": 11.669}.items():
        assert res.params[k] == pytest.approx(v, rel=REL), k
    assert res.log_likelihood == pytest.approx(-9595.0, abs=0.05)


def test_mle_matches_published_cdnow_mbgnbd(cdnow):
    """BTYDplus (Platzer) estimates on CDNOW, as used in the lifetimes test-suite."""
    res = fit_mbgnbd(cdnow)
    assert res.converged, res.message
    for k, v in {"r": 0.525, "alpha": 6.183, "a": 0.891, "b": 1.614}.items():
        assert res.params[k] == pytest.approx(v, rel=REL), k


def test_mle_matches_published_cdnow_gamma_gamma(cdnow):
    """Fader & Hardie (2013), 'The Gamma-Gamma model of monetary value': 946 repeat buyers."""
    res = fit_gamma_gamma(cdnow)
    assert res.converged, res.message
    assert res.n_customers == 946
    for k, v in {"p": 6.25, "q": 3.74, "v": 15.44}.items():
        assert res.params[k] == pytest.approx(v, rel=REL), k


def test_weights_equal_repeated_rows_and_scale_standard_errors(cdnow):
    """Integer weights are the same as repeating rows; 4x the weight halves the SEs."""
    rng = np.random.default_rng(1)
    small = cdnow.subset(np.arange(cdnow.n_customers) < 600)
    w = rng.integers(1, 4, small.n_customers)
    rows = np.repeat(np.arange(small.n_customers), w)
    df = small.to_frame().iloc[rows].reset_index(drop=True)
    expanded = RFMData.from_frame(df)
    a, b = fit_gamma_gamma(small, weights=w), fit_gamma_gamma(expanded)
    assert a.log_likelihood == pytest.approx(b.log_likelihood, rel=1e-9)
    for k in a.params:
        assert a.params[k] == pytest.approx(b.params[k], rel=1e-4)
    c = fit_bgnbd(small, weights=np.full(small.n_customers, 4.0))
    d = fit_bgnbd(small)
    for k in c.params:
        assert c.params[k] == pytest.approx(d.params[k], rel=1e-4)
        assert c.se_log[k] == pytest.approx(d.se_log[k] / 2, rel=1e-2)
    with pytest.raises(DataValidationError, match="weights"):
        fit_bgnbd(small, weights=-w)


def test_standard_errors_do_not_depend_on_finite_difference_step(cdnow):
    a = fit_bgnbd(cdnow, hessian_step=1e-3)
    b = fit_bgnbd(cdnow, hessian_step=1e-2)
    for k in a.se_log:
        assert np.isfinite(a.se_log[k]) and a.se_log[k] > 0
        assert a.se_log[k] == pytest.approx(b.se_log[k], rel=0.02)
        assert a.se[k] == pytest.approx(a.params[k] * a.se_log[k])


# --------------------------------------------------------------------------- textbook CLV
def test_textbook_clv_by_hand():
    # 50 per order, 4 orders a year, 3 years, 20% margin: 0.2 * 50 * 4 * 3 = 120
    assert textbook_clv(50.0, 4.0, 3.0, margin=0.2) == pytest.approx(120.0)
    np.testing.assert_allclose(textbook_clv(np.array([10.0, 20.0]), 2.0, 5.0), [100.0, 200.0])
    with pytest.raises(ModelSpecificationError, match="purchases_per_period"):
        textbook_clv(10.0, -1.0, 2.0)


def test_retention_clv_by_hand_and_as_a_discounted_sum():
    # m r / (1 + d - r) = 100 * 0.8 / 0.3
    assert retention_clv(100.0, 0.8, 0.1) == pytest.approx(266.6666667)
    # the same as the series sum_{t>=1} m r^t / (1+d)^t
    t = np.arange(1, 2000)
    assert retention_clv(40.0, 0.7, 0.05) == pytest.approx(np.sum(40.0 * (0.7 / 1.05) ** t))
    assert retention_clv(100.0, 0.0, 0.1) == 0.0
    with pytest.raises(ModelSpecificationError, match="infinite"):
        retention_clv(100.0, 1.0, 0.0)
    with pytest.raises(ModelSpecificationError, match="retention"):
        retention_clv(100.0, 1.2, 0.1)


def _tiny_rfm(first=True) -> RFMData:
    return RFMData(
        customer_id=np.array(["a", "b", "c"]),
        frequency=np.array([2, 0, 4]),
        recency=np.array([10.0, 0.0, 30.0]),
        T=np.array([20.0, 5.0, 40.0]),
        monetary_value=np.array([15.0, 0.0, 7.5]),
        segment=np.zeros(3, dtype=int),
        first_purchase_value=np.array([30.0, 12.0, 10.0]) if first else None,
    )


def test_historical_clv_from_rfm_and_from_transactions_by_hand():
    rfm = _tiny_rfm()
    got = historical_clv(rfm, margin=0.5)
    # a: 2*15 + 30 = 60; b: 12; c: 4*7.5 + 10 = 40; times 0.5
    assert got.to_dict() == pytest.approx({"a": 30.0, "b": 6.0, "c": 20.0})
    repeat_only = historical_clv(_tiny_rfm(first=False), include_first_purchase=False)
    assert repeat_only.to_dict() == pytest.approx({"a": 30.0, "b": 0.0, "c": 30.0})
    with pytest.raises(DataValidationError, match="first_purchase_value"):
        historical_clv(_tiny_rfm(first=False))
    tx = pd.DataFrame({"customer_id": [1, 2, 1, 1], "amount": [10.0, 5.0, 2.5, 7.5]})
    assert historical_clv(tx).to_dict() == {1: 20.0, 2: 5.0}
    with pytest.raises(DataValidationError, match="missing columns"):
        historical_clv(tx.rename(columns={"amount": "value"}))


def test_textbook_clv_rfm_by_hand():
    rfm = _tiny_rfm()
    # 60% retention per 52 weeks -> lifetime 52 / 0.4 = 130 weeks
    got = textbook_clv_rfm(rfm, retention=0.6, retention_period=52.0, margin=0.25)
    # a: 15 * (2/20) * 130 * 0.25 = 48.75; b: 0; c: 7.5 * (4/40) * 130 * 0.25 = 24.375
    assert got.to_dict() == pytest.approx({"a": 48.75, "b": 0.0, "c": 24.375})
    all_ = textbook_clv_rfm(rfm, retention=0.6, retention_period=52.0, purchase_rate="all")
    # a: value (30 + 30)/3 = 20, rate 3/20 -> 20 * 0.15 * 130 = 390
    # b: value 12, rate 1/5 -> 12 * 0.2 * 130 = 312; c: value 40/5 = 8, rate 5/40 -> 130
    assert all_.to_dict() == pytest.approx({"a": 390.0, "b": 312.0, "c": 130.0})
    with pytest.raises(DataValidationError, match="first_purchase_value"):
        textbook_clv_rfm(_tiny_rfm(first=False), retention=0.5, retention_period=1.0,
                         purchase_rate="all")  # fmt: skip
    with pytest.raises(ModelSpecificationError, match="retention"):
        textbook_clv_rfm(rfm, retention=1.0, retention_period=52.0)


def test_gamma_gamma_mle_leaves_out_zero_spend_repeat_buyers_with_a_warning():
    from bayesclv.classic import fit_gamma_gamma

    rng = np.random.default_rng(3)
    n = 400
    x = rng.integers(1, 6, n)
    spend = rng.gamma(6.0, 1.0, n) * 5.0
    def rfm(values):
        return RFMData(customer_id=np.arange(n), frequency=x, recency=np.full(n, 5.0),
                       T=np.full(n, 10.0), monetary_value=values,
                       segment=np.zeros(n, dtype=int))  # fmt: skip

    clean = fit_gamma_gamma(rfm(spend))
    spend0 = spend.copy()
    spend0[:3] = 0.0
    with pytest.warns(UserWarning, match="3 repeat buyer"):
        res = fit_gamma_gamma(rfm(spend0))
    assert res.n_customers == n - 3 and clean.n_customers == n
    assert np.isfinite(res.log_likelihood) and res.converged
