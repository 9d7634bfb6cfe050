"""Reproducibility: the same data, priors and seed give bit-identical results.

* CLV on hand-made posterior draws (milliseconds): ``expected_clv``, ``simulate_clv`` and
  ``score_customers`` give bit-identical arrays and customer tables on every call, for
  any ``chunk_size`` and any ``n_jobs``, and in a fresh Python process (different hash
  seed); a different seed gives different simulated values.
* One small real fit (PyMC NUTS, complete pooling, 2 short chains), run twice with the
  same seed: identical posterior and sampler statistics (timings aside). That a
  different seed gives different draws is checked on the CLV simulation above (a third
  fit would double this test's cost).
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pandas as pd
import pytest
import xarray as xr

from bayesclv.clv import SIM_BLOCK, expected_clv, score_customers, simulate_clv
from bayesclv.data import RFMData

pytestmark = pytest.mark.filterwarnings("ignore:PyTensor could not link to a BLAS:UserWarning")

SEGMENTS = ("north", "south", "west")
PURCHASE = {
    "bgnbd": {"r": 0.243, "alpha": 4.414, "a": 0.793, "b": 2.426},
    "pareto_nbd": {"r": 0.553, "alpha": 10.578, "s": 0.606, "beta": 11.669},
}
SPEND = {"p": 6.25, "q": 3.74, "v": 15.44}
KW = {"horizon": 39.0, "discount_rate": 0.1, "discount_period": 52.0}


def draws(model: str, values: dict, n_chain: int = 2, n_draw: int = 25, seed: int = 0):
    """Posterior-like draws (chain, draw, segment) around published point estimates."""
    rng = np.random.default_rng(seed)
    shape = (n_chain, n_draw, len(SEGMENTS))
    ds = xr.Dataset(
        {
            k: (("chain", "draw", "segment"), v * np.exp(0.2 * rng.standard_normal(shape)))
            for k, v in values.items()
        },
        coords={"chain": np.arange(n_chain), "draw": np.arange(n_draw), "segment": list(SEGMENTS)},
    )
    if "q" in ds:
        ds["q"] = np.maximum(ds["q"], 1.5)
    ds.attrs["model"] = model
    return ds


def customers(n: int, seed: int = 1) -> RFMData:
    rng = np.random.default_rng(seed)
    x = rng.negative_binomial(0.5, 0.2, n)
    T = np.round(rng.uniform(5, 40, n) * 7) / 7
    t_x = np.where(x > 0, np.round(T * rng.uniform(size=n) * 7) / 7, 0.0)
    return RFMData(
        customer_id=np.array([f"c{i:05d}" for i in range(n)]),
        frequency=x,
        recency=t_x,
        T=T,
        monetary_value=np.where(x > 0, rng.gamma(4.0, 10.0, n), 0.0),
        segment=rng.integers(0, len(SEGMENTS), n),
        segment_names=SEGMENTS,
    )


def table_digest(table: pd.DataFrame) -> str:
    """SHA-256 of a table's values, bit for bit (floats by their bytes)."""
    h = hashlib.sha256()
    for col in table.columns:
        values = table[col].to_numpy()
        h.update(col.encode())
        if values.dtype.kind == "f":
            h.update(np.ascontiguousarray(values).tobytes())
        else:
            h.update("\x1f".join(map(str, values)).encode())
    return h.hexdigest()


@pytest.fixture(scope="module")
def rfm():
    return customers(2 * SIM_BLOCK + 123)


@pytest.mark.parametrize("model", ["bgnbd", "pareto_nbd"])
def test_expected_clv_is_bit_identical_for_any_number_of_threads(rfm, model):
    pp, sp = draws(model, PURCHASE[model]), draws("gamma_gamma", SPEND, seed=7)
    runs = [expected_clv(pp, sp, rfm, n_jobs=n, **KW).values for n in (1, 1, 2, None)]
    for other in runs[1:]:
        np.testing.assert_array_equal(runs[0], other)


