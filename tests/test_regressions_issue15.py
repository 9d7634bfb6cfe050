"""The repros of issue 15 ("correct numbers everywhere"), each a named regression test with
an independent oracle (mpmath quadrature of the Beta expectation, or the direct formula),
and the guard that refuses untrustworthy numbers with an error naming customers and draws.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import xarray as xr

from bayesclv.clv import expected_clv, score_customers, simulate_clv
from bayesclv.data import RFMData
from bayesclv.errors import NumericalError
from bayesclv.predict import expected_purchases

mpmath = pytest.importorskip("mpmath")

KW = dict(horizon=52.0, discount_rate=0.1, discount_period=52.0)


def _draws(model, values, n_draw):
    return xr.Dataset(
        {k: (("chain", "draw", "segment"), np.asarray(v, float).reshape(1, n_draw, 1))
         for k, v in values.items()},
        coords={"segment": ["all"]}, attrs={"model": model},
    )


def _two_customers():
    df = pd.DataFrame(dict(customer_id=["c1", "c2"], frequency=[1, 0], recency=[18.4, 0.0],
                           T=[21.6, 21.7], monetary_value=[20.0, 0.0]))
    return RFMData.from_frame(df, customer_id="customer_id", time_unit="week")


def _phi_mpmath(r, alpha, a, b_eff, x, T, t):
    """E_p[(1 - (1 + p k)^-n) / p], p ~ Beta(a, b_eff), by 40-digit quadrature."""
    mpmath.mp.dps = 40
    n, k = mpmath.mpf(r) + x, mpmath.mpf(t) / (mpmath.mpf(alpha) + T)
    a, b = mpmath.mpf(a), mpmath.mpf(b_eff)
    logB = mpmath.log(mpmath.beta(a, b))

    def f(p):
        return -mpmath.expm1(-n * mpmath.log1p(p * k)) / p * mpmath.exp(
            (a - 1) * mpmath.log(p) + (b - 1) * mpmath.log1p(-p) - logB)

    mode = min(max((a - 1) / (a + b - 2), mpmath.mpf("1e-12")), 1 - mpmath.mpf("1e-12")) \
        if a + b > 2 else mpmath.mpf("0.5")
    return float(mpmath.quad(f, [0, mode, 1]))


def _bg_p_alive(r, alpha, a, b, x, t_x, T):
    if x == 0:
        return 1.0
    return 1.0 / (1.0 + a / (b + x - 1) * ((alpha + T) / (alpha + t_x)) ** (r + x))


@pytest.mark.parametrize("big", [(200.0, 600.0), (2000.0, 6000.0)],
                         ids=["a200_b600", "a2000_b6000"])
def test_score_customers_with_a_few_draws_of_huge_a_and_b(big):
    # issue 15 repro 1: 400 draws, 2 of them with huge (a, b); before: clv_mean 7.9e85 and
    # 2.2e86 (a = 200, b = 600), NaN (a = 2000, b = 6000)
    n = 400
    a, b = np.full(n, 2.0), np.full(n, 6.0)
    a[:2], b[:2] = big
    pp = _draws("bgnbd", dict(r=np.full(n, 0.5), alpha=np.full(n, 4.0), a=a, b=b), n)
    sp = _draws("gamma_gamma", dict(p=np.full(n, 6.0), q=np.full(n, 4.0), v=np.full(n, 15.0)), n)
    rfm = _two_customers()
    table = score_customers(pp, sp, rfm, method="expected", **KW).table
    assert np.isfinite(table["clv_mean"]).all()
    # oracle: expected purchases per draw (the closed form, unaffected by the CLV tables)
    # times the spend and the discounting, which the direct route computes draw by draw
    exact = expected_clv(pp, sp, rfm, **KW).mean(("chain", "draw")).values
    np.testing.assert_allclose(table["clv_mean"], exact, rtol=1e-9)
    e = expected_purchases(pp, rfm, 52.0).mean(("chain", "draw")).values
    assert np.all(table["clv_mean"].to_numpy() < 40.0 * e)  # spend ~20-25 per purchase
    # the two huge draws themselves against mpmath
    for c, (x, t_x, T) in enumerate([(1, 18.4, 21.6), (0, 0.0, 21.7)]):
        got = expected_purchases(pp, rfm, 52.0).values[0, 0, c]
        want = _bg_p_alive(0.5, 4.0, *big, x, t_x, T) * _phi_mpmath(
            0.5, 4.0, big[0], big[1] + x, x, T, 52.0)
        assert got == pytest.approx(want, rel=1e-10)


@pytest.mark.parametrize("a, b", [(0.5, 0.5), (0.3, 0.7), (3643.0, 28119.0)],
                         ids=["a_plus_b_is_one", "a_plus_b_is_one_uneven", "a_b_huge"])
def test_expected_purchases_finite_when_a_plus_b_is_one_or_huge(a, b):
    # issue 15 repro 3: NaN for x = 0 at a + b = 1 and for a = 3643, b = 28119
    pp = _draws("bgnbd", dict(r=[0.292], alpha=[17.2], a=[a], b=[b]), 1)
    rfm = _two_customers()
    got = expected_purchases(pp, rfm, 39.0).values.ravel()
    for c, (x, t_x, T) in enumerate([(1, 18.4, 21.6), (0, 0.0, 21.7)]):
        want = _bg_p_alive(0.292, 17.2, a, b, x, t_x, T) * _phi_mpmath(
            0.292, 17.2, a, b + x, x, T, 39.0)
        assert got[c] == pytest.approx(want, rel=1e-10)


def test_partial_pooling_fit_with_weak_dropout_exports_finite_clv():
    # issue 15 repro 2: a 250-customer simulated log with 2 segments, BG/NBD partial
    # pooling (pymc 2 x 200), scored with method="expected": before, exit 0 with clv_mean
    # -1.47e72 / +1.65e72 and expected purchases -4.99e7 / 1.6e20 in the export.
    from bayesclv.fit import fit, posterior_params
    from bayesclv.models import build_bgnbd, build_gamma_gamma
    from bayesclv.simulate import BGNBDParams, GammaGammaParams, simulate_rfm

    truth = {"a": BGNBDParams(0.6, 5.0, 1.5, 30.0), "b": BGNBDParams(0.9, 7.0, 1.0, 25.0)}
    rfm = simulate_rfm(truth, {"a": 150, "b": 100}, T=(10.0, 30.0),
                       spend=GammaGammaParams(6.0, 4.0, 15.0), random_seed=4)
    kw = dict(sampler="pymc", chains=2, draws=200, tune=200, random_seed=2, progressbar=False)
    purchase = posterior_params(fit(build_bgnbd(rfm, pooling="partial"), **kw))
    spend = posterior_params(fit(build_gamma_gamma(rfm, pooling="partial"), **kw))
    table = score_customers(purchase, spend, rfm, method="expected", **KW).table
    for col in ("clv_mean", "clv_lower", "clv_upper", "expected_purchases", "p_alive"):
        assert np.isfinite(table[col]).all() and (table[col] >= 0).all(), col
    ref = expected_clv(purchase, spend, rfm, **KW).mean(("chain", "draw")).values
    np.testing.assert_allclose(table["clv_mean"], ref, rtol=1e-8)
    sim = simulate_clv(purchase, spend, rfm, random_seed=1, **KW)
    assert np.isfinite(sim.values).all()


def test_guard_names_customers_and_draws_of_an_untrustworthy_table():
    # The last line of defence: a table outside the family's exact bounds is refused,
    # naming the customer and the draw, whatever produced it.
    from bayesclv.clv_engine import Engine, check_discount

    n = 3
    pp = _draws("bgnbd", dict(r=[0.5] * n, alpha=[4.0] * n, a=[2.0] * n, b=[6.0] * n), n)
    sp = _draws("gamma_gamma", dict(p=[6.0] * n, q=[4.0] * n, v=[15.0] * n), n)
    rfm = _two_customers()
    eng = Engine(pp, sp, rfm, check_discount(52.0, 0.1, 52.0, "per_period", None), 1.0, 1)
    g = np.zeros(2, dtype=np.int64)
    x, T = rfm.frequency.astype(float), rfm.T
    bad = np.ones((2, n, 2))
    bad[:, 1, 0] = 1e72  # draw 1 of the first table row
    with pytest.raises(NumericalError, match=r"customer 'c1'.*draw 1.*a=2") as err:
        eng._check_tables(bad, g, x, T, 52.0)
    assert "Nothing was returned or exported" in str(err.value)
