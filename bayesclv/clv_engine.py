"""The CLV engine: per-draw tables, the customer loop, simulation blocks (internal).

:mod:`bayesclv.clv` is the public API; this module is what it (and
:mod:`bayesclv.distributed`) run on. See :mod:`bayesclv.clv` for the maths, units and
discounting conventions, and for the speed and memory design.
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
from bayesclv.families.base import factorize_rows, parallel_map
from bayesclv.predict import (
    CUSTOMER_DIM,
    DrawParams,
    customer_columns,
    customer_kwargs,
    customer_row_key,
)
from bayesclv.summary import interval_arrays

#: Customers per random stream in :func:`bayesclv.clv.simulate_clv`. Block ``i``
#: (customers ``i*SIM_BLOCK ... (i+1)*SIM_BLOCK - 1`` in ``rfm`` order) draws from
#: ``SeedSequence(random_seed, spawn_key=(i,))``, so results do not depend on chunking.
SIM_BLOCK = 256

#: Default number of Gauss-Legendre nodes for continuous discounting.
CONTINUOUS_NODES = 32

#: Target number of (draw x row) elements per array operation.
WORK_ELEMENTS = 2_000_000


# --------------------------------------------------------------------------- discounting
class Discount(NamedTuple):
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
            return np.exp(-self.log_factor * tau)
        h = self.horizon / self.steps
        step = np.clip(np.ceil(tau / h), 1, self.steps).astype(np.intp)
        return self.step_factors[step]

    @property
    def step_factors(self) -> np.ndarray:
        """``(1+rate)^(-k h / period)`` for step ``k = 0..steps`` (per-period)."""
        h = self.horizon / self.steps
        return np.exp(-self.log_factor * h * np.arange(self.steps + 1))


def check_discount(horizon, discount_rate, discount_period, discounting, steps) -> Discount:
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
    return Discount(h, rate, period, discounting, int(steps))


def schedule(disc: Discount, scale: float) -> tuple[np.ndarray, np.ndarray]:
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


def direct_tables(dp, g, x, T, times, wsets, n_jobs=1, t_x=None, cov=None) -> np.ndarray:
    """``sum_k wsets[s, k] Phi(times[k])`` per draw and row, Phi evaluated one by one.

    The reference implementation: one closed-form evaluation of the family's
    ``expected_alive`` per draw, row and time. ``cov(rows)`` gives the family's
    per-customer keyword arguments of a slice of rows (covariate families). Returns
    (n_sets, n_draws, n_rows).
    """
    fam = dp.family
    N, U = dp.n_draws, len(g)
    out = np.zeros((len(wsets), N, U))
    block = max(1, WORK_ELEMENTS // N)
    use = np.flatnonzero((wsets != 0).any(axis=0))

    def run(start: int) -> None:
        sl = slice(start, min(start + block, U))
        th = dp.columns(g[sl])
        rec = fam.recency(None if t_x is None else t_x[sl])
        extra = {} if cov is None else cov(sl)
        for k in use:
            phi = fam.expected_alive(th, x[sl], T[sl], times[k], **rec, **extra)
            for j, w in enumerate(wsets[:, k]):
                if w != 0:
                    out[j, :, sl] += w * phi

    parallel_map(run, range(0, U, block), n_jobs)
    return out


class Engine:
    """Per-draw tables shared by all chunks of one scoring run (internal)."""

    def __init__(
        self,
        purchase_params: xr.Dataset,
        spend_params: xr.Dataset,
        rfm: RFMData,
        disc: Discount,
        margin: float,
        n_jobs: int | None,
        fast: bool = True,
        need_value: bool = True,
        future_covariates=None,
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
        self.fast = fast
        self.need_value = need_value
        self.future_covariates = future_covariates
        self.model = self.dp.model
        self.family = self.dp.family
        self.spend_family = self.sp.family
        self.pcol = customer_columns(self.dp, rfm)
        self.scol = customer_columns(self.sp, rfm)
        if self.family.discrete_time and disc.method == "continuous" and disc.horizon >= 1:
            # purchases only at whole periods 1..floor(H): the continuous discount factor
            # there is exact, summed by parts like the per-period schedule
            t = np.arange(1.0, math.floor(disc.horizon + 1e-9) + 1.0)
            D = np.exp(-disc.log_factor * t)
            self.times, self.weights = t, D - np.append(D[1:], 0.0)
            if self.weights.size and disc.log_factor == 0.0:
                self.weights = np.eye(t.size)[-1]
        else:
            scale = float(self.dp.values[self.family.discount_scale].min())
            self.times, self.weights = schedule(disc, scale)
        x = rfm.frequency.astype(np.float64)
        # customers whose predictions may differ beyond (segment, x, T): their covariates
        self.row_key = customer_row_key(self.family, rfm)
        if future_covariates is not None and not self.row_key:
            customer_kwargs(self.family, rfm, future_covariates=future_covariates)  # refuses
        fdr = self.family.future_depends_on_recency
        cols = (self.pcol, x, rfm.T, *((rfm.recency,) if fdr else ()), *self.row_key)
        self.v_code, uniq = factorize_rows(*cols)
        ug, ux, uT = uniq[:3]
        ut = uniq[3] if fdr else None
        # one customer per table row, whose covariates the row's predictions use
        self.v_rep = self._customers_of_rows(np.arange(len(ug)))
        self.value_alive, self.purchases_alive = self._alive_tables(ug, ux, uT, ut)

    def _cov(self, idx, *, future: bool = True) -> dict:
        """The family's per-customer keyword arguments for customers ``idx`` (with their
        covariate path over the horizon when ``future``; P(alive) needs none)."""
        if not self.row_key:
            return {}
        return customer_kwargs(self.family, self.rfm, idx,
                               horizon=self.disc.horizon if future else None,
                               future_covariates=self.future_covariates)  # fmt: skip

    def _alive_tables(self, g, x, T, t_x=None) -> tuple[np.ndarray | None, np.ndarray]:
        """(n_unique, n_draws) discounted and undiscounted purchases given alive.

        Without ``need_value`` (simulation only needs the horizon's expected purchases for
        its table) the discounted table is ``None``.
        """
        horizon_only = np.eye(len(self.times))[-1]
        if not self.need_value:
            times, wsets = self.times[-1:], np.ones((1, 1))
        else:
            times, wsets = self.times, np.stack([self.weights, horizon_only])
        out = None
        cov = (lambda sl: self._cov(self.v_rep[sl])) if self.row_key else None
        # (the fast tables are per (segment, x, T); per-customer covariates go direct)
        if self.fast and cov is None and not (self.need_value
                                              and np.array_equal(wsets[0], wsets[1])):
            # (No discounting needs Phi at the horizon only: one evaluation per draw and
            # row, and it keeps expected_clv exactly equal to purchases x spend x margin.)
            def direct(dp, g_, x_, T_, times_, wsets_, t_x=None):
                return direct_tables(dp, g_, x_, T_, times_, wsets_, self.n_jobs, t_x)

            out = self.family.alive_tables(
                self.dp, g, x, T, times, wsets, self.n_jobs, direct, **self.family.recency(t_x)
            )
        if out is None:
            out = direct_tables(self.dp, g, x, T, times, wsets, self.n_jobs, t_x, cov)
        self._check_tables(out, g, x, T, times[-1], t_x)
        # Stored (row, draw): customers gather contiguous rows.
        tables = [np.ascontiguousarray(o.T) for o in out]
        return (tables[0], tables[1]) if self.need_value else (None, tables[0])

    def _check_tables(self, out, g, x, T, horizon, t_x=None) -> None:
        """Refuse tables outside the family's exact bounds (the guard of issue 15).

        ``out[-1]`` holds the expected purchases in the horizon given alive, ``out[0]``
        (when discounting) their discounted sum, which lies between 0 and ``out[-1]``.
        """
        th = self.dp.columns(g)
        lo, hi = self.family.expected_alive_bounds(th, x, T, horizon,
                                                   **self.family.recency(t_x),
                                                   **self._cov(self.v_rep))
        undiscounted = out[-1]
        tol = 1e-9 * np.abs(hi) + 1e-300
        checks = [("expected purchases given alive", undiscounted, lo - tol, hi + tol)]
        if self.need_value:
            checks.append(("discounted expected purchases given alive", out[0], -tol,
                           undiscounted + tol))
        for what, values, lower, upper in checks:
            with np.errstate(invalid="ignore"):
                bad = ~np.isfinite(values) | (values < lower) | (values > upper)
            if bad.any():
                d_bad, r_bad = np.nonzero(bad)
                self._fail(
                    what,
                    d_bad,
                    self._customers_of_rows(r_bad),
                    got=values[d_bad, r_bad],
                    bounds=(lower[d_bad, r_bad], upper[d_bad, r_bad]),
                )

    def _customers_of_rows(self, rows: np.ndarray) -> np.ndarray:
        """One customer index per (segment, x, T) table row (the first that has it)."""
        first = np.full(int(self.v_code.max()) + 1, -1, dtype=np.int64)
        first[self.v_code[::-1]] = np.arange(len(self.v_code))[::-1]
        return first[rows]

    def _fail(self, what, draws, customers, got=None, bounds=None) -> None:
        """Raise a NumericalError naming the first few customers and posterior draws."""
        from bayesclv.errors import NumericalError

        per_chain = max(self.dp.n_draw, 1)
        pairs = sorted(set(zip(customers.tolist(), draws.tolist(), strict=True)))
        shown = []
        for c, d in pairs[:5]:
            th = {k: float(v[d, self.pcol[c]]) for k, v in self.dp.values.items()}
            desc = ", ".join(f"{k}={v:.6g}" for k, v in th.items())
            shown.append(
                f"customer {plain(self.rfm.customer_id[c])!r} (x={int(self.rfm.frequency[c])}, "
                f"t_x={self.rfm.recency[c]:.6g}, T={self.rfm.T[c]:.6g}) at draw "
                f"(chain {d // per_chain}, draw {d % per_chain}) with {desc}"
            )
        detail = ""
        if got is not None and bounds is not None:
            detail = (
                f" (first: {float(got[0]):.6g}, exact bounds [{float(bounds[0][0]):.6g}, "
                f"{float(bounds[1][0]):.6g}])"
            )
        raise NumericalError(
            f"{self.family.label}: {what} cannot be trusted for {len(pairs)} "
            f"customer-draw pair(s){detail}: " + "; ".join(shown)
            + ". Nothing was returned or exported. This is a numerical failure of bayesclv "
            "at these parameter values: please report it with this message; as a "
            "workaround, exclude those draws (a fit with them is usually poorly identified: "
            "check the convergence report)."
        )

    def _check_outputs(self, idx, out: dict) -> None:
        """Every returned value finite and within its physical bounds."""
        bad_any = None
        for name, arr in out.items():
            with np.errstate(invalid="ignore"):
                bad = ~np.isfinite(arr)
                if name == "p_alive":
                    bad |= (arr < 0) | (arr > 1)
                elif name == "purchases":
                    bad |= arr < 0
                elif name in ("clv", "simulated"):
                    bad |= arr * np.sign(self.margin) < 0
            if bad.any():
                bad_any = (name, bad)
                break
        if bad_any is not None:
            name, bad = bad_any
            r, d = np.nonzero(bad)
            labels = {"p_alive": "P(alive)", "purchases": "expected purchases",
                      "clv": "expected CLV", "simulated": "simulated CLV"}
            self._fail(labels.get(name, name), d, np.asarray(idx)[r])

    def purchases_of(self, idx, pa) -> np.ndarray:
        """Expected purchases of customers ``idx`` given their P(alive) draws ``pa``."""
        return pa * self.purchases_alive[self.v_code[idx]]

    def customer_keys(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Customers with equal (segment, x, t_x, T, zbar) (and covariates, for a covariate
        family) have equal expected-CLV draws.

        Returns the key of each customer, one representative customer per key and the
        number of customers per key.
        """
        rfm = self.rfm
        kcode, _ = factorize_rows(
            self.pcol, self.scol, rfm.frequency, rfm.recency, rfm.T, rfm.monetary_value,
            *self.row_key,
        )
        n_keys = int(kcode.max()) + 1
        rep = np.empty(n_keys, dtype=np.intp)
        rep[kcode[::-1]] = np.arange(len(kcode))[::-1]
        return kcode, rep, np.bincount(kcode, minlength=n_keys)

    def _groups(self, idx: np.ndarray):
        """Split positions of ``idx`` by (purchase column, spend column)."""
        key = self.pcol[idx] * (self.sp.values["p"].shape[1] + 1) + self.scol[idx]
        order = np.argsort(key, kind="stable")
        bounds = np.flatnonzero(np.diff(key[order])) + 1
        return np.split(order, bounds)

    def expected(
        self, idx: np.ndarray, need: tuple[str, ...] = ("clv", "p_alive", "purchases")
    ) -> dict[str, np.ndarray]:
        """Expected CLV, P(alive) and expected purchases of customers ``idx``.

        Each array is (len(idx), n_draws): customer-major, so per-customer summaries
        over draws read contiguous memory. Customers are processed per segment, with the
        segment's draws broadcast as a row (no per-element parameter gathers).
        """
        rfm, dp, sp = self.rfm, self.dp, self.sp
        N = dp.n_draws
        out = {k: np.empty((len(idx), N)) for k in need}
        for pos in self._groups(idx):
            cust = idx[pos]
            th = {k: v[:, self.pcol[cust[0]]][None, :] for k, v in dp.values.items()}
            x = rfm.frequency[cust].astype(np.float64)[:, None]
            pa = self._p_alive_group(th, cust)
            if "p_alive" in out:
                out["p_alive"][pos] = pa
            vc = self.v_code[cust]
            if "purchases" in out:
                out["purchases"][pos] = pa * self.purchases_alive[vc]
            if "clv" in out:
                ths = {k: v[:, self.scol[cust[0]]][None, :] for k, v in sp.values.items()}
                spend = self.spend_family.expected_spend(
                    ths, x, rfm.monetary_value[cust][:, None]
                )
                out["clv"][pos] = pa * self.value_alive[vc] * spend * self.margin
        self._check_outputs(idx, out)
        return out

    def _p_alive_group(self, th: dict, cust: np.ndarray) -> np.ndarray:
        """P(alive) of customers of one segment, (len(cust), n_draws)."""
        rfm = self.rfm
        return self.family.p_alive_rows(th, rfm.frequency[cust], rfm.recency[cust], rfm.T[cust],
                                        **self._cov(cust, future=False))

    # ------------------------------------------------------------------ simulation
    def simulate_block(self, block: int, entropy: int) -> tuple[np.ndarray, np.ndarray]:
        """Realised discounted value and P(alive) of one SIM_BLOCK, (n_block, n_draws).

        Per segment of the block, with that segment's draws as a row vector: alive at
        ``T`` ~ Bernoulli(P(alive)); the family simulates the future purchase times of
        the alive customer-draws (:meth:`~bayesclv.families.base.PurchaseFamily.future_events`);
        the spend family draws each customer-draw's latent spend given the history and
        one amount per purchase; each amount is discounted at its time.
        """
        rfm, dp, disc = self.rfm, self.dp, self.disc
        n = rfm.n_customers
        idx = np.arange(block * SIM_BLOCK, min((block + 1) * SIM_BLOCK, n))
        rng = np.random.Generator(
            np.random.PCG64(np.random.SeedSequence(entropy, spawn_key=(block,)))
        )
        N, m = dp.n_draws, len(idx)
        out = np.zeros((m, N))
        pa_out = np.empty((m, N))
        H = disc.horizon
        for pos in self._groups(idx):
            cust = idx[pos]
            pc, sc = self.pcol[cust[0]], self.scol[cust[0]]
            th = {k: v[:, pc][None, :] for k, v in dp.values.items()}
            pa = self._p_alive_group(th, cust)
            pa_out[pos] = pa
            if H == 0:
                continue
            x = rfm.frequency[cust].astype(np.float64)[:, None]
            T = rfm.T[cust][:, None]
            alive = rng.random((len(cust), N)) < pa
            rec = self.family.recency(rfm.recency[cust][:, None])
            ev_pos, tau = self.family.future_events(th, x, T, alive, H, rng, **rec,
                                                    **self._cov(cust))
            if ev_pos.size == 0:
                continue
            # latent spend once per customer-draw that buys, one amount per purchase
            buyers, ev_buyer = np.unique(ev_pos, return_inverse=True)
            b_r, b_d = np.divmod(buyers, N)
            ths = {k: v[b_d, sc] for k, v in self.sp.values.items()}
            nu = self.spend_family.latent_given_history(
                ths, x[b_r, 0], rfm.monetary_value[cust][b_r], rng
            )
            th_ev = {k: v[ev_buyer] for k, v in ths.items()}
            amount = self.spend_family.sample_amounts(th_ev, nu[ev_buyer], rng)
            value = np.bincount(ev_buyer, weights=disc.factor(tau) * amount,
                                minlength=buyers.size)
            block_out = out[pos]
            block_out.ravel()[buyers] = value * self.margin
            out[pos] = block_out
        return out, pa_out

    def simulate(
        self, idx_start: int, idx_stop: int, entropy: int
    ) -> tuple[np.ndarray, np.ndarray]:
        """Simulated CLV and P(alive) of customers ``idx_start:idx_stop``, (n, n_draws)."""
        first = idx_start // SIM_BLOCK
        last = (idx_stop - 1) // SIM_BLOCK
        parts = parallel_map(
            lambda b: self.simulate_block(b, entropy), range(first, last + 1), self.n_jobs
        )
        off = idx_start - first * SIM_BLOCK
        sl = slice(off, off + (idx_stop - idx_start))
        clv = np.concatenate([p[0] for p in parts], axis=0)[sl]
        pa = np.concatenate([p[1] for p in parts], axis=0)[sl]
        self._check_outputs(np.arange(idx_start, idx_stop), {"simulated": clv, "p_alive": pa})
        return clv, pa


