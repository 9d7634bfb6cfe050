"""Closed-form predictions per posterior draw: P(alive), expected purchases, spend.

Every function here takes posterior draws of per-segment parameters (an
``xarray.Dataset`` with dims ``(chain, draw, segment)``, see below) and returns an
``xarray.DataArray`` that keeps ``(chain, draw, ...)``: nothing is averaged over draws.
The formulas are evaluated per draw on NumPy arrays; this module does not import PyMC.

Parameter layout (the contract with ``bayesclv.models`` / ``bayesclv.fit``)
--------------------------------------------------------------------------
``params.attrs["model"]`` names the family (:data:`bayesclv.families.FAMILIES`), whose
``params`` are the variables, e.g. ``r, alpha, a, b`` for ``"bgnbd"``; spend draws have
``attrs["model"] == "gamma_gamma"`` (``p, q, v``). The formulas live in the family modules;
this module only gathers draws per customer and dispatches. Every variable has dims
``("chain", "draw", "segment")`` and the ``segment`` coordinate holds segment names. Customers
are matched to segments by name (``rfm.segment_names[rfm.segment]``), so the order of the
``segment`` coordinate does not matter; a name missing from ``params`` is an error.

How the conditional expectations are organised
----------------------------------------------
For all three purchase models, given the history ``(x, t_x, T)``::

    E[X(T, T+t] | x, t_x, T] = P(alive at T | x, t_x, T) * Phi(t | x, T)

where ``Phi`` is the expected number of purchases in ``(T, T+t]`` of a customer known
to be alive at ``T``. Given "alive at T" the posterior of the individual parameters is
conjugate: ``lambda ~ Gamma(r+x, rate alpha+T)`` and ``p ~ Beta(a, b+x)`` (BG/NBD),
``p ~ Beta(a, b+x+1)`` (MBG/NBD, which also allows a dropout right after the first
purchase) or ``mu ~ Gamma(s, rate beta+T)`` (Pareto/NBD). ``Phi`` therefore depends on
``(segment, x, T)`` only and P(alive) on ``(segment, x, t_x, T)``; ``bayesclv.clv``
exploits this to compute both once per unique row.

References
----------
Fader, Hardie & Lee (2005), "Counting your customers the easy way", Marketing Science
24(2): eq. (10) (BG/NBD conditional expectation) and the P(alive) expression of its
appendix / technical note "Computing P(alive) using the BG/NBD model".
Batislam, Denizel & Filiztekin (2007), IJRM 24(3): MBG/NBD conditional expectation and
P(alive).
Schmittlein, Morrison & Colombo (1987), Management Science 33(1), and Fader & Hardie
(2005), "A note on deriving the Pareto/NBD model and related expressions": Pareto/NBD
P(alive) and conditional expectation.
Fader & Hardie (2013), "The Gamma-Gamma model of monetary value", eq. (5): conditional
mean spend.
Abramowitz & Stegun 15.3.5 (Pfaff transformation of 2F1).
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import xarray as xr

from bayesclv.data import RFMData
from bayesclv.errors import ModelSpecificationError
from bayesclv.families import FAMILIES, get_family, purchase_families
from bayesclv.families.base import expm1_ratio

__all__ = [
    "CUSTOMER_DIM",
    "PURCHASE_MODELS",
    "DrawParams",
    "probability_alive",
    "expected_purchases",
    "expected_purchases_new_customer",
    "expected_spend",
    "log_p_alive",
    "p_alive",
    "phi_alive",
    "spend_mean",
    "expm1_ratio",
    "customer_kwargs",
    "customer_row_key",
]

#: Name of the per-customer dim of every prediction and CLV output (and of the fits'
#: ``log_likelihood`` / ``posterior_predictive`` groups), as in pymc-marketing; its
#: coordinate is ``rfm.customer_id``.
CUSTOMER_DIM = "customer_id"

#: Variables each purchase model's params Dataset must hold (from the registry).
PURCHASE_MODELS: dict[str, tuple[str, ...]] = {
    name: FAMILIES[name].params for name in purchase_families()
}


# --------------------------------------------------------------------------- params
def _require_vars(fam, params: xr.Dataset) -> None:
    missing = [n for n in fam.params if n not in params.data_vars]
    if missing:
        raise ModelSpecificationError(
            f"{fam.name} params lack variables {missing}; they have {list(params.data_vars)}."
        )


class DrawParams:
    """Posterior draws flattened to ``(n_draws, n_segments)`` NumPy arrays.

    ``values[name]`` is ``(chain*draw, segment)``; ``chain`` and ``draw`` keep the
    coordinates so results can be reshaped back; ``family`` is the model's family object.
    """

    def __init__(self, params: xr.Dataset, kind: str):
        if not isinstance(params, xr.Dataset):
            raise ModelSpecificationError(
                f"expected an xarray.Dataset of posterior draws, got {type(params).__name__}."
            )
        fam = get_family(params.attrs.get("model"), kind)
        _require_vars(fam, params)
        # the family as the draws fix it (e.g. bound to the covariate coefficients the
        # draws carry), which may need more variables
        bound = fam.from_draws(params)
        if bound.params != fam.params:
            fam = bound
            _require_vars(fam, params)
        names = fam.params
        # real-valued parameters (e.g. covariate coefficients) may be <= 0
        real = set(getattr(fam, "real_params", ()))
        for n in names:
            if params[n].dims != ("chain", "draw", "segment"):
                raise ModelSpecificationError(
                    f"params['{n}'] has dims {params[n].dims}; expected "
                    f"('chain', 'draw', 'segment')."
                )
        self.family = fam
        self.model: str = fam.name
        self.chain = params["chain"].values if "chain" in params.coords else None
        self.draw = params["draw"].values if "draw" in params.coords else None
        self.n_chain = params.sizes["chain"]
        self.n_draw = params.sizes["draw"]
        self.segments = tuple(str(s) for s in params["segment"].values)
        self.values: dict[str, np.ndarray] = {}
        for n in names:
            arr = np.asarray(params[n].values, dtype=np.float64)
            arr = arr.reshape(self.n_chain * self.n_draw, -1)
            bad = ~np.isfinite(arr) | ((arr <= 0) & (n not in real))
            if bad.any():
                raise ModelSpecificationError(
                    f"params['{n}'] must be finite{'' if n in real else ' and > 0'} in every "
                    f"draw; {int(bad.sum())} values are not."
                )
            self.values[n] = arr
        fam.check_draws(self.values)

    @property
    def n_draws(self) -> int:
        return self.n_chain * self.n_draw

    def positions(self, segment_names: tuple[str, ...] | list[str]) -> np.ndarray:
        """Column of each named segment in ``values`` (error if one is missing)."""
        lookup = {s: i for i, s in enumerate(self.segments)}
        missing = [s for s in segment_names if s not in lookup]
        if missing:
            raise ModelSpecificationError(
                f"segments {missing} have no parameter draws (params have "
                f"{list(self.segments)}). For a segment unseen at fit time, pass params "
                f"holding its population draws (bayesclv.fit.population_params)."
            )
        return np.array([lookup[s] for s in segment_names], dtype=np.int64)

    def columns(self, seg_cols: np.ndarray) -> dict[str, np.ndarray]:
        """``(n_draws, len(seg_cols))`` arrays for the given segment columns."""
        return {n: v[:, seg_cols] for n, v in self.values.items()}

    def subset(self, draws: np.ndarray) -> DrawParams:
        """A shallow copy holding only the given flattened draws (one chain)."""
        sub = object.__new__(DrawParams)
        sub.__dict__.update(self.__dict__)
        sub.values = {k: v[draws] for k, v in self.values.items()}
        sub.n_chain, sub.n_draw = 1, len(draws)
        sub.chain = sub.draw = None
        return sub

    def wrap(self, arr: np.ndarray, dim: str, coord) -> xr.DataArray:
        """Reshape ``(n_draws, n)`` back to ``(chain, draw, dim)``."""
        arr = arr.reshape(self.n_chain, self.n_draw, -1)
        coords = {dim: coord}
        if self.chain is not None:
            coords["chain"] = self.chain
        if self.draw is not None:
            coords["draw"] = self.draw
        return xr.DataArray(arr, dims=("chain", "draw", dim), coords=coords)


def customer_columns(dp: DrawParams, rfm: RFMData) -> np.ndarray:
    """Column in ``dp.values`` of each customer's segment."""
    return dp.positions(rfm.segment_names)[rfm.segment]


