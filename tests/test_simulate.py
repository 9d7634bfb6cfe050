"""Simulators against closed forms (FHL 2005, Fader & Hardie notes) and MLE recovery.

Every Monte Carlo comparison asserts ``|estimate - truth| < K_SE * standard error``, with
the standard error estimated from the simulated sample itself.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import integrate, special, stats

from bayesclv.classic import fit_bgnbd, fit_gamma_gamma, fit_mbgnbd, fit_pareto_nbd
from bayesclv.data import RFMData
from bayesclv.errors import ModelSpecificationError
from bayesclv.families.sampling import ordered_uniforms
from bayesclv.likelihoods import pareto_nbd_logp
from bayesclv.simulate import (
    BGNBDParams,
    GammaGammaParams,
    MBGNBDParams,
    ParetoNBDParams,
    simulate_customers,
    simulate_rfm,
    simulate_transactions,
)

K_SE = 4.0  # tolerance in Monte Carlo standard errors (two-sided p ~ 6e-5 per check)

CDNOW_BG = BGNBDParams(r=0.243, alpha=4.414, a=0.793, b=2.426)
OTHER_BG = BGNBDParams(r=1.5, alpha=12.0, a=2.5, b=6.0)
CDNOW_PARETO = ParetoNBDParams(r=0.553, alpha=10.578, s=0.606, beta=11.669)
PARETO_S_GT_1 = ParetoNBDParams(r=0.9, alpha=6.0, s=2.5, beta=40.0)
CDNOW_GG = GammaGammaParams(p=6.25, q=3.74, v=15.44)


def assert_mc_close(sample, expected, what: str) -> None:
    sample = np.asarray(sample, dtype=np.float64)
    mean = sample.mean()
    se = sample.std(ddof=1) / np.sqrt(sample.size)
    assert abs(mean - expected) < K_SE * se, (
        f"{what}: simulated {mean:.6g} vs closed form {expected:.6g} (SE {se:.3g})"
    )


# --------------------------------------------------------------------------- closed forms
def bgnbd_expected_purchases(pr: BGNBDParams, t: float) -> float:
    """E[X(t)], FHL (2005) eq. (9)."""
    r, alpha, a, b = pr.r, pr.alpha, pr.a, pr.b
    z = t / (alpha + t)
    return (
        (a + b - 1)
        / (a - 1)
        * (1 - (alpha / (alpha + t)) ** r * special.hyp2f1(r, b, a + b - 1, z))
    )


def bgnbd_pmf(pr: BGNBDParams, t: float, x: int) -> float:
    """P(X(t) = x), FHL (2005) eq. (8)."""
    r, alpha, a, b = pr.r, pr.alpha, pr.a, pr.b
    q = alpha / (alpha + t)
    z = t / (alpha + t)

    def nb(j):  # Gamma(r+j) / (Gamma(r) j!) q^r z^j
        return np.exp(special.gammaln(r + j) - special.gammaln(r) - special.gammaln(j + 1)) * (
            q**r * z**j
        )

    out = np.exp(special.betaln(a, b + x) - special.betaln(a, b)) * nb(x)
    if x > 0:
        out += np.exp(special.betaln(a + 1, b + x - 1) - special.betaln(a, b)) * (
            1 - sum(nb(j) for j in range(x))
        )
    return float(out)


def bgnbd_p_alive(pr, x, t_x, T, modified=False):
    """P(alive | x, t_x, T): Fader, Hardie & Lee (2008), "Computing P(alive) using the
    BG/NBD model", eq. (1); for MBG/NBD the dropout term has ``a / (b + x)``."""
    r, alpha, a, b = pr.r, pr.alpha, pr.a, pr.b
    ratio = ((alpha + T) / (alpha + t_x)) ** (r + x)
    if modified:
        return 1.0 / (1.0 + a / (b + x) * ratio)
    return np.where(x > 0, 1.0 / (1.0 + a / np.maximum(b + x - 1, 1e-300) * ratio), 1.0)


def pareto_expected_purchases(pr: ParetoNBDParams, t: float) -> float:
    """E[X(t)] (Schmittlein et al. 1987; Fader & Hardie 2005 note, eq. 27), s > 1."""
    return pr.r * pr.beta / (pr.alpha * (pr.s - 1)) * (1 - (pr.beta / (pr.beta + t)) ** (pr.s - 1))