def plain(value):
    """A NumPy scalar as the plain Python value (for messages)."""
    return value.item() if isinstance(value, np.generic) else value


class StackedEngine:
    """The engine of a :class:`bayesclv.stacking.PurchaseStack`: one :class:`Engine` per
    family on the draw positions the stack gives it (spend draws paired by position),
    with results put back in draw order. Same interface as :class:`Engine`."""

    def __init__(self, stack, spend_params, rfm, disc, margin, n_jobs, **kw):
        from bayesclv.stacking import draw_subset

        self.stack = stack
        self.dp = DrawParams(stack.like, "purchase")
        sp = DrawParams(spend_params, "spend")
        if sp.n_draws != stack.n_draws:
            raise ValueError(
                f"the stack has {stack.n_draws} draws but the spend draws {sp.n_draws}; "
                f"they must match draw by draw."
            )
        self.parts = [
            (pos, Engine(sub, draw_subset(spend_params, pos), rfm, disc, margin, n_jobs, **kw))
            for _, pos, sub in stack.components()
        ]
        self.rfm, self.disc, self.margin, self.n_jobs = rfm, disc, float(margin), n_jobs
        self.model = "stack"
        self.description = stack.describe()

    def _assemble(self, pieces, n_rows) -> np.ndarray:
        out = np.empty((n_rows, self.stack.n_draws))
        for (pos, _), piece in zip(self.parts, pieces, strict=True):
            out[:, pos] = piece
        return out

    def customer_keys(self):
        return self.parts[0][1].customer_keys()

    def expected(self, idx, need=("clv", "p_alive", "purchases")) -> dict[str, np.ndarray]:
        res = [eng.expected(idx, need) for _, eng in self.parts]
        return {k: self._assemble([r[k] for r in res], len(idx)) for k in need}

    def purchases_of(self, idx, pa) -> np.ndarray:
        pieces = [eng.purchases_of(idx, pa[:, pos]) for pos, eng in self.parts]
        return self._assemble(pieces, len(idx))

    def simulate(self, idx_start, idx_stop, entropy):
        # each family simulates its own draws with its own stream (spawn key j)
        res = [
            eng.simulate(idx_start, idx_stop, int(np.random.SeedSequence(
                entropy, spawn_key=(1_000_003, j)).generate_state(1, np.uint64)[0] >> 1))
            for j, (_, eng) in enumerate(self.parts)
        ]
        n = idx_stop - idx_start
        return (self._assemble([r[0] for r in res], n), self._assemble([r[1] for r in res], n))