def customer_kwargs(family, rfm: RFMData, idx=None, *, horizon: float | None = None,
                    future_covariates=None) -> dict:
    """The keyword arguments a family's methods take per customer besides ``x, t_x, T``
    (its ``customer_data`` hook: e.g. each customer's covariates and, with ``horizon``,
    their future path, from ``future_covariates`` or the table joined to ``rfm``), for the
    customers at positions ``idx`` of ``rfm`` (default all); ``{}`` for families without
    per-customer data. The hook raises naming what is missing (customers, periods)."""
    hook = getattr(family, "customer_data", None)
    if hook is None:
        if future_covariates is not None:
            raise ModelSpecificationError(
                f"{family.label} takes no covariates, but future covariates were passed; "
                f"drop them, or score a fit of a covariate family."
            )
        return {}
    return hook(rfm, idx, horizon=horizon, table=future_covariates)


def customer_row_key(family, rfm: RFMData) -> tuple[np.ndarray, ...]:
    """Columns that, with ``(segment, x, t_x, T)``, identify customers whose predictions
    are equal (the family's ``row_key`` hook, e.g. the covariate values); ``()`` for
    families whose predictions depend on the history only."""
    hook = getattr(family, "row_key", None)
    return () if hook is None else tuple(hook(rfm))


# --------------------------------------------------------------------------- kernels
# Thin dispatchers to the family methods, for callers holding a model name.
def log_p_alive(model, th: Mapping[str, np.ndarray], x, t_x, T) -> np.ndarray:
    """log P(alive at T | x, t_x, T) for one model (name or family), elementwise."""
    return get_family(model, "purchase").log_p_alive(th, x, t_x, T)


