"""Closed-form predictions per posterior draw: P(alive), expected purchases, spend.

Every function here takes posterior draws of per-segment parameters (an
``xarray.Dataset`` with dims ``(chain, draw, segment)``, see below) and returns an
``xarray.DataArray`` that keeps ``(chain, draw, ...)``: nothing is averaged over draws.
The formulas are evaluated per draw on NumPy arrays; this module does not import PyMC.

Parameter layout (the contract with ``bayesclv.models`` / ``bayesclv.fit``)
--------------------------------------------------------------------------
``params.attrs["model"]`` is ``"bgnbd"``, ``"mbgnbd"`` (variables ``r, alpha, a, b``) or
``"pareto_nbd"`` (``r, alpha, s, beta``); spend draws have ``p, q, v`` and
``attrs["model"] == "gamma_gamma"``. Every variable has dims ``("chain", "draw",
"segment")`` and the ``segment`` coordinate holds segment names. Customers are matched
to segments by name (``rfm.segment_names[rfm.segment]``), so the order of the
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
import scipy.special as sps
import xarray as xr

from bayesclv.data import RFMData
from bayesclv.errors import ModelSpecificationError
from bayesclv.likelihoods import pareto_nbd_logp

__all__ = [
    "PURCHASE_MODELS",
    "probability_alive",
    "expected_purchases",
    "expected_purchases_new_customer",
    "expected_spend",
]

#: Variables each purchase model's params Dataset must hold.
PURCHASE_MODELS: dict[str, tuple[str, ...]] = {
    "bgnbd": ("r", "alpha", "a", "b"),
    "mbgnbd": ("r", "alpha", "a", "b"),
    "pareto_nbd": ("r", "alpha", "s", "beta"),
}
SPEND_MODEL = "gamma_gamma"
SPEND_VARS = ("p", "q", "v")

#: Below this distance from 1, ``a`` (BG/NBD) or ``s`` (Pareto/NBD) is treated with the
#: limit formula; see ``_bg_phi`` / ``_pareto_phi``.
_NEAR_ONE = 1e-7
_NEAR_ONE_F = 1e-4


# --------------------------------------------------------------------------- params
class DrawParams:
    """Posterior draws flattened to ``(n_draws, n_segments)`` NumPy arrays.

    Internal helper: ``values[name]`` is ``(chain*draw, segment)``; ``chain`` and
    ``draw`` keep the coordinates so results can be reshaped back.
    """

    def __init__(self, params: xr.Dataset, kind: str):
        if not isinstance(params, xr.Dataset):
            raise ModelSpecificationError(
                f"expected an xarray.Dataset of posterior draws, got {type(params).__name__}."
            )
        model = params.attrs.get("model")
        if kind == "purchase":
            if model not in PURCHASE_MODELS:
                raise ModelSpecificationError(
                    f"params.attrs['model'] is {model!r}; purchase draws need one of "
                    f"{sorted(PURCHASE_MODELS)}."
                )
            names = PURCHASE_MODELS[model]
        else:
            if model != SPEND_MODEL:
                raise ModelSpecificationError(
                    f"spend params.attrs['model'] is {model!r}; expected 'gamma_gamma'."
                )
            names = SPEND_VARS
        missing = [n for n in names if n not in params.data_vars]
        if missing:
            raise ModelSpecificationError(
                f"{model} params lack variables {missing}; they have {list(params.data_vars)}."
            )
        for n in names:
            if params[n].dims != ("chain", "draw", "segment"):
                raise ModelSpecificationError(
                    f"params['{n}'] has dims {params[n].dims}; expected "
                    f"('chain', 'draw', 'segment')."
                )
        self.model: str = model
        self.chain = params["chain"].values if "chain" in params.coords else None
        self.draw = params["draw"].values if "draw" in params.coords else None
        self.n_chain = params.sizes["chain"]
        self.n_draw = params.sizes["draw"]
        self.segments = tuple(str(s) for s in params["segment"].values)
        self.values: dict[str, np.ndarray] = {}
        for n in names:
            arr = np.asarray(params[n].values, dtype=np.float64)
            arr = arr.reshape(self.n_chain * self.n_draw, -1)
            bad = ~np.isfinite(arr) | (arr <= 0)
            if bad.any():
                raise ModelSpecificationError(
                    f"params['{n}'] must be finite and > 0 in every draw; {int(bad.sum())} "
                    f"values are not."
                )
            self.values[n] = arr
        if kind == "spend" and (self.values["q"] <= 1).any():
            k = int((self.values["q"] <= 1).sum())
            raise ModelSpecificationError(
                f"Gamma-Gamma q must be > 1 in every draw for the mean spend p v / (q - 1) "
                f"to exist; {k} draws have q <= 1. Use a prior that keeps q > 1."
            )

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
                f"holding its population draws."
            )
        return np.array([lookup[s] for s in segment_names], dtype=np.int64)

    def columns(self, seg_cols: np.ndarray) -> dict[str, np.ndarray]:
        """``(n_draws, len(seg_cols))`` arrays for the given segment columns."""
        return {n: v[:, seg_cols] for n, v in self.values.items()}

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


# --------------------------------------------------------------------------- kernels
# Kernels take parameter arrays and data arrays that broadcast against each other
# (typically parameters (n_draws, n_rows) and data (n_rows,) or (n_rows, 1)).


def log_p_alive(model: str, th: Mapping[str, np.ndarray], x, t_x, T) -> np.ndarray:
    """log P(alive at T | x, t_x, T) for one model, elementwise.

    BG/NBD (FHL 2005, P(alive) note, eq. 2): ``1 / (1 + 1{x>0} a/(b+x-1)
    ((alpha+T)/(alpha+t_x))^(r+x))``. MBG/NBD (Batislam et al. 2007): the same with
    ``a/(b+x)`` and no indicator. Both are evaluated as ``-softplus(z)`` with ``z`` the
    log of the second term, so nothing overflows for large ``x`` or ``T``.

    Pareto/NBD: ``P(alive) = L_alive / L`` where ``L_alive`` is the "still alive at T"
    term of the likelihood; ``L`` comes from :func:`bayesclv.likelihoods.pareto_nbd_logp`
    (one implementation of the likelihood), so ``log P = log L_alive - log L``.
    """
    x = np.asarray(x, dtype=np.float64)
    t_x = np.asarray(t_x, dtype=np.float64)
    T = np.asarray(T, dtype=np.float64)
    r, alpha = th["r"], th["alpha"]
    if model in ("bgnbd", "mbgnbd"):
        a, b = th["a"], th["b"]
        rx = r + x
        growth = rx * (np.log(alpha + T) - np.log(alpha + t_x))
        if model == "bgnbd":
            has_repeat = x > 0
            denom = np.where(has_repeat, b + x - 1.0, 1.0)
            z = np.log(a) - np.log(denom) + growth
            return np.where(has_repeat, -np.logaddexp(0.0, z), 0.0)
        z = np.log(a) - np.log(b + x) + growth
        return -np.logaddexp(0.0, z)
    if model == "pareto_nbd":
        s, beta = th["s"], th["beta"]
        rx = r + x
        log_alive = (
            sps.gammaln(rx)
            - sps.gammaln(r)
            + r * np.log(alpha)
            + s * np.log(beta)
            - rx * np.log(alpha + T)
            - s * np.log(beta + T)
        )
        logp = pareto_nbd_logp(r, alpha, s, beta, x, t_x, T)
        return np.minimum(log_alive - logp, 0.0)
    raise ModelSpecificationError(f"unknown purchase model {model!r}")


def bg_log_odds(model: str, log_ab: np.ndarray, rx: np.ndarray, log_growth: np.ndarray):
    """``z = log_ab + rx * log_growth``: log of the "dropped out" over "alive" term.

    ``log_ab = log(a) - log(b+x-1)`` (BG/NBD) or ``log(a) - log(b+x)`` (MBG/NBD),
    ``rx = r + x`` and ``log_growth = log(alpha+T) - log(alpha+t_x)``. Factored out so
    :mod:`bayesclv.clv` can build the parts from per-segment tables and still get the
    same floating-point result as :func:`p_alive`.
    """
    return log_ab + rx * log_growth


def p_alive_from_log_odds(z: np.ndarray) -> np.ndarray:
    """``1 / (1 + exp(z))`` (0 when ``exp(z)`` overflows, where P is below 1e-308)."""
    with np.errstate(over="ignore"):
        return 1.0 / (1.0 + np.exp(z))


def p_alive(model: str, th: Mapping[str, np.ndarray], x, t_x, T) -> np.ndarray:
    """P(alive at T | x, t_x, T), elementwise (see :func:`log_p_alive` for the formulas).

    BG/NBD and MBG/NBD are evaluated as ``1 / (1 + exp(z))`` (no overflow to NaN for
    large ``x`` or ``T``); Pareto/NBD as ``exp(log P)``.
    """
    if model not in ("bgnbd", "mbgnbd"):
        return np.exp(log_p_alive(model, th, x, t_x, T))
    x = np.asarray(x, dtype=np.float64)
    a, b, r, alpha = th["a"], th["b"], th["r"], th["alpha"]
    growth = np.log(alpha + np.asarray(T, dtype=np.float64)) - np.log(
        alpha + np.asarray(t_x, dtype=np.float64)
    )
    if model == "bgnbd":
        has_repeat = x > 0
        log_ab = np.log(a) - np.log(np.where(has_repeat, b + x - 1.0, 1.0))
        pa = p_alive_from_log_odds(bg_log_odds(model, log_ab, r + x, growth))
        return np.where(has_repeat, pa, 1.0)
    log_ab = np.log(a) - np.log(b + x)
    return p_alive_from_log_odds(bg_log_odds(model, log_ab, r + x, growth))


def expm1_ratio(eps, L):
    """``(1 - exp(-eps L)) / eps``, equal to ``L`` in the limit ``eps -> 0``."""
    small = np.abs(eps) < _NEAR_ONE
    eps_safe = np.where(small, 1.0, eps)
    return np.where(small, L, -np.expm1(-eps_safe * L) / eps_safe)


def _bg_phi(r, alpha, a, b_eff, x, T, t) -> np.ndarray:
    """Expected purchases in ``(T, T+t]`` of a BG-type customer alive at ``T``.

    With ``lambda ~ Gamma(n, A)``, ``n = r+x``, ``A = alpha+T`` and ``p ~ Beta(a, b_eff)``
    (``b_eff = b+x`` for BG/NBD, ``b+x+1`` for MBG/NBD), and
    ``E[X(t) | lambda, p, alive] = (1 - exp(-lambda p t)) / p`` (FHL 2005, eq. 7 with the
    dropout after each purchase):

    ``Phi = c/(a-1) * [1 - 2F1(n, a-1; c; -t/A)]``, ``c = a + b_eff - 1``,

    the bracket of FHL (2005) eq. (10) after Euler's transformation
    ``(1-z)^(-n) 2F1(n, b_eff; c; z)`` -> ``2F1(n, a-1; c; z/(z-1))``. The argument
    ``-t/A`` can be far below -1, so we apply Pfaff's transformation (A&S 15.3.5):
    ``2F1(n, a-1; c; -k) = (1+k)^(1-a) 2F1(c-n, a-1; c; k/(1+k))``, whose argument is in
    ``[0, 1)`` and whose first parameter ``c-n = a+b_eff-1-r-x`` no longer grows with ``x``
    (stable for ``x`` in the tens of thousands). Writing ``F - 1 = (a-1) G`` removes the
    ``0/0`` at ``a = 1``:

    ``Phi = c * [ (1 - (1+k)^(1-a)) / (a-1) - (1+k)^(1-a) (F - 1)/(a-1) ]``.

    ``G = (F-1)/(a-1)`` is evaluated by :func:`bg_G`, smooth through ``a = 1``.
    """
    n = r + x
    c = a + b_eff - 1.0
    k = t / (alpha + T)
    L = np.log1p(k)
    w = k / (1.0 + k)
    eps = a - 1.0
    G = bg_G(c - n, eps, c, w)
    return c * (expm1_ratio(eps, L) - np.exp(-eps * L) * G)


def bg_G(A1, eps, c, w) -> np.ndarray:
    """``G = (2F1(A1, eps; c; w) - 1) / eps`` elementwise, smooth through ``eps = 0``.

    ``G`` is analytic in ``eps``; for ``|eps| < 1e-4`` it is interpolated linearly between
    ``eps = +-1e-4`` (error O(1e-8) relative, round-off O(1e-12)) instead of dividing a
    difference that cancels.
    """
    shape = np.broadcast_shapes(np.shape(A1), np.shape(eps), np.shape(c), np.shape(w))
    A1, eps_b, c_b, w_b = (np.broadcast_to(z, shape).ravel() for z in (A1, eps, c, w))
    near = np.abs(eps_b) < _NEAR_ONE_F
    eps_f = np.where(near, _NEAR_ONE_F, eps_b)
    G = (sps.hyp2f1(A1, eps_f, c_b, w_b) - 1.0) / eps_f
    if near.any():
        args = (A1[near], c_b[near], w_b[near])
        d = _NEAR_ONE_F
        g_hi = (sps.hyp2f1(args[0], d, args[1], args[2]) - 1.0) / d
        g_lo = (sps.hyp2f1(args[0], -d, args[1], args[2]) - 1.0) / -d
        G[near] = 0.5 * (g_hi + g_lo) + eps_b[near] * (g_hi - g_lo) / (2 * d)
    return G.reshape(shape)


def _pareto_phi(r, alpha, s, beta, x, T, t) -> np.ndarray:
    """Expected purchases in ``(T, T+t]`` of a Pareto/NBD customer alive at ``T``.

    Given alive, ``lambda ~ Gamma(r+x, alpha+T)`` and ``mu ~ Gamma(s, beta+T)`` are
    independent and ``E[X(t) | lambda, mu, alive] = lambda/mu (1 - exp(-mu t))``, so

    ``Phi = (r+x)/(alpha+T) * (beta+T)/(s-1) * [1 - ((beta+T)/(beta+T+t))^(s-1)]``

    (Schmittlein et al. 1987; Fader & Hardie 2005 note, conditional expectation), with the
    limit ``(beta+T) log(1 + t/(beta+T))`` at ``s = 1`` (evaluated via ``expm1``).
    """
    B = beta + T
    return (r + x) / (alpha + T) * B * expm1_ratio(s - 1.0, np.log1p(t / B))


def phi_alive(model: str, th: Mapping[str, np.ndarray], x, T, t) -> np.ndarray:
    """Expected purchases in ``(T, T+t]`` given alive at ``T`` (elementwise)."""
    x = np.asarray(x, dtype=np.float64)
    T = np.asarray(T, dtype=np.float64)
    t = np.asarray(t, dtype=np.float64)
    if model == "bgnbd":
        return _bg_phi(th["r"], th["alpha"], th["a"], th["b"] + x, x, T, t)
    if model == "mbgnbd":
        return _bg_phi(th["r"], th["alpha"], th["a"], th["b"] + x + 1.0, x, T, t)
    if model == "pareto_nbd":
        return _pareto_phi(th["r"], th["alpha"], th["s"], th["beta"], x, T, t)
    raise ModelSpecificationError(f"unknown purchase model {model!r}")


def spend_mean(th: Mapping[str, np.ndarray], x, zbar) -> np.ndarray:
    """Gamma-Gamma conditional mean spend per purchase (Fader & Hardie 2013, eq. 5).

    ``E[Z | x, zbar] = p (v + x zbar) / (p x + q - 1)``: a weighted average of the
    population mean ``p v / (q - 1)`` (which it equals at ``x = 0``) and ``zbar``.
    """
    p, q, v = th["p"], th["q"], th["v"]
    x = np.asarray(x, dtype=np.float64)
    return p * (v + x * np.asarray(zbar, dtype=np.float64)) / (p * x + q - 1.0)


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
        Customer histories ``x, t_x, T``.

    Returns
    -------
    xarray.DataArray
        Dims ``(chain, draw, customer)``; ``customer`` coordinate = ``rfm.customer_id``.
    """
    dp = DrawParams(params, "purchase")
    cols = customer_columns(dp, rfm)
    th = dp.columns(cols)
    out = p_alive(dp.model, th, rfm.frequency, rfm.recency, rfm.T)
    return dp.wrap(out, "customer", rfm.customer_id).rename("p_alive")