def make_engine(purchase_params, spend_params, rfm, disc, margin, n_jobs, **kw):
    """An :class:`Engine`, or a :class:`StackedEngine` for a purchase stack."""
    from bayesclv.stacking import PurchaseStack

    if isinstance(purchase_params, PurchaseStack):
        return StackedEngine(purchase_params, spend_params, rfm, disc, margin, n_jobs, **kw)
    return Engine(purchase_params, spend_params, rfm, disc, margin, n_jobs, **kw)


def seed_entropy(random_seed) -> int:
    if isinstance(random_seed, np.random.Generator):
        return int(random_seed.integers(2**63))
    if random_seed is None:
        return int(np.random.SeedSequence().entropy)
    if int(random_seed) != random_seed or random_seed < 0:
        raise ValueError(f"random_seed must be a non-negative integer, got {random_seed!r}.")
    return int(random_seed)


def chunks(n: int, chunk_size: int):
    for start in range(0, n, chunk_size):
        yield start, min(start + chunk_size, n)


def check_chunk(chunk_size) -> int:
    if int(chunk_size) != chunk_size or chunk_size < 1:
        raise ValueError(f"chunk_size must be a positive integer, got {chunk_size!r}.")
    return int(chunk_size)


def wrap(eng: Engine, arr: np.ndarray, name: str, attrs: dict) -> xr.DataArray:
    da = eng.dp.wrap(arr, CUSTOMER_DIM, eng.rfm.customer_id).rename(name)
    da.attrs.update(attrs)
    return da


