"""Seeded, vectorised simulators of the buy-till-you-die models, with known truth.

Every customer's latent values (purchase rate, dropout probability or rate, mean spend)
are drawn from per-segment population parameters, and the purchase process is then
simulated *exactly*, without materialising purchase times unless a transaction log is
asked for. This gives

* :func:`simulate_customers` - latent truth and calibration/holdout summaries
  (a :class:`SimulatedCustomers`);
* :func:`simulate_rfm` - an :class:`~bayesclv.data.RFMData` directly (the truth is kept in
  ``rfm.meta["truth"]``), for recovery tests and scale benchmarks (1M customers in well
  under a second);
* :func:`simulate_transactions` - a transaction log (``customer_id, date, amount,
  segment``) consistent with the same process, for data-layer tests and benchmarks.

The model is chosen by the type of the parameters: :class:`BGNBDParams` (BG/NBD),
:class:`MBGNBDParams` (MBG/NBD) or :class:`ParetoNBDParams` (Pareto/NBD); spend follows
the Gamma-Gamma model (:class:`GammaGammaParams`).

How the summaries are drawn exactly (``K`` is the number of arrivals of the Poisson
purchase process in ``(0, T]``, ``K ~ Poisson(lambda T)``):

* BG/NBD: the number of repeat purchases a customer makes before dropping out is
  ``N ~ Geometric(p)`` on ``{1, 2, ...}`` (the dropout coin is tossed after every
  repeat purchase, FHL 2005 section 2); MBG/NBD also tosses it after the first
  purchase, so ``N`` is on ``{0, 1, ...}`` (Batislam et al. 2007). Then
  ``x = min(N, K)``, the customer is alive at ``T`` iff ``N > K``, and given ``K`` the
  arrival times are ``K`` uniform order statistics on ``(0, T]``, so the ``x``-th is
  ``t_x = T * Beta(x, K - x + 1)``.
* Pareto/NBD: lifetime ``tau ~ Exp(mu)``; ``x ~ Poisson(lambda min(tau, T))`` and, given
  ``x``, the last of ``x`` uniform times on ``(0, min(tau, T)]`` is ``t_x``.
* Gamma-Gamma: the sum of ``x`` amounts is ``Gamma(p x, rate nu)``, so the mean spend
  is drawn in one step; a transaction log splits the sum by a ``Dirichlet(p, ..., p)``,
  which gives exactly independent ``Gamma(p, nu)`` amounts.

A holdout period ``(T, T + holdout_length]`` continues the same process (memorylessness
of the Poisson process and of the geometric dropout count).

Assumptions
-----------
* The first purchase happens at acquisition (time 0 of each customer) and is not a
  repeat purchase; its amount is drawn from the same Gamma-Gamma spend process.
* Time is continuous and in ``time_unit``; a transaction log's dates have nanosecond
  resolution, so a summary built from it by calendar day may merge purchases that fall
  on the same day (rare at realistic purchase rates).

References
----------
Fader, Hardie and Lee (2005), "Counting your customers the easy way", Marketing Science
24(2). Batislam, Denizel and Filiztekin (2007), IJRM 24(3). Schmittlein, Morrison and
Colombo (1987), Management Science 33(1). Fader, Hardie and Lee (2005), "RFM and CLV",
JMR 42(4).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from bayesclv.data import DAYS_PER_UNIT, RFMData
from bayesclv.errors import ModelSpecificationError
from bayesclv.families import FAMILIES, Family, family_of_truth
from bayesclv.families.bgnbd import BGNBDParams, MBGNBDParams
from bayesclv.families.gamma_gamma import GAMMA_GAMMA, GammaGammaParams
from bayesclv.families.pareto_nbd import ParetoNBDParams
from bayesclv.families.sampling import ordered_uniforms

__all__ = [
    "BGNBDParams",
    "MBGNBDParams",
    "ParetoNBDParams",
    "GammaGammaParams",
    "SimulatedCustomers",
    "simulate_customers",
    "simulate_rfm",
    "simulate_transactions",
]


# --------------------------------------------------------------------------- parameters
# Each family's population parameters live in its module; the purchase family is chosen
# by their type (``bayesclv.families.family_of_truth``).
TruthParams = BGNBDParams | MBGNBDParams | ParetoNBDParams


# --------------------------------------------------------------------------- result
@dataclass(frozen=True, eq=False)
class SimulatedCustomers:
    """Simulated customers: observable summaries and the latent truth behind them.

    Attributes
    ----------
    model : str
        ``"bgnbd"``, ``"mbgnbd"`` or ``"pareto_nbd"``.
    segment_names : tuple of str
        Segment names, in the order of ``sizes``; ``segment`` holds codes into it.
    customer_id, segment, T, frequency, recency : arrays, shape (n,)
        As in :class:`~bayesclv.data.RFMData` (``T`` is the age at the end of the
        calibration period).
    holdout_length : float
        Length of the holdout period (0 for none).
    holdout_frequency : array of int
        Repeat purchases in ``(T, T + holdout_length]``.
    monetary_value, first_purchase_value, holdout_spend : arrays or None
        Mean repeat-purchase amount in calibration (0 where ``frequency == 0``), the
        acquisition purchase amount and the total holdout spend; ``None`` without a
        spend model.
    truth : pandas.DataFrame
        Latent values per customer (index ``customer_id``): ``segment``, ``lam``
        (purchase rate), ``p`` (BG/NBD, MBG/NBD dropout probability) or ``mu``
        (Pareto/NBD dropout rate), ``dropout_time`` (time from acquisition to dropout;
        ``inf`` if never), ``alive_at_T``, ``alive_at_end`` (end of the holdout), and
        with spend ``nu`` and ``mean_spend = p_spend / nu``.
    params, spend : dict
        The population parameters per segment name.
    time_unit : str
    random_seed : the seed used.
    """

    model: str
    segment_names: tuple[str, ...]
    customer_id: np.ndarray
    segment: np.ndarray
    T: np.ndarray
    frequency: np.ndarray
    recency: np.ndarray
    holdout_length: float
    holdout_frequency: np.ndarray
    monetary_value: np.ndarray | None
    first_purchase_value: np.ndarray | None
    holdout_spend: np.ndarray | None
    truth: pd.DataFrame
    params: dict[str, TruthParams]
    spend: dict[str, GammaGammaParams] | None
    time_unit: str
    random_seed: Any
    # Where the holdout purchases lie, for materialising a transaction log:
    # the window ends at `_hold_end`; when `_hold_pinned` the last holdout purchase is
    # exactly at `_hold_end` (a BG/NBD dropout) and the others are uniform before it.
    _hold_end: np.ndarray = field(repr=False)
    _hold_pinned: np.ndarray = field(repr=False)
    _nu: np.ndarray | None = field(repr=False)

    @property
    def n_customers(self) -> int:
        return int(self.customer_id.shape[0])

    def to_rfm(self) -> RFMData:
        """The observable calibration (and holdout) summary as an ``RFMData``.

        Without a spend model ``monetary_value`` is all zeros and ``holdout_spend`` is
        zeros (no spend data; spend models refuse such data). ``meta`` holds ``"truth"``
        (the latent values) and ``"simulation"`` (model, parameters, seed).
        """
        n = self.n_customers
        monetary = np.zeros(n) if self.monetary_value is None else self.monetary_value
        hold_spend = np.zeros(n) if self.holdout_spend is None else self.holdout_spend
        holdout = self.holdout_length > 0
        return RFMData(
            customer_id=self.customer_id,
            frequency=self.frequency,
            recency=self.recency,
            T=self.T,
            monetary_value=monetary,
            segment=self.segment,
            segment_names=self.segment_names,
            time_unit=self.time_unit,
            first_purchase_value=self.first_purchase_value,
            holdout_frequency=self.holdout_frequency if holdout else None,
            holdout_spend=hold_spend if holdout else None,
            holdout_length=self.holdout_length if holdout else None,
            litt=self.truth["litt"].to_numpy() if "litt" in self.truth else None,
            meta={
                "truth": self.truth,
                "simulation": {
                    "model": self.model,
                    "params": dict(self.params),
                    "spend": None if self.spend is None else dict(self.spend),
                    "random_seed": self.random_seed,
                },
            },
        )

    def to_transactions(
        self,
        start_date: str | pd.Timestamp = "2020-01-01",
        *,
        random_seed: Any = None,
    ) -> pd.DataFrame:
        """Materialise the purchases behind the summaries as a transaction log.

        The log is exactly consistent with the summaries: per customer, a first purchase
        at acquisition, ``frequency`` repeat purchases in calibration, the last at
        ``recency``, and ``holdout_frequency`` in the holdout; amounts (when simulated)
        average ``monetary_value`` over the repeat purchases and sum to
        ``holdout_spend`` in the holdout. Given the summaries, purchase times are
        uniform order statistics (a property of the Poisson process) and amounts split
        the sums by a Dirichlet, so the log has the model's exact distribution.

        Parameters
        ----------
        start_date : date-like
            Earliest acquisition date: the calibration period ends at
            ``start_date + max(T)`` (in ``time_unit``); customer ``i`` is acquired
            ``T[i]`` before that.
        random_seed : seed for the purchase times and amount splits.

        Returns
        -------
        pandas.DataFrame
            Columns ``customer_id, date, amount, segment`` (``amount`` is NaN without a
            spend model), sorted by customer and date. ``attrs`` holds
            ``calibration_end``, ``holdout_end`` and ``time_unit``.
        """
        rng = np.random.default_rng(random_seed)
        x = self.frequency
        y = self.holdout_frequency
        n = self.n_customers
        counts = 1 + x + y
        total = int(counts.sum())
        cust = np.repeat(np.arange(n), counts)
        starts = np.cumsum(counts) - counts
        j = np.arange(total) - starts[cust]  # position within the customer's block
        xc = x[cust]
        times = np.zeros(total)

        # calibration: interior purchases uniform on (0, t_x), the last at t_x
        interior = (j >= 1) & (j < xc)
        times[interior] = np.repeat(self.recency, np.maximum(x - 1, 0)) * ordered_uniforms(
            np.maximum(x - 1, 0), rng
        )
        last_cal = (j == xc) & (xc > 0)
        times[last_cal] = self.recency[x > 0]

        # holdout
        k = j - xc - 1
        pinned = self._hold_pinned & (y > 0)
        n_free = y - pinned.astype(np.int64)
        free = (k >= 0) & (k < n_free[cust])
        span = self._hold_end - self.T
        times[free] = np.repeat(self.T, n_free) + np.repeat(span, n_free) * ordered_uniforms(
            n_free, rng
        )
        last_hold = (k >= 0) & (k == n_free[cust])
        times[last_hold] = self._hold_end[pinned]

        amount = np.full(total, np.nan)
        if self._nu is not None:
            p_seg = np.array([self.spend[s].p for s in self.segment_names])[self.segment]
            amount[j == 0] = self.first_purchase_value
            repeat_rows = j >= 1
            # Gamma(p, 1) weights normalised within (customer, period) give Dirichlet(p...)
            g = rng.standard_gamma(p_seg[cust[repeat_rows]])
            group = 2 * cust[repeat_rows] + (j[repeat_rows] > xc[repeat_rows])
            sums = np.bincount(group, weights=g, minlength=2 * n)
            targets = np.empty(2 * n)
            targets[0::2] = x * self.monetary_value
            targets[1::2] = self.holdout_spend
            amount[repeat_rows] = g / sums[group] * targets[group]

        day_ns = 86_400e9 * DAYS_PER_UNIT[self.time_unit]
        t_max = float(self.T.max())
        cal_end = pd.Timestamp(start_date) + pd.Timedelta(int(round(t_max * day_ns)), "ns")
        acquired_ns = cal_end.value - np.round(self.T * day_ns).astype(np.int64)
        date_ns = acquired_ns[cust] + np.round(times * day_ns).astype(np.int64)
        frame = pd.DataFrame(
            {
                "customer_id": self.customer_id[cust],
                "date": date_ns.view("datetime64[ns]"),
                "amount": amount,
                "segment": pd.Categorical.from_codes(
                    self.segment[cust], categories=list(self.segment_names)
                ),
            }
        )
        frame.attrs["calibration_end"] = cal_end
        frame.attrs["holdout_end"] = cal_end + pd.Timedelta(
            int(round(self.holdout_length * day_ns)), "ns"
        )
        frame.attrs["time_unit"] = self.time_unit
        return frame


# --------------------------------------------------------------------------- helpers
def _ages(T: Any, n: int, rng: np.random.Generator) -> np.ndarray:
    if isinstance(T, tuple):
        if len(T) != 2:
            raise ModelSpecificationError(
                f"T=(min, max) must have two values for staggered acquisition, got {T!r}."
            )
        lo, hi = float(T[0]), float(T[1])
        if not (0 <= lo <= hi and math.isfinite(hi)):
            raise ModelSpecificationError(f"T=(min, max) needs 0 <= min <= max < inf, got {T!r}.")
        return rng.uniform(lo, hi, n)
    arr = np.asarray(T, dtype=np.float64)
    if arr.ndim == 0:
        arr = np.full(n, float(arr))
    if arr.shape != (n,):
        raise ModelSpecificationError(
            f"T must be a number, an array with one age per customer ({n}), or a "
            f"(min, max) tuple; got an array of shape {arr.shape}."
        )
    if not np.all(np.isfinite(arr) & (arr >= 0)):
        raise ModelSpecificationError("T must be finite and >= 0 for every customer.")
    return arr.copy()


def _normalise_inputs(params, sizes, spend):
    truth_classes = tuple(
        f.truth_class for f in FAMILIES.values() if f.kind == "purchase" and f.truth_class
    )
    if isinstance(params, truth_classes):
        params = {"all": params}
    if not isinstance(params, Mapping) or not params:
        raise ModelSpecificationError(
            "params must be a parameter object or a non-empty mapping {segment: params}."
        )
    kinds = {type(v) for v in params.values()}
    if len(kinds) != 1 or next(iter(kinds)) not in truth_classes:
        raise ModelSpecificationError(
            "params: every segment needs the same model, one of "
            f"{sorted(c.__name__ for c in truth_classes)}; got "
            f"{sorted(k.__name__ for k in kinds)}."
        )
    names = tuple(str(k) for k in params)
    params = {str(k): v for k, v in params.items()}
    if isinstance(sizes, int | np.integer):
        if len(names) != 1:
            raise ModelSpecificationError(
                "sizes must be a mapping {segment: n} when there are several segments."
            )
        sizes = {names[0]: int(sizes)}
    sizes = {str(k): v for k, v in sizes.items()}
    if set(sizes) != set(names):
        raise ModelSpecificationError(
            f"sizes has segments {sorted(sizes)} but params has {sorted(names)}; they must match."
        )
    for k, v in sizes.items():
        if int(v) != v or v < 0:
            raise ModelSpecificationError(f"sizes['{k}'] must be a whole number >= 0, got {v!r}.")
    if sum(int(v) for v in sizes.values()) == 0:
        raise ModelSpecificationError("sizes: no customers to simulate.")
    if spend is not None:
        if isinstance(spend, GammaGammaParams):
            spend = dict.fromkeys(names, spend)
        spend = {str(k): v for k, v in spend.items()}
        missing = [s for s in names if s not in spend]
        if missing or not all(isinstance(v, GammaGammaParams) for v in spend.values()):
            raise ModelSpecificationError(
                f"spend must give GammaGammaParams for every segment; missing {missing}."
            )
    return params, names, {s: int(sizes[s]) for s in names}, spend


# --------------------------------------------------------------------------- simulators
def simulate_customers(
    params: Mapping[str, TruthParams] | TruthParams,
    sizes: Mapping[str, int] | int,
    *,
    T: float | np.ndarray | tuple[float, float],
    holdout_length: float = 0.0,
    spend: Mapping[str, GammaGammaParams] | GammaGammaParams | None = None,
    time_unit: str = "week",
    random_seed: Any = None,
) -> SimulatedCustomers:
    """Simulate customers of a buy-till-you-die model with per-segment parameters.

    Parameters
    ----------
    params : mapping {segment name: params} or one params object (segment ``"all"``)
        :class:`BGNBDParams`, :class:`MBGNBDParams` or :class:`ParetoNBDParams`; the
        type selects the model and must be the same for every segment.
    sizes : mapping {segment name: number of customers} or an int (one segment)
    T : float, array of shape (n,), or (min, max)
        Age of each customer at the end of calibration, in ``time_unit``: one value for
        a single cohort, one per customer (in segment order), or a range from which ages
        are drawn uniformly (staggered acquisition).
    holdout_length : float
        Length of a holdout period after calibration (0 for none).
    spend : mapping {segment: GammaGammaParams}, one GammaGammaParams, or None
        Spend model; without it no amounts are drawn.
    time_unit : str
        Unit of ``T`` and of the rates (a key of ``DAYS_PER_UNIT``).
    random_seed : int, numpy Generator or None
        Passed to ``numpy.random.default_rng``.

    Returns
    -------
    SimulatedCustomers
        Customers are numbered 0..n-1 in segment order.

    Examples
    --------
    >>> sim = simulate_customers({"web": BGNBDParams(0.25, 4.4, 0.8, 2.4)}, {"web": 1000},
    ...                          T=(20.0, 40.0), random_seed=1)
    >>> bool(sim.truth["alive_at_T"].mean() > 0)
    True
    """
    params, names, sizes, spend = _normalise_inputs(params, sizes, spend)
    if time_unit not in DAYS_PER_UNIT:
        raise ModelSpecificationError(
            f"time_unit={time_unit!r} is not supported; use one of {sorted(DAYS_PER_UNIT)}."
        )
    h = float(holdout_length)
    if not (math.isfinite(h) and h >= 0):
        raise ModelSpecificationError(f"holdout_length must be finite and >= 0, got {h!r}.")
    model = family_of_truth(params[names[0]])
    rng = np.random.default_rng(random_seed)
    with np.errstate(divide="ignore", over="ignore"):
        # A rate drawn as exactly 0 (tiny shape parameters) means "never": inf, not a warning.
        return _simulate(model, params, names, sizes, spend, T, h, time_unit, rng, random_seed)


def _simulate(model, params, names, sizes, spend, T, h, time_unit, rng, random_seed):
    n = sum(sizes.values())
    seg = np.repeat(np.arange(len(names), dtype=np.int64), [sizes[s] for s in names])
    ages = _ages(T, n, rng)

    def per_customer(attr: str, table: Mapping[str, Any]) -> np.ndarray:
        return np.array([getattr(table[s], attr) for s in names])[seg]

    fam: Family = model
    pop = {f: per_customer(f, params) for f in fam.params}
    hist = fam.simulate_history(pop, ages, h, rng)
    truth: dict[str, Any] = {"segment": pd.Categorical.from_codes(seg, categories=list(names))}
    truth.update(hist.latent)
    truth["dropout_time"] = hist.dropout_time
    truth["alive_at_T"] = hist.alive_at_T
    truth["alive_at_end"] = hist.alive_at_end
    x, t_x, y = hist.frequency, hist.recency, hist.holdout_frequency

    monetary = first = hold_spend = nu = None
    if spend is not None:
        drawn = GAMMA_GAMMA.simulate_spend(
            {f: per_customer(f, spend) for f in GAMMA_GAMMA.params}, x, y, rng
        )
        nu, first = drawn["nu"], drawn["first"]
        monetary, hold_spend = drawn["monetary"], drawn["holdout_spend"]
        truth["nu"] = nu
        truth["mean_spend"] = per_customer("p", spend) / nu

    customer_id = np.arange(n, dtype=np.int64)
    return SimulatedCustomers(
        model=fam.name,
        segment_names=names,
        customer_id=customer_id,
        segment=seg,
        T=ages,
        frequency=x,
        recency=t_x,
        holdout_length=h,
        holdout_frequency=y,
        monetary_value=monetary,
        first_purchase_value=first,
        holdout_spend=hold_spend,
        truth=pd.DataFrame(truth, index=pd.Index(customer_id, name="customer_id")),
        params=dict(params),
        spend=None if spend is None else dict(spend),
        time_unit=time_unit,
        random_seed=random_seed,
        _hold_end=hist.hold_end,
        _hold_pinned=hist.hold_pinned,
        _nu=nu,
    )


def simulate_rfm(
    params: Mapping[str, TruthParams] | TruthParams,
    sizes: Mapping[str, int] | int,
    *,
    T: float | np.ndarray | tuple[float, float],
    spend: Mapping[str, GammaGammaParams] | GammaGammaParams | None = None,
    holdout_length: float = 0.0,
    time_unit: str = "week",
    random_seed: Any = None,
) -> RFMData:
    """Simulate an :class:`~bayesclv.data.RFMData` directly (no transactions materialised).

    Same arguments as :func:`simulate_customers`; without ``spend`` the spend columns
    are zeros (no spend data). With ``holdout_length > 0`` the result carries
    ``holdout_frequency``, ``holdout_spend`` and ``holdout_length``. The latent truth
    is in ``rfm.meta["truth"]`` and the parameters in ``rfm.meta["simulation"]``.
    """
    return simulate_customers(
        params,
        sizes,
        T=T,
        holdout_length=holdout_length,
        spend=spend,
        time_unit=time_unit,
        random_seed=random_seed,
    ).to_rfm()


def simulate_transactions(
    params: Mapping[str, TruthParams] | TruthParams,
    sizes: Mapping[str, int] | int,
    *,
    T: float | np.ndarray | tuple[float, float],
    spend: Mapping[str, GammaGammaParams] | GammaGammaParams | None = None,
    holdout_length: float = 0.0,
    start_date: str | pd.Timestamp = "2020-01-01",
    time_unit: str = "week",
    random_seed: Any = None,
) -> pd.DataFrame:
    """Simulate a transaction log ``customer_id, date, amount, segment``.

    Same arguments as :func:`simulate_customers`, plus ``start_date`` (see
    :meth:`SimulatedCustomers.to_transactions`). The log covers calibration and holdout;
    ``attrs`` holds ``calibration_end``, ``holdout_end`` and ``time_unit``. For the latent
    truth as well, call ``simulate_customers(...)`` and then ``.to_transactions()``.
    """
    # One generator serves both steps, so a seed gives one reproducible log.
    rng = np.random.default_rng(random_seed)
    sim = simulate_customers(
        params,
        sizes,
        T=T,
        holdout_length=holdout_length,
        spend=spend,
        time_unit=time_unit,
        random_seed=rng,
    )
    return sim.to_transactions(start_date, random_seed=rng)