def expected_purchases(params: xr.Dataset, rfm: RFMData, horizon: float) -> xr.DataArray:
    """Expected repeat purchases in ``(T, T + horizon]`` given each history, per draw.

    ``E[X | x, t_x, T] = P(alive) * Phi(horizon | x, T)``; this is FHL (2005) eq. (10) for
    BG/NBD, Batislam et al. (2007) for MBG/NBD and the Pareto/NBD conditional
    expectation (module docstring).

    Parameters
    ----------
    params : xarray.Dataset
        Purchase-model draws.
    rfm : RFMData
        Histories.
    horizon : float
        Length of the prediction window in the model's time unit (``rfm.time_unit``).

    Returns
    -------
    xarray.DataArray
        Dims ``(chain, draw, customer)``.
    """
    h = _check_horizon(horizon)
    dp = DrawParams(params, "purchase")
    cols = customer_columns(dp, rfm)
    th = dp.columns(cols)
    x, t_x, T = rfm.frequency, rfm.recency, rfm.T
    out = p_alive(dp.model, th, x, t_x, T) * phi_alive(dp.model, th, x, T, h)
    da = dp.wrap(out, "customer", rfm.customer_id).rename("expected_purchases")
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
    out = p_alive(dp.model, th, 0.0, 0.0, 0.0) * phi_alive(dp.model, th, 0.0, 0.0, h)
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
        Dims ``(chain, draw, customer)`` (with ``rfm``) or ``(chain, draw)``.
    """
    dp = DrawParams(spend_params, "spend")
    if rfm is None:
        if segment is None:
            raise ValueError("expected_spend needs either rfm or segment.")
        th = dp.columns(dp.positions([str(segment)]))
        out = spend_mean(th, 0.0, 0.0)
        return dp.wrap(out, "segment", [str(segment)]).isel(segment=0, drop=True).rename(
            "expected_spend"
        )
    th = dp.columns(customer_columns(dp, rfm))
    out = spend_mean(th, rfm.frequency, rfm.monetary_value)
    return dp.wrap(out, "customer", rfm.customer_id).rename("expected_spend")