def pareto_p_alive(pr: ParetoNBDParams, x, t_x, T):
    """P(alive | x, t_x, T) = (alive term of the likelihood) / likelihood."""
    r, alpha, s, beta = pr.r, pr.alpha, pr.s, pr.beta
    log_alive = (
        special.gammaln(r + x)
        - special.gammaln(r)
        + r * np.log(alpha)
        + s * np.log(beta)
        - (r + x) * np.log(alpha + T)
        - s * np.log(beta + T)
    )
    return np.exp(log_alive - pareto_nbd_logp(r, alpha, s, beta, x, t_x, T))


# --------------------------------------------------------------------------- tests
def test_bgnbd_mean_purchases_match_fhl_eq9_per_segment_and_holdout():
    T, h = 39.0, 39.0
    sim = simulate_customers(
        {"cdnow": CDNOW_BG, "other": OTHER_BG},
        {"cdnow": 200_000, "other": 100_000},
        T=T,
        holdout_length=h,
        random_seed=11,
    )
    for code, (name, pr) in enumerate({"cdnow": CDNOW_BG, "other": OTHER_BG}.items()):
        sel = sim.segment == code
        assert sim.segment_names[code] == name
        assert_mc_close(sim.frequency[sel], bgnbd_expected_purchases(pr, T), f"{name} E[X(T)]")
        # holdout purchases: E[X(T+h)] - E[X(T)] for customers of the same age
        expected_hold = bgnbd_expected_purchases(pr, T + h) - bgnbd_expected_purchases(pr, T)
        assert_mc_close(sim.holdout_frequency[sel], expected_hold, f"{name} holdout")


def test_bgnbd_count_distribution_matches_fhl_eq8():
    t = 52.0
    sim = simulate_customers(CDNOW_BG, 200_000, T=t, random_seed=12)
    for x in range(6):
        assert_mc_close(sim.frequency == x, bgnbd_pmf(CDNOW_BG, t, x), f"P(X({t})={x})")
    # eq. (8) sums to one: a check on the oracle itself
    assert sum(bgnbd_pmf(CDNOW_BG, t, x) for x in range(400)) == pytest.approx(1.0, abs=1e-6)


def test_mbgnbd_zero_purchases_probability():
    pr = MBGNBDParams(r=0.5, alpha=6.0, a=0.9, b=1.6)
    t = 30.0
    sim = simulate_customers(pr, 200_000, T=t, random_seed=13)
    # P(X(t) = 0) = E[p] + E[1-p] (alpha/(alpha+t))^r: dropout at 0, or no purchase
    expected = pr.a / (pr.a + pr.b) + pr.b / (pr.a + pr.b) * (pr.alpha / (pr.alpha + t)) ** pr.r
    assert_mc_close(sim.frequency == 0, expected, "MBG/NBD P(X(t)=0)")
    # A dropout at time 0 is possible, unlike BG/NBD
    truth = sim.truth
    assert (truth["dropout_time"] == 0).mean() == pytest.approx(pr.a / (pr.a + pr.b), abs=0.01)


def test_mbgnbd_mean_purchases_match_closed_form():
    """MBG/NBD E[X(t)] = b/(a-1) [1 - (alpha/(alpha+t))^r 2F1(r, b+1; a+b; t/(alpha+t))].

    Given (lambda, p), E[X(t)] = (1-p)/p (1 - exp(-lambda p t)) (BG/NBD's 1/p times the
    chance 1-p of surviving time 0); the (1-p) turns Beta(a, b) into Beta(a, b+1) in
    FHL (2005) eq. (9), as in Batislam et al. (2007).
    """
    pr = MBGNBDParams(r=0.525, alpha=6.183, a=0.891, b=1.614)

    def expected(t):
        z = t / (pr.alpha + t)
        hyp = special.hyp2f1(pr.r, pr.b + 1, pr.a + pr.b, z)
        return pr.b / (pr.a - 1) * (1 - (pr.alpha / (pr.alpha + t)) ** pr.r * hyp)

    sim = simulate_customers(pr, 200_000, T=32.0, holdout_length=46.0, random_seed=28)
    assert_mc_close(sim.frequency, expected(32.0), "MBG/NBD E[X(32)]")
    assert_mc_close(sim.frequency + sim.holdout_frequency, expected(78.0), "MBG/NBD E[X(78)]")


@pytest.mark.parametrize(
    ("params", "modified"),
    [(CDNOW_BG, False), (OTHER_BG, False), (MBGNBDParams(0.5, 6.0, 0.9, 1.6), True)],
)
def test_alive_flag_is_calibrated_to_closed_form_p_alive(params, modified):
    """E[alive - P(alive | x, t_x, T)] = 0, also weighted by functions of the data."""
    sim = simulate_customers(params, 200_000, T=(5.0, 60.0), random_seed=14)
    x, t_x, T = sim.frequency, sim.recency, sim.T
    resid = sim.truth["alive_at_T"].to_numpy() - bgnbd_p_alive(params, x, t_x, T, modified)
    assert_mc_close(resid, 0.0, "alive - P(alive)")
    repeat = x > 0
    assert_mc_close(resid[repeat] * (1 - t_x[repeat] / T[repeat]), 0.0, "weighted by 1 - t_x/T")
    assert_mc_close(resid[repeat] * np.log1p(x[repeat]), 0.0, "weighted by log(1+x)")


