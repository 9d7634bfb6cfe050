"""Customer lifetime value per posterior draw: expected (closed form) and simulated.

Two questions, two functions:

* :func:`expected_clv` - "given the model and what we know about its parameters, what is
  the expected discounted value of this customer?". One number per draw; its spread
  across draws is parameter uncertainty only.
* :func:`simulate_clv` - "what value might this customer actually bring?". Per draw, one
  simulated future (alive or not, purchase times, amounts); the spread across draws is
  the full posterior predictive distribution (parameter and outcome uncertainty).

Both keep ``(chain, draw, customer_id)``. Totals are summed per draw
(:func:`bayesclv.summary.segment_totals`) before any interval is taken.

Units and discounting
---------------------
``horizon`` is in the model's time unit (``rfm.time_unit``). ``discount_rate`` is the
effective rate per ``discount_period`` time units (e.g. 0.10 per 52 weeks for 10 % a year
with weekly data). A purchase at time ``tau`` after the end of calibration is worth
``(1 + discount_rate) ** (-d / discount_period)`` with

* ``discounting="per_period"``: ``d`` = end of the step holding ``tau``; the horizon is
  cut into ``steps`` equal steps (default: ``ceil(horizon)``, one per time unit);
* ``discounting="continuous"``: ``d = tau`` (the same effective rate, applied at the
  exact purchase time). ``steps`` is then the number of quadrature nodes (default 32).

Nothing else scales time or money; ``margin`` multiplies revenue into profit.

Expected value
--------------
By the Gamma-Gamma independence assumption the spend per purchase is independent of the
purchase process, so per draw

``E[CLV] = margin * E[spend | x, zbar] * P(alive | x, t_x, T) * sum_k w_k Phi(t_k | x, T)``

where ``Phi`` is the expected number of purchases in ``(T, T+t]`` given alive
(:mod:`bayesclv.predict`) and ``(t_k, w_k)`` is the discount schedule
(:func:`discount_schedule`). ``Phi`` depends on ``(segment, x, T)`` and P(alive) on
``(segment, x, t_x, T)``, so both are computed once per unique row and broadcast.

Speed and memory
----------------
* ``Phi`` tables: for BG/NBD and MBG/NBD one hyp2f1 per draw, unique row and discount
  step would dominate (52 steps x 1000 draws x 10^4 rows); instead the hypergeometric part
  is interpolated per draw and unique ``(segment, x)`` by a Chebyshev series in
  ``w = t/(alpha+T+t)`` and summed against precomputed per-``(segment, T)`` moments
  (``_bg_tables``; checked against the direct formula on a sample of rows at run time,
  with a fallback). Pareto/NBD needs only per-``(segment, T)`` sums.
* Customers with equal ``(segment, x, t_x, T, zbar)`` (e.g. every one-time buyer acquired
  on the same day) have identical expected-CLV draws and are summarised once.
* Work is customer-major, per segment, with the segment's draws broadcast as a row;
  threads (``n_jobs``) split draws or customers; NumPy releases the GIL.
* :func:`score_customers` holds at most ``chunk_size x n_draws`` values per array (plus
  ``n_unique(segment, x, T) x n_draws`` table values), so 1M customers x 1000 draws never
  exist at once; only the per-customer summaries (a few floats each) are kept, and with
  ``keep_table=False, out_parquet=...`` not even those: each chunk's rows are written as a
  Parquet row group as soon as they are known.
  :func:`expected_clv` and :func:`simulate_clv` return the full ``(chain, draw,
  customer_id)`` array: use them for moderate sizes and ``score_customers`` beyond.
* ``benchmarks/bench_clv_scoring.py`` measures 1M customers x 1000 draws.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from contextlib import closing
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import pandas as pd
import xarray as xr

from bayesclv.clv_engine import (
    SIM_BLOCK,
    SUMMARY_NAMES,
    WORK_ELEMENTS,
    ParquetChunks,
    attrs_of,
    check_chunk,
    check_discount,
    chunks,
    imap,
    keys_in_order_of_appearance,
    make_engine,
    parallel_map,
    schedule,
    seed_entropy,
    wrap,
)
from bayesclv.clv_engine import (
    summarise as summarise_draws,
)
from bayesclv.data import RFMData
from bayesclv.predict import CUSTOMER_DIM
from bayesclv.summary import (
    atomic_write,
    check_one_row_per_customer,
    segment_totals,
    table_from_summaries,
    totals_dataset,
)

__all__ = [
    "discount_schedule",
    "expected_clv",
    "simulate_clv",
    "new_customer_clv",
    "segment_totals",
    "score_customers",
    "CustomerScores",
    "SIM_BLOCK",
]



def discount_schedule(
    horizon: float,
    *,
    discount_rate: float,
    discount_period: float,
    discounting: str = "per_period",
    steps: int | None = None,
    scale: float = 1.0,
) -> tuple[np.ndarray, np.ndarray]:
    """Times and weights turning cumulative expected purchases into discounted ones.

    For any cumulative expectation ``Phi(t)`` (``Phi(0) = 0``),
    ``sum_k weights[k] * Phi(times[k])`` is the expected discounted number of purchases
    in ``(0, horizon]``. ``times[-1] == horizon`` always.

    * ``per_period``: ``times = k h`` (``h = horizon/steps``) and, with
      ``D_k = (1+rate)^(-k h / period)``, ``sum_k D_k (Phi(t_k) - Phi(t_{k-1}))`` is
      rearranged (summation by parts) into weights ``D_k - D_{k+1}`` (``D_{steps+1} = 0``).
      With rate 0 the weights are ``(0, ..., 0, 1)``: exactly ``Phi(horizon)``.
    * ``continuous``: ``int_0^H D(t) dPhi(t) = D(H) Phi(H) + delta int_0^H D(t) Phi(t) dt``
      (integration by parts, ``D(t) = exp(-delta t)``, ``delta = log(1+rate)/period``);
      the integral uses ``steps`` Gauss-Legendre nodes in ``u = log(scale + t)``.
      ``Phi`` is analytic except at ``t = -(scale' + T)`` with ``scale' >= scale``
      (``alpha`` for BG/NBD, ``beta`` for Pareto/NBD), which the log map sends away from the
      interval, so 32 nodes reach ~1e-12 relative accuracy even for small ``scale``.
    """
    disc = check_discount(horizon, discount_rate, discount_period, discounting, steps)
    return schedule(disc, scale)


# --------------------------------------------------------------------------- public API
def expected_clv(
    purchase_params: xr.Dataset,
    spend_params: xr.Dataset,
    rfm: RFMData,
    *,
    horizon: float,
    discount_rate: float,
    discount_period: float,
    discounting: str = "per_period",
    margin: float = 1.0,
    steps: int | None = None,
    n_jobs: int | None = None,
    future_covariates=None,
) -> xr.DataArray:
    """Expected discounted value of each customer over ``horizon``, per posterior draw.

    Answers: "if the parameters were this draw, what would this customer be worth on
    average?" Across draws this is parameter uncertainty only; for the distribution of
    realised values (which also includes whether the customer happens to buy) use
    :func:`simulate_clv`.

    Parameters
    ----------
    purchase_params : xarray.Dataset
        BG/NBD, MBG/NBD or Pareto/NBD draws ``(chain, draw, segment)``.
    spend_params : xarray.Dataset
        Gamma-Gamma draws ``p, q, v`` with the same chains and draws (``q > 1``).
    rfm : RFMData
        Customer histories (``frequency, recency, T, monetary_value, segment``); for a
        covariate family (``pareto_nbd_cov``, ``pareto_nbd_dyncov``) with the covariates
        joined (:func:`bayesclv.covariates.join_covariates`, as for the fit).
    horizon : float
        Length of the future window, in ``rfm.time_unit``.
    discount_rate : float
        Effective rate per ``discount_period`` (0 for no discounting).
    discount_period : float
        Length of the rate's period in model time units (52 for annual with weeks).
    discounting : {"per_period", "continuous"}
        When a purchase is discounted: at the end of its step, or at its exact time.
    margin : float
        Multiplies revenue (1.0 = revenue).
    steps : int, optional
        Steps of ``per_period`` discounting (default ``ceil(horizon)``), or quadrature
        nodes of ``continuous`` (default 32).
    n_jobs : int, optional
        Threads (default: all CPUs).
    future_covariates : bayesclv.covariates.TimeVaryingCovariates, optional
        Time-varying covariates: a table covering every customer's ``(T, T + horizon]``
        (default: the table joined to ``rfm``, if it reaches that far; e.g.
        ``joined.extend(future)``). An error names the customers and periods it lacks.
        Static covariates need none (and families without covariates refuse it).

    Returns
    -------
    xarray.DataArray
        ``(chain, draw, customer_id)`` in money units of ``monetary_value``. With
        ``discount_rate=0`` it equals expected purchases x expected spend x margin.

    Notes
    -----
    See the module docstring for the formula; the spend is the Gamma-Gamma conditional
    mean, which assumes spend is independent of the purchase process.
    """
    disc = check_discount(horizon, discount_rate, discount_period, discounting, steps)
    eng = make_engine(purchase_params, spend_params, rfm, disc, margin, n_jobs,
                      future_covariates=future_covariates)
    kcode, rep, _ = eng.customer_keys()
    vals = np.empty((len(rep), eng.dp.n_draws))
    chunk = max(1, WORK_ELEMENTS // eng.dp.n_draws)

    def run(bounds):
        start, stop = bounds
        vals[start:stop] = eng.expected(rep[start:stop], ("clv",))["clv"]

    parallel_map(run, chunks(len(rep), chunk), n_jobs)
    out = vals.T[:, kcode]
    return wrap(eng, out, "expected_clv", attrs_of(eng, method="expected"))


def simulate_clv(
    purchase_params: xr.Dataset,
    spend_params: xr.Dataset,
    rfm: RFMData,
    *,
    horizon: float,
    discount_rate: float,
    discount_period: float,
    discounting: str = "per_period",
    margin: float = 1.0,
    steps: int | None = None,
    random_seed: int | np.random.Generator | None = None,
    n_jobs: int | None = None,
    future_covariates=None,
) -> xr.DataArray:
    """Realised discounted value of each customer: posterior predictive draws.

    Answers: "what might this customer actually be worth?" For each posterior draw and
    customer one future is simulated:

    1. alive at ``T`` with probability P(alive | x, t_x, T);
    2. if alive, ``lambda ~ Gamma(r+x, alpha+T)`` and ``p ~ Beta(a, b+x)`` (BG/NBD; ``b+x+1``
       for MBG/NBD) or ``mu ~ Gamma(s, beta+T)`` (Pareto/NBD, dropout time ``Exp(mu)``);
    3. purchases arrive as a Poisson(``lambda``) process until the horizon or dropout
       (BG/NBD: dropout with probability ``p`` right after each purchase);
    4. each amount is ``Gamma(p_s, nu)`` with ``nu ~ Gamma(q + p_s x, v + x zbar)``
       drawn once per customer (its posterior given the spend history);
    5. each purchase is discounted at its own time (module docstring), then summed.

    The mean over many simulations equals :func:`expected_clv` (tested).

    Parameters
    ----------
    random_seed : int, numpy Generator or None
        Customers are simulated in blocks of :data:`SIM_BLOCK` in ``rfm`` order, block
        ``i`` with ``SeedSequence(random_seed, spawn_key=(i,))``: the result is identical
        for the same seed however the work is chunked or threaded.
    Other parameters
        As :func:`expected_clv`.

    Returns
    -------
    xarray.DataArray
        ``(chain, draw, customer_id)``.
    """
    disc = check_discount(horizon, discount_rate, discount_period, discounting, steps)
    entropy = seed_entropy(random_seed)
    eng = make_engine(purchase_params, spend_params, rfm, disc, margin, n_jobs, need_value=False,
                      future_covariates=future_covariates)
    out = eng.simulate(0, rfm.n_customers, entropy)[0].T
    return wrap(eng, out, "simulated_clv", attrs_of(eng, method="simulate", random_seed=entropy))


def new_customer_clv(
    purchase_params: xr.Dataset,
    spend_params: xr.Dataset,
    segment: str,
    *,
    horizon: float,
    discount_rate: float,
    discount_period: float,
    discounting: str = "per_period",
    margin: float = 1.0,
    steps: int | None = None,
) -> xr.DataArray:
    """Expected discounted value of a not-yet-acquired customer of ``segment``, per draw.

    Unconditional: the customer makes a first purchase at time 0 (not counted: the models
    describe repeat purchases, whose amounts Gamma-Gamma models), then repeat purchases
    over ``(0, horizon]`` at the population mean spend ``p v / (q - 1)``. For a segment
    unseen at fit time pass params holding that segment's population draws.

    Returns
    -------
    xarray.DataArray
        ``(chain, draw)``.
    """
    rfm = RFMData(
        customer_id=np.array(["new"]),
        frequency=[0],
        recency=[0.0],
        T=[0.0],
        monetary_value=[0.0],
        segment=[0],
        segment_names=(str(segment),),
    )
    disc = check_discount(horizon, discount_rate, discount_period, discounting, steps)
    eng = make_engine(purchase_params, spend_params, rfm, disc, margin, 1)
    clv = eng.expected(np.arange(1), ("clv",))["clv"].T
    da = wrap(eng, clv, "new_customer_clv", attrs_of(eng, segment=str(segment)))
    return da.isel({CUSTOMER_DIM: 0}, drop=True)


class CustomerScores(NamedTuple):
    """Result of :func:`score_customers`."""

    #: One row per customer, columns :data:`bayesclv.summary.TABLE_COLUMNS`; ``None``
    #: when ``score_customers(keep_table=False)`` (the rows went to ``out_parquet``).
    table: pd.DataFrame | None
    #: ``segment_total`` (chain, draw, segment) and ``portfolio_total`` (chain, draw),
    #: summed per draw over all customers.
    totals: xr.Dataset


def score_customers(
    purchase_params: xr.Dataset,
    spend_params: xr.Dataset,
    rfm: RFMData,
    *,
    horizon: float,
    discount_rate: float,
    discount_period: float,
    discounting: str = "per_period",
    margin: float = 1.0,
    steps: int | None = None,
    chunk_size: int = 8192,
    prob: float = 0.94,
    kind: str = "eti",
    method: str = "expected",
    random_seed: int | np.random.Generator | None = None,
    out_parquet: str | os.PathLike | None = None,
    metadata: Mapping[str, Any] | None = None,
    n_jobs: int | None = None,
    keep_table: bool = True,
    future_covariates=None,
) -> CustomerScores:
    """Score many customers in chunks: tidy table plus per-draw segment totals.

    Per chunk, CLV draws ``(chunk, n_draws)`` are computed (``method="expected"``: as
    :func:`expected_clv`, one row per distinct ``(segment, x, t_x, T, zbar)``;
    ``"simulate"``: as :func:`simulate_clv`, bit-identical to it), summarised per customer
    (mean, median, ``prob`` interval of ``kind``, posterior-mean P(alive) and expected
    purchases over the horizon) and summed per segment and draw (weighted by the number
    of customers sharing a row); then dropped. Peak memory is about
    ``chunk_size x n_draws x 8 bytes x ~8`` per thread plus the per-draw tables.

    Parameters
    ----------
    chunk_size : int
        Customers per chunk. For ``method="simulate"`` it is rounded up to a multiple of
        :data:`SIM_BLOCK`; results do not depend on it.
    out_parquet : path-like, optional
        Stream the table to this Parquet file: each chunk of ``chunk_size`` customers
        (``rfm`` order) is written as one row group as soon as its rows are known, to a
        temporary file in the same directory that is renamed to ``out_parquet`` when the
        run succeeds and removed on any exception (including ``KeyboardInterrupt``); an
        existing ``out_parquet`` is untouched until then. The run settings and
        ``metadata`` go to its schema metadata under ``b"bayesclv"``
        (:func:`bayesclv.summary.read_metadata`).
    keep_table : bool
        Return the per-customer table (default). With ``False`` the table is never
        assembled in memory and ``CustomerScores.table`` is ``None``: pass
        ``out_parquet`` to keep the rows. Memory then stays at the chunk working set
        plus a few integers per customer (their keys) and six floats per distinct
        ``(segment, x, t_x, T, zbar)``, however many customers are scored.
    future_covariates : bayesclv.covariates.TimeVaryingCovariates, optional
        As :func:`expected_clv`: the covariate path over the horizon of a fit with
        time-varying covariates (``rfm`` carries the joined covariates of any covariate
        family).
    Other parameters
        As :func:`expected_clv` / :func:`simulate_clv` and
        :func:`bayesclv.summary.clv_intervals`.

    Returns
    -------
    CustomerScores
        ``table`` (one row per customer, ``rfm`` order; ``None`` with
        ``keep_table=False``) and ``totals`` (always).
    """
    if method not in ("expected", "simulate"):
        raise ValueError(f"method must be 'expected' or 'simulate', got {method!r}.")
    disc = check_discount(horizon, discount_rate, discount_period, discounting, steps)
    chunk_size = check_chunk(chunk_size)
    if method == "simulate":
        chunk_size = SIM_BLOCK * math.ceil(chunk_size / SIM_BLOCK)
        entropy = seed_entropy(random_seed)
    eng = make_engine(
        purchase_params, spend_params, rfm, disc, margin, n_jobs,
        need_value=method == "expected", future_covariates=future_covariates,
    )
    N, S = eng.dp.n_draws, rfm.n_segments
    names = np.asarray(rfm.segment_names, dtype=object)
    kept = {k: np.empty(rfm.n_customers) for k in SUMMARY_NAMES} if keep_table else None

    def summarise(idx, clv=None, pa=None, weights=None) -> tuple:
        return summarise_draws(eng, idx, prob, kind, clv, pa, weights)

    def rows(start: int, stop: int, summ: Mapping[str, np.ndarray]) -> pd.DataFrame:
        return table_from_summaries(
            rfm.customer_id[start:stop],
            names[rfm.segment[start:stop]],
            summ,
            p_alive=summ["p_alive"],
            expected_purchases=summ["purchases"],
            prob=prob,
            kind=kind,
            horizon=disc.horizon,
            time_unit=rfm.time_unit,
        )

    def run(sink) -> np.ndarray:
        """Score every customer; hand each finished chunk of rows, in order, to ``sink``.

        Returns the per-draw segment sums (n_draws, n_segments).
        """
        seg_acc = np.zeros((N, S))

        def emit(start: int, stop: int, summ: Mapping[str, np.ndarray]) -> None:
            if kept is not None:
                for k in SUMMARY_NAMES:
                    kept[k][start:stop] = summ[k]
            if sink is not None:
                sink(rows(start, stop, summ))

        if method == "simulate":
            for start, stop in chunks(rfm.n_customers, chunk_size):
                clv, pa = eng.simulate(start, stop, entropy)
                summ, seg = summarise(np.arange(start, stop), clv, pa)
                seg_acc += seg
                emit(start, stop, summ)
            return seg_acc

        # Customers with the same key share their draws: summarise each key once,
        # weight its draws by its number of customers in the segment totals.
        kcode, rep, counts = keys_in_order_of_appearance(eng)
        per_key = {k: np.empty(len(rep)) for k in SUMMARY_NAMES}

        def run_keys(bounds):
            start, stop = bounds
            summ, seg = summarise(rep[start:stop], weights=counts[start:stop])
            for k in SUMMARY_NAMES:
                per_key[k][start:stop] = summ[k]
            return stop, seg

        # Keys are numbered in order of first appearance, so once keys 0..K-1 are
        # summarised every customer before rep[K] (the first one with key K) is ready.
        written = 0
        with closing(imap(run_keys, chunks(len(rep), chunk_size), n_jobs)) as done:
            for k_done, seg in done:
                seg_acc += seg  # in key order: deterministic sums
                ready = int(rep[k_done]) if k_done < len(rep) else rfm.n_customers
                while written < ready and (
                    ready - written >= chunk_size or ready == rfm.n_customers
                ):
                    stop = min(written + chunk_size, ready)
                    code = kcode[written:stop]
                    emit(written, stop, {k: v[code] for k, v in per_key.items()})
                    written = stop
        return seg_acc

    meta = {**attrs_of(eng, method=method), **dict(metadata or {})}
    if out_parquet is not None:
        box = {}

        def write(tmp: Path) -> None:
            with ParquetChunks(tmp, meta) as sink:
                box["seg"] = run(sink)
                if sink.n_rows != rfm.n_customers:  # pragma: no cover - internal invariant
                    raise AssertionError(f"{sink.n_rows} rows for {rfm.n_customers} customers.")

        atomic_write(Path(out_parquet), write)
        seg_acc = box["seg"]
    else:
        seg_acc = run(None)

    table = None
    if kept is not None:
        table = rows(0, rfm.n_customers, kept)
        check_one_row_per_customer(table, rfm.customer_id)
    c, d = eng.dp.n_chain, eng.dp.n_draw
    dims = (("chain", eng.dp.chain), ("draw", eng.dp.draw))
    like = xr.Dataset(coords={k: v for k, v in dims if v is not None})
    totals = totals_dataset(seg_acc.reshape(c, d, -1), like, rfm.segment_names)
    totals.attrs.update(attrs_of(eng, method=method))
    return CustomerScores(table, totals)


