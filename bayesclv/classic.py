"""Classic references: maximum-likelihood fits and the textbook CLV formulas.

Maximum likelihood
    :func:`fit_bgnbd`, :func:`fit_mbgnbd`, :func:`fit_pareto_nbd` and
    :func:`fit_gamma_gamma` maximise the log-densities of :mod:`bayesclv.likelihoods`
    (the same functions the Bayesian models use; nothing is re-implemented here) with
    ``scipy.optimize`` over the logarithms of the parameters, and return an
    :class:`MLEResult` with standard errors from a finite-difference Hessian. They are
    the frequentist baselines against which the Bayesian fits are compared, and they
    reproduce the published CDNOW estimates.

Textbook formulas
    :func:`textbook_clv`, :func:`retention_clv`, :func:`historical_clv` and
    :func:`textbook_clv_rfm` are the simple formulas found in marketing textbooks, kept
    for comparison and teaching; their assumptions are listed in each docstring.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import pandas as pd
from scipy import optimize

from bayesclv.data import RFMData
from bayesclv.errors import DataValidationError, ModelSpecificationError
from bayesclv.families import get_family

__all__ = [
    "MLEResult",
    "fit_mle",
    "fit_bgnbd",
    "fit_mbgnbd",
    "fit_pareto_nbd",
    "fit_gamma_gamma",
    "textbook_clv",
    "retention_clv",
    "historical_clv",
    "textbook_clv_rfm",
]

#: Bounds on the log of every parameter: keeps the optimiser where the log-densities are
#: finite (parameters between about 1e-9 and 1e9), far outside any estimate seen in practice.
LOG_BOUND = 20.0


@dataclass(frozen=True)
class MLEResult:
    """A maximum-likelihood fit.

    Attributes
    ----------
    model : str
        ``"bgnbd"``, ``"mbgnbd"``, ``"pareto_nbd"`` or ``"gamma_gamma"``.
    params : dict
        Estimates, in the papers' symbols (``r, alpha, a, b`` ...).
    log_likelihood : float
        Maximised (weighted) log-likelihood.
    se_log : dict
        Standard errors of the log-parameters, from the inverse of the finite-difference
        Hessian of the negative log-likelihood on the log scale (NaN where the Hessian is
        not positive definite). For real-valued parameters (a family's ``real_params``,
        e.g. covariate coefficients) the standard error of the parameter itself.
    se : dict
        Delta-method standard errors on the natural scale, ``param * se_log`` (``se_log``
        itself for real-valued parameters).
    converged : bool
        The optimiser reported success, the estimate is inside the bounds and the Hessian
        is positive definite.
    n_customers : int
        Customers used (for Gamma-Gamma: repeat buyers only).
    message : str
        The optimiser's message.
    """

    model: str
    params: dict[str, float]
    log_likelihood: float
    se_log: dict[str, float]
    se: dict[str, float]
    converged: bool
    n_customers: int
    message: str = ""
    covariance_log: np.ndarray = field(default=None, repr=False, compare=False)

    def __getitem__(self, name: str) -> float:
        return self.params[name]


def _hessian(f: Callable[[np.ndarray], float], x: np.ndarray, step: float) -> np.ndarray:
    """Central-difference Hessian (step on the log scale)."""
    k = x.shape[0]
    hess = np.empty((k, k))
    f0 = f(x)
    eye = np.eye(k) * step
    for i in range(k):
        hess[i, i] = (f(x + eye[i]) - 2.0 * f0 + f(x - eye[i])) / step**2
        for j in range(i):
            hess[i, j] = hess[j, i] = (
                f(x + eye[i] + eye[j])
                - f(x + eye[i] - eye[j])
                - f(x - eye[i] + eye[j])
                + f(x - eye[i] - eye[j])
            ) / (4.0 * step**2)
    return hess


def _weights(weights: Any, n: int) -> np.ndarray:
    if weights is None:
        return np.ones(n)
    w = np.asarray(weights, dtype=np.float64)
    if w.shape != (n,):
        raise DataValidationError(
            f"weights must have one value per customer ({n}), got shape {w.shape}."
        )
    bad = ~np.isfinite(w) | (w < 0)
    if bad.any():
        raise DataValidationError(
            f"weights must be finite and >= 0; {int(bad.sum())} are not (rows "
            f"{np.flatnonzero(bad)[:5].tolist()})."
        )
    if w.sum() <= 0:
        raise DataValidationError("weights sum to 0: no customer would count.")
    return w


def _fit(
    model: str,
    names: tuple[str, ...],
    logp: Callable[..., np.ndarray],
    data: tuple[np.ndarray, ...],
    w: np.ndarray,
    initial: dict[str, float] | None,
    hessian_step: float,
    real: tuple[str, ...] = (),
) -> MLEResult:
    # ``real``: parameters that are real-valued (e.g. covariate coefficients), optimised
    # as they are; every other parameter is positive and optimised on the log scale.
    is_real = np.array([k in real for k in names], dtype=bool)
    x0 = np.zeros(len(names))
    if initial is not None:
        unknown = set(initial) - set(names)
        if unknown:
            raise ModelSpecificationError(
                f"initial has unknown parameters {sorted(unknown)}; {model} has {list(names)}."
            )
        x0 = np.array([initial.get(k, 0.0) if r else np.log(initial.get(k, 1.0))
                       for k, r in zip(names, is_real, strict=True)])  # fmt: skip
    w_total = float(w.sum())

    def natural(theta: np.ndarray) -> np.ndarray:
        return np.where(is_real, theta, np.exp(np.where(is_real, 0.0, theta)))

    def neg_ll(theta: np.ndarray) -> float:
        with np.errstate(all="ignore"):
            value = -float(np.sum(w * logp(*natural(theta), *data)))
        # A non-finite value only happens at absurd parameters; a large finite value keeps
        # the line search inside the region where the density is defined.
        return value if np.isfinite(value) else 1e300

    # Scaled by the total weight so the optimiser's tolerances mean the same for any n.
    res = optimize.minimize(
        lambda th: neg_ll(th) / w_total,
        x0,
        method="L-BFGS-B",
        jac="2-point",
        bounds=[(-LOG_BOUND, LOG_BOUND)] * len(names),
        options={"maxiter": 2000, "ftol": 1e-15, "gtol": 1e-9},
    )
    theta = res.x
    hess = _hessian(neg_ll, theta, hessian_step)
    try:
        np.linalg.cholesky(hess)
        cov = np.linalg.inv(hess)
        se_log = np.sqrt(np.diag(cov))
        pos_def = True
    except np.linalg.LinAlgError:
        cov = np.full_like(hess, np.nan)
        se_log = np.full(len(names), np.nan)
        pos_def = False
    inside = bool(np.all(np.abs(theta) < LOG_BOUND - 1e-6))
    est = natural(theta)
    se = np.where(is_real, se_log, est * se_log)  # a real parameter's se is its own
    return MLEResult(
        model=model,
        params={k: float(v) for k, v in zip(names, est, strict=True)},
        log_likelihood=-neg_ll(theta),
        se_log={k: float(v) for k, v in zip(names, se_log, strict=True)},
        se={k: float(v) for k, v in zip(names, se, strict=True)},
        converged=bool(res.success) and inside and pos_def,
        n_customers=int(np.count_nonzero(w)),
        message=str(res.message),
        covariance_log=cov,
    )


def fit_mle(
    model,
    rfm: RFMData,
    *,
    weights: Any = None,
    initial: dict[str, float] | None = None,
    hessian_step: float = 1e-3,
) -> MLEResult:
    """Maximum likelihood of any family (a name or a family object), all customers pooled.

    The family says which customers and columns enter (``model_rows``: e.g. Gamma-Gamma
    keeps repeat buyers with a positive mean spend, and warns about the ones it leaves
    out) and its log-likelihood is maximised over the logarithms of its paper parameters.
    """
    fam = get_family(model)
    if not isinstance(rfm, RFMData) and fam.kind != "contractual":
        raise DataValidationError(
            f"expected an RFMData, got {type(rfm).__name__}; build one with "
            "RFMData.from_frame(...) or rfm_summary(...)."
        )
    fam = fam.resolve(rfm)
    w = _weights(weights, rfm.n_customers)
    try:
        rows = fam.model_rows(rfm)
    except ModelSpecificationError as exc:
        raise DataValidationError(f"fit_mle({fam.name!r}): {exc}") from None
    for message in rows.messages:
        # the Bayesian builder leaves the same customers out, so both fits use the same data
        warnings.warn(f"fit_mle({fam.name!r}): {message}.", UserWarning, stacklevel=3)
    view = fam.mle_view()
    # Optional family hooks (covariate families): ``real_params`` are optimised as they
    # are instead of on the log scale; ``report_mle(res)`` maps the result from the scale
    # the view optimises on (e.g. standardised covariates) to the family's own.
    res = _fit(fam.name, view.params, view.logp, rows.columns, w[rows.mask], initial,
               hessian_step, tuple(getattr(view, "real_params", ())))  # fmt: skip
    report = getattr(view, "report_mle", None)
    if report is not None:
        res = report(res)
    fixed = fam.fixed_params()
    if fixed:  # structural constants (CNBD-k's k): reported with the estimates, no SE
        res = replace(res, params={**res.params, **fixed})
    return res


def fit_bgnbd(
    rfm: RFMData,
    *,
    weights: Any = None,
    initial: dict[str, float] | None = None,
    hessian_step: float = 1e-3,
) -> MLEResult:
    """Maximum-likelihood BG/NBD (FHL 2005, eq. 6 via :func:`~bayesclv.likelihoods.bgnbd_logp`).

    Parameters
    ----------
    rfm : RFMData
        All customers are pooled (fit one segment with ``rfm.subset(...)``).
    weights : array of float, shape (n,), optional
        Case weights, e.g. the number of customers sharing a row of a grouped summary.
    initial : dict, optional
        Starting values (default all 1).
    hessian_step : float
        Step of the central differences on the log scale.

    Examples
    --------
    On CDNOW (2,357 customers, weeks) this gives r=0.243, alpha=4.414, a=0.793,
    b=2.426 and log-likelihood -9582.4, as published by Fader, Hardie and Lee (2005).
    """
    return fit_mle("bgnbd", rfm, weights=weights, initial=initial, hessian_step=hessian_step)


def fit_mbgnbd(
    rfm: RFMData,
    *,
    weights: Any = None,
    initial: dict[str, float] | None = None,
    hessian_step: float = 1e-3,
) -> MLEResult:
    """Maximum-likelihood MBG/NBD (Batislam et al. 2007), as :func:`fit_bgnbd`."""
    return fit_mle("mbgnbd", rfm, weights=weights, initial=initial, hessian_step=hessian_step)


def fit_pareto_nbd(
    rfm: RFMData,
    *,
    weights: Any = None,
    initial: dict[str, float] | None = None,
    hessian_step: float = 1e-3,
) -> MLEResult:
    """Maximum-likelihood Pareto/NBD (Schmittlein, Morrison & Colombo 1987).

    Uses :func:`~bayesclv.likelihoods.pareto_nbd_logp`. On CDNOW this gives r=0.553,
    alpha=10.58, s=0.606, beta=11.67 and log-likelihood -9595.0 (Fader, Hardie & Lee
    2005, "A note on deriving the Pareto/NBD model").
    """
    return fit_mle("pareto_nbd", rfm, weights=weights, initial=initial,
                   hessian_step=hessian_step)  # fmt: skip


def fit_gamma_gamma(
    rfm: RFMData,
    *,
    weights: Any = None,
    initial: dict[str, float] | None = None,
    hessian_step: float = 1e-3,
) -> MLEResult:
    """Maximum-likelihood Gamma-Gamma spend model on the repeat buyers.

    Only customers with ``frequency > 0`` and a positive ``monetary_value`` (the mean of
    their repeat purchases) enter, as in ``build_gamma_gamma``; repeat buyers whose mean
    spend is 0 are left out with a warning. ``n_customers`` counts those used. Assumes
    spend is independent of the purchase process (check the correlation of ``frequency``
    and ``monetary_value``).
    On CDNOW (946 repeat buyers) this gives p=6.25, q=3.74, v=15.44 (Fader & Hardie
    2013, "The Gamma-Gamma model of monetary value").
    """
    return fit_mle("gamma_gamma", rfm, weights=weights, initial=initial,
                   hessian_step=hessian_step)  # fmt: skip


# --------------------------------------------------------------------------- textbook CLV
def _nonneg(name: str, value: Any) -> np.ndarray:
    arr = np.asarray(value, dtype=np.float64)
    if np.any(~np.isfinite(arr) | (arr < 0)):
        raise ModelSpecificationError(f"{name} must be finite and >= 0, got {value!r}.")
    return arr


def textbook_clv(
    avg_purchase_value: Any,
    purchases_per_period: Any,
    expected_lifetime_periods: Any,
    margin: Any = 1.0,
) -> Any:
    """Textbook CLV: ``margin * avg_purchase_value * purchases_per_period * lifetime``.

    Assumptions: a constant purchase rate and purchase value for as long as the customer
    stays, a known expected lifetime, no discounting, no uncertainty. Arguments broadcast
    (NumPy); a scalar comes back as a float.

    Examples
    --------
    >>> textbook_clv(50.0, 4.0, 3.0, margin=0.2)   # 50 per order, 4 a year, 3 years
    120.0
    """
    value = (
        _nonneg("margin", margin)
        * _nonneg("avg_purchase_value", avg_purchase_value)
        * _nonneg("purchases_per_period", purchases_per_period)
        * _nonneg("expected_lifetime_periods", expected_lifetime_periods)
    )
    return float(value) if value.ndim == 0 else value


def retention_clv(margin: Any, retention: Any, discount_rate: Any) -> Any:
    """Retention-based CLV ``m r / (1 + d - r)`` (Gupta & Lehmann 2003).

    The present value of a margin ``m`` per period, received at the end of each period
    the customer is retained (probability ``retention`` per period, constant), discounted
    at ``discount_rate`` per period: ``sum_{t>=1} m r^t / (1+d)^t``. The margin of the
    current period is not included (add ``m`` for "with the current period").
    ``retention`` and ``discount_rate`` must refer to the same period.

    Examples
    --------
    >>> round(retention_clv(100.0, 0.8, 0.1), 6)   # 100 * 0.8 / 0.3
    266.666667
    """
    m = _nonneg("margin", margin)
    r = np.asarray(retention, dtype=np.float64)
    d = np.asarray(discount_rate, dtype=np.float64)
    if np.any(~np.isfinite(r) | (r < 0) | (r > 1)):
        raise ModelSpecificationError(f"retention must be in [0, 1], got {retention!r}.")
    if np.any(~np.isfinite(d) | (d < 0)):
        raise ModelSpecificationError(f"discount_rate must be >= 0, got {discount_rate!r}.")
    if np.any(1.0 + d - r <= 0):
        raise ModelSpecificationError(
            "retention_clv is infinite with retention == 1 and discount_rate == 0; use a "
            "positive discount rate or a retention below 1."
        )
    value = m * r / (1.0 + d - r)
    return float(value) if value.ndim == 0 else value


def historical_clv(
    data: RFMData | pd.DataFrame,
    *,
    margin: float = 1.0,
    include_first_purchase: bool = True,
    customer_id: str = "customer_id",
    amount: str = "amount",
) -> pd.Series:
    """Historical CLV: what each customer has spent so far, times ``margin``.

    Parameters
    ----------
    data : RFMData or transaction DataFrame
        From an ``RFMData`` the spend is ``frequency * monetary_value`` (the repeat
        purchases) plus ``first_purchase_value`` when ``include_first_purchase``; that
        needs ``first_purchase_value`` (a DataValidationError says so when it is
        missing). From a transaction log it is the sum of ``amount`` per customer (every
        row, first purchase included; filter the log first to cut at a date).
    margin : float
        Fraction of spend that is profit.

    Returns
    -------
    pandas.Series indexed by customer id, named ``"historical_clv"``.

    Notes
    -----
    Backward-looking only: it says nothing about future purchases, and it rewards old
    customers over new ones of equal value.
    """
    m = float(_nonneg("margin", margin))
    if isinstance(data, RFMData):
        spend = data.frequency * data.monetary_value
        if include_first_purchase:
            if data.first_purchase_value is None:
                raise DataValidationError(
                    "historical_clv: this RFMData has no first_purchase_value, so the first "
                    "purchase cannot be counted. Pass include_first_purchase=False to count "
                    "repeat purchases only, or build the summary with first-purchase values."
                )
            spend = spend + data.first_purchase_value
        index = pd.Index(data.customer_id, name="customer_id")
        return pd.Series(m * spend, index=index, name="historical_clv")
    if isinstance(data, pd.DataFrame):
        missing = [c for c in (customer_id, amount) if c not in data.columns]
        if missing:
            raise DataValidationError(
                f"historical_clv: missing columns {missing} in the transaction log; pass "
                f"customer_id=... and amount=... with the right names."
            )
        if data[amount].isna().any():
            bad = data.index[data[amount].isna().to_numpy()][:5].tolist()
            raise DataValidationError(
                f"historical_clv: column '{amount}' has {int(data[amount].isna().sum())} "
                f"missing values (rows {bad}); fill or drop them first."
            )
        totals = data.groupby(customer_id, sort=True, observed=True)[amount].sum()
        totals.index.name = "customer_id"
        return (m * totals).rename("historical_clv")
    raise DataValidationError(
        f"historical_clv expects an RFMData or a DataFrame, got {type(data).__name__}."
    )


def textbook_clv_rfm(
    rfm: RFMData,
    *,
    retention: float,
    retention_period: float,
    margin: float = 1.0,
    purchase_rate: str = "repeat",
) -> pd.Series:
    """The textbook formula applied to each customer of an ``RFMData``.

    ``CLV_i = margin * value_i * rate_i * lifetime``, with

    * ``rate_i`` per ``rfm.time_unit``: ``"repeat"`` (default) uses ``frequency / T``,
      the repeat purchases per unit of time since acquisition, which is the rate of the
      Poisson purchase process the BTYD models assume; ``"all"`` uses
      ``(frequency + 1) / T``, counting the acquisition purchase, which overstates the
      rate of recently acquired customers (``T`` small) and is kept for comparison. NaN
      where ``T == 0``.
    * ``value_i``: with ``"repeat"``, ``monetary_value`` (mean repeat purchase; its rate
      is 0 where there was none, so those customers get 0); with ``"all"``, the mean over
      all purchases ``(frequency * monetary_value + first_purchase_value) /
      (frequency + 1)``, which needs ``first_purchase_value``.
    * ``lifetime = retention_period / (1 - retention)`` time units: the mean of a
      geometric lifetime when a cohort keeps the fraction ``retention`` of its customers
      every ``retention_period`` (e.g. ``retention=0.6, retention_period=52`` for a 60%
      annual retention measured in weeks). Geometric lifetimes are memoryless, so this is
      also every customer's expected *remaining* lifetime.

    Assumptions: every customer has the same retention (no "alive" probability per
    customer), constant rate and value, no discounting. Compare with the model-based CLV.

    Returns
    -------
    pandas.Series indexed by customer id, named ``"textbook_clv"``.
    """
    if not 0 <= retention < 1:
        raise ModelSpecificationError(
            f"retention must be in [0, 1) (1 means an infinite lifetime), got {retention!r}."
        )
    if not retention_period > 0:
        raise ModelSpecificationError(
            f"retention_period must be > 0 (in {rfm.time_unit}s), got {retention_period!r}."
        )
    x = rfm.frequency.astype(np.float64)
    T = rfm.T
    with np.errstate(divide="ignore", invalid="ignore"):
        if purchase_rate == "repeat":
            rate = np.where(T > 0, x / T, np.nan)
            value = rfm.monetary_value
        elif purchase_rate == "all":
            if rfm.first_purchase_value is None:
                raise DataValidationError(
                    "textbook_clv_rfm(purchase_rate='all') needs first_purchase_value to "
                    "average over all purchases; use purchase_rate='repeat' instead."
                )
            rate = np.where(T > 0, (x + 1.0) / T, np.nan)
            value = (x * rfm.monetary_value + rfm.first_purchase_value) / (x + 1.0)
        else:
            raise ModelSpecificationError(
                f"purchase_rate must be 'repeat' or 'all', got {purchase_rate!r}."
            )
    lifetime = retention_period / (1.0 - retention)
    clv = float(_nonneg("margin", margin)) * value * rate * lifetime
    return pd.Series(clv, index=pd.Index(rfm.customer_id, name="customer_id"), name="textbook_clv")