def test_bgnbd_dropout_time_beyond_the_data_matches_population_survival():
    """P(dropout > t) = E_p[(alpha / (alpha + p t))^r] (no dropout among K(t) purchases)."""
    T, h = 20.0, 10.0
    sim = simulate_customers(OTHER_BG, 200_000, T=T, holdout_length=h, random_seed=15)
    pr = OTHER_BG
    truth = sim.truth
    for t in (T, T + h / 2, T + h, 3 * (T + h)):

        def integrand(p, t=t):
            return stats.beta.pdf(p, pr.a, pr.b) * (pr.alpha / (pr.alpha + p * t)) ** pr.r

        expected = integrate.quad(integrand, 0, 1, epsabs=1e-12)[0]
        assert_mc_close(truth["dropout_time"] > t, expected, f"P(dropout > {t})")
    np.testing.assert_array_equal(truth["alive_at_T"], truth["dropout_time"] > T)
    np.testing.assert_array_equal(truth["alive_at_end"], truth["dropout_time"] > T + h)
    assert np.all(truth["dropout_time"].to_numpy() >= sim.recency)


def test_pareto_nbd_mean_purchases_and_p_alive():
    T, h = 39.0, 26.0
    sim = simulate_customers(
        {"a": PARETO_S_GT_1, "cdnow": CDNOW_PARETO},
        {"a": 200_000, "cdnow": 100_000},
        T=T,
        holdout_length=h,
        random_seed=16,
    )
    a = sim.segment == 0
    pr = PARETO_S_GT_1
    assert_mc_close(sim.frequency[a], pareto_expected_purchases(pr, T), "Pareto E[X(T)]")
    expected_hold = pareto_expected_purchases(pr, T + h) - pareto_expected_purchases(pr, T)
    assert_mc_close(sim.holdout_frequency[a], expected_hold, "Pareto holdout")
    # lifetime Exp(mu), mu ~ Gamma(s, beta): P(tau > t) = (beta / (beta + t))^s
    tau = sim.truth["dropout_time"].to_numpy()
    assert_mc_close(tau[a] > T, (pr.beta / (pr.beta + T)) ** pr.s, "Pareto P(tau > T)")
    for code, params in enumerate((PARETO_S_GT_1, CDNOW_PARETO)):
        sel = sim.segment == code
        resid = sim.truth["alive_at_T"].to_numpy()[sel] - pareto_p_alive(
            params, sim.frequency[sel].astype(float), sim.recency[sel], sim.T[sel]
        )
        assert_mc_close(resid, 0.0, f"Pareto alive - P(alive), segment {code}")


def test_gamma_gamma_spend_means():
    sim = simulate_customers(
        CDNOW_BG, 200_000, T=60.0, holdout_length=30.0, spend=CDNOW_GG, random_seed=17
    )
    gg = CDNOW_GG
    mean_spend = gg.p * gg.v / (gg.q - 1)  # Fader & Hardie (2013), E[zbar] = p v / (q - 1)
    repeat = sim.frequency > 0
    assert_mc_close(sim.monetary_value[repeat], mean_spend, "E[zbar | x > 0]")
    assert_mc_close(sim.first_purchase_value, mean_spend, "E[first purchase]")
    # holdout spend = sum of y amounts, y independent of nu
    assert_mc_close(
        sim.holdout_spend, sim.holdout_frequency.mean() * mean_spend, "E[holdout spend]"
    )
    # E[zbar | nu] = p / nu for every x: check x = 1 and x >= 5 separately
    nu = sim.truth["nu"].to_numpy()
    for sel in (sim.frequency == 1, sim.frequency >= 5):
        assert_mc_close(sim.monetary_value[sel] - gg.p / nu[sel], 0.0, "E[zbar | nu]")
    assert np.all(sim.monetary_value[~repeat] == 0)


def _assert_recovers(res, truth: dict[str, float]) -> None:
    assert res.converged, res.message
    for k, v in truth.items():
        z = (np.log(res.params[k]) - np.log(v)) / res.se_log[k]
        assert abs(z) < K_SE, f"{res.model} {k}: estimate {res.params[k]:.4g}, truth {v}, z={z:.2f}"


