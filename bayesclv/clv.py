"""Customer lifetime value per posterior draw: expected (closed form) and simulated.

Two questions, two functions:

* :func:`expected_clv` - "given the model and what we know about its parameters, what is
  the expected discounted value of this customer?". One number per draw; its spread
  across draws is parameter uncertainty only.
* :func:`simulate_clv` - "what value might this customer actually bring?". Per draw, one
  simulated future (alive or not, purchase times, amounts); the spread across draws is
  the full posterior predictive distribution (parameter and outcome uncertainty).

Both keep ``(chain, draw, customer)``. Totals are summed per draw
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

Memory
------
:func:`score_customers` streams over customer chunks and holds at most
``n_draws x chunk_size`` values per array (plus one ``n_draws x n_unique(segment, x, T)``
table), so 1M customers x 1000 draws never exist at once. :func:`expected_clv` and
:func:`simulate_clv` return the full ``(chain, draw, customer)`` array: use them for up to
a few hundred thousand customer-draws x customers, and ``score_customers`` beyond.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import pandas as pd
import xarray as xr

from bayesclv.data import RFMData
from bayesclv.predict import (
    DrawParams,
    customer_columns,
    log_p_alive,
    phi_alive,
    spend_mean,
)
from bayesclv.summary import (
    _totals_dataset,
    atomic_write,
    check_one_row_per_customer,
    segment_sums,
    segment_totals,
    table_from_arrays,
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

#: Customers per random stream in :func:`simulate_clv`. Block ``i`` (customers
#: ``i*SIM_BLOCK ... (i+1)*SIM_BLOCK - 1`` in ``rfm`` order) draws from
#: ``SeedSequence(random_seed, spawn_key=(i,))``, so results do not depend on chunking.
SIM_BLOCK = 256

#: Default number of Gauss-Legendre nodes for continuous discounting.
CONTINUOUS_NODES = 32

#: Target number of (draw x row) elements per array operation.
_WORK_ELEMENTS = 2_000_000


# --------------------------------------------------------------------------- discounting
class _Discount(NamedTuple):
    horizon: float
    rate: float
    period: float
    method: str
    steps: int

    @property
    def log_factor(self) -> float:
        """delta: log discount per model time unit (``log1p(rate) / period``)."""
        return math.log1p(self.rate) / self.period

    def factor(self, tau: np.ndarray) -> np.ndarray:
        """Discount factor of a purchase at time ``tau`` in ``(0, horizon]``."""
        if self.method == "continuous":
            d = tau
        else:
            h = self.horizon / self.steps
            d = np.maximum(np.ceil(tau / h), 1.0) * h
        return np.exp(-self.log_factor * d)


def _check_discount(horizon, discount_rate, discount_period, discounting, steps) -> _Discount:
    h = float(horizon)
    if not np.isfinite(h) or h < 0:
        raise ValueError(
            f"horizon must be a finite number >= 0 (model time units), got {horizon!r}."
        )
    rate = float(discount_rate)
    if not np.isfinite(rate) or rate <= -1:
        raise ValueError(
            f"discount_rate must be a finite number > -1 (e.g. 0.1 for 10 % per "
            f"discount_period), got {discount_rate!r}."
        )
    period = float(discount_period)
    if not np.isfinite(period) or period <= 0:
        raise ValueError(
            f"discount_period must be > 0 model time units (e.g. 52 for an annual rate with "
            f"weekly data), got {discount_period!r}."
        )
    if discounting not in ("per_period", "continuous"):
        raise ValueError(
            f"discounting must be 'per_period' or 'continuous', got {discounting!r}."
        )
    if steps is None:
        steps = max(1, math.ceil(h - 1e-9)) if discounting == "per_period" else CONTINUOUS_NODES
    if int(steps) != steps or steps < 1:
        raise ValueError(f"steps must be a positive integer, got {steps!r}.")
    return _Discount(h, rate, period, discounting, int(steps))


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
    disc = _check_discount(horizon, discount_rate, discount_period, discounting, steps)
    return _schedule(disc, scale)


def _schedule(disc: _Discount, scale: float) -> tuple[np.ndarray, np.ndarray]:
    H = disc.horizon
    if H == 0:
        return np.array([0.0]), np.array([0.0])
    delta = disc.log_factor
    if disc.method == "per_period":
        t = H * np.arange(1, disc.steps + 1) / disc.steps
        D = np.exp(-delta * t)
        w = D - np.append(D[1:], 0.0)
        if delta == 0.0:
            w = np.zeros_like(t)
            w[-1] = 1.0
        return t, w
    if delta == 0.0:
        return np.array([H]), np.array([1.0])
    scale = float(max(scale, H * 1e-9))
    xi, wi = np.polynomial.legendre.leggauss(disc.steps)
    u0, u1 = math.log(scale), math.log(scale + H)
    u = u0 + (u1 - u0) * (xi + 1.0) / 2.0
    tau = np.exp(u) - scale
    w = delta * np.exp(-delta * tau) * np.exp(u) * wi * (u1 - u0) / 2.0
    return np.append(tau, H), np.append(w, math.exp(-delta * H))


# --------------------------------------------------------------------------- engine
def _factorize(*cols: np.ndarray) -> tuple[np.ndarray, list[np.ndarray]]:
    """Codes of unique rows of ``cols`` and the unique values of each column."""
    frame = pd.DataFrame({i: c for i, c in enumerate(cols)})
    codes = frame.groupby(list(frame.columns), sort=False).ngroup().to_numpy()
    first = np.full(codes.max() + 1, -1, dtype=np.int64)
    first[codes[::-1]] = np.arange(len(codes))[::-1]
    return codes.astype(np.intp), [np.asarray(c)[first] for c in cols]


def _map(fn, items, n_jobs):
    items = list(items)
    if n_jobs is None:
        n_jobs = os.cpu_count() or 1
    if n_jobs <= 1 or len(items) <= 1:
        return [fn(i) for i in items]
    with ThreadPoolExecutor(max_workers=min(n_jobs, len(items))) as ex:
        return list(ex.map(fn, items))


class _Engine:
    """Per-draw tables shared by all chunks of one scoring run (internal)."""

    def __init__(
        self,
        purchase_params: xr.Dataset,
        spend_params: xr.Dataset,
        rfm: RFMData,
        disc: _Discount,
        margin: float,
        n_jobs: int | None,
    ):
        if not isinstance(rfm, RFMData):
            raise TypeError(f"rfm must be an RFMData, got {type(rfm).__name__}.")
        margin = float(margin)
        if not np.isfinite(margin):
            raise ValueError(f"margin must be a finite number, got {margin!r}.")
        self.dp = DrawParams(purchase_params, "purchase")
        self.sp = DrawParams(spend_params, "spend")
        if self.dp.n_draws != self.sp.n_draws:
            raise ValueError(
                f"purchase draws ({self.dp.n_chain} chains x {self.dp.n_draw}) and spend "
                f"draws ({self.sp.n_chain} x {self.sp.n_draw}) must match draw by draw."
            )
        self.rfm, self.disc, self.margin, self.n_jobs = rfm, disc, margin, n_jobs
        self.model = self.dp.model
        self.pcol = customer_columns(self.dp, rfm)
        self.scol = customer_columns(self.sp, rfm)
        scale_var = "beta" if self.model == "pareto_nbd" else "alpha"
        self.times, self.weights = _schedule(disc, float(self.dp.values[scale_var].min()))
        x = rfm.frequency.astype(np.float64)
        self.v_code, (ug, ux, uT) = _factorize(self.pcol, x, rfm.T)
        self.value_alive, self.purchases_alive = self._alive_tables(ug, ux, uT)

    def _alive_tables(self, g, x, T) -> tuple[np.ndarray, np.ndarray]:
        """(n_draws, n_unique) discounted and undiscounted purchases given alive."""
        N, U = self.dp.n_draws, len(g)
        value = np.empty((N, U))
        horizon_purchases = np.empty((N, U))
        block = max(1, _WORK_ELEMENTS // N)
        use = np.flatnonzero(self.weights != 0)
        last = len(self.times) - 1

        def run(start: int) -> None:
            sl = slice(start, min(start + block, U))
            th = self.dp.columns(g[sl])
            acc = np.zeros((N, sl.stop - sl.start))
            for k in np.union1d(use, [last]):
                phi = phi_alive(self.model, th, x[sl], T[sl], self.times[k])
                if self.weights[k] != 0:
                    acc += self.weights[k] * phi
                if k == last:
                    horizon_purchases[:, sl] = phi
            value[:, sl] = acc

        _map(run, range(0, U, block), self.n_jobs)
        return value, horizon_purchases

    def p_alive(self, idx: np.ndarray) -> np.ndarray:
        """(n_draws, len(idx)) P(alive), computed once per unique (segment, x, t_x, T)."""
        rfm = self.rfm
        g = self.pcol[idx]
        code, (ug, ux, utx, uT) = _factorize(
            g, rfm.frequency[idx].astype(np.float64), rfm.recency[idx], rfm.T[idx]
        )
        lp = log_p_alive(self.model, self.dp.columns(ug), ux, utx, uT)
        return np.exp(lp)[:, code]

    def expected(self, idx: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Expected CLV, P(alive) and expected purchases, each (n_draws, len(idx))."""
        rfm = self.rfm
        pa = self.p_alive(idx)
        vc = self.v_code[idx]
        spend = spend_mean(
            self.sp.columns(self.scol[idx]), rfm.frequency[idx], rfm.monetary_value[idx]
        )
        clv = pa * self.value_alive[:, vc] * spend * self.margin
        return clv, pa, pa * self.purchases_alive[:, vc]

    # ------------------------------------------------------------------ simulation
    def simulate_block(self, block: int, entropy: int) -> np.ndarray:
        """Realised discounted value of customers in one SIM_BLOCK, (n_draws, n_block)."""
        rfm, dp, disc = self.rfm, self.dp, self.disc
        n = rfm.n_customers
        idx = np.arange(block * SIM_BLOCK, min((block + 1) * SIM_BLOCK, n))
        rng = np.random.Generator(
            np.random.PCG64(np.random.SeedSequence(entropy, spawn_key=(block,)))
        )
        N, m = dp.n_draws, len(idx)
        out = np.zeros(N * m)
        H = disc.horizon
        if H == 0:
            return out.reshape(N, m)
        pa = self.p_alive(idx).ravel()
        alive = np.flatnonzero(rng.random(N * m) < pa)
        if alive.size == 0:
            return out.reshape(N, m)
        cust = np.broadcast_to(idx, (N, m)).ravel()[alive]
        col = np.broadcast_to(self.pcol[idx], (N, m)).ravel()[alive]
        scol = np.broadcast_to(self.scol[idx], (N, m)).ravel()[alive]
        drw = np.broadcast_to(np.arange(N)[:, None], (N, m)).ravel()[alive]
        x = rfm.frequency[cust].astype(np.float64)
        T = rfm.T[cust]
        th = {k: v[drw, col] for k, v in dp.values.items()}
        # Posterior of the purchase rate given alive at T: Gamma(r + x, alpha + T).
        with np.errstate(divide="ignore"):
            lam = rng.standard_gamma(th["r"] + x) / (th["alpha"] + T)
            tau = rng.standard_exponential(alive.size) / lam
        if self.model == "pareto_nbd":
            mu = rng.standard_gamma(np.broadcast_to(th["s"], x.shape)) / (th["beta"] + T)
            with np.errstate(divide="ignore"):
                end = np.minimum(H, rng.standard_exponential(alive.size) / mu)
        else:
            end = np.full(alive.size, H)
        act = np.flatnonzero(tau <= end)
        if act.size == 0:
            return out.reshape(N, m)
        # Only customers with at least one purchase need a dropout probability and a
        # spend rate: drawing them lazily keeps the cost proportional to purchases.
        if self.model != "pareto_nbd":
            b_eff = th["b"][act] + x[act] + (1.0 if self.model == "mbgnbd" else 0.0)
            p_drop = rng.beta(th["a"][act], b_eff)
        sp = {k: v[drw[act], scol[act]] for k, v in self.sp.values.items()}
        xa = x[act]
        zbar = rfm.monetary_value[cust[act]]
        # Posterior of the spend rate nu given x purchases averaging zbar:
        # Gamma(q + p x, rate v + x zbar) (Fader & Hardie 2013, eq. 3 with conjugacy).
        nu = rng.standard_gamma(sp["q"] + sp["p"] * xa) / (sp["v"] + xa * zbar)
        p_spend = sp["p"]
        lam_a, end_a, tau_a = lam[act], end[act], tau[act]
        pos = alive[act]  # position in the (N*m) output
        value = np.zeros(act.size)
        live = np.arange(act.size)
        while live.size:
            amount = rng.standard_gamma(p_spend[live]) / nu[live]
            value[live] += disc.factor(tau_a[live]) * amount
            if self.model != "pareto_nbd":
                # BG/NBD: after each purchase the customer drops out with probability p.
                live = live[rng.random(live.size) >= p_drop[live]]
            tau_a[live] += rng.standard_exponential(live.size) / lam_a[live]
            live = live[tau_a[live] <= end_a[live]]
        out[pos] = value * self.margin
        return out.reshape(N, m)

    def simulate(self, idx_start: int, idx_stop: int, entropy: int) -> np.ndarray:
        """Simulated CLV of customers ``idx_start:idx_stop`` (block-aligned start)."""
        first = idx_start // SIM_BLOCK
        last = (idx_stop - 1) // SIM_BLOCK
        parts = _map(lambda b: self.simulate_block(b, entropy), range(first, last + 1), self.n_jobs)
        full = np.concatenate(parts, axis=1)
        off = idx_start - first * SIM_BLOCK
        return full[:, off : off + (idx_stop - idx_start)]