def test_simulated_clv_same_seed_same_values_any_threads_other_seed_differs(rfm):
    pp, sp = draws("bgnbd", PURCHASE["bgnbd"]), draws("gamma_gamma", SPEND, seed=7)
    a = simulate_clv(pp, sp, rfm, random_seed=11, n_jobs=1, **KW).values
    b = simulate_clv(pp, sp, rfm, random_seed=11, n_jobs=2, **KW).values
    c = simulate_clv(pp, sp, rfm, random_seed=12, n_jobs=2, **KW).values
    g1 = simulate_clv(pp, sp, rfm, random_seed=np.random.default_rng(5), **KW).values
    g2 = simulate_clv(pp, sp, rfm, random_seed=np.random.default_rng(5), **KW).values
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(g1, g2)
    assert not np.array_equal(a, c)
    assert (a != c).mean() > 0.1  # not a fluke in one cell: the seed drives the draws


@pytest.mark.parametrize("method", ["expected", "simulate"])
def test_customer_table_is_bit_identical_for_any_chunk_size_and_threads(rfm, method):
    pp, sp = draws("pareto_nbd", PURCHASE["pareto_nbd"]), draws("gamma_gamma", SPEND, seed=7)
    runs = []
    for chunk, n_jobs in ((1, 1), (97, 2), (SIM_BLOCK, None), (10**6, 1), (333, 2)):
        sc = score_customers(
            pp,
            sp,
            rfm,
            method=method,
            random_seed=2024,
            chunk_size=chunk,
            n_jobs=n_jobs,
            prob=0.9,
            kind="hdi",
            **KW,
        )
        runs.append(sc)
    ref = runs[0]
    for sc in runs[1:]:
        pd.testing.assert_frame_equal(sc.table, ref.table, check_exact=True)
        # Segment totals are sums over chunks: the same up to the order of the additions.
        np.testing.assert_allclose(
            sc.totals["segment_total"].values,
            ref.totals["segment_total"].values,
            rtol=1e-13,
            atol=0,
        )
    assert set(ref.table["customer_id"]) == set(rfm.customer_id)


def test_a_fresh_process_gives_the_same_tables(rfm, tmp_path):
    """Another interpreter, another hash seed: the same bits (nothing depends on the
    process: no global RNG, no dict/set iteration order, no thread timing)."""
    pp, sp = draws("bgnbd", PURCHASE["bgnbd"]), draws("gamma_gamma", SPEND, seed=7)
    digests = {}
    for method in ("expected", "simulate"):
        sc = score_customers(pp, sp, rfm, method=method, random_seed=99, chunk_size=500, **KW)
        digests[method] = table_digest(sc.table)
    script = textwrap.dedent(
        f"""
        import json, sys
        sys.path.insert(0, {os.path.dirname(__file__)!r})
        from test_reproducibility import customers, draws, table_digest, PURCHASE, SPEND, KW
        from bayesclv.clv import SIM_BLOCK, score_customers
        rfm = customers(2 * SIM_BLOCK + 123)
        pp, sp = draws("bgnbd", PURCHASE["bgnbd"]), draws("gamma_gamma", SPEND, seed=7)
        out = {{}}
        for method in ("expected", "simulate"):
            sc = score_customers(pp, sp, rfm, method=method, random_seed=99, chunk_size=4096,
                                 n_jobs=2, **KW)
            out[method] = table_digest(sc.table)
        print(json.dumps(out))
        """
    )
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    res = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        check=True,
    )
    assert json.loads(res.stdout.strip().splitlines()[-1]) == digests


# --------------------------------------------------------------------------- a real fit
@pytest.mark.slow
def test_a_real_nuts_fit_run_twice_with_the_same_seed_is_identical():
    from bayesclv.fit import fit
    from bayesclv.models import build_bgnbd
    from bayesclv.simulate import BGNBDParams, GammaGammaParams, simulate_rfm

    rfm = simulate_rfm(
        BGNBDParams(0.5, 5.0, 0.8, 2.5),
        80,
        T=(20.0, 40.0),
        spend=GammaGammaParams(6.0, 4.0, 15.0),
        random_seed=1,
    )
    model = build_bgnbd(rfm, pooling="complete")
    kw = dict(
        sampler="pymc",
        draws=25,
        tune=25,
        chains=2,
        cores=1,
        init="default",
        random_seed=314,
        progressbar=False,
    )
    first, second = fit(model, **kw), fit(model, **kw)
    for group in ("posterior", "sample_stats"):
        a, b = first[group], second[group]
        assert sorted(a.data_vars) == sorted(b.data_vars)
        for name in a.data_vars:
            if name in ("process_time_diff", "perf_counter_diff", "perf_counter_start"):
                continue  # wall-clock timings, not results
            np.testing.assert_array_equal(a[name].values, b[name].values, err_msg=name)
