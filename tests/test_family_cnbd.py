"""BG/CNBD-k and MBG/CNBD-k families.

Oracles: BG/NBD and MBG/NBD at k = 1 (bit for bit), an independent NumPy implementation
of the likelihood written out as in BTYDplus, the likelihood integrated over purchase
times against simulated frequencies, P(alive), expected purchases, the holdout pmf and
the future-event simulator against Monte Carlo from the history simulator, a
brute-force negative-binomial sum for the expected purchases, the published MLE columns
of the grocery and donations data (``../shared/data``; skipped when absent), and a small
NUTS recovery. Properties over the whole parameter support with hypothesis.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import xarray as xr
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scipy import integrate, stats
from scipy.special import betaln

from bayesclv.classic import fit_mle
from bayesclv.data import RFMData, rfm_summary, validate_transactions
from bayesclv.errors import DataValidationError, ModelSpecificationError
from bayesclv.families import FAMILIES, get_family
from bayesclv.families.bgnbd import BGNBD, MBGNBD, bgnbd_logp, mbgnbd_logp
from bayesclv.families.cnbd import (
    BGCNBD,
    MBGCNBD,
    BGCNBDParams,
    MBGCNBDParams,
    _cum_survival,
    choose_k,
    cnbd_logp,
    erlang_phi,
    profile_k,
)
from bayesclv.predict import expected_purchases_new_customer, probability_alive
from bayesclv.simulate import simulate_rfm

FAMS = {"bgcnbd": BGCNBD, "mbgcnbd": MBGCNBD}
SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def theta(r, alpha, a, b, k):
    return {"r": np.array(r), "alpha": np.array(alpha), "a": np.array(a), "b": np.array(b),
            "k": np.array(float(k))}  # fmt: skip


def draws(values, n_draw=1, model="bgcnbd", segments=("all",), jitter=0.0, seed=0):
    rng = np.random.default_rng(seed)
    shape = (1, n_draw, len(segments))
    ds = xr.Dataset(
        {k: (("chain", "draw", "segment"),
             v * (np.exp(jitter * rng.standard_normal(shape)) if k != "k" else np.ones(shape)))
         for k, v in values.items()},
        coords={"chain": [0], "draw": np.arange(n_draw), "segment": list(segments)},
    )  # fmt: skip
    ds.attrs.update(model=model, time_unit="week")
    return ds


def histories(fam, n, T, h, seed, **pop):
    rng = np.random.default_rng(seed)
    full = {k: np.full(n, float(v)) for k, v in pop.items()}
    return fam.simulate_history(full, np.full(n, float(T)), float(h), rng)


# --------------------------------------------------------------------------- likelihood
def small_data(seed=0, n=400):
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 40, n).astype(float)
    T = rng.uniform(0.5, 80.0, n)
    t_x = np.where(x > 0, rng.uniform(0.01, 1.0, n) * T, 0.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        gap = np.log(t_x / np.maximum(x, 1))
        litt = np.where(x > 0, x * gap - rng.exponential(1.0, n), 0.0)
    return x, t_x, T, litt


@pytest.mark.parametrize("modified", [False, True])
def test_k1_likelihood_is_bgnbd_bit_for_bit(modified):
    x, t_x, T, litt = small_data()
    ref = mbgnbd_logp if modified else bgnbd_logp
    points = ((0.24, 4.4, 0.79, 2.4), (3.0, 0.01, 50.0, 0.002), (1e-3, 1e4, 1e-3, 1e5))
    for r, alpha, a, b in points:
        got = cnbd_logp(r, alpha, a, b, x, t_x, T, litt, k=1, modified=modified)
        assert np.array_equal(got, ref(r, alpha, a, b, x, t_x, T))
    fam, bg = (MBGCNBD, MBGNBD) if modified else (BGCNBD, BGNBD)
    th = theta(0.5, 3.0, 0.7, 2.0, 1)
    # P(alive): exp(-softplus) here, 1 / (1 + exp) there
    np.testing.assert_allclose(fam.p_alive(th, x, t_x, T), bg.p_alive(th, x, t_x, T), rtol=1e-13)
    np.testing.assert_allclose(
        fam.expected_alive(th, x, T, 39.0, t_x=t_x), bg.expected_alive(th, x, T, 39.0),
        rtol=1e-11,
    )


def reference_logp(r, alpha, a, b, k, x, t_x, T, litt, modified):
    """The (M)BG/CNBD-k likelihood written out term by term in plain Python floats: the
    Erlang densities of the gaps, the survival sum over the open gap, the dropout term."""
    out = []
    for xi, ti, Ti, li in zip(x, t_x, T, litt, strict=True):
        n = r + k * xi
        m = 1.0 if modified else 0.0
        head = ((k - 1) * li - xi * math.lgamma(k) + math.lgamma(n) - math.lgamma(r)
                + r * math.log(alpha) + betaln(a, b + xi + m) - betaln(a, b))  # fmt: skip
        surv = sum(
            math.exp(math.lgamma(n + j) - math.lgamma(n) - math.lgamma(j + 1))
            * ((Ti - ti) / (alpha + Ti)) ** j for j in range(k)
        ) * (alpha + Ti) ** -n  # fmt: skip
        drop = 0.0
        if xi > 0 or modified:
            drop = a / (b + xi - 1 + m) * (alpha + ti) ** -n
        out.append(head + math.log(surv + drop))
    return np.array(out)


@pytest.mark.parametrize("modified", [False, True])
@pytest.mark.parametrize("k", [2, 3, 7])
def test_likelihood_matches_an_independent_implementation(modified, k):
    x, t_x, T, litt = small_data(seed=k, n=60)
    x = np.minimum(x, 12)  # keeps the plain-float reference away from under/overflow
    for r, alpha, a, b in ((0.4, 2.0, 0.6, 3.0), (2.5, 15.0, 1.7, 0.4)):
        got = cnbd_logp(r, alpha, a, b, x, t_x, T, litt, k=k, modified=modified)
        ref = reference_logp(r, alpha, a, b, k, x, t_x, T, litt, modified)
        np.testing.assert_allclose(got, ref, rtol=1e-11, atol=1e-11)


@pytest.mark.parametrize("name", ["bgcnbd", "mbgcnbd"])
def test_likelihood_integrated_over_purchase_times_matches_simulated_frequencies(name):
    """For x = 0 the likelihood is P(x = 0); integrated over t_1 (x = 1) and over t_1 < t_2
    (x = 2, litt = log t_1 + log(t_2 - t_1)) it is P(x = 1), P(x = 2): compared with the
    frequencies of 300,000 simulated histories (4 standard errors)."""
    fam = FAMS[name]
    r, alpha, a, b, k, T = 2.0, 6.0, 0.9, 2.5, 3, 20.0
    kk = np.array(float(k))

    def lik(x, t_x, litt):
        ll = fam.logp(r, alpha, a, b, kk, np.array([float(x)]), np.array([t_x]),
                      np.array([T]), np.array([litt]))  # fmt: skip
        return float(np.exp(ll[0]))

    p = [lik(0, 0.0, 0.0),
         integrate.quad(lambda t: lik(1, t, math.log(t)), 0, T, epsabs=1e-12)[0],
         integrate.dblquad(lambda t1, t2: lik(2, t2, math.log(t1) + math.log(t2 - t1)),
                           0, T, 0, lambda t2: t2, epsabs=1e-11)[0]]  # fmt: skip
    n = 300_000
    h = histories(fam, n, T, 0.0, seed=11, r=r, alpha=alpha, a=a, b=b, k=k)
    for x, prob in enumerate(p):
        freq = np.mean(h.frequency == x)
        assert abs(freq - prob) < 4 * math.sqrt(prob * (1 - prob) / n), (x, freq, prob)


def test_pytensor_log_likelihood_equals_numpy_and_its_gradient_is_finite():
    import pytensor

    from bayesclv.models import build_model

    rfm = simulate_rfm(BGCNBDParams(0.8, 2.0, 0.7, 2.0, k=3), 300, T=(5.0, 60.0),
                       random_seed=2)  # fmt: skip
    # (one family: BG/CNBD-k differs only in the masked x = 0 term, same ops)
    for fam in (MBGCNBD.with_k(3),):
        model = build_model(fam, rfm, pooling="complete")
        outs = [model["loglike"], *(model[n] for n in fam.params)]
        evaluate = pytensor.function(model.value_vars, outs, on_unused_input="ignore")
        dlogp = model.compile_dlogp()
        point = model.initial_point()
        for shift in (0.0, -8.0, 8.0):
            pt_ = {k: v + shift for k, v in point.items()}
            got, *nat = evaluate(*[pt_[v.name] for v in model.value_vars])
            assert nat[-1][0] == 3.0  # k, a constant of the model
            ref = np.sum(fam.logp(*(v[0] for v in nat), rfm.frequency.astype(float),
                                  rfm.recency, rfm.T, rfm.litt))  # fmt: skip
            assert np.isclose(float(got), ref, rtol=1e-10), (shift, got, ref)
            assert np.all(np.isfinite(dlogp(pt_))), shift


# --------------------------------------------------------------------------- P(alive), Phi
def _binned(h, pa, phi, T):
    """(observed, predicted, se) of alive and holdout purchases per (x, t_x) bin."""
    x, tx = h.frequency, h.recency
    out = []
    for xv in (0, 1, 2, 4, 7):
        for lo, hi in ((0.0, T / 3), (T / 3, 2 * T / 3), (2 * T / 3, T + 1)):
            sel = (x == 0) if xv == 0 else (x == xv) & (tx >= lo) & (tx < hi)
            if sel.sum() < 3000:
                continue
            m = sel.sum()
            alive = h.alive_at_T[sel]
            out.append(("alive", alive.mean(), pa[sel].mean(), alive.std() / math.sqrt(m)))
            y = h.holdout_frequency[sel]
            out.append(("y", y.mean(), (pa * phi)[sel].mean(), y.std() / math.sqrt(m)))
            ya = h.holdout_frequency[sel & h.alive_at_T]
            if ya.size > 2000:
                out.append(("y|alive", ya.mean(), phi[sel & h.alive_at_T].mean(),
                            ya.std() / math.sqrt(ya.size)))  # fmt: skip
            if xv == 0:
                break
    return out


@pytest.mark.parametrize("name", ["bgcnbd", "mbgcnbd"])
def test_p_alive_and_expected_purchases_match_simulation(name):
    fam = FAMS[name]
    r, alpha, a, b, k, T, h_len = 2.0, 4.0, 0.8, 3.0, 3, 30.0, 20.0
    n = 300_000
    h = histories(fam, n, T, h_len, seed=5, r=r, alpha=alpha, a=a, b=b, k=k)
    th = theta(r, alpha, a, b, k)
    x = h.frequency.astype(float)
    Tn = np.full(n, T)
    pa = fam.p_alive(th, x, h.recency, Tn)
    phi = fam.expected_alive(th, x, Tn, h_len, t_x=h.recency)
    rows = _binned(h, pa, phi, T)
    assert len(rows) >= 20
    exact = [(obs, pred) for _, obs, pred, se in rows if se == 0]  # BG/CNBD-k x = 0: alive
    assert all(obs == pred for obs, pred in exact)
    z = np.array([(obs - pred) / se for _, obs, pred, se in rows if se > 0])
    assert np.all(np.abs(z) < 4.0), rows
    assert np.mean(z**2) < 2.0  # about 1 if the predictions are right


def phi_brute_force(n, A, a, b_eff, u, t, k):
    """sum_j P(J=j) sum_m NB(m; n+j, q) C(floor((m+j)/k)) over m up to 20,000."""
    q = t / (A + t)
    w = np.array([math.exp(math.lgamma(n + j) - math.lgamma(n) - math.lgamma(j + 1))
                  * (u / A) ** j for j in range(k)])  # fmt: skip
    w /= w.sum()
    i = np.arange(20_000)
    C = np.concatenate([[0.0], np.cumsum(np.exp(betaln(a, b_eff + i) - betaln(a, b_eff)))])
    return sum(w[j] * np.sum(stats.nbinom.pmf(i, n + j, 1 - q) * C[(i + j) // k])
               for j in range(k))  # fmt: skip


@pytest.mark.parametrize(
    "n,A,a,b_eff,u,t,k",
    [(4.0, 10.0, 0.8, 3.0, 5.0, 52.0, 2), (0.3, 2.0, 0.3, 0.7, 1.9, 52.0, 4),
     (60.0, 50.0, 2.5, 40.0, 0.0, 30.0, 3), (1.0, 5.0, 1.0, 1.0, 4.0, 200.0, 12),
     (12.0, 80.0, 5e-3, 1e3, 70.0, 10.0, 5)],
)  # fmt: skip
def test_expected_purchases_match_a_brute_force_sum(n, A, a, b_eff, u, t, k):
    with np.errstate(divide="ignore"):
        log_w = np.log(u) - np.log(A)
    got = erlang_phi(n, A, a, b_eff, log_w, t, k)
    assert np.isclose(got, phi_brute_force(n, A, a, b_eff, u, t, k), rtol=1e-11, atol=1e-14)


def test_cumulated_dropout_survival_far_from_zero_against_mpmath():
    """C(N) = sum_{i<N} B(a, b'+i)/B(a, b') (used where a window starts far from 0), by
    chunked running sums, against the closed form [(a+b'-1)(1-c_N) - N c_N]/(a-1) in
    40-digit arithmetic (a = 1: b'(psi(b'+N) - psi(b')))."""
    import mpmath as mp

    N = 140_000.0
    for a, b in ((0.3, 2.0), (1.0, 5.0), (1.00005, 3.0), (0.99999, 1e6), (2.5, 1e6),
                 (40.0, 0.01), (1e-3, 1e-3)):  # fmt: skip
        C, log_c = _cum_survival(np.array([a]), np.array([b]), np.array([N]))
        with mp.workdps(40):
            am, bm = mp.mpf(a), mp.mpf(b)
            c = mp.beta(am, bm + N) / mp.beta(am, bm)
            ref = (bm * (mp.digamma(bm + N) - mp.digamma(bm)) if a == 1.0
                   else ((am + bm - 1) * (1 - c) - N * c) / (am - 1))  # fmt: skip
        assert np.isclose(C[0], float(ref), rtol=1e-12), (a, b, C[0], float(ref))
        assert np.isclose(log_c[0], float(mp.log(c)), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("name", ["bgcnbd", "mbgcnbd"])
def test_latent_draws_window_pmf_and_future_events_agree_with_expected_purchases(name):
    fam = FAMS[name]
    th = {k: v[None] for k, v in theta(1.5, 3.0, 0.9, 2.0, 3).items()}
    x, t_x, T, h = np.array([[4.0]]), np.array([[9.0]]), np.array([[20.0]]), 15.0
    phi = fam.expected_alive(th, x, T, h, t_x=t_x).item()
    rng = np.random.default_rng(3)
    n = 40_000
    thn = {k: np.broadcast_to(v, (1, n)) for k, v in th.items()}
    lat = fam.latent_given_alive(thn, x, T, rng, t_x=t_x)
    ys = np.arange(0, 60)[:, None]
    pmf = np.exp(fam.window_log_pmf({k: v[0] for k, v in lat.items()}, ys, h))
    assert np.allclose(pmf.sum(axis=0), 1.0, atol=1e-12)
    mean_pmf = (ys * pmf).sum(axis=0)
    assert abs(mean_pmf.mean() - phi) < 4 * mean_pmf.std() / math.sqrt(n)
    sims = fam.simulate_window({k: v[0] for k, v in lat.items()}, h, rng)
    assert abs(sims.mean() - phi) < 4 * sims.std() / math.sqrt(n)
    for y in range(6):  # simulated window counts against the pmf, per latent draw
        p = pmf[y].mean()
        assert abs(np.mean(sims == y) - p) < 4 * math.sqrt(p * (1 - p) / n)
    col = np.ones((n, 1))
    pos, tau = fam.future_events(th, 4.0 * col, 20.0 * col, col > 0, h, rng, t_x=9.0 * col)
    counts = np.bincount(pos, minlength=n)
    assert np.all((tau > 0) & (tau <= h))
    assert abs(counts.mean() - phi) < 4 * counts.std() / math.sqrt(n)


def test_consumers_that_need_no_recency_work_today():
    """P(alive) and the new-customer expectation (T = 0 implies t_x = 0) through predict."""
    rfm = simulate_rfm(BGCNBDParams(0.8, 2.0, 0.7, 2.0, k=2), 200, T=(5.0, 60.0), random_seed=8)
    ds = draws({"r": 0.8, "alpha": 2.0, "a": 0.7, "b": 2.0, "k": 2.0}, n_draw=4, jitter=0.1)
    pa = probability_alive(ds, rfm)
    th = {k: ds[k].values.reshape(4, 1) for k in ds.data_vars}
    ref = BGCNBD.p_alive(th, rfm.frequency, rfm.recency, rfm.T)
    np.testing.assert_allclose(pa.values.reshape(4, -1), ref)
    e = expected_purchases_new_customer(ds, "all", 52.0)
    assert np.all(np.isfinite(e.values)) and np.all(e.values > 0)
    ds1 = draws({"r": 0.8, "alpha": 2.0, "a": 0.7, "b": 2.0, "k": 1.0}, model="mbgcnbd")
    bg = draws({"r": 0.8, "alpha": 2.0, "a": 0.7, "b": 2.0}, model="mbgnbd")
    np.testing.assert_allclose(expected_purchases_new_customer(ds1, "all", 52.0).values,
                               expected_purchases_new_customer(bg, "all", 52.0).values,
                               rtol=1e-11)  # fmt: skip


# --------------------------------------------------------------------------- properties
pos_rate = st.floats(math.log(1e-3), math.log(1e5)).map(math.exp)
pos_drop = st.floats(math.log(1e-3), math.log(1e6)).map(math.exp)
PROPS = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow],
                 derandomize=True)  # fmt: skip


@PROPS
@given(r=pos_rate, alpha=pos_rate, a=pos_drop, b=pos_drop, k=st.integers(1, 12),
       x=st.integers(0, 1000), T=st.floats(1.0, 520.0), frac=st.floats(0.0, 1.0),
       t=st.floats(0.1, 104.0), modified=st.booleans())  # fmt: skip
def test_every_prediction_is_finite_and_in_bounds_over_the_support(
    r, alpha, a, b, k, x, T, frac, t, modified
):
    fam = MBGCNBD if modified else BGCNBD
    th = theta(r, alpha, a, b, k)
    xa = np.array([0.0, float(x)])
    t_x = np.array([0.0, frac * T if x > 0 else 0.0])
    Ta = np.array([T, T])
    litt = np.where(xa > 0, xa * np.log(np.maximum(t_x, 1e-300) / np.maximum(xa, 1)) - 0.5, 0)
    ll = fam.logp(r, alpha, a, b, np.array(float(k)), xa, t_x, Ta, litt)
    assert np.all(np.isfinite(ll))
    pa = fam.p_alive(th, xa, t_x, Ta)
    assert np.all(np.isfinite(pa) & (pa >= 0) & (pa <= 1))
    phi = fam.expected_alive(th, xa, Ta, t, t_x=t_x)
    lo, hi = fam.expected_alive_bounds(th, xa, Ta, t)
    assert np.all(np.isfinite(phi) & (phi >= lo) & (phi <= hi * (1 + 1e-9) + 1e-300))
    lat = fam.latent_given_alive(th, xa, Ta, np.random.default_rng(0), t_x=t_x)
    lp = fam.window_log_pmf(lat, np.array([[0], [1], [7]]), t)
    assert np.all(np.isfinite(lp) | (lp == -np.inf)) and np.all(lp <= 1e-12)


# --------------------------------------------------------------------------- k, API, errors
def test_k_is_chosen_by_profile_likelihood_on_simulated_data():
    for cls, name in ((BGCNBDParams, "bgcnbd"), (MBGCNBDParams, "mbgcnbd")):
        rfm = simulate_rfm(cls(1.5, 5.0, 0.6, 3.0, k=3), 1500, T=(30.0, 60.0), random_seed=21)
        prof = profile_k(rfm, name, max_k=6)
        assert prof.k == 3 == choose_k(rfm, name, max_k=6)
        table = prof.table()
        assert table.loc[3, "log_likelihood"] == table["log_likelihood"].max()
        assert prof.best.params["k"] == 3.0 and prof.best.model == name
    fixed = BGCNBD.with_k(2)
    assert fixed.resolve(rfm) is fixed and MBGCNBD.resolve(rfm).k == 3  # rfm: MBG, k = 3


def test_the_registry_entries_need_k_and_litt_and_say_how_to_get_them():
    from bayesclv.models import build_model

    assert get_family("bgcnbd") is BGCNBD and FAMILIES["mbgcnbd"] is MBGCNBD
    rfm = simulate_rfm(BGCNBDParams(0.8, 2.0, 0.7, 2.0, k=2), 100, T=(5.0, 60.0), random_seed=1)
    # the builder and fit_mle choose k by profile likelihood when the family does not fix it
    k = choose_k(rfm, "bgcnbd")
    mle = fit_mle("bgcnbd", rfm)
    assert mle.params["k"] == k and "k" not in mle.se
    model = build_model("bgcnbd", rfm, pooling="complete")
    assert float(model["k"].eval()[0]) == k
    no_litt = RFMData.from_frame(rfm.to_frame(), litt=None)
    assert no_litt.litt is None
    with pytest.raises(ModelSpecificationError, match="litt"):
        build_model(BGCNBD.with_k(2), no_litt, pooling="complete")
    with pytest.raises(ModelSpecificationError, match="whole number"):
        probability_alive(draws({"r": 1.0, "alpha": 1.0, "a": 1.0, "b": 1.0, "k": 2.5}), rfm)
    with pytest.raises(ModelSpecificationError):
        BGCNBDParams(1.0, 1.0, 1.0, 1.0, k=1.5)
    assert repr(BGCNBD.with_k(4)) == "<family 'bgcnbd' (BG/CNBD-k, k=4)>"
    with pytest.raises(ModelSpecificationError, match="with_k"):
        BGCNBD.to_natural(log_purchase_rate=0.0, log_r=0.0, logit_dropout=0.0,
                          log_dropout_concentration=0.0)  # fmt: skip
    bound = MBGCNBD.from_draws({"k": np.full((2, 3), 5.0)})
    nat = bound.to_natural(**{n: np.zeros(3) for n in bound.unconstrained})
    assert bound.k == 5 and np.array_equal(nat["k"], np.full(3, 5.0))


def test_rfm_litt_validation_and_round_trip():
    rfm = simulate_rfm(BGCNBDParams(0.8, 2.0, 0.7, 2.0, k=2), 300, T=(5.0, 60.0), random_seed=3)
    back = RFMData.from_frame(rfm.to_frame())
    np.testing.assert_array_equal(back.litt, rfm.litt)
    sub = rfm.subset(rfm.frequency > 1)
    np.testing.assert_array_equal(sub.litt, rfm.litt[rfm.frequency > 1])
    frame = rfm.to_frame()
    frame.loc[frame["frequency"] > 2, "litt"] += frame.loc[frame["frequency"] > 2,
                                                           "frequency"] * math.log(7.0)  # fmt: skip
    with pytest.raises(DataValidationError, match="another time unit"):
        RFMData.from_frame(frame)
    frame = rfm.to_frame()
    frame.loc[frame["frequency"] == 0, "litt"] = 1.0
    with pytest.raises(DataValidationError, match="0 where frequency is 0"):
        RFMData.from_frame(frame)


def test_rfm_summary_computes_litt_from_the_purchase_occasions():
    log = pd.DataFrame({
        "customer_id": [1, 1, 1, 1, 2, 2, 3],
        "date": pd.to_datetime(["2020-01-01", "2020-01-08", "2020-01-08", "2020-01-22",
                                "2020-01-03", "2020-02-14", "2020-01-05"]),
        "amount": 1.0,
    })  # fmt: skip
    rfm = rfm_summary(log, calibration_end="2020-01-31", observation_end="2020-03-01")
    # customer 1: gaps of 1 and 2 weeks (the two purchases on Jan 8 are one occasion);
    # customer 2's second purchase is in the holdout; customer 3 never repeats
    np.testing.assert_allclose(rfm.litt, [math.log(1.0) + math.log(2.0), 0.0, 0.0])
    clean, _ = validate_transactions(log)
    np.testing.assert_array_equal(rfm_summary(clean, calibration_end="2020-01-31").litt,
                                  rfm.litt)  # fmt: skip


@pytest.mark.parametrize("merge_period", ["day", "week"])
def test_rfm_summary_parquet_litt_is_bit_identical_to_rfm_summary(tmp_path, merge_period):
    pytest.importorskip("duckdb")
    from bayesclv.bigdata import rfm_summary_parquet
    from bayesclv.simulate import BGNBDParams, simulate_transactions

    log = simulate_transactions(BGNBDParams(0.5, 4.0, 0.6, 3.0), 800, T=(10.0, 80.0),
                                holdout_length=20.0, random_seed=2)  # fmt: skip
    cal = log.attrs["calibration_end"].date()
    log.attrs = {}
    log["amount"] = 1.0  # simulated without spend
    log.to_parquet(tmp_path / "log.parquet", index=False)
    a = rfm_summary(log, calibration_end=cal, merge_period=merge_period)
    # batches of 97 rows: gaps of one customer cross batch boundaries
    b = rfm_summary_parquet(tmp_path / "log.parquet", calibration_end=cal,
                            merge_period=merge_period, batch_rows=97)  # fmt: skip
    assert np.array_equal(a.customer_id, b.customer_id)
    assert (a.frequency > 1).sum() > 100 and np.array_equal(a.litt, b.litt)


# --------------------------------------------------------------------------- NUTS
def test_nuts_recovers_the_parameters_and_carries_k_through_save_and_load(tmp_path):
    from bayesclv.diagnostics import pointwise_log_likelihood
    from bayesclv.fit import fit, posterior_params
    from bayesclv.models import build_model
    from bayesclv.saved import load_fit, save_fit

    truth = BGCNBDParams(1.2, 3.0, 0.8, 3.0, k=2)
    rfm = simulate_rfm(truth, 1500, T=(26.0, 52.0), random_seed=4)
    model = build_model(BGCNBD.with_k(2), rfm, pooling="complete")
    idata = fit(model, draws=300, tune=300, chains=2, random_seed=1, progressbar=False)
    assert int(idata.sample_stats.diverging.sum()) <= 2
    p = posterior_params(idata)
    assert idata.attrs["model"] == "bgcnbd" and np.all(p["k"].values == 2.0)
    for value, true in ((p["r"] / p["alpha"], truth.r / truth.alpha),
                        (p["a"] / (p["a"] + p["b"]), truth.a / (truth.a + truth.b)),
                        (p["r"], truth.r)):  # fmt: skip
        lo, hi = np.quantile(value.values, [0.03, 0.97])
        assert lo <= true <= hi, (lo, true, hi)
    back = posterior_params(load_fit(save_fit(idata, tmp_path / "fit.nc")))
    np.testing.assert_array_equal(back["k"].values, p["k"].values)
    ll = pointwise_log_likelihood(idata, rfm).log_likelihood["purchases"]
    th = [p[n].values[0, :3, 0][:, None] for n in BGCNBD.params]
    ref = BGCNBD.logp(*th, rfm.frequency.astype(float), rfm.recency, rfm.T, rfm.litt)
    np.testing.assert_allclose(ll.values[0, :3], ref, rtol=1e-12)


# --------------------------------------------------------------------------- end to end
GG = {"p": 6.0, "q": 4.0, "v": 15.0}


def test_holdout_evaluation_end_to_end():
    from bayesclv.diagnostics import holdout_evaluation

    rfm = simulate_rfm(BGCNBDParams(0.8, 2.0, 0.7, 2.0, k=2), 300, T=(5.0, 60.0),
                       holdout_length=26.0, random_seed=6)  # fmt: skip
    ds = draws({"r": 0.8, "alpha": 2.0, "a": 0.7, "b": 2.0, "k": 2.0}, n_draw=20, jitter=0.1)
    ev = holdout_evaluation(ds, rfm, n_draws=20, random_seed=1)
    assert np.isfinite(ev.log_predictive_density)
    assert np.isfinite(ev.predicted["predicted_purchases"]).all()
    # forecast from the true parameters: the aggregate is right within its noise
    bias = ev.metrics.loc["purchases", "BIAS"]
    assert abs(bias) < 0.25


def test_score_customers_end_to_end():
    from bayesclv.clv import score_customers

    rfm = simulate_rfm(BGCNBDParams(0.8, 2.0, 0.7, 2.0, k=2), 300, T=(5.0, 60.0),
                       random_seed=7)  # fmt: skip
    rfm = RFMData.from_frame(rfm.to_frame().assign(monetary_value=lambda d: np.where(
        d["frequency"] > 0, 20.0, 0.0)))  # fmt: skip
    ds = draws({"r": 0.8, "alpha": 2.0, "a": 0.7, "b": 2.0, "k": 2.0}, n_draw=20, jitter=0.1)
    sp = draws(GG, n_draw=20, model="gamma_gamma", jitter=0.05)
    kw = dict(horizon=52.0, discount_rate=0.1, discount_period=52.0)
    out = score_customers(ds, sp, rfm, **kw)
    assert np.isfinite(out.table["clv_mean"]).all() and (out.table["clv_mean"] >= 0).all()
    # simulated CLV (CNBD future_events) agrees with expected CLV (erlang_phi tables)
    sim = score_customers(ds, sp, rfm, method="simulate", random_seed=3, **kw)
    total_e, total_s = out.table["clv_mean"].sum(), sim.table["clv_mean"].sum()
    assert total_s == pytest.approx(total_e, rel=0.05)


# --------------------------------------------------------------------------- real data
# The MLE columns of ../shared/data/{grocery,donations_dmef}/README.md (Reutterer,
# Platzer & Schröder 2021, results/emp-param-stats.csv): LL and parameters to 2 decimals.
PUBLISHED = {
    ("grocery", "bgcnbd"): (-15054.173, dict(k=2, r=0.36, alpha=1.13, a=0.52, b=2.79)),
    ("grocery", "mbgcnbd"): (-14978.211, dict(k=2, r=1.33, alpha=2.81, a=0.42, b=0.79)),
    ("donations", "bgcnbd"): (-144713.168, dict(k=2, r=0.46, alpha=21.42, a=0.82, b=3.85)),
    ("donations", "mbgcnbd"): (-144540.942, dict(k=2, r=1.37, alpha=38.84, a=0.53, b=0.83)),
}


def load_shared(name: str) -> RFMData:
    """The README's split: weekly, calibration to 2006-12-31 / 2005-07-01, 52 weeks on."""
    if name == "grocery":
        log = pd.read_csv(SHARED / "grocery" / "grocery-elog.csv.gz")
        fmt, cal, obs = None, "2006-12-31", "2007-12-31"
    else:
        log = pd.read_csv(SHARED / "donations_dmef" / "donations-elog.csv.gz")
        fmt, cal, obs = "%m/%d/%Y", "2005-07-01", "2006-07-01"
    log["amount"] = 1.0  # no amounts: only the purchase model is fitted
    clean, _ = validate_transactions(
        log, customer_col="cust", date_col="date", date_format=fmt, observation_end=obs,
        after_end="drop",
    )
    return rfm_summary(clean, calibration_end=cal, observation_end=obs, time_unit="week")


@pytest.mark.skipif(not SHARED.exists(), reason=f"the shared data sets are absent ({SHARED})")
@pytest.mark.parametrize("data", ["grocery", "donations"])
def test_mle_matches_the_published_cnbd_k_columns(data):
    rfm = load_shared(data)
    for name in ("bgcnbd", "mbgcnbd"):
        ll, params = PUBLISHED[(data, name)]
        prof = profile_k(rfm, name, max_k=3)  # the full profile: bench_cnbd_mle.py
        best = prof.best
        assert prof.k == params["k"] and best.converged
        assert abs(best.log_likelihood - ll) < 0.1, (data, name, best.log_likelihood)
        for p, v in params.items():
            assert round(best.params[p], 2) == v, (data, name, p, best.params[p])