def p_alive(model, th: Mapping[str, np.ndarray], x, t_x, T) -> np.ndarray:
    """P(alive at T | x, t_x, T), elementwise."""
    return get_family(model, "purchase").p_alive(th, x, t_x, T)


def phi_alive(model, th: Mapping[str, np.ndarray], x, T, t, *, t_x=None) -> np.ndarray:
    """Expected purchases in ``(T, T+t]`` given alive at ``T`` (elementwise); ``t_x`` is
    needed by families whose future depends on the recency."""
    fam = get_family(model, "purchase")
    return fam.expected_alive(th, x, T, t, **fam.recency(t_x))


def spend_mean(th: Mapping[str, np.ndarray], x, zbar, model="gamma_gamma") -> np.ndarray:
    """Conditional mean spend per purchase of the spend family ``model``."""
    return get_family(model, "spend").expected_spend(th, x, zbar)


def _check_horizon(horizon) -> float:
    h = float(horizon)
    if not np.isfinite(h) or h < 0:
        raise ValueError(
            f"horizon must be a finite number >= 0 (model time units), got {horizon!r}."
        )
    return h


# --------------------------------------------------------------------------- public API
def probability_alive(params: xr.Dataset, rfm: RFMData) -> xr.DataArray:
    """P(customer is alive at the end of calibration | history), per posterior draw.

    Parameters
    ----------
    params : xarray.Dataset
        Purchase-model draws, dims ``(chain, draw, segment)`` (module docstring).
    rfm : RFMData
        Customer histories ``x, t_x, T`` (for a covariate family, with the covariates
        joined: :func:`bayesclv.covariates.join_covariates`).

    Returns
    -------
    xarray.DataArray
        Dims ``(chain, draw, customer_id)`` (:data:`CUSTOMER_DIM`), coordinate
        ``rfm.customer_id``.
    """
    dp = DrawParams(params, "purchase")
    cols = customer_columns(dp, rfm)
    th = dp.columns(cols)
    cov = customer_kwargs(dp.family, rfm)
    out = dp.family.p_alive(th, rfm.frequency, rfm.recency, rfm.T, **cov)
    return dp.wrap(out, CUSTOMER_DIM, rfm.customer_id).rename("p_alive")