def test_mle_on_simulated_data_recovers_truth():
    """Maximising the package's log-densities on simulated data recovers the truth."""
    rfm = simulate_rfm(OTHER_BG, 20_000, T=(10.0, 80.0), spend=CDNOW_GG, random_seed=18)
    _assert_recovers(fit_bgnbd(rfm), vars(OTHER_BG))
    _assert_recovers(fit_gamma_gamma(rfm), vars(CDNOW_GG))
    mbg = MBGNBDParams(0.8, 5.0, 1.2, 3.0)
    _assert_recovers(fit_mbgnbd(simulate_rfm(mbg, 20_000, T=(10.0, 80.0), spend=CDNOW_GG,
                                             random_seed=19)), vars(mbg))  # fmt: skip
    rfm_p = simulate_rfm(PARETO_S_GT_1, 5_000, T=(20.0, 80.0), spend=CDNOW_GG, random_seed=20)
    _assert_recovers(fit_pareto_nbd(rfm_p), vars(PARETO_S_GT_1))


def test_mle_fit_fails_the_recovery_check_for_wrong_truth():
    """The recovery check has power: a truth 30% away is rejected."""
    rfm = simulate_rfm(OTHER_BG, 20_000, T=(10.0, 80.0), spend=CDNOW_GG, random_seed=18)
    wrong = {**vars(OTHER_BG), "r": OTHER_BG.r * 1.3}
    with pytest.raises(AssertionError):
        _assert_recovers(fit_bgnbd(rfm), wrong)


def test_simulate_rfm_returns_valid_rfmdata_with_holdout_and_truth():
    rfm = simulate_rfm(
        {"web": CDNOW_BG, "store": OTHER_BG},
        {"web": 300, "store": 200},
        T=(0.0, 52.0),
        holdout_length=13.0,
        spend={"web": CDNOW_GG, "store": GammaGammaParams(3.0, 5.0, 20.0)},
        time_unit="week",
        random_seed=21,
    )
    assert isinstance(rfm, RFMData)
    assert rfm.segment_names == ("web", "store")
    assert rfm.segment_sizes().tolist() == [300, 200]
    assert rfm.holdout_length == 13.0 and rfm.has_holdout
    assert np.all((rfm.holdout_frequency > 0) == (rfm.holdout_spend > 0))
    truth = rfm.meta["truth"]
    assert len(truth) == 500 and {"lam", "p", "nu", "alive_at_T"} <= set(truth.columns)
    assert not truth["alive_at_T"][rfm.holdout_frequency > 0].eq(False).any()
    assert rfm.meta["simulation"]["params"]["web"] == CDNOW_BG
    assert np.all((rfm.T >= 0) & (rfm.T <= 52.0))


def test_seed_reproduces_and_changes_results():
    kw = dict(T=(0.0, 52.0), holdout_length=10.0, spend=CDNOW_GG)
    a = simulate_customers(CDNOW_BG, 1000, random_seed=5, **kw)
    b = simulate_customers(CDNOW_BG, 1000, random_seed=5, **kw)
    c = simulate_customers(CDNOW_BG, 1000, random_seed=6, **kw)
    np.testing.assert_array_equal(a.recency, b.recency)
    np.testing.assert_array_equal(a.monetary_value, b.monetary_value)
    pd.testing.assert_frame_equal(a.truth, b.truth)
    assert not np.array_equal(a.truth["lam"], c.truth["lam"])
    tx1 = simulate_transactions(CDNOW_PARETO, 200, random_seed=9, **kw)
    tx2 = simulate_transactions(CDNOW_PARETO, 200, random_seed=9, **kw)
    pd.testing.assert_frame_equal(tx1, tx2)