def attrs_of(eng: Engine, **extra) -> dict:
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
        **({"stack": eng.description} if isinstance(eng, StackedEngine) else {}),
        **extra,
    )


SUMMARY_NAMES = ("mean", "median", "lower", "upper", "p_alive", "purchases")


def summarise(eng: Engine, idx, prob, kind, clv=None, pa=None, weights=None):
    """Per-row summaries of (rows, draws) CLV and its per-draw segment sums (``score_customers``
    and ``bayesclv.distributed``)."""
    if clv is None:
        res = eng.expected(idx, ("clv", "p_alive", "purchases"))
        clv, pa, purchases = res["clv"], res["p_alive"], res["purchases"]
    else:
        purchases = eng.purchases_of(idx, pa)
    summ = interval_arrays(clv, prob, kind)
    summ["p_alive"] = pa.mean(axis=1)
    summ["purchases"] = purchases.mean(axis=1)
    onehot = np.zeros((len(idx), eng.rfm.n_segments))
    onehot[np.arange(len(idx)), eng.rfm.segment[idx]] = 1.0 if weights is None else weights
    return summ, clv.T @ onehot


def keys_in_order_of_appearance(eng: Engine) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """:meth:`Engine.customer_keys` with keys renumbered by their first customer.

    (``groupby(sort=False)`` already numbers them so; renumbering makes the streaming in
    :func:`score_customers` independent of that pandas detail.)
    """
    kcode, rep, counts = eng.customer_keys()
    if len(rep) > 1 and not np.all(np.diff(rep) > 0):
        order = np.argsort(rep, kind="stable")
        rank = np.empty_like(order)
        rank[order] = np.arange(len(order))
        kcode, rep, counts = rank[kcode], rep[order], counts[order]
    return kcode, rep, counts