def expected_purchases(params: xr.Dataset, rfm: RFMData, horizon: float, *,
                       future_covariates=None) -> xr.DataArray:
    """Expected repeat purchases in ``(T, T + horizon]`` given each history, per draw.

    ``E[X | x, t_x, T] = P(alive) * Phi(horizon | x, T)``; this is FHL (2005) eq. (10) for
    BG/NBD, Batislam et al. (2007) for MBG/NBD and the Pareto/NBD conditional
    expectation (module docstring).

    Parameters
    ----------
    params : xarray.Dataset
        Purchase-model draws.
    rfm : RFMData
        Histories (for a covariate family, with the covariates joined).
    horizon : float
        Length of the prediction window in the model's time unit (``rfm.time_unit``).
    future_covariates : bayesclv.covariates.TimeVaryingCovariates, optional
        Time-varying covariates: the table covering ``(T, T + horizon]`` of every
        customer (default the joined table; an error names the customers and periods it
        lacks), e.g. ``joined.extend(future)``. Static covariates need none.

    Returns
    -------
    xarray.DataArray
        Dims ``(chain, draw, customer_id)``.
    """
    h = _check_horizon(horizon)
    dp = DrawParams(params, "purchase")
    cols = customer_columns(dp, rfm)
    th = dp.columns(cols)
    x, t_x, T = rfm.frequency, rfm.recency, rfm.T
    fam = dp.family
    cov = customer_kwargs(fam, rfm, horizon=h, future_covariates=future_covariates)
    out = fam.p_alive(th, x, t_x, T, **cov) * fam.expected_alive(th, x, T, h,
                                                                 **fam.recency(t_x), **cov)
    da = dp.wrap(out, CUSTOMER_DIM, rfm.customer_id).rename("expected_purchases")
    da.attrs.update(horizon=h, time_unit=rfm.time_unit)
    return da


def expected_purchases_new_customer(
    params: xr.Dataset, segment: str, horizon: float
) -> xr.DataArray:
    """Unconditional expected repeat purchases of a new customer in ``(0, horizon]``.

    A customer acquired (first purchase) at time 0: the conditional expectation at
    ``x = t_x = T = 0``, which is FHL (2005) eq. (9) for BG/NBD, ``b/(a+b)`` times the
    BG/NBD form with ``b+1`` for MBG/NBD (the customer may drop out right after the first
    purchase), and ``r beta / (alpha (s-1)) [1 - (beta/(beta+t))^(s-1)]`` for Pareto/NBD.

    Returns
    -------
    xarray.DataArray
        Dims ``(chain, draw)``.
    """
    h = _check_horizon(horizon)
    dp = DrawParams(params, "purchase")
    col = dp.positions([str(segment)])
    th = dp.columns(col)
    fam = dp.family
    out = fam.p_alive(th, 0.0, 0.0, 0.0) * fam.expected_alive(th, 0.0, 0.0, h,
                                                              **fam.recency(0.0))
    da = dp.wrap(out, "segment", [str(segment)]).isel(segment=0, drop=True)
    da.attrs.update(horizon=h, segment=str(segment))
    return da.rename("expected_purchases_new_customer")


def expected_spend(spend_params: xr.Dataset, rfm: RFMData | None = None, *, segment=None):
    """Expected amount per future purchase, per draw (Gamma-Gamma).

    With ``rfm``: the conditional mean ``p (v + x zbar) / (p x + q - 1)`` per customer
    (Fader & Hardie 2013, eq. 5), equal to the population mean ``p v / (q - 1)`` for
    customers without repeat purchases. With ``segment`` instead: the population mean for
    a new customer of that segment. Requires ``q > 1`` in every draw.

    Returns
    -------
    xarray.DataArray
        Dims ``(chain, draw, customer_id)`` (with ``rfm``) or ``(chain, draw)``.
    """
    dp = DrawParams(spend_params, "spend")
    if rfm is None:
        if segment is None:
            raise ValueError("expected_spend needs either rfm or segment.")
        th = dp.columns(dp.positions([str(segment)]))
        out = dp.family.expected_spend(th, 0.0, 0.0)
        return dp.wrap(out, "segment", [str(segment)]).isel(segment=0, drop=True).rename(
            "expected_spend"
        )
    th = dp.columns(customer_columns(dp, rfm))
    out = dp.family.expected_spend(th, rfm.frequency, rfm.monetary_value)
    return dp.wrap(out, CUSTOMER_DIM, rfm.customer_id).rename("expected_spend")
