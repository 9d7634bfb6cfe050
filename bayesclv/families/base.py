"""What every model family shares: the interface a family module fills in, and its defaults.

A *family* is one object in one module (``bayesclv/families/<name>.py``) that holds
everything the package knows about one model: its paper parameters and the map from the
sampled (unconstrained) ones, its per-customer log-likelihood (one backend-neutral
formula for NumPy and PyTensor, see :mod:`bayesclv.ops`), which customers
and summary columns it models, and, for purchase families, P(alive), the conditional
expectation given alive, the conditional law of the latent rates given the history, the
holdout pmf, the future-purchase simulator and the history simulator. The registry
:data:`bayesclv.families.FAMILIES` is the only place keyed by a model name; every other
module takes the family from the fit (``attrs["model"]``) and calls these methods.

Conventions (all methods are NumPy unless they say "backend-neutral"):

* ``th`` maps each paper parameter name to an array broadcasting against the data arrays
  (typically parameters ``(n_draws, n_rows)`` or ``(1, n_draws)`` rows against data
  ``(n_rows,)`` or ``(n_rows, 1)``);
* ``x, t_x, T`` are the frequency (repeat purchases), recency and age, in the model's
  time unit; ``t`` or ``h`` a window length after ``T``;
* latent values "given alive" are the individual parameters drawn from their posterior
  given the history and given that the customer is alive at ``T``.

Adding a family: write its module (subclassing :class:`PurchaseFamily` or
:class:`SpendFamily` and filling in the methods that raise ``NotImplementedError``),
add one line to ``FAMILIES``, and its tests. Nothing else in the package names models.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from bayesclv.numerics import expm1_ratio  # noqa: F401 (re-exported for the families)
from bayesclv.ops import ops_for

__all__ = [
    "Family",
    "PurchaseFamily",
    "SpendFamily",
    "Groups",
    "ModelRows",
    "History",
    "make_groups",
    "factorize_rows",
    "parallel_map",
    "expm1_ratio",
]


# --------------------------------------------------------------------------- helpers
def factorize_rows(*cols: np.ndarray) -> tuple[np.ndarray, list[np.ndarray]]:
    """Codes of unique rows of ``cols`` and the unique values of each column.

    Codes are numbered in order of first appearance. Columns are combined one at a time
    (``code * n_unique + column code``, re-factorized so codes stay below the number of
    rows) rather than by a multi-column groupby: a few integers per row at a time.
    """
    codes = np.zeros(len(cols[0]), dtype=np.int64)
    for col in cols:
        cc, uniq = pd.factorize(np.asarray(col), use_na_sentinel=False)
        codes = codes * len(uniq) + cc
        codes, _ = pd.factorize(codes)
    first = np.full(codes.max() + 1, -1, dtype=np.int64)
    first[codes[::-1]] = np.arange(len(codes))[::-1]
    return codes.astype(np.intp), [np.asarray(c)[first] for c in cols]


def parallel_map(fn: Callable, items, n_jobs: int | None) -> list:
    """``[fn(i) for i in items]`` on up to ``n_jobs`` threads (NumPy releases the GIL)."""
    items = list(items)
    if n_jobs is None:
        n_jobs = os.cpu_count() or 1
    if n_jobs <= 1 or len(items) <= 1:
        return [fn(i) for i in items]
    with ThreadPoolExecutor(max_workers=min(n_jobs, len(items))) as ex:
        return list(ex.map(fn, items))


# --------------------------------------------------------------------------- grouping
@dataclass(frozen=True)
class Groups:
    """Distinct customer rows and how they group by segment and by ``(segment, x)``.

    A family's summed log-likelihood computes the terms that depend on the parameters
    only once per segment, the terms that also depend on ``x`` once per distinct
    ``(segment, x)``, and only the rest per distinct row, each weighted by the number of
    customers sharing it. ``extra`` holds what one family precomputes beyond that (e.g.
    BG/NBD's distinct ages and recencies).
    """

    n_segments: int
    seg: np.ndarray  # (rows,) segment index of each distinct row
    data: tuple[np.ndarray, ...]  # the family's data columns, per distinct row
    weight: np.ndarray  # (rows,) customers sharing each row
    fx: np.ndarray  # (rows,) index of the row's (segment, x) pair
    fx_seg: np.ndarray  # (pairs,) segment of each distinct (segment, x)
    fx_x: np.ndarray  # (pairs,) x of each distinct (segment, x)
    fx_weight: np.ndarray  # (pairs,) customers per pair
    seg_weight: np.ndarray  # (n_segments,) customers per segment
    extra: Mapping[str, np.ndarray] = field(default_factory=dict)


def make_groups(seg: np.ndarray, data, weight: np.ndarray, n_segments: int) -> Groups:
    """Group distinct rows (already compressed, with ``weight`` customers each).

    The first data column must be the frequency ``x``.
    """
    seg = np.asarray(seg, dtype=np.int64)
    x = np.asarray(data[0], dtype=np.float64)
    pairs, fx = np.unique(np.column_stack([seg, x]), axis=0, return_inverse=True)
    fx = fx.ravel()
    weight = np.asarray(weight, dtype=np.float64)
    return Groups(
        n_segments=n_segments,
        seg=seg,
        data=tuple(np.asarray(d, dtype=np.float64) for d in data),
        weight=weight,
        fx=fx,
        fx_seg=pairs[:, 0].astype(np.int64),
        fx_x=pairs[:, 1],
        fx_weight=np.bincount(fx, weights=weight, minlength=len(pairs)),
        seg_weight=np.bincount(seg, weights=weight, minlength=n_segments),
    )


@dataclass(frozen=True)
class ModelRows:
    """Which customers a family models and their data columns (see ``model_rows``)."""

    mask: np.ndarray  # (n_customers,) bool: customers that enter the likelihood
    columns: tuple[np.ndarray, ...]  # the data columns of those customers, in logp order
    notes: Mapping[str, Any] = field(default_factory=dict)  # counts of excluded customers
    messages: tuple[str, ...] = ()  # the same in words, for warnings


@dataclass(frozen=True)
class History:
    """One simulated history per customer (see ``PurchaseFamily.simulate_history``).

    ``latent`` holds the individual truth (e.g. ``lam`` and ``p`` or ``mu``);
    ``dropout_time`` is from acquisition (``inf`` if never); the holdout window is
    ``(T, T + h]``, its purchases end at ``hold_end`` and, where ``hold_pinned``, the
    last of them is exactly at ``hold_end`` (a dropout right after a purchase).
    """

    latent: Mapping[str, np.ndarray]
    frequency: np.ndarray
    recency: np.ndarray
    alive_at_T: np.ndarray
    holdout_frequency: np.ndarray
    alive_at_end: np.ndarray
    dropout_time: np.ndarray
    hold_end: np.ndarray
    hold_pinned: np.ndarray


# --------------------------------------------------------------------------- families
class Family:
    """Interface shared by purchase and spend families (see the module docstring)."""

    #: Registry key, e.g. ``"bgnbd"``; stored as ``attrs["model"]`` of fits and draws.
    name: str = ""
    #: Name for people, e.g. ``"BG/NBD"``.
    label: str = ""
    #: ``"purchase"`` or ``"spend"``.
    kind: str = ""
    #: Paper parameters, in the order :meth:`logp` takes them.
    params: tuple[str, ...] = ()
    #: Sampled (unconstrained) parameters, in the order :meth:`to_natural` takes them.
    unconstrained: tuple[str, ...] = ()
    #: Frozen prior dataclass with one field per unconstrained parameter (+ segment_sigma).
    priors_class: type | None = None
    #: Frozen dataclass of population parameters for simulation (``simulate_rfm``).
    truth_class: type | None = None
    #: Draws a builder recommends when ``fit(draws=None)``.
    default_draws: int = 1000

    def __repr__(self) -> str:
        return f"<family {self.name!r} ({self.label})>"

    # -- model (backend-neutral) ------------------------------------------------------
    def to_natural(self, **theta) -> dict:
        """Paper parameters from the unconstrained ones (NumPy or PyTensor)."""
        raise NotImplementedError

    def logp(self, *args):
        """Per-customer log-likelihood: ``logp(*params, *data)`` (NumPy or PyTensor)."""
        raise NotImplementedError

    def model_rows(self, rfm) -> ModelRows:
        """The customers this family models and their data columns."""
        raise NotImplementedError

    def not_applicable(self, rfm) -> str | None:
        """Why this family cannot model ``rfm`` (e.g. a column it needs is missing), or
        ``None`` when it can. Used to pick the candidates of an automatic choice."""
        return None

    def make_groups(self, seg, data, weight, n_segments: int) -> Groups:
        """Distinct rows grouped for :meth:`grouped_loglik` (override to precompute more)."""
        return make_groups(seg, data, weight, n_segments)

    def grouped_loglik(self, params: Mapping, g: Groups):
        """Total log-likelihood of the grouped customers (a scalar, NumPy or PyTensor).

        The default evaluates :meth:`logp` once per distinct row; families override it
        to compute shared terms once per segment or per ``(segment, x)``.
        """
        m = ops_for(*params.values())
        at_row = [params[n][g.seg] for n in self.params]
        return m.sum(g.weight * self.logp(*at_row, *g.data))

    def check_draws(self, values: Mapping[str, np.ndarray]) -> None:
        """Raise if parameter draws violate a constraint beyond ``> 0`` (default: none)."""

    def mle_start(self) -> dict[str, float]:
        """A starting point for maximum likelihood on the unconstrained scale."""
        return {n: 0.0 for n in self.unconstrained}

    def resolve(self, rfm) -> Family:
        """The family ready to model ``rfm``: itself, unless a structural choice is made
        from the data first (e.g. CNBD-k's ``k`` by profile likelihood)."""
        return self

    def from_draws(self, values: Mapping) -> Family:
        """The family as parameter draws fix it (itself, unless draws carry a structural
        constant such as CNBD-k's ``k``)."""
        return self

    def mle_view(self) -> Family:
        """The family maximum likelihood optimises over (its ``params`` all free)."""
        return self

    def fixed_params(self) -> dict[str, float]:
        """Paper parameters fixed by the family, not estimated (added to MLE results)."""
        return {}


class PurchaseFamily(Family):
    """A model of purchase frequency and dropout (the methods every consumer calls)."""

    kind = "purchase"
    #: Whether the future after ``T`` depends on the recency ``t_x`` too (purchase
    #: processes that are not memoryless, e.g. Erlang-k inter-purchase times): then
    #: consumers pass ``t_x=`` to :meth:`expected_alive`, :meth:`expected_alive_bounds`,
    #: :meth:`alive_tables`, :meth:`latent_given_alive` and :meth:`future_events`, and
    #: tables are kept per ``(segment, x, t_x, T)`` instead of ``(segment, x, T)``.
    future_depends_on_recency: bool = False
    #: Purchases happen only at whole time units after ``T`` (discrete opportunities):
    #: continuous discounting is then exact with one node per opportunity.
    discrete_time: bool = False

    def recency(self, t_x) -> dict:
        """``{"t_x": t_x}`` for families whose future depends on it, else ``{}``: the
        keyword arguments consumers add to the calls listed above."""
        return {"t_x": t_x} if self.future_depends_on_recency else {}

    #: The paper parameter that is the time scale of :meth:`expected_alive` (its branch
    #: point is at ``t = -(scale + T)``); continuous discounting places its quadrature
    #: nodes by it (:func:`bayesclv.clv.discount_schedule`).
    discount_scale: str = "alpha"

    def model_rows(self, rfm) -> ModelRows:
        mask = np.ones(rfm.n_customers, dtype=bool)
        return ModelRows(mask, (rfm.frequency.astype(np.float64), rfm.recency, rfm.T))

    # -- P(alive) and expectations ---------------------------------------------------
    def log_p_alive(self, th: Mapping, x, t_x, T) -> np.ndarray:
        """log P(alive at T | x, t_x, T), elementwise."""
        raise NotImplementedError

    def p_alive(self, th: Mapping, x, t_x, T) -> np.ndarray:
        """P(alive at T | x, t_x, T), elementwise, in [0, 1]."""
        return np.exp(np.minimum(self.log_p_alive(th, x, t_x, T), 0.0))

    def p_alive_rows(self, th: Mapping, x, t_x, T) -> np.ndarray:
        """P(alive) of ``m`` customers of one segment, ``(m, n_draws)``.

        ``th`` holds ``(1, n_draws)`` rows, ``x, t_x, T`` are ``(m,)``. Families may
        override it to share work between customers (the result must equal
        :meth:`p_alive`).
        """
        x = np.asarray(x, dtype=np.float64)[:, None]
        return self.p_alive(th, x, np.asarray(t_x)[:, None], np.asarray(T)[:, None])

    def expected_alive(self, th: Mapping, x, T, t) -> np.ndarray:
        """Expected purchases in ``(T, T + t]`` of a customer alive at ``T``."""
        raise NotImplementedError

    def expected_alive_bounds(self, th: Mapping, x, T, t) -> tuple[np.ndarray, np.ndarray]:
        """Lower and upper bounds of :meth:`expected_alive` that hold exactly (physical
        bounds, not estimates): the CLV engine refuses any value outside them. The
        default is ``[0, inf)``; families give tighter ones."""
        shape = np.broadcast_shapes(*(np.shape(v) for v in th.values()), np.shape(x), np.shape(t))
        return np.zeros(shape), np.full(shape, np.inf)

    def alive_tables(
        self, dp, g, x, T, times, wsets, n_jobs, direct, *, t_x=None
    ) -> np.ndarray | None:
        """``sum_k wsets[j, k] * expected_alive(t_k)`` per set, draw and row, fast.

        ``dp`` is a :class:`bayesclv.predict.DrawParams`, ``g`` the draw column of each
        row, ``direct(dp, g, x, T, times, wsets)`` the reference evaluation. Return an
        array ``(n_sets, n_draws, n_rows)``, or ``None`` to let the caller use
        ``direct`` (the default).
        """
        return None

    # -- conditional simulation -------------------------------------------------------
    def latent_given_alive(self, th: Mapping, x, T, rng) -> dict[str, np.ndarray]:
        """One draw of the individual latent values given the history and alive at T."""
        raise NotImplementedError

    def window_log_pmf(self, latent: Mapping, y, h) -> np.ndarray:
        """log P(y purchases in a window of length h | alive at its start, latent)."""
        raise NotImplementedError

    def simulate_window(self, latent: Mapping, h, rng) -> np.ndarray:
        """Purchases in a window of length h of customers alive at its start."""
        raise NotImplementedError

    def future_events(
        self, th: Mapping, x, T, alive, horizon: float, rng
    ) -> tuple[np.ndarray, np.ndarray]:
        """Simulated purchase times after ``T`` of alive customer-draws.

        ``th`` holds ``(1, n_draws)`` rows of one segment, ``x`` and ``T`` are ``(m, 1)``
        and ``alive`` is an ``(m, n_draws)`` mask. Returns ``(pos, tau)``: for every
        simulated purchase in ``(0, horizon]`` after ``T``, the flat index of its
        customer-draw in the ``(m, n_draws)`` array and its time after ``T``.
        """
        raise NotImplementedError

    def simulate_history(self, pop: Mapping[str, np.ndarray], ages, h, rng) -> History:
        """Simulate each customer's calibration period and a holdout of length ``h``.

        ``pop`` holds the population parameters per customer (arrays of shape (n,)).
        """
        raise NotImplementedError


class SpendFamily(Family):
    """A model of the amount per purchase, independent of the purchase process."""

    kind = "spend"

    def expected_spend(self, th: Mapping, x, zbar) -> np.ndarray:
        """Expected amount of a future purchase given ``x`` purchases averaging ``zbar``."""
        raise NotImplementedError

    def latent_given_history(self, th: Mapping, x, zbar, rng) -> np.ndarray:
        """One draw of each customer's latent spend parameter given the history."""
        raise NotImplementedError

    def sample_amounts(self, th: Mapping, latent, rng) -> np.ndarray:
        """One purchase amount per element of ``latent``."""
        raise NotImplementedError

    def sample_totals(self, th: Mapping, latent, counts, rng) -> np.ndarray:
        """The total of ``counts`` purchase amounts per element (0 where ``counts`` is 0)."""
        raise NotImplementedError


def check_family_complete(family: Family, methods: Sequence[str]) -> list[str]:
    """Names of ``methods`` a family leaves unimplemented (used by the registry tests)."""
    base = PurchaseFamily if family.kind == "purchase" else SpendFamily
    missing = []
    for name in methods:
        impl = getattr(type(family), name, None)
        if impl is None or impl is getattr(base, name, None) and _raises(impl):
            missing.append(name)
    return missing


def _raises(fn) -> bool:
    code = getattr(fn, "__code__", None)
    return code is not None and "NotImplementedError" in code.co_names