def imap(fn, items, n_jobs):
    """Like :func:`parallel_map`, but yield results in order as soon as each is done.

    On an exception in the consumer (or ``KeyboardInterrupt``) pending work is
    cancelled, running work finished, and the exception propagates.
    """
    items = list(items)
    if n_jobs is None:
        n_jobs = os.cpu_count() or 1
    if n_jobs <= 1 or len(items) <= 1:
        for i in items:
            yield fn(i)
        return
    ex = ThreadPoolExecutor(max_workers=min(n_jobs, len(items)))
    try:
        futures = [ex.submit(fn, i) for i in items]
        for fut in futures:
            yield fut.result()
    finally:
        ex.shutdown(wait=True, cancel_futures=True)


class ParquetChunks:
    """Append tables to one Parquet file, one row group each (a context manager).

    The first table fixes the schema (plus ``meta`` as JSON under ``b"bayesclv"``); later
    ones are cast to it, so row groups agree even if a chunk's inferred types differ.
    """

    def __init__(self, path: Path, meta: Mapping[str, Any]):
        self.path, self.meta = path, meta
        self.writer = self.schema = None
        self.n_rows = 0

    def __call__(self, frame: pd.DataFrame) -> None:
        import json

        import pyarrow as pa
        import pyarrow.parquet as pq

        tbl = pa.Table.from_pandas(frame, preserve_index=False)
        if self.writer is None:
            md = dict(tbl.schema.metadata or {})
            md[b"bayesclv"] = json.dumps(dict(self.meta), default=str).encode()
            self.schema = tbl.schema.with_metadata(md)
            self.writer = pq.ParquetWriter(self.path, self.schema)
        self.writer.write_table(tbl.cast(self.schema), row_group_size=max(1, len(frame)))
        self.n_rows += len(frame)

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        if self.writer is not None:
            self.writer.close()
