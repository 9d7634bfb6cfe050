"""CLV per draw: discounting, expected vs simulated, totals, chunking and streaming."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
import xarray as xr
from scipy import integrate

from bayesclv.clv import (
    SIM_BLOCK,
    discount_schedule,
    expected_clv,
    new_customer_clv,
    score_customers,
    simulate_clv,
)
from bayesclv.data import RFMData
from bayesclv.predict import (
    CUSTOMER_DIM,
    expected_purchases,
    expected_purchases_new_customer,
    expected_spend,
    phi_alive,
    probability_alive,
)
from bayesclv.summary import customer_table, read_metadata, segment_totals

BG = dict(r=0.243, alpha=4.414, a=0.793, b=2.426)
PNBD = dict(r=0.553, alpha=10.578, s=0.606, beta=11.669)
GG = dict(p=6.25, q=3.74, v=15.44)
MODEL_OF = {"bgnbd": BG, "mbgnbd": BG, "pareto_nbd": PNBD}
SEGS = ("north", "south", "west")


def make_params(model, values, segments=SEGS, n_chain=2, n_draw=3, jitter=0.2, seed=0):
    rng = np.random.default_rng(seed)
    shape = (n_chain, n_draw, len(segments))
    ds = xr.Dataset(
        {
            k: (("chain", "draw", "segment"), v * np.exp(jitter * rng.standard_normal(shape)))
            for k, v in values.items()
        },
        coords={"segment": list(segments), "chain": np.arange(n_chain), "draw": np.arange(n_draw)},
    )
    if "q" in ds:
        ds["q"] = np.maximum(ds["q"], 1.5)
    ds.attrs["model"] = model
    return ds


def random_rfm(n, seed=0, names=SEGS):
    rng = np.random.default_rng(seed)
    x = rng.negative_binomial(0.5, 0.2, n)
    T = np.round(rng.uniform(10, 40, n) * 7) / 7
    t_x = np.where(x > 0, np.round(T * rng.uniform(size=n) * 7) / 7, 0.0)
    zbar = np.where(x > 0, rng.gamma(4.0, 10.0, n), 0.0)
    return RFMData(
        customer_id=np.array([f"c{i}" for i in range(n)]),
        frequency=x,
        recency=t_x,
        T=T,
        monetary_value=zbar,
        segment=rng.integers(0, len(names), n),
        segment_names=names,
    )


KW = dict(horizon=52.0, discount_rate=0.10, discount_period=52.0)


@pytest.fixture(scope="module")
def rfm():
    return random_rfm(700)


# --------------------------------------------------------------------------- dims
def test_every_per_customer_output_uses_the_customer_id_dim_of_arviz_groups():
    # the dim ArviZ log_likelihood / posterior_predictive groups use here and pymc-marketing
    # uses for its predictions, so outputs align with a fit's groups without renaming
    rfm = random_rfm(5)
    pp, sp = make_params("bgnbd", BG), make_params("gamma_gamma", GG)
    outputs = {
        "probability_alive": probability_alive(pp, rfm),
        "expected_purchases": expected_purchases(pp, rfm, 10.0),
        "expected_spend": expected_spend(sp, rfm),
        "expected_clv": expected_clv(pp, sp, rfm, **KW),
        "simulate_clv": simulate_clv(pp, sp, rfm, random_seed=0, **KW),
    }
    assert CUSTOMER_DIM == "customer_id"
    for name, da in outputs.items():
        assert da.dims == ("chain", "draw", "customer_id"), name
        assert list(da["customer_id"].values) == list(rfm.customer_id), name


# --------------------------------------------------------------------------- expected
@pytest.mark.parametrize("model", ["bgnbd", "mbgnbd", "pareto_nbd"])
@pytest.mark.parametrize("discounting", ["per_period", "continuous"])
def test_no_discount_equals_purchases_times_spend_times_margin_exactly(rfm, model, discounting):
    pp, sp = make_params(model, MODEL_OF[model]), make_params("gamma_gamma", GG)
    clv = expected_clv(pp, sp, rfm, horizon=40.0, discount_rate=0.0, discount_period=52.0,
                       discounting=discounting, margin=0.3)
    want = expected_purchases(pp, rfm, 40.0) * expected_spend(sp, rfm) * 0.3
    assert clv.dims == ("chain", "draw", "customer_id") and clv.shape == (2, 3, rfm.n_customers)
    np.testing.assert_array_equal(clv.values, want.values)


def test_per_period_discounting_equals_sum_of_discounted_period_increments(rfm):
    pp, sp = make_params("bgnbd", BG), make_params("gamma_gamma", GG)
    sub = rfm.subset(np.arange(rfm.n_customers) < 40)
    got = expected_clv(pp, sp, sub, horizon=12.0, discount_rate=0.2, discount_period=4.0,
                       steps=6).values
    # Brute force: periods of 2 weeks, each discounted at its end at 20 % per 4 weeks.
    cum = [expected_purchases(pp, sub, 2.0 * k).values for k in range(7)]
    want = sum((cum[k] - cum[k - 1]) * 1.2 ** (-2.0 * k / 4.0) for k in range(1, 7))
    want = want * expected_spend(sp, sub).values
    np.testing.assert_allclose(got, want, rtol=1e-12)
    # Discounting lowers value, more so with a higher rate.
    undiscounted = expected_clv(pp, sp, sub, horizon=12.0, discount_rate=0.0, discount_period=4.0)
    assert np.all(got < undiscounted.values)


@pytest.mark.parametrize("model", ["bgnbd", "pareto_nbd"])
def test_continuous_discounting_matches_adaptive_quadrature(model):
    th = MODEL_OF[model]
    th = dict(th, alpha=0.2) if model == "bgnbd" else dict(th, beta=0.3)  # hard: small scale
    rate, period, H = 0.5, 52.0, 104.0
    delta = math.log1p(rate) / period
    x, T = 2.0, 3.0
    t, w = discount_schedule(H, discount_rate=rate, discount_period=period,
                             discounting="continuous", scale=th.get("alpha", 0.2)
                             if model == "bgnbd" else th["beta"])
    got = float(np.sum(w * phi_alive(model, th, x, T, t)))

    # int_0^H exp(-delta tau) dPhi(tau), Phi' by a central difference inside quad
    def dphi(tau, h=1e-5):
        lo = max(tau - h, 0.0)
        hi = phi_alive(model, th, x, T, tau + h)
        return (hi - phi_alive(model, th, x, T, lo)) / (tau + h - lo)

    want = integrate.quad(lambda s: math.exp(-delta * s) * dphi(s), 0, H, limit=200,
                          epsrel=1e-10)[0]
    assert got == pytest.approx(want, rel=1e-7)
    assert got < float(phi_alive(model, th, x, T, H))


def test_discount_schedule_validation_and_units():
    with pytest.raises(ValueError, match="discount_period"):
        discount_schedule(52, discount_rate=0.1, discount_period=0)
    with pytest.raises(ValueError, match="discounting"):
        discount_schedule(52, discount_rate=0.1, discount_period=52, discounting="monthly")
    with pytest.raises(ValueError, match="discount_rate"):
        discount_schedule(52, discount_rate=-1.0, discount_period=52)
    # An annual 10 % rate over one year of weekly steps: the last week is discounted by 1.1.
    t, w = discount_schedule(52, discount_rate=0.1, discount_period=52)
    assert len(t) == 52 and t[-1] == 52
    assert w[-1] == pytest.approx(1 / 1.1)
    # Same schedule in days: the rate's period is what matters, not the unit.
    t_d, w_d = discount_schedule(364, discount_rate=0.1, discount_period=364, steps=52)
    np.testing.assert_allclose(w_d, w, rtol=1e-11)  # differences of nearby factors


def test_new_customer_clv_is_unconditional_purchases_times_population_spend():
    pp, sp = make_params("bgnbd", BG), make_params("gamma_gamma", GG)
    got = new_customer_clv(pp, sp, "south", horizon=52.0, discount_rate=0.0,
                           discount_period=52.0, margin=0.5)
    assert got.dims == ("chain", "draw")
    s = sp.sel(segment="south")
    want = expected_purchases_new_customer(pp, "south", 52.0) * s.p * s.v / (s.q - 1) * 0.5
    np.testing.assert_allclose(got.values, want.values, rtol=1e-13)
    disc = new_customer_clv(pp, sp, "south", **KW)
    assert np.all(disc.values < got.values / 0.5)


# --------------------------------------------------------------------------- simulate
@pytest.mark.parametrize("model", ["bgnbd", "mbgnbd", "pareto_nbd"])
@pytest.mark.parametrize("discounting", ["per_period", "continuous"])
def test_simulated_clv_averages_to_expected_clv(model, discounting):
    # 6 histories, each repeated 3000 times, 2 draws: compare per (history, draw) means.
    base = dict(x=[0, 1, 3, 8, 2, 15], t_x=[0.0, 4.0, 20.0, 29.0, 3.0, 30.0],
                T=[30.0, 30.0, 30.0, 30.0, 30.0, 31.0], z=[0, 20.0, 35.0, 50.0, 10.0, 25.0])
    reps = 3000
    n = 6 * reps
    rfm = RFMData(
        customer_id=np.arange(n),
        frequency=np.tile(base["x"], reps),
        recency=np.tile(base["t_x"], reps),
        T=np.tile(base["T"], reps),
        monetary_value=np.tile(base["z"], reps),
        segment=np.zeros(n, dtype=int),
        segment_names=("all",),
    )
    pp = make_params(model, MODEL_OF[model], segments=("all",), n_chain=1, n_draw=2)
    sp = make_params("gamma_gamma", GG, segments=("all",), n_chain=1, n_draw=2)
    kw = dict(horizon=26.0, discount_rate=0.3, discount_period=13.0, discounting=discounting)
    sim = simulate_clv(pp, sp, rfm, random_seed=5, **kw).values[0].reshape(2, reps, 6)
    exp = expected_clv(pp, sp, rfm, **kw).values[0, :, :6]
    mean = sim.mean(axis=1)
    se = sim.std(axis=1, ddof=1) / np.sqrt(reps)
    assert np.all(np.abs(mean - exp) <= 4.5 * se + 1e-12), (mean, exp, se)
    assert (sim == 0).mean() > 0.2  # realised values include customers who buy nothing
    assert sim.std() > 0


def test_simulation_is_reproducible_and_independent_of_chunking():
    rfm = random_rfm(3 * SIM_BLOCK + 37, seed=4)
    pp, sp = make_params("bgnbd", BG), make_params("gamma_gamma", GG)
    a = simulate_clv(pp, sp, rfm, random_seed=123, n_jobs=1, **KW)
    b = simulate_clv(pp, sp, rfm, random_seed=123, n_jobs=2, **KW)
    c = simulate_clv(pp, sp, rfm, random_seed=124, **KW)
    np.testing.assert_array_equal(a.values, b.values)
    assert not np.array_equal(a.values, c.values)
    tables = []
    for chunk in (1, 300, 10_000):
        sc = score_customers(pp, sp, rfm, method="simulate", random_seed=123, chunk_size=chunk,
                             **KW)
        # per-customer draws are bit-identical; chunk sums only differ by summation order
        np.testing.assert_allclose(sc.totals["segment_total"].values,
                                   segment_totals(a, rfm)["segment_total"].values, rtol=1e-13)
        tables.append(sc.table)
    pd.testing.assert_frame_equal(tables[0], tables[1])
    pd.testing.assert_frame_equal(tables[0], tables[2])
    ref = customer_table(a, rfm)
    np.testing.assert_array_equal(tables[0]["clv_mean"], ref["clv_mean"])
    np.testing.assert_array_equal(tables[0]["clv_upper"], ref["clv_upper"])


# --------------------------------------------------------------------------- totals, scoring
def test_segment_totals_are_sums_per_draw(rfm):
    pp, sp = make_params("bgnbd", BG), make_params("gamma_gamma", GG)
    clv = expected_clv(pp, sp, rfm, **KW)
    tot = segment_totals(clv, rfm)
    assert tot["segment_total"].dims == ("chain", "draw", "segment")
    assert list(tot["segment"].values) == list(SEGS)
    for i, s in enumerate(SEGS):
        want = clv.values[:, :, rfm.segment == i].sum(axis=-1)
        np.testing.assert_allclose(tot["segment_total"].sel(segment=s).values, want, rtol=1e-12)
    np.testing.assert_allclose(tot["portfolio_total"].values, clv.values.sum(-1), rtol=1e-12)


def test_score_customers_matches_full_arrays_and_streams_parquet(rfm, tmp_path):
    pp, sp = make_params("pareto_nbd", PNBD), make_params("gamma_gamma", GG)
    clv = expected_clv(pp, sp, rfm, **KW)
    pa = __import__("bayesclv.predict", fromlist=["x"]).probability_alive(pp, rfm)
    ep = expected_purchases(pp, rfm, KW["horizon"])
    ref = customer_table(clv, rfm, p_alive=pa, expected_purchases=ep, prob=0.8, kind="hdi")
    out = tmp_path / "scores.parquet"
    sc = score_customers(pp, sp, rfm, chunk_size=97, prob=0.8, kind="hdi", out_parquet=out,
                         metadata={"convergence": "ok"}, **KW)
    pd.testing.assert_frame_equal(sc.table, ref, rtol=1e-12)
    np.testing.assert_allclose(sc.totals["segment_total"].values,
                               segment_totals(clv, rfm)["segment_total"].values, rtol=1e-12)
    back = pq.read_table(out).to_pandas()
    pd.testing.assert_frame_equal(back, sc.table)
    meta = read_metadata(out)
    assert meta["convergence"] == "ok" and meta["discount_period"] == 52.0
    assert list(tmp_path.iterdir()) == [out]  # no temporary files left behind


def test_segment_missing_from_params_is_an_error(rfm):
    pp = make_params("bgnbd", BG, segments=("north", "south"))
    with pytest.raises(ValueError, match="west"):
        expected_clv(pp, make_params("gamma_gamma", GG), rfm, **KW)


# --------------------------------------------------------------------------- fast tables
@pytest.mark.parametrize("model", ["bgnbd", "mbgnbd"])
@pytest.mark.parametrize("discounting", ["per_period", "continuous"])
@pytest.mark.parametrize(
    "values",
    [BG, dict(BG, a=1.0, alpha=0.3), dict(BG, a=1.00002), dict(BG, a=6.0, b=12.0)],
    ids=["cdnow", "a=1,small-alpha", "a~1", "large-a"],
)
def test_chebyshev_alive_tables_match_one_hyp2f1_per_row(model, discounting, values):
    # The interpolated tables (used for speed) against the direct closed form, including
    # rows the fast path must hand to the direct one (young customers, small alpha) and
    # a customer with 10,000 purchases.
    from bayesclv.clv_engine import check_discount as _check_discount
    from bayesclv.clv_engine import direct_tables as _direct_tables
    from bayesclv.clv_engine import schedule as _schedule
    from bayesclv.predict import DrawParams

    rfm = random_rfm(120, seed=2)
    dp = DrawParams(make_params(model, values, n_chain=1, n_draw=3, jitter=0.1), "purchase")
    g = np.append(dp.positions(rfm.segment_names)[rfm.segment], [0, 1, 2])
    x = np.append(rfm.frequency.astype(float), [10_000.0, 0.0, 3.0])
    T = np.append(rfm.T, [20_000.0, 0.0, 0.5])
    disc = _check_discount(52.0, 0.1, 52.0, discounting, None)
    t, w = _schedule(disc, float(dp.values["alpha"].min()))
    wsets = np.stack([w, np.eye(len(t))[-1]])
    fast = dp.family.alive_tables(dp, g, x, T, t, wsets, 2, _direct_tables)
    direct = _direct_tables(dp, g, x, T, t, wsets, 1)
    np.testing.assert_allclose(fast, direct, rtol=1e-9)


@pytest.mark.parametrize("model", ["bgnbd", "pareto_nbd"])
def test_zero_horizon_is_worth_nothing(rfm, model):
    pp, sp = make_params(model, MODEL_OF[model]), make_params("gamma_gamma", GG)
    kw = dict(horizon=0.0, discount_rate=0.1, discount_period=52.0)
    assert np.all(expected_clv(pp, sp, rfm, **kw).values == 0)
    assert np.all(simulate_clv(pp, sp, rfm, random_seed=0, **kw).values == 0)
    sc = score_customers(pp, sp, rfm, **kw)
    assert (sc.table["clv_upper"] == 0).all() and (sc.table["expected_purchases"] == 0).all()
    assert (sc.table["p_alive"] > 0).all()


# --------------------------------------------------------------------------- streaming
def few_keys_rfm(n, seed=0):
    """Many customers, few distinct (segment, x, t_x, T, zbar): scoring cost is per key."""
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 4, n)
    T = rng.integers(30, 40, n).astype(float)
    t_x = np.where(x > 0, np.floor(T * rng.integers(1, 4, n) / 4), 0.0)
    return RFMData(
        customer_id=np.arange(n) + 10**9,
        frequency=x,
        recency=t_x,
        T=T,
        monetary_value=np.where(x > 0, rng.choice([20.0, 35.0], n), 0.0),
        segment=rng.integers(0, len(SEGS), n),
        segment_names=SEGS,
    )


@pytest.mark.parametrize("method", ["expected", "simulate"])
def test_streamed_parquet_has_one_row_group_per_chunk_and_equals_the_table(method, tmp_path):
    rfm = random_rfm(1500, seed=6)
    pp, sp = make_params("bgnbd", BG), make_params("gamma_gamma", GG)
    kw = dict(method=method, random_seed=11, chunk_size=512, n_jobs=2, **KW)
    full = score_customers(pp, sp, rfm, out_parquet=tmp_path / "a.parquet", **kw)
    lean = score_customers(pp, sp, rfm, out_parquet=tmp_path / "b.parquet", keep_table=False, **kw)
    assert lean.table is None
    for name in ("a.parquet", "b.parquet"):
        f = pq.ParquetFile(tmp_path / name)
        assert [f.metadata.row_group(i).num_rows for i in range(f.num_row_groups)] == [
            512,
            512,
            476,
        ]
        pd.testing.assert_frame_equal(f.read().to_pandas(), full.table)
    xr.testing.assert_identical(lean.totals, full.totals)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.parquet", "b.parquet"]


def test_keep_table_false_memory_does_not_grow_with_customers(tmp_path):
    # tracemalloc sees NumPy's and pandas' allocations. Without the table, each extra
    # customer costs only its codes (segment column, key: a few int64, ~32 bytes);
    # keeping the table costs its summary floats and columns on top (~150 bytes).
    # 100 draws: holding every customer's draws would cost 800 bytes per customer.
    import tracemalloc

    pp = make_params("bgnbd", BG, n_chain=1, n_draw=100)
    sp = make_params("gamma_gamma", GG, n_chain=1, n_draw=100)
    small, big = few_keys_rfm(40_000), few_keys_rfm(160_000)

    def peak(rfm, keep):
        tracemalloc.start()
        try:
            score_customers(
                pp,
                sp,
                rfm,
                out_parquet=tmp_path / "s.parquet",
                keep_table=keep,
                chunk_size=2048,
                n_jobs=2,
                **KW,
            )
            return tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()

    per_customer = {
        keep: (peak(big, keep) - peak(small, keep)) / (big.n_customers - small.n_customers)
        for keep in (False, True)
    }
    assert per_customer[False] < 96, per_customer  # bytes per extra customer
    assert per_customer[True] > per_customer[False] + 64, per_customer


@pytest.mark.parametrize("method", ["expected", "simulate"])
@pytest.mark.parametrize("error", [RuntimeError, KeyboardInterrupt])
def test_failure_mid_run_leaves_no_file_and_keeps_the_old_one(method, error, tmp_path, monkeypatch):

    rfm = random_rfm(2000, seed=8)
    pp, sp = make_params("bgnbd", BG), make_params("gamma_gamma", GG)
    out = tmp_path / "scores.parquet"
    out.write_bytes(b"previous run")
    calls, seen = [0], {}
    import bayesclv.clv_engine as engine_mod

    real = engine_mod.interval_arrays

    def failing_third_chunk(*args, **kwargs):
        calls[0] += 1
        if calls[0] == 3:
            # Rows of the first two chunks are already in the temporary file.
            tmp = [p for p in tmp_path.iterdir() if p != out]
            seen["tmp_bytes"] = [p.stat().st_size for p in tmp]
            raise error("stop")
        return real(*args, **kwargs)

    monkeypatch.setattr(engine_mod, "interval_arrays", failing_third_chunk)
    with pytest.raises(error, match="stop"):
        score_customers(
            pp,
            sp,
            rfm,
            method=method,
            random_seed=1,
            chunk_size=256,
            n_jobs=1,
            out_parquet=out,
            **KW,
        )
    assert len(seen["tmp_bytes"]) == 1 and seen["tmp_bytes"][0] > 1000
    assert list(tmp_path.iterdir()) == [out] and out.read_bytes() == b"previous run"


# --------------------------------------------------------------------------- coverage
def forward_simulate(model, th, gg, n, T, horizon, delta, rng):
    """Customers simulated forward from time 0 through ``T + horizon`` (independent of
    bayesclv): calibration summaries and the realised value of ``(T, T + horizon]``,
    each purchase discounted by ``exp(-delta (tau - T))``."""
    lam = rng.gamma(th["r"], 1.0 / th["alpha"], n)
    if model == "bgnbd":
        p_drop = rng.beta(th["a"], th["b"], n)
        death = np.full(n, np.inf)
    else:
        death = rng.exponential(1.0 / rng.gamma(th["s"], 1.0 / th["beta"], n))
    nu = rng.gamma(gg["q"], 1.0 / gg["v"], n)
    x, t_x, spent, value = np.zeros(n, int), np.zeros(n), np.zeros(n), np.zeros(n)
    clock = np.zeros(n)
    live = np.arange(n)
    while live.size:
        clock[live] += rng.exponential(1.0 / lam[live])
        live = live[(clock[live] <= T[live] + horizon) & (clock[live] <= death[live])]
        amount = rng.gamma(gg["p"], 1.0 / nu[live])
        past = clock[live] <= T[live]
        cal, fut = live[past], live[~past]
        x[cal] += 1
        t_x[cal] = clock[cal]
        spent[cal] += amount[past]
        value[fut] += np.exp(-delta * (clock[fut] - T[fut])) * amount[~past]
        if model == "bgnbd":  # dropout right after each repeat purchase
            live = live[rng.random(live.size) >= p_drop[live]]
    zbar = np.where(x > 0, spent / np.maximum(x, 1), 0.0)
    return x, t_x, zbar, value


@pytest.mark.parametrize("model", ["bgnbd", "pareto_nbd"])
def test_simulated_clv_intervals_cover_forward_simulated_truths_at_nominal_rate(model):
    # Oracle: the generative process run forward (no conditioning formulas). With the
    # true parameters as the posterior, simulate_clv's draws are the predictive
    # distribution of each customer's realised value given their history, so the truths'
    # randomised PIT (ties at the point mass at 0 split at random) is uniform: the 80 %
    # central interval covers 80 %, each 10 % tail holds 10 %.
    rng = np.random.default_rng(2024)
    n, draws, H, rate, period = 4000, 200, 26.0, 0.3, 13.0
    th = MODEL_OF[model]
    T = rng.uniform(20.0, 40.0, n)
    x, t_x, zbar, truth = forward_simulate(model, th, GG, n, T, H, math.log1p(rate) / period, rng)
    rfm = RFMData(
        customer_id=np.arange(n),
        frequency=x,
        recency=t_x,
        T=T,
        monetary_value=zbar,
        segment=np.zeros(n, dtype=int),
        segment_names=("all",),
    )
    pp = make_params(model, th, segments=("all",), n_chain=1, n_draw=draws, jitter=0.0)
    sp = make_params("gamma_gamma", GG, segments=("all",), n_chain=1, n_draw=draws, jitter=0.0)
    sim = (
        simulate_clv(
            pp,
            sp,
            rfm,
            horizon=H,
            discount_rate=rate,
            discount_period=period,
            discounting="continuous",
            random_seed=3,
        )
        .values[0]
        .T
    )  # (n, draws)
    below = (sim < truth[:, None]).sum(axis=1)
    ties = (sim == truth[:, None]).sum(axis=1)
    pit = (below + rng.uniform(size=n) * (ties + 1)) / (draws + 1)
    assert (truth == 0).mean() > 0.3 and (truth > 0).sum() > 400  # both parts exercised
    se = math.sqrt(0.8 * 0.2 / n)
    assert abs(np.mean((pit > 0.1) & (pit < 0.9)) - 0.8) < 4 * se
    assert abs(np.mean(pit <= 0.1) - 0.1) < 4 * math.sqrt(0.09 / n)
    assert abs(np.mean(pit >= 0.9) - 0.1) < 4 * math.sqrt(0.09 / n)