def _entropy(random_seed) -> int:
    if isinstance(random_seed, np.random.Generator):
        return int(random_seed.integers(2**63))
    if random_seed is None:
        return int(np.random.SeedSequence().entropy)
    if int(random_seed) != random_seed or random_seed < 0:
        raise ValueError(f"random_seed must be a non-negative integer, got {random_seed!r}.")
    return int(random_seed)


def _chunks(n: int, chunk_size: int):
    for start in range(0, n, chunk_size):
        yield start, min(start + chunk_size, n)


def _check_chunk(chunk_size) -> int:
    if int(chunk_size) != chunk_size or chunk_size < 1:
        raise ValueError(f"chunk_size must be a positive integer, got {chunk_size!r}.")
    return int(chunk_size)


def _wrap(eng: _Engine, arr: np.ndarray, name: str, attrs: dict) -> xr.DataArray:
    da = eng.dp.wrap(arr, "customer", eng.rfm.customer_id).rename(name)
    da.attrs.update(attrs)
    return da


def _attrs(eng: _Engine, **extra) -> dict:
    d = eng.disc
    return dict(
        horizon=d.horizon,
        time_unit=eng.rfm.time_unit,
        discount_rate=d.rate,
        discount_period=d.period,
        discounting=d.method,
        steps=d.steps,
        margin=eng.margin,
        purchase_model=eng.model,
        **extra,
    )


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
        Customer histories (``frequency, recency, T, monetary_value, segment``).
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

    Returns
    -------
    xarray.DataArray
        ``(chain, draw, customer)`` in money units of ``monetary_value``. With
        ``discount_rate=0`` it equals expected purchases x expected spend x margin.

    Notes
    -----
    See the module docstring for the formula; the spend is the Gamma-Gamma conditional
    mean, which assumes spend is independent of the purchase process.
    """
    disc = _check_discount(horizon, discount_rate, discount_period, discounting, steps)
    eng = _Engine(purchase_params, spend_params, rfm, disc, margin, n_jobs)
    n = rfm.n_customers
    out = np.empty((eng.dp.n_draws, n))
    chunk = max(1, _WORK_ELEMENTS // eng.dp.n_draws)

    def run(bounds):
        start, stop = bounds
        out[:, start:stop] = eng.expected(np.arange(start, stop))[0]

    _map(run, _chunks(n, chunk), n_jobs)
    return _wrap(eng, out, "expected_clv", _attrs(eng, method="expected"))


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
        ``(chain, draw, customer)``.
    """
    disc = _check_discount(horizon, discount_rate, discount_period, discounting, steps)
    entropy = _entropy(random_seed)
    eng = _Engine(purchase_params, spend_params, rfm, disc, margin, n_jobs)
    out = eng.simulate(0, rfm.n_customers, entropy)
    return _wrap(eng, out, "simulated_clv", _attrs(eng, method="simulate", random_seed=entropy))


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
    disc = _check_discount(horizon, discount_rate, discount_period, discounting, steps)
    eng = _Engine(purchase_params, spend_params, rfm, disc, margin, 1)
    clv = eng.expected(np.arange(1))[0]
    da = _wrap(eng, clv, "new_customer_clv", _attrs(eng, segment=str(segment)))
    return da.isel(customer=0, drop=True)


