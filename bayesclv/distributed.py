"""Score customers on a Dask cluster: :func:`bayesclv.clv.score_customers`, partitioned.

How the work is split:

1. The posterior draws and the per-customer summary (``RFMData``: six numbers per
   customer, 1M customers ~ 50 MB) are scattered to the cluster once.
2. One worker builds the per-draw tables (expected purchases given alive per unique
   ``(segment, x, T)``, :class:`bayesclv.clv_engine.Engine`), exactly as the single-machine
   run does, from the same customers in the same order; the result is replicated to
   every worker. Building the tables once matters for exactness: their interpolation
   grid depends on the whole set of customers, so tables built per partition could
   differ in the last bits.
3. Customers are split into contiguous partitions (a multiple of ``chunk_size``
   customers); each partition is one task that scores its customers chunk by chunk,
   writes its rows to ``out_dir/part-NNNNN.parquet`` and returns its per-draw segment
   sums (a few KB).
4. The client adds the segment sums in partition order.

What is identical to the single-machine :func:`bayesclv.clv.score_customers` (tested):

* the customer table, bit for bit, for ``method="expected"`` (every customer's draws do
  not depend on which other customers share its chunk) and ``method="simulate"``
  (customer block ``i`` always draws from ``SeedSequence(random_seed, spawn_key=(i,))``
  with blocks of :data:`bayesclv.clv.SIM_BLOCK` customers in ``rfm`` order, whichever
  partition computes it);
* for ``method="simulate"`` the per-draw totals too (partitions are whole chunks, and
  chunk sums are added in the same order). For ``method="expected"`` the single-machine
  run sums customers sharing a history once per chunk of distinct histories; the
  partitioned sums group customers differently, so totals agree to rounding (relative
  1e-12), not bit for bit.

Install with ``pip install "bayesclv[dask]"``. On a real cluster::

    from dask.distributed import Client
    client = Client("tcp://scheduler:8786")
    scores = score_customers_dask(client, purchase, spend, rfm, out_dir="s3://bucket/clv",
                                  horizon=52, discount_rate=0.1, discount_period=52)

``out_dir`` must be reachable by every worker (a shared file system; for object stores
install ``s3fs``/``gcsfs`` and pass the URL).
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import pandas as pd
import xarray as xr

from bayesclv.clv_engine import (
    SIM_BLOCK,
    Engine,
    ParquetChunks,
    attrs_of,
    check_chunk,
    check_discount,
    chunks,
    factorize_rows,
    make_engine,
    seed_entropy,
    summarise,
)
from bayesclv.data import RFMData
from bayesclv.summary import (
    atomic_write,
    check_one_row_per_customer,
    table_from_summaries,
    totals_dataset,
)

__all__ = ["score_customers_dask", "read_scores", "DistributedScores"]

_NAMES = ("mean", "median", "lower", "upper", "p_alive", "purchases")


class DistributedScores(NamedTuple):
    """Result of :func:`score_customers_dask`."""

    #: Directory holding the table, one Parquet file per partition (``rfm`` order).
    out_dir: str
    #: The partition files, in order; :func:`read_scores` concatenates them.
    files: tuple[str, ...]
    #: ``segment_total`` (chain, draw, segment) and ``portfolio_total`` (chain, draw).
    totals: xr.Dataset


def read_scores(out_dir: str | os.PathLike) -> pd.DataFrame:
    """The customer table written by :func:`score_customers_dask`, in ``rfm`` order."""
    files = sorted(str(p) for p in Path(out_dir).glob("part-*.parquet"))
    if not files:
        raise FileNotFoundError(f"no part-*.parquet files in '{out_dir}'.")
    return pd.concat([pd.read_parquet(f) for f in files], ignore_index=True)


def _score_partition(
    eng: Engine,
    start: int,
    stop: int,
    part: int,
    *,
    method: str,
    entropy: int | None,
    chunk_size: int,
    prob: float,
    kind: str,
    out_dir: str,
    meta: dict,
) -> list[np.ndarray]:
    """Score customers ``start:stop``, write their rows, return per-chunk segment sums."""
    rfm = eng.rfm
    sl = slice(start, stop)
    seg_parts = []
    if method == "expected":
        # Customers of this partition with the same history share their draws.
        kcode, _ = factorize_rows(
            eng.pcol[sl],
            eng.scol[sl],
            rfm.frequency[sl],
            rfm.recency[sl],
            rfm.T[sl],
            rfm.monetary_value[sl],
        )
        n_keys = int(kcode.max()) + 1
        rep = np.empty(n_keys, dtype=np.intp)
        rep[kcode[::-1]] = np.arange(len(kcode))[::-1]
        rep += start
        counts = np.bincount(kcode, minlength=n_keys)
        per_key = {k: np.empty(n_keys) for k in _NAMES}
        for a, b in chunks(n_keys, chunk_size):
            summ, seg = summarise(eng, rep[a:b], prob, kind, weights=counts[a:b])
            for k in _NAMES:
                per_key[k][a:b] = summ[k]
            seg_parts.append(seg)
        per_customer = {k: v[kcode] for k, v in per_key.items()}
    else:
        per_customer = {k: np.empty(stop - start) for k in _NAMES}
        for a, b in chunks(stop - start, chunk_size):
            clv, pa = eng.simulate(start + a, start + b, entropy)
            summ, seg = summarise(eng, np.arange(start + a, start + b), prob, kind, clv, pa)
            for k in _NAMES:
                per_customer[k][a:b] = summ[k]
            seg_parts.append(seg)
    labels = np.asarray(rfm.segment_names, dtype=object)[rfm.segment[sl]]
    table = table_from_summaries(
        rfm.customer_id[sl],
        labels,
        per_customer,
        p_alive=per_customer["p_alive"],
        expected_purchases=per_customer["purchases"],
        prob=prob,
        kind=kind,
        horizon=eng.disc.horizon,
        time_unit=rfm.time_unit,
    )
    check_one_row_per_customer(table, rfm.customer_id[sl])

    def write(tmp: Path) -> None:
        with ParquetChunks(tmp, {**meta, "partition": part}) as sink:
            for a, b in chunks(len(table), chunk_size):
                sink(table.iloc[a:b])

    atomic_write(Path(out_dir) / f"part-{part:05d}.parquet", write)
    return seg_parts


def score_customers_dask(
    client: Any,
    purchase_params: xr.Dataset,
    spend_params: xr.Dataset,
    rfm: RFMData,
    *,
    out_dir: str | os.PathLike,
    horizon: float,
    discount_rate: float,
    discount_period: float,
    discounting: str = "per_period",
    margin: float = 1.0,
    steps: int | None = None,
    chunk_size: int = 8192,
    partition_size: int | None = None,
    prob: float = 0.94,
    kind: str = "eti",
    method: str = "expected",
    random_seed: int | np.random.Generator | None = None,
    metadata: Mapping[str, Any] | None = None,
    n_jobs: int = 1,
) -> DistributedScores:
    """:func:`bayesclv.clv.score_customers` on a Dask cluster, table written partitioned.

    Parameters
    ----------
    client : dask.distributed.Client
        E.g. ``Client(LocalCluster(n_workers=2))`` or ``Client("tcp://scheduler:8786")``.
    out_dir : path-like
        Directory (created) for ``part-00000.parquet``, ``part-00001.parquet``, ... in
        ``rfm`` order; every worker must be able to write there. Each file carries the run
        settings, ``metadata`` and its partition number in its schema metadata under
        ``b"bayesclv"``, as ``score_customers(out_parquet=...)`` does.
    chunk_size : int
        Customers per chunk inside a task (memory per task about
        ``chunk_size x n_draws x 8 bytes x ~8``). For ``method="simulate"`` rounded up to a
        multiple of :data:`bayesclv.clv.SIM_BLOCK`, as in ``score_customers``.
    partition_size : int, optional
        Customers per task, rounded up to a multiple of ``chunk_size``. Default: about
        four tasks per worker thread.
    n_jobs : int
        Threads inside each task (default 1: Dask already runs one task per worker
        thread).
    Other parameters
        As :func:`bayesclv.clv.score_customers`.

    Returns
    -------
    DistributedScores
        ``out_dir``, the partition ``files`` and the per-draw ``totals``. Read the table
        with :func:`read_scores`.
    """
    if method not in ("expected", "simulate"):
        raise ValueError(f"method must be 'expected' or 'simulate', got {method!r}.")
    if not isinstance(rfm, RFMData):
        raise TypeError(f"rfm must be an RFMData, got {type(rfm).__name__}.")
    disc = check_discount(horizon, discount_rate, discount_period, discounting, steps)
    chunk_size = check_chunk(chunk_size)
    entropy = None
    if method == "simulate":
        chunk_size = SIM_BLOCK * math.ceil(chunk_size / SIM_BLOCK)
        entropy = seed_entropy(random_seed)
    n = rfm.n_customers
    if partition_size is None:
        threads = sum(client.nthreads().values()) or 1
        partition_size = math.ceil(n / (4 * threads))
    partition_size = chunk_size * max(1, math.ceil(int(partition_size) / chunk_size))
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    stale = sorted(out.glob("part-*.parquet"))
    if stale:
        raise FileExistsError(
            f"'{out}' already holds {len(stale)} part-*.parquet files; remove them or pass "
            f"another out_dir (a mix of two runs could not be told apart)."
        )

    # Broadcast the inputs once; build the tables on one worker, then copy them to all.
    # hash=False: fresh keys per call. With content-hashed keys, a second call on the
    # same inputs could reuse keys that the first call's futures were still releasing,
    # and its tasks then failed with "lost dependencies" (seen in CI).
    pp, sp, rfm_f = client.scatter(
        [purchase_params, spend_params, rfm], broadcast=True, hash=False
    )
    eng = client.submit(
        make_engine,
        pp,
        sp,
        rfm_f,
        disc,
        margin,
        n_jobs,
        need_value=method == "expected",
        pure=False,
    )
    client.replicate([eng])
    like = client.submit(_like_and_attrs, eng, method, pure=False).result()
    meta = {**like["attrs"], **dict(metadata or {}), "n_partitions": None}
    bounds = list(chunks(n, partition_size))
    meta["n_partitions"] = len(bounds)
    futures = [
        client.submit(
            _score_partition,
            eng,
            a,
            b,
            i,
            method=method,
            entropy=entropy,
            chunk_size=chunk_size,
            prob=prob,
            kind=kind,
            out_dir=str(out),
            meta=meta,
            pure=False,
        )
        for i, (a, b) in enumerate(bounds)
    ]
    parts = client.gather(futures)
    seg_acc = np.zeros((like["n_draws"], rfm.n_segments))
    for part in parts:  # partition order, chunk order: deterministic sums
        for seg in part:
            seg_acc += seg
    c, d = like["n_chain"], like["n_draw"]
    coords = xr.Dataset(coords={k: v for k, v in like["coords"].items() if v is not None})
    totals = totals_dataset(seg_acc.reshape(c, d, -1), coords, rfm.segment_names)
    totals.attrs.update(like["attrs"])
    files = tuple(str(out / f"part-{i:05d}.parquet") for i in range(len(bounds)))
    return DistributedScores(str(out), files, totals)


def _like_and_attrs(eng: Engine, method: str) -> dict:
    """Small facts about the engine the client needs (runs on a worker)."""
    dp = eng.dp
    return {
        "attrs": attrs_of(eng, method=method),
        "n_draws": dp.n_draws,
        "n_chain": dp.n_chain,
        "n_draw": dp.n_draw,
        "coords": {"chain": dp.chain, "draw": dp.draw},
    }