@pytest.mark.parametrize("params", [CDNOW_BG, MBGNBDParams(0.5, 6.0, 0.9, 1.6), CDNOW_PARETO])
def test_transaction_log_reproduces_the_summaries(params):
    sim = simulate_customers(
        {"s1": params, "s2": params},
        {"s1": 1500, "s2": 500},
        T=(0.0, 60.0),
        holdout_length=20.0,
        spend=CDNOW_GG,
        time_unit="day",
        random_seed=22,
    )
    tx = sim.to_transactions("2021-03-01", random_seed=23)
    cal_end = tx.attrs["calibration_end"]
    assert tx.attrs["holdout_end"] == cal_end + pd.Timedelta(days=20)
    day = pd.Timedelta(days=1)
    first = tx.groupby("customer_id")["date"].transform("min")
    tx = tx.assign(t=(tx["date"] - first) / day, cal=tx["date"] <= cal_end)
    cal = tx[tx["cal"]].groupby("customer_id")
    hold = tx[~tx["cal"]].groupby("customer_id")
    n = sim.n_customers
    np.testing.assert_array_equal(cal.size().reindex(range(n), fill_value=0) - 1, sim.frequency)
    np.testing.assert_allclose(cal["t"].max().to_numpy(), sim.recency, atol=1e-6)
    np.testing.assert_allclose(((cal_end - first.groupby(tx["customer_id"]).first()) / day),
                               sim.T, atol=1e-6)  # fmt: skip
    np.testing.assert_array_equal(
        hold.size().reindex(range(n), fill_value=0).to_numpy(), sim.holdout_frequency
    )
    repeat_spend = cal["amount"].sum() - tx.groupby("customer_id")["amount"].first()
    np.testing.assert_allclose(repeat_spend, sim.frequency * sim.monetary_value, atol=1e-8)
    np.testing.assert_allclose(
        hold["amount"].sum().reindex(range(n), fill_value=0.0), sim.holdout_spend, atol=1e-8
    )
    assert (tx.groupby("customer_id")["date"].diff().dropna() >= pd.Timedelta(0)).all()
    assert set(tx["segment"].cat.categories) == {"s1", "s2"}
    assert np.all(tx["amount"] > 0)


def test_transaction_amounts_are_iid_gamma_given_nu():
    """Dirichlet splitting of the Gamma sum gives Gamma(p, nu) amounts: check E and Var."""
    gg = GammaGammaParams(p=2.0, q=50.0, v=49.0)  # nu ~ 1 tightly
    sim = simulate_customers(
        BGNBDParams(5.0, 1.0, 1.0, 50.0), 5000, T=10.0, spend=gg, random_seed=24
    )
    tx = sim.to_transactions(random_seed=25)
    nu = sim.truth["nu"].to_numpy()[tx["customer_id"].to_numpy()]
    scaled = tx["amount"].to_numpy() * nu  # ~ Gamma(p, 1) for every purchase
    assert_mc_close(scaled, gg.p, "E[amount * nu]")
    assert_mc_close((scaled - gg.p) ** 2, gg.p, "Var[amount * nu]")


def test_ordered_uniforms_have_beta_order_statistic_means():
    rng = np.random.default_rng(26)
    m = 4
    u = ordered_uniforms(np.full(50_000, m), rng).reshape(-1, m)
    assert np.all(np.diff(u, axis=1) >= 0)
    for k in range(m):  # k-th of m uniforms ~ Beta(k+1, m-k), mean (k+1)/(m+1)
        assert_mc_close(u[:, k], (k + 1) / (m + 1), f"order statistic {k + 1}")


def test_staggered_and_explicit_ages():
    sim = simulate_customers(CDNOW_BG, 10_000, T=(10.0, 20.0), random_seed=27)
    assert sim.T.min() >= 10.0 and sim.T.max() <= 20.0
    assert_mc_close(sim.T, 15.0, "uniform ages")
    ages = np.linspace(0, 5, 7)
    sim = simulate_customers(CDNOW_BG, 7, T=ages, random_seed=27)
    np.testing.assert_array_equal(sim.T, ages)
    assert np.all(sim.recency <= sim.T)


def test_invalid_inputs_raise_actionable_errors():
    with pytest.raises(ModelSpecificationError, match="'alpha' must be finite and > 0"):
        BGNBDParams(0.2, -1.0, 0.5, 1.0)
    with pytest.raises(ModelSpecificationError, match="sizes has segments"):
        simulate_customers({"a": CDNOW_BG}, {"b": 10}, T=10.0, random_seed=1)
    with pytest.raises(ModelSpecificationError, match="same model"):
        simulate_customers({"a": CDNOW_BG, "b": CDNOW_PARETO}, {"a": 1, "b": 1}, T=1.0)
    with pytest.raises(ModelSpecificationError, match="one age per customer"):
        simulate_customers(CDNOW_BG, 10, T=np.ones(3), random_seed=1)
    with pytest.raises(ModelSpecificationError, match="spend must give GammaGammaParams"):
        simulate_customers({"a": CDNOW_BG}, {"a": 5}, T=5.0, spend={"b": CDNOW_GG})


def test_simulate_rfm_without_spend_has_zero_spend_columns():
    rfm = simulate_rfm(CDNOW_BG, 2000, T=(0.0, 52.0), holdout_length=5.0, random_seed=3)
    assert rfm.frequency.sum() > 0
    assert np.all(rfm.monetary_value == 0) and np.all(rfm.holdout_spend == 0)
    assert rfm.first_purchase_value is None