class CustomerScores(NamedTuple):
    """Result of :func:`score_customers`."""

    #: One row per customer, columns :data:`bayesclv.summary.TABLE_COLUMNS`.
    table: pd.DataFrame
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
) -> CustomerScores:
    """Score many customers in chunks: tidy table plus per-draw segment totals.

    Per chunk, CLV draws ``(n_draws, chunk)`` are computed (``method="expected"``:
    :func:`expected_clv`; ``"simulate"``: :func:`simulate_clv`), summarised per customer
    (mean, median, ``prob`` interval of ``kind``, posterior-mean P(alive) and expected
    purchases over the horizon) and summed per segment and draw; then dropped. Peak
    memory is about ``n_draws x chunk_size x 8 bytes x ~8`` plus the per-draw table of
    unique ``(segment, x, T)`` rows.

    Parameters
    ----------
    chunk_size : int
        Customers per chunk. For ``method="simulate"`` it is rounded up to a multiple of
        :data:`SIM_BLOCK`; results do not depend on it.
    out_parquet : path-like, optional
        Also stream the table to this Parquet file, chunk by chunk, written atomically
        (temporary file then rename); ``metadata`` goes to its schema metadata.
    Other parameters
        As :func:`expected_clv` / :func:`simulate_clv` and
        :func:`bayesclv.summary.clv_intervals`.

    Returns
    -------
    CustomerScores
        ``table`` (one row per customer, ``rfm`` order) and ``totals``.
    """
    if method not in ("expected", "simulate"):
        raise ValueError(f"method must be 'expected' or 'simulate', got {method!r}.")
    disc = _check_discount(horizon, discount_rate, discount_period, discounting, steps)
    chunk_size = _check_chunk(chunk_size)
    if method == "simulate":
        chunk_size = SIM_BLOCK * math.ceil(chunk_size / SIM_BLOCK)
        entropy = _entropy(random_seed)
    eng = _Engine(purchase_params, spend_params, rfm, disc, margin, n_jobs)
    labels = rfm.segment_labels()
    seg_acc = np.zeros((eng.dp.n_draws, rfm.n_segments))
    tables: list[pd.DataFrame] = []

    def chunk_table(start: int, stop: int) -> pd.DataFrame:
        idx = np.arange(start, stop)
        if method == "expected":
            # Threads split the customers of a chunk; each sub-range is independent.
            sub = max(1, math.ceil(len(idx) / max(1, n_jobs or os.cpu_count() or 1)))
            parts = _map(lambda s: eng.expected(idx[s : s + sub]), range(0, len(idx), sub), n_jobs)
            clv = np.concatenate([p[0] for p in parts], axis=1)
            pa = np.concatenate([p[1] for p in parts], axis=1)
            ep = np.concatenate([p[2] for p in parts], axis=1)
        else:
            clv = eng.simulate(start, stop, entropy)
            _, pa, ep = eng.expected(idx)
        seg_acc[:] += segment_sums(clv, rfm.segment[idx], rfm.n_segments)
        return table_from_arrays(
            rfm.customer_id[idx],
            labels[idx],
            np.ascontiguousarray(clv.T),
            p_alive=pa.mean(axis=0),
            expected_purchases=ep.mean(axis=0),
            prob=prob,
            kind=kind,
            horizon=disc.horizon,
            time_unit=rfm.time_unit,
        )

    if out_parquet is None:
        for start, stop in _chunks(rfm.n_customers, chunk_size):
            tables.append(chunk_table(start, stop))
    else:
        import json

        import pyarrow as pa
        import pyarrow.parquet as pq

        meta = {**_attrs(eng, method=method), **dict(metadata or {})}

        def write(tmp: Path) -> None:
            writer = None
            try:
                for start, stop in _chunks(rfm.n_customers, chunk_size):
                    t = chunk_table(start, stop)
                    tables.append(t)
                    tbl = pa.Table.from_pandas(t, preserve_index=False)
                    if writer is None:
                        md = dict(tbl.schema.metadata or {})
                        md[b"bayesclv"] = json.dumps(meta, default=str).encode()
                        schema = tbl.schema.with_metadata(md)
                        writer = pq.ParquetWriter(tmp, schema)
                    writer.write_table(tbl.cast(schema))
            finally:
                if writer is not None:
                    writer.close()

        atomic_write(Path(out_parquet), write)
    table = pd.concat(tables, ignore_index=True)
    check_one_row_per_customer(table, rfm.customer_id)
    c, d = eng.dp.n_chain, eng.dp.n_draw
    like = xr.Dataset(coords={k: v for k, v in (("chain", eng.dp.chain), ("draw", eng.dp.draw))
                              if v is not None})
    totals = _totals_dataset(seg_acc.reshape(c, d, -1), like, rfm.segment_names)
    totals.attrs.update(_attrs(eng, method=method))
    return CustomerScores(table, totals)
