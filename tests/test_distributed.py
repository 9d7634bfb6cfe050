"""Scoring on a Dask cluster (bayesclv.distributed) against single-machine score_customers.

Oracle: :func:`bayesclv.clv.score_customers` on the same draws and customers. The table
must be identical bit for bit (method "expected" and "simulate"), whatever the
partitioning; simulate totals too; expected totals to rounding.
"""

from __future__ import annotations

import pickle

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
import xarray as xr

distributed = pytest.importorskip("distributed")

from bayesclv.clv import SIM_BLOCK, score_customers  # noqa: E402
from bayesclv.data import RFMData  # noqa: E402
from bayesclv.distributed import read_scores, score_customers_dask  # noqa: E402

BG = dict(r=0.243, alpha=4.414, a=0.793, b=2.426)
PNBD = dict(r=0.553, alpha=10.578, s=0.606, beta=11.669)
GG = dict(p=6.25, q=3.74, v=15.44)
SEGS = ("north", "south", "west")


def make_params(model, values, n_chain=2, n_draw=3, jitter=0.2, seed=0):
    """Hand-made draws around the CDNOW estimates, one column per segment."""
    rng = np.random.default_rng(seed)
    shape = (n_chain, n_draw, len(SEGS))
    ds = xr.Dataset(
        {
            k: (("chain", "draw", "segment"), v * np.exp(jitter * rng.standard_normal(shape)))
            for k, v in values.items()
        },
        coords={"segment": list(SEGS), "chain": np.arange(n_chain), "draw": np.arange(n_draw)},
    )
    if "q" in ds:
        ds["q"] = np.maximum(ds["q"], 1.5)
    ds.attrs["model"] = model
    return ds


def random_rfm(n, seed=0):
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
        segment=rng.integers(0, len(SEGS), n),
        segment_names=SEGS,
    )


KW = dict(horizon=52.0, discount_rate=0.10, discount_period=52.0)


@pytest.fixture(scope="module")
def client():
    # Small and in-process (threads): fast in CI; the code path is the same as on a
    # cluster of processes (test_engine_survives_pickling covers serialisation).
    with (
        distributed.LocalCluster(
            n_workers=2, threads_per_worker=1, processes=False, dashboard_address=None
        ) as cluster,
        distributed.Client(cluster) as c,
    ):
        yield c


@pytest.fixture(scope="module")
def rfm():
    return random_rfm(1_500, seed=3)


def single_machine(pp, sp, rfm, tmp_path, **kw):
    path = tmp_path / "single.parquet"
    res = score_customers(pp, sp, rfm, out_parquet=path, **KW, **kw)
    return res, pd.read_parquet(path)


@pytest.mark.parametrize(
    ("model", "method", "partition_size"),
    [
        ("bgnbd", "expected", 300),
        ("bgnbd", "simulate", 500),
        ("pareto_nbd", "expected", None),
        ("mbgnbd", "simulate", None),
    ],
)
def test_identical_to_single_machine(client, rfm, tmp_path, model, method, partition_size):
    values = PNBD if model == "pareto_nbd" else BG
    pp = make_params(model, values, n_chain=2, n_draw=25, seed=1)
    sp = make_params("gamma_gamma", GG, n_chain=2, n_draw=25, seed=2)
    kw = dict(method=method, chunk_size=256, random_seed=11)
    single, single_table = single_machine(pp, sp, rfm, tmp_path, **kw)
    res = score_customers_dask(
        client,
        pp,
        sp,
        rfm,
        out_dir=tmp_path / "parts",
        partition_size=partition_size,
        **KW,
        **kw,
    )
    assert len(res.files) > 1  # really partitioned
    table = read_scores(res.out_dir)
    pd.testing.assert_frame_equal(table, single_table, check_exact=True)
    for col in ("clv_mean", "clv_median", "clv_lower", "clv_upper", "p_alive"):
        assert np.array_equal(table[col].to_numpy(), single.table[col].to_numpy()), col
    got, want = res.totals["segment_total"].values, single.totals["segment_total"].values
    if method == "simulate":
        assert np.array_equal(got, want)
    else:
        np.testing.assert_allclose(got, want, rtol=1e-12)
    assert res.totals.attrs == single.totals.attrs
    meta = pq.read_schema(res.files[0]).metadata[b"bayesclv"]
    assert b'"partition": 0' in meta and b'"method": "' + method.encode() in meta


def test_simulate_streams_do_not_depend_on_partitioning(client, rfm, tmp_path):
    pp = make_params("bgnbd", BG, n_chain=1, n_draw=30, seed=4)
    sp = make_params("gamma_gamma", GG, n_chain=1, n_draw=30, seed=5)
    kw = dict(method="simulate", random_seed=123, **KW)
    tables = []
    for i, (chunk, part) in enumerate([(SIM_BLOCK, SIM_BLOCK), (512, 1024), (300, None)]):
        res = score_customers_dask(
            client,
            pp,
            sp,
            rfm,
            out_dir=tmp_path / f"run{i}",
            chunk_size=chunk,
            partition_size=part,
            **kw,
        )
        tables.append(read_scores(res.out_dir))
    for t in tables[1:]:
        pd.testing.assert_frame_equal(t, tables[0], check_exact=True)
    other = score_customers_dask(
        client, pp, sp, rfm, out_dir=tmp_path / "seed", **{**kw, "random_seed": 124}
    )
    assert not np.array_equal(read_scores(other.out_dir)["clv_mean"], tables[0]["clv_mean"])


def test_engine_survives_pickling(rfm):
    # On a cluster of processes the engine travels pickled: it must score the same.
    from bayesclv.clv_engine import Engine as _Engine
    from bayesclv.clv_engine import check_discount as _check_discount

    pp = make_params("bgnbd", BG, n_chain=1, n_draw=20, seed=6)
    sp = make_params("gamma_gamma", GG, n_chain=1, n_draw=20, seed=7)
    disc = _check_discount(52.0, 0.1, 52.0, "per_period", None)
    eng = _Engine(pp, sp, rfm, disc, 1.0, 1)
    copy = pickle.loads(pickle.dumps(eng))
    idx = np.arange(100)
    assert np.array_equal(eng.expected(idx)["clv"], copy.expected(idx)["clv"])
    assert np.array_equal(eng.simulate(0, 300, 9)[0], copy.simulate(0, 300, 9)[0])


def test_refuses_a_directory_with_old_parts(client, rfm, tmp_path):
    pp = make_params("bgnbd", BG, n_chain=1, n_draw=5)
    sp = make_params("gamma_gamma", GG, n_chain=1, n_draw=5)
    small = rfm.subset(np.arange(rfm.n_customers) < 50)
    score_customers_dask(client, pp, sp, small, out_dir=tmp_path, **KW)
    with pytest.raises(FileExistsError, match="part-"):
        score_customers_dask(client, pp, sp, small, out_dir=tmp_path, **KW)
