"""Contractual families: shifted-beta-geometric (sBG) and beta-discrete-Weibull (BdW).

Model (Fader, Hardie, Liu, Davin & Steenburgh 2018): a subscriber who joined at time 0
renews or leaves at the end of every period. Each subscriber has a churn probability
``theta ~ Beta(alpha, beta)``; their lifetime ``T`` (periods until they leave) is
discrete Weibull, ``P(T > t | theta) = (1 - theta)^(t^c)``. Mixing over ``theta``:

``S(t) = P(T > t) = B(alpha, beta + t^c) / B(alpha, beta)``,
``P(T = t) = S(t-1) - S(t)``, ``r(t) = S(t) / S(t-1)`` (retention in period ``t``).

``c = 1`` is the sBG (Fader & Hardie 2007): a constant churn probability per subscriber,
``S(t) = B(alpha, beta+t)/B(alpha, beta)``, ``P(T=t) = B(alpha+1, beta+t-1)/B(alpha,
beta)`` and ``r(t) = (beta+t-1)/(alpha+beta+t-1)``. ``c < 1`` makes each subscriber's
churn probability fall with tenure, ``c > 1`` rise. One module, two registry entries.

Data (:class:`ContractData`): one row per subscriber, their ``tenure`` (periods
observed) and whether they ``churned`` (``T = tenure``) or are still active (``T >
tenure``, censored). :meth:`ContractData.from_cohort` builds it from a cohort's
survival table. The likelihood is ``P(T = t)`` for churners and ``S(t)`` for the
censored; the one builder takes it (``build_model("sbg", data, priors, pooling)``).

Predictions for an active subscriber of tenure ``n`` (given ``T > n``): next-period
retention ``S(n+1)/S(n)``, survival ``S(n+k)/S(n)``, the expected residual lifetime
``sum_{k>=1} S(n+k)/S(n)`` (periods still to be renewed; infinite when ``c alpha <= 1``,
e.g. every sBG with ``alpha <= 1``) and the discounted expected residual lifetime

``DERL(d) = sum_{k>=1} S(n+k)/S(n) / (1+d)^(k-1)``

(Fader & Hardie 2010, eq. 6, for a subscriber about to make their next renewal; the
payment of that renewal is undiscounted), with ``d`` the discount rate per period.
Churned subscribers get 0. These are per posterior draw in :func:`retention_rate`,
:func:`survival`, :func:`expected_residual_lifetime` and :func:`expected_derl`.

References
----------
Fader, P. S. and Hardie, B. G. S. (2007). "How to project customer retention". Journal
of Interactive Marketing 21(1), 76-90: eqs. (3)-(5) (sBG), the "regular" and "high
end" cohorts (alpha 0.688, beta 1.182; alpha 0.668, beta 3.806).
Fader, P. S. and Hardie, B. G. S. (2010). "Customer-base valuation in a contractual
setting: the perils of ignoring heterogeneity". Marketing Science 29(1), 85-93: eq. (6)
(DERL).
Fader, P. S., Hardie, B. G. S., Liu, Y., Davin, J. and Steenburgh, T. (2018). "How to
project customer retention revisited: the role of duration dependence". Journal of
Interactive Marketing 43, 1-16 (BdW).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from typing import Any

import numpy as np
import pandas as pd
import scipy.special as sps

from bayesclv.data import DAYS_PER_UNIT
from bayesclv.errors import DataValidationError, ModelSpecificationError, describe_rows
from bayesclv.families.base import Family, ModelRows
from bayesclv.families.sampling import validate_positive
from bayesclv.ops import ops_for
from bayesclv.priors import CVPrior, NormalPrior

__all__ = [
    "ContractData",
    "ContractualFamily",
    "SBG",
    "BDW",
    "SBGParams",
    "BdWParams",
    "SBGPriors",
    "BdWPriors",
    "sbg_logp",
    "bdw_logp",
    "retention_rate",
    "survival",
    "expected_residual_lifetime",
    "expected_derl",
    "simulate_contracts",
]

#: Exact terms of the residual-lifetime series before the tail is integrated.
_HEAD = 2048
#: Terms evaluated per array operation.
_CHUNK = 512
#: log of the relative size below which a discounted term is negligible (e^-38 ~ 3e-17).
_NEGLIGIBLE = 38.0
#: Most terms summed one by one when the tail cannot be integrated (c alpha <= 1).
_MAX_TERMS = 2_000_000
#: Gauss-Jacobi nodes of the tail integral.
_NODES = 48


# --------------------------------------------------------------------------- data
def _readonly(values, dtype, name: str) -> np.ndarray:
    arr = np.array(values, dtype=dtype, copy=True)
    if arr.ndim != 1:
        raise DataValidationError(f"ContractData: '{name}' must be one-dimensional.")
    arr.setflags(write=False)
    return arr


@dataclass(frozen=True, eq=False)
class ContractData:
    """Individual subscription records: the input of the contractual families.

    Parameters
    ----------
    customer_id : array of hashable, shape (n,)
        Unique subscriber ids.
    tenure : array of int, shape (n,)
        Periods observed since joining (time 0): for a churner the period at whose end
        they left (lifetime ``T = tenure >= 1``), for an active subscriber the periods
        they have renewed through so far (``T > tenure``, ``tenure >= 0``).
    churned : array of bool, shape (n,)
        True where the subscriber has left.
    segment : array of int, shape (n,), optional
        Segment code of each subscriber (default all 0).
    segment_names : tuple of str
        Names of the segments (default ``("all",)``).
    time_unit : str
        The period: one of ``"day"``, ``"week"``, ``"month"``, ``"year"``.
    """

    customer_id: np.ndarray
    tenure: np.ndarray
    churned: np.ndarray
    segment: np.ndarray | None = None
    segment_names: tuple[str, ...] = ("all",)
    time_unit: str = "year"
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        set_ = object.__setattr__
        ids = _readonly(self.customer_id, None, "customer_id")
        set_(self, "customer_id", ids)
        n = ids.shape[0]
        if n == 0:
            raise DataValidationError("ContractData: no subscribers.")
        if pd.Index(ids).has_duplicates:
            dup = ids[pd.Index(ids).duplicated(keep=False)]
            raise DataValidationError(
                f"ContractData: 'customer_id' must be unique; duplicated ids "
                f"{describe_rows(dup)}."
            )
        raw = np.asarray(self.tenure)
        if raw.dtype.kind not in "iuf":
            raise DataValidationError(
                f"ContractData: 'tenure' must hold whole numbers of periods, got "
                f"{raw.dtype} values."
            )
        bad = ~np.isfinite(raw.astype(np.float64)) | (raw != np.round(raw)) | (raw < 0)
        if bad.any():
            raise DataValidationError(
                f"ContractData: 'tenure' must be a whole number >= 0 of periods; "
                f"{int(bad.sum())} subscribers are not ({describe_rows(ids[bad])})."
            )
        set_(self, "tenure", _readonly(raw, np.int64, "tenure"))
        churned = np.asarray(self.churned)
        if churned.dtype != bool:
            if not np.isin(churned, (0, 1)).all():
                raise DataValidationError(
                    "ContractData: 'churned' must be booleans (or 0/1)."
                )
            churned = churned.astype(bool)
        set_(self, "churned", _readonly(churned, bool, "churned"))
        seg = np.zeros(n, dtype=np.int64) if self.segment is None else self.segment
        set_(self, "segment", _readonly(seg, np.int64, "segment"))
        set_(self, "segment_names", tuple(str(s) for s in self.segment_names))
        for name in ("tenure", "churned", "segment"):
            if getattr(self, name).shape[0] != n:
                raise DataValidationError(
                    f"ContractData: '{name}' has {getattr(self, name).shape[0]} rows but "
                    f"'customer_id' has {n}."
                )
        bad = self.churned & (self.tenure < 1)
        if bad.any():
            raise DataValidationError(
                f"ContractData: a churner's tenure is the period they left in (>= 1); "
                f"{int(bad.sum())} churners have tenure 0 ({describe_rows(ids[bad])})."
            )
        k = len(self.segment_names)
        if k == 0 or len(set(self.segment_names)) != k:
            raise DataValidationError(
                f"ContractData: 'segment_names' must be non-empty and unique, got "
                f"{self.segment_names}."
            )
        bad = (self.segment < 0) | (self.segment >= k)
        if bad.any():
            raise DataValidationError(
                f"ContractData: 'segment' codes must be in 0..{k - 1}; "
                f"{int(bad.sum())} are not ({describe_rows(ids[bad])})."
            )
        if self.time_unit not in DAYS_PER_UNIT:
            raise DataValidationError(
                f"ContractData: time_unit={self.time_unit!r}; use one of "
                f"{sorted(DAYS_PER_UNIT)}."
            )

    @property
    def n_customers(self) -> int:
        return int(self.customer_id.shape[0])

    @property
    def n_segments(self) -> int:
        return len(self.segment_names)

    def segment_sizes(self) -> pd.Series:
        """Subscribers per segment (every named segment, zeros included)."""
        counts = np.bincount(self.segment, minlength=self.n_segments)
        return pd.Series(counts, index=pd.Index(self.segment_names, name="segment"),
                         name="customers")  # fmt: skip

    def to_frame(self) -> pd.DataFrame:
        """One row per subscriber, indexed by id."""
        return pd.DataFrame(
            {
                "tenure": self.tenure,
                "churned": self.churned,
                "segment": pd.Categorical.from_codes(
                    self.segment, categories=list(self.segment_names)
                ),
            },
            index=pd.Index(self.customer_id, name="customer_id"),
        )

    @classmethod
    def from_cohort(
        cls,
        survival: Sequence[float],
        size: int,
        *,
        segment: str = "all",
        time_unit: str = "year",
    ) -> ContractData:
        """Records of one cohort of ``size`` subscribers from its survival table.

        ``survival[t]`` is the share still active at the end of period ``t``, starting
        with ``survival[0]`` = 1 (fractions) or 100 (percentages). ``round(size *
        (S(t-1) - S(t)))`` subscribers churn in period ``t`` (tenure ``t``) and the
        survivors of the last period are active with tenure ``len(survival) - 1``
        (counts are rounded to whole subscribers: published shares are rounded too).
        """
        return cls.from_cohorts({segment: (survival, size)}, time_unit=time_unit)

    @classmethod
    def from_cohorts(
        cls, cohorts: Mapping[str, tuple[Sequence[float], int]], *, time_unit: str = "year"
    ) -> ContractData:
        """Several cohorts, one segment each: ``{name: (survival, size)}`` (see
        :meth:`from_cohort`)."""
        tenure, churned, seg = [], [], []
        for code, (name, (surv, size)) in enumerate(cohorts.items()):
            s = np.asarray(surv, dtype=np.float64)
            if s.ndim != 1 or s.size < 2 or s[0] not in (1.0, 100.0):
                raise DataValidationError(
                    f"cohort {name!r}: survival must start with 1 (or 100 %) at period 0 "
                    f"and cover at least one period, got {list(s)[:5]}."
                )
            counts = np.round(s / s[0] * int(size))
            lost = -np.diff(counts)
            if np.any(lost < 0):
                raise DataValidationError(
                    f"cohort {name!r}: survival must not increase, got {list(s)}."
                )
            periods = np.arange(1, s.size)
            tenure += [np.repeat(periods, lost.astype(np.int64)),
                       np.full(int(counts[-1]), s.size - 1)]  # fmt: skip
            churned += [np.ones(int(lost.sum()), bool), np.zeros(int(counts[-1]), bool)]
            seg.append(np.full(int(counts[0]), code))
        tenure_a = np.concatenate(tenure)
        return cls(
            customer_id=np.arange(tenure_a.size, dtype=np.int64),
            tenure=tenure_a,
            churned=np.concatenate(churned),
            segment=np.concatenate(seg),
            segment_names=tuple(cohorts),
            time_unit=time_unit,
        )


# --------------------------------------------------------------------------- priors
def _check_prior_fields(obj) -> None:
    for f in fields(obj):
        value = getattr(obj, f.name)
        if f.name == "segment_sigma":
            if not (math.isfinite(value) and value > 0):
                raise ModelSpecificationError(
                    f"{type(obj).__name__}.segment_sigma must be finite and > 0, got {value}."
                )
        elif not isinstance(value, NormalPrior | CVPrior):
            raise ModelSpecificationError(
                f"{type(obj).__name__}.{f.name} must be a NormalPrior, got "
                f"{type(value).__name__}."
            )


@dataclass(frozen=True)
class SBGPriors:
    """Priors of the sBG model, on the mean and concentration of the churn Beta.

    - ``logit_churn`` = logit(alpha / (alpha + beta)), the churn probability of the
      first period (the cohort's mean). Default Normal(logit 0.2, 1.5): from about 1%
      to 85% per period within two standard deviations.
    - ``log_churn_concentration`` = log(alpha + beta), how alike subscribers' churn
      probabilities are; small values make retention rise steeply with tenure (the
      sorting effect). Default Normal(log 3, 1.5): 0.15 to 60.
    - ``segment_sigma``: HalfNormal scale of the between-segment sd under partial
      pooling. Default 0.5.

    Mean and concentration because the data pin down the first-period churn (their
    ratio) far better than the sum; the two are nearly orthogonal. The prior predictive
    check in ``tests/test_family_sbg.py`` shows the survival curves they imply.
    """

    logit_churn: NormalPrior = NormalPrior(math.log(0.2 / 0.8), 1.5)
    log_churn_concentration: NormalPrior = NormalPrior(math.log(3.0), 1.5)
    segment_sigma: float = 0.5

    def __post_init__(self) -> None:
        _check_prior_fields(self)


@dataclass(frozen=True)
class BdWPriors:
    """Priors of the BdW model: those of :class:`SBGPriors` plus ``log_c``.

    - ``log_c``: log of the Weibull shape; 0 is the sBG (constant individual churn).
      Default Normal(0, 0.75): ``c`` from 0.22 to 4.5 within two sd, centred on
      no duration dependence.
    """

    logit_churn: NormalPrior = NormalPrior(math.log(0.2 / 0.8), 1.5)
    log_churn_concentration: NormalPrior = NormalPrior(math.log(3.0), 1.5)
    log_c: NormalPrior = NormalPrior(0.0, 0.75)
    segment_sigma: float = 0.5

    def __post_init__(self) -> None:
        _check_prior_fields(self)




def sbg_natural(logit_churn, log_churn_concentration):
    """alpha = phi kappa, beta = (1 - phi) kappa."""
    m = ops_for(logit_churn, log_churn_concentration)
    kappa = m.exp(log_churn_concentration)
    return {"alpha": m.expit(logit_churn) * kappa, "beta": m.expit(-logit_churn) * kappa}


def bdw_natural(logit_churn, log_churn_concentration, log_c):
    m = ops_for(logit_churn, log_churn_concentration, log_c)
    return {**sbg_natural(logit_churn, log_churn_concentration), "c": m.exp(log_c)}


# --------------------------------------------------------------------------- truth
@dataclass(frozen=True)
class SBGParams:
    """sBG population: churn probability ``theta ~ Beta(alpha, beta)``."""

    alpha: float
    beta: float

    def __post_init__(self) -> None:
        validate_positive(self)


@dataclass(frozen=True)
class BdWParams:
    """BdW population: ``theta ~ Beta(alpha, beta)``, ``P(T > t) = (1-theta)^(t^c)``."""

    alpha: float
    beta: float
    c: float

    def __post_init__(self) -> None:
        validate_positive(self)


# --------------------------------------------------------------------------- likelihood
def _tc(t, c):
    """``t^c`` for data ``t >= 0`` (NumPy) and ``c`` (NumPy or PyTensor); 0 at
    ``t = 0`` through a mask, so the gradient in ``c`` (``t^c log t``) stays finite."""
    t = np.asarray(t, dtype=np.float64)
    if c is None:
        return t
    m = ops_for(c)
    pos = t > 0
    return m.where(pos, m.exp(c * np.log(np.where(pos, t, 1.0))), 0.0)


#: Above this argument log-gamma differences use Stirling's series (see _log_gamma_ratio).
_STIRLING_FROM = 20.0


def _log_gamma_ratio(y, a):
    """``lgamma(y) - lgamma(y + a)`` for ``y, a > 0`` (NumPy or PyTensor).

    ``log S(t) = L(beta + t^c) - L(beta)`` with this ``L`` (``B(alpha, b) = Gamma(alpha)
    Gamma(b) / Gamma(alpha + b)``): ``L`` is of the size ``alpha log y`` while each
    ``lgamma`` is of the size ``y log y``, so the plain difference, and PyTensor's
    ``betaln`` (a sum of three ``gammaln``), lose ``eps y log y`` absolutely: all the
    digits of a churn probability ``1 - S(t)/S(t-1)`` of 1e-9 when ``beta`` is 1e6. For
    ``y >= 20`` Stirling's series is differenced term by term instead:
    ``-(y - 1/2) log1p(a/y) - a (log(y + a) - 1) - R(y + a) + R(y)``, ``R(x) = 1/(12x) -
    1/(360x^3) + 1/(1260x^5) - 1/(1680x^7)`` (Abramowitz & Stegun 6.1.40; truncation
    error below 2e-15 at ``x = 20``).
    """
    m = ops_for(y, a)
    big = y >= _STIRLING_FROM
    ys = m.maximum(y, _STIRLING_FROM)  # each branch on values where it is finite
    yd = m.minimum(y, _STIRLING_FROM)

    def R(x):
        x2 = x * x
        return (1.0 / 12.0 - (1.0 / 360.0 - (1.0 / 1260.0 - 1.0 / (1680.0 * x2)) / x2) / x2) / x

    stirling = -(ys - 0.5) * m.log1p(a / ys) - a * (m.log(ys + a) - 1.0) - R(ys + a) + R(ys)
    return m.where(big, stirling, m.gammaln(yd) - m.gammaln(yd + a))


def bdw_log_survival(alpha, beta, c, t):
    """``log S(t) = log B(alpha, beta + t^c) - log B(alpha, beta)`` (``c=None``: sBG),
    as ``L(beta + t^c) - L(beta)`` (:func:`_log_gamma_ratio`)."""
    return _log_gamma_ratio(beta + _tc(t, c), alpha) - _log_gamma_ratio(beta, alpha)


def sbg_logp(alpha, beta, tenure, churned):
    """Per-subscriber sBG log-likelihood (Fader & Hardie 2007, eqs. 3 and 5).

    Churners: ``log P(T = t) = log B(alpha+1, beta+t-1) - log B(alpha, beta) = log alpha -
    log(alpha+beta+t-1) + L(beta+t-1) - L(beta)``; active subscribers: ``log S(t)``.
    ``tenure`` and ``churned`` are NumPy data (the churn branch is computed on a safe
    tenure >= 1 everywhere and masked).
    """
    m = ops_for(alpha, beta)
    t = np.asarray(tenure, dtype=np.float64)
    gone = np.asarray(churned, dtype=bool)
    t_churn = np.where(gone, t, 1.0)
    log_pmf = (
        m.log(alpha) - m.log(alpha + beta + t_churn - 1.0)
        + _log_gamma_ratio(beta + t_churn - 1.0, alpha) - _log_gamma_ratio(beta, alpha)
    )
    return m.where(gone, log_pmf, bdw_log_survival(alpha, beta, None, t))


def bdw_logp(alpha, beta, c, tenure, churned):
    """Per-subscriber BdW log-likelihood (Fader et al. 2018).

    Churners: ``log(S(t-1) - S(t)) = log S(t-1) + log(-expm1(D))`` with ``D = log S(t) -
    log S(t-1) = L(b + dt) - L(b)``, ``b = beta + (t-1)^c``, ``dt = t^c - (t-1)^c``
    (:func:`_log_gamma_ratio`: ``D`` keeps its digits when it is tiny); active
    subscribers: ``log S(t)``.
    """
    m = ops_for(alpha, beta, c)
    t = np.asarray(tenure, dtype=np.float64)
    gone = np.asarray(churned, dtype=bool)
    t_churn = np.where(gone, t, 1.0)
    prev_c, at_c = _tc(t_churn - 1.0, c), _tc(t_churn, c)
    b = beta + prev_c
    step = _log_gamma_ratio(b + (at_c - prev_c), alpha) - _log_gamma_ratio(b, alpha)
    log_prev = _log_gamma_ratio(b, alpha) - _log_gamma_ratio(beta, alpha)
    log_pmf = log_prev + m.log(-m.expm1(step))
    return m.where(gone, log_pmf, bdw_log_survival(alpha, beta, c, t))


# --------------------------------------------------------------------------- family
class ContractualFamily(Family):
    """A model of subscription lifetimes (contractual setting) on :class:`ContractData`.

    Beyond :class:`~bayesclv.families.base.Family`: ``log_survival(th, t)`` (``log S(t)``
    for real ``t >= 0``), the per-subscriber predictions below (NumPy, ``th`` broadcast
    against ``tenure``) and ``simulate_lifetimes(pop, rng)``.
    """

    kind = "contractual"

    def model_rows(self, data) -> ModelRows:
        if not isinstance(data, ContractData):
            raise ModelSpecificationError(
                f"{self.label} models subscription records: pass a ContractData (e.g. "
                f"ContractData.from_cohort(...)), got {type(data).__name__}."
            )
        return ModelRows(
            np.ones(data.n_customers, dtype=bool),
            (data.tenure.astype(np.float64), data.churned.astype(np.float64)),
        )

    def check_options(self, data, pooling: str, parameterization: str) -> None:
        """What :func:`bayesclv.models._common.check_options` checks, for ContractData."""
        from bayesclv.models._common import PARAMETERIZATIONS, POOLINGS

        self.model_rows(data)
        if pooling not in POOLINGS:
            raise ModelSpecificationError(f"pooling={pooling!r}; use one of {POOLINGS}.")
        if parameterization not in PARAMETERIZATIONS:
            raise ModelSpecificationError(
                f"parameterization={parameterization!r}; use one of {PARAMETERIZATIONS}."
            )
        sizes = data.segment_sizes()
        empty = sizes[sizes == 0]
        if pooling != "complete" and len(empty):
            raise ModelSpecificationError(
                f"Segments with no subscribers: {list(empty.index)}. Drop them from the "
                f"segment names (or use pooling='complete')."
            )

    def log_survival(self, th: Mapping, t) -> np.ndarray:
        raise NotImplementedError

    # -- predictions (NumPy) -----------------------------------------------------------
    def retention(self, th: Mapping, t) -> np.ndarray:
        """Retention rate of period ``t >= 1``, ``r(t) = S(t)/S(t-1)``: the share of those
        active after ``t-1`` periods who renew again; also the next-period renewal
        probability of an active subscriber of tenure ``t-1``."""
        t = np.asarray(t, dtype=np.float64)
        return np.exp(self.log_survival(th, t) - self.log_survival(th, t - 1.0))

    def survival_ahead(self, th: Mapping, tenure, k) -> np.ndarray:
        """``P(T > n + k | T > n) = S(n+k)/S(n)`` for an active subscriber of tenure n."""
        n = np.asarray(tenure, dtype=np.float64)
        return np.exp(self.log_survival(th, n + k) - self.log_survival(th, n))

    def residual_lifetime(self, th: Mapping, tenure, discount_rate: float = 0.0,
                          horizon: float | None = None) -> np.ndarray:  # fmt: skip
        """``sum_{k=1}^{K} S(n+k)/S(n) (1+d)^-(k-1)``, ``K = floor(horizon)`` or infinity.

        With ``d = 0`` and no horizon this is the expected residual lifetime (infinite
        where ``c alpha <= 1``); with ``d > 0`` it is DERL (Fader & Hardie 2010, eq. 6).
        Evaluation: with ``d > 0`` the series is summed term by term until the discounted
        terms are below ``e^-38`` of the first (``ceil(38 / log(1+d))`` terms, exact).
        With ``d = 0``: infinite where ``c alpha <= 1``; else the first 2048 terms exactly
        and the rest by the family's ``_tail`` integral
        (:meth:`BetaDiscreteWeibullFamily._tail`), accepted when it agrees to 1e-9 with
        the same evaluation from twice as many exact terms (doubled until it does, up to
        ``_MAX_TERMS``; NaN with a warning beyond).
        """
        d = float(discount_rate)
        if not (math.isfinite(d) and d >= 0):
            raise ValueError(f"discount_rate must be a finite number >= 0, got {discount_rate!r}.")
        log_z = -math.log1p(d)
        n = np.asarray(tenure, dtype=np.float64)
        shape = np.broadcast_shapes(n.shape, *(np.shape(v) for v in th.values()))
        # flat copies: masks below are 1-D whatever the shape of the inputs
        n = np.broadcast_to(n, shape).ravel()
        th = {k: np.broadcast_to(v, shape).ravel() for k, v in th.items()}
        q = self._tail_exponent(th)
        log_s0 = self.log_survival(th, n)

        def log_g(k, sel):
            """log of the discounted terms at ``k`` (trailing axis) for elements ``sel``."""
            sub = {key: v[sel][..., None] for key, v in th.items()}
            ls = self.log_survival(sub, n[sel][..., None] + k)
            with np.errstate(invalid="ignore"):
                return ls - log_s0[sel][..., None] + (k - 1.0) * log_z

        def head(k0, k1, sel):
            total = np.zeros(int(np.count_nonzero(sel)))
            for a in range(k0, k1, _CHUNK):
                ks = np.arange(a, min(a + _CHUNK, k1), dtype=np.float64)
                total += np.exp(log_g(ks, sel)).sum(-1)
            return total

        everything = np.ones(n.shape, dtype=bool)
        if horizon is not None:
            K = int(np.floor(float(horizon) + 1e-9))
            return head(1, K + 1, everything).reshape(shape) if K > 0 else np.zeros(shape)
        need = math.inf if d == 0 else math.ceil(_NEGLIGIBLE / -log_z) + 1
        K = int(min(need, _HEAD))
        out = head(1, K + 1, everything)
        if need <= K:
            return out.reshape(shape)
        if d > 0:  # the discounted series converges geometrically: sum it exactly
            if need > _MAX_TERMS:
                raise ValueError(
                    f"discount_rate={d} is too small: the discounted series needs {need} "
                    f"terms; use a rate >= {math.expm1(_NEGLIGIBLE / _MAX_TERMS):.1e} per "
                    f"period (or a horizon)."
                )
            out += head(K + 1, int(need) + 1, everything)
            return out.reshape(shape)
        out[q <= 1.0] = np.inf
        # The undiscounted tail by the family's integral from K on, checked against the same
        # from 2K (with the K exact terms in between): where the two disagree beyond 1e-9
        # the head is doubled again (the integral is accurate once S is asymptotic).
        todo = np.flatnonzero(q > 1.0)
        prev = np.full(out.shape, np.nan)
        while todo.size:
            sel = np.zeros(out.shape, dtype=bool)
            sel[todo] = True
            est = out[todo] + self._tail(log_g, K, {k: v[todo] for k, v in th.items()},
                                         n[todo], sel)  # fmt: skip
            done = np.abs(est - prev[todo]) <= 1e-9 * np.abs(est)
            prev[todo] = est
            finished, todo = todo[done], todo[~done]
            out[finished] = est[done]
            if todo.size and 2 * K > _MAX_TERMS:
                warnings.warn(
                    f"{self.label}: the expected residual lifetime of {todo.size} elements "
                    f"(e.g. alpha={th['alpha'][todo[0]]:.4g}, c*alpha="
                    f"{q[todo[0]]:.4g}) converges too slowly to evaluate to 1e-9 "
                    f"(S(t) far from its power-law tail after {K} periods); NaN returned. "
                    f"Pass a horizon.", RuntimeWarning, stacklevel=2,
                )
                out[todo] = np.nan
                break
            if todo.size:
                sel = np.zeros(out.shape, dtype=bool)
                sel[todo] = True
                out[todo] += head(K + 1, 2 * K + 1, sel)
                K *= 2
        return out.reshape(shape)

    def _tail(self, log_g, K: int, th, n, sel) -> np.ndarray:
        """``sum_{k>K}`` of the terms ``exp(log_g(k, sel))``, for ``c alpha > 1``."""
        raise NotImplementedError

    def _tail_exponent(self, th) -> np.ndarray:
        raise NotImplementedError

    # -- simulation ------------------------------------------------------------------
    def simulate_lifetimes(self, pop: Mapping[str, np.ndarray], rng) -> dict[str, np.ndarray]:
        raise NotImplementedError


class BetaDiscreteWeibullFamily(ContractualFamily):
    """BdW (``weibull=True``) or its ``c = 1`` case, the sBG."""

    def __init__(self, *, weibull: bool):
        self.weibull = weibull
        self.name = "bdw" if weibull else "sbg"
        self.label = "BdW" if weibull else "sBG"
        self.params = ("alpha", "beta", "c") if weibull else ("alpha", "beta")
        self.unconstrained = (
            ("logit_churn", "log_churn_concentration", "log_c")
            if weibull
            else ("logit_churn", "log_churn_concentration")
        )
        self.priors_class = BdWPriors if weibull else SBGPriors
        self.truth_class = BdWParams if weibull else SBGParams

    def to_natural(self, **theta) -> dict:
        return (bdw_natural if self.weibull else sbg_natural)(**theta)

    def logp(self, *args):
        return (bdw_logp if self.weibull else sbg_logp)(*args)

    def mle_start(self) -> dict[str, float]:
        start = {"logit_churn": math.log(0.25), "log_churn_concentration": math.log(3.0)}
        return {**start, "log_c": 0.0} if self.weibull else start

    def log_survival(self, th, t) -> np.ndarray:
        """``log S(t)`` for real ``t >= 0`` (the analytic continuation of ``(1-theta)^(t^c)``)."""
        t = np.asarray(t, dtype=np.float64)
        c = th["c"] if self.weibull else None
        with np.errstate(divide="ignore", over="ignore", invalid="ignore"):
            return bdw_log_survival(th["alpha"], th["beta"], c, t)

    def _tail_exponent(self, th) -> np.ndarray:
        c = th["c"] if self.weibull else 1.0
        return np.asarray(c * th["alpha"], dtype=np.float64)

    def _tail(self, log_g, K: int, th, n, sel) -> np.ndarray:
        """``sum_{k>K} g(k) = int_{K+1/2}^inf g(u) du + g'(K+1/2)/24`` up to the third
        derivative (midpoint Euler-Maclaurin), ``g(u) = S(n+u)/S(n)``, for
        ``q = c alpha > 1`` (undiscounted).

        With ``b = beta + (n+u)^c`` and ``s = b_0 / b`` (``b_0`` at ``u = K + 1/2``) the
        integral is ``int_0^1 s^e h(s) ds`` with ``e = alpha - 1/c - 1 > -1`` and
        ``h = g(u) (1/c) w^(1/c-1) b_0 s^(-2-e)``, ``w = b - beta``. Since ``B(alpha, b)
        b^alpha`` is a smooth function of ``1/b`` (Gamma-ratio expansion), ``h`` is
        smooth on ``[0, 1]`` once ``b_0`` is large (in practice: the caller checks the
        result against the one from ``2K``), with ``h(0) = b_0^(1/c - alpha) / (c
        B(alpha, beta + n^c) / Gamma(alpha))``. The integral is
        ``h(0)/(e+1) + int_0^1 s^(e+1) (h(s) - h(0))/s ds``, the second part by 48
        Gauss-Jacobi nodes for the weight ``s^(e+1)`` (no trouble as ``e -> -1``, where
        the first part grows without bound); checked against a 30-digit reference in the
        tests. Elements whose tail is below 1e-17 of their first term are skipped; the
        nodes' exponent is capped at 400 (beyond it the rest of the weight stays in the
        integrand, which is then less smooth: ``alpha - 1/c`` above 400).
        """
        a, b = th["alpha"], th["beta"]
        c = th["c"] if self.weibull else np.ones_like(a)
        u0 = K + 0.5
        out = np.zeros(a.shape)
        # rough size of the tail, g(K) K / (q - 1), against the first term
        size = np.exp(log_g(np.array([float(K)]), sel)[:, 0]) * u0 / (c * a - 1.0)
        first = np.exp(log_g(np.array([1.0]), sel)[:, 0])
        keep = np.flatnonzero(size > 1e-17 * first)
        if keep.size == 0:
            return out
        sub = np.zeros(sel.shape, dtype=bool)
        sub[np.flatnonzero(sel)[keep]] = True
        a, b, c, nn = a[keep], b[keep], c[keep], n[keep]
        e1 = a - 1.0 / c  # e + 1 > 0
        e_node = np.minimum(e1, 400.0)
        X = np.empty((keep.size, _NODES))
        log_w = np.empty((keep.size, _NODES))
        uniq, inv = np.unique(e_node, return_inverse=True)
        for j, ej in enumerate(uniq):
            x, w = sps.roots_jacobi(_NODES, 0.0, ej)
            X[inv == j] = (1.0 + x) / 2.0
            # normalised to sum to int_0^1 s^ej ds = 1/(ej+1) (no overflow for a large ej)
            log_w[inv == j] = np.log(w / w.sum()) - math.log1p(ej)
        b0 = b + np.exp(c * np.log(nn + u0))  # beta + (n + K + 1/2)^c
        wv = b0[:, None] / X - b[:, None]
        cc = c[:, None]
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
            u = np.exp(np.log(wv) / cc) - nn[:, None]
            log_h = (log_g(u, sub) - np.log(cc) + (1.0 / cc - 1.0) * np.log(wv)
                     + np.log(b0)[:, None] - (1.0 + e1[:, None]) * np.log(X))  # fmt: skip
            log_h = np.where(np.isfinite(u), log_h, -np.inf)
            # the rest of s^(e+1) beyond the nodes' exponent, and the 1/s of (h - h0)/s
            log_rest = (e1 - e_node)[:, None] * np.log(X) - np.log(X)
            log_h0 = ((1.0 / c - a) * np.log(b0) - np.log(c)
                      - _log_gamma_ratio(b + _tc(nn, c), a))  # fmt: skip
            rel = np.expm1(log_h - log_h0[:, None])  # h/h0 - 1, precise near s = 0
            vals = np.exp(log_h0) * (1.0 / e1 + (np.exp(log_rest + log_w) * rel).sum(-1))
        edge = np.exp(log_g(np.array([K + 1.0]), sub)[:, 0]) - np.exp(
            log_g(np.array([float(K)]), sub)[:, 0]
        )
        out[keep] = vals + edge / 24.0
        return out

    def simulate_lifetimes(self, pop, rng) -> dict[str, np.ndarray]:
        """``theta ~ Beta(alpha, beta)``; with ``E = log U / log(1 - theta) ~ Exp(-log(1-theta))``,
        ``P(E > s) = (1-theta)^s``, so ``T = max(1, ceil(E^(1/c)))`` has
        ``P(T > t) = (1-theta)^(t^c)`` exactly."""
        theta = rng.beta(pop["alpha"], pop["beta"])
        u = 1.0 - rng.random(theta.shape)
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            e = np.log(u) / np.log1p(-theta)
            life = np.ceil(e ** (1.0 / pop["c"]) if self.weibull else e)
        life = np.where(theta > 0, np.maximum(np.nan_to_num(life, nan=1.0), 1.0), np.inf)
        return {"theta": theta, "lifetime": life}


SBG = BetaDiscreteWeibullFamily(weibull=False)
BDW = BetaDiscreteWeibullFamily(weibull=True)


# --------------------------------------------------------------------------- on draws
def _per_customer(params, data: ContractData, fn, name: str, **attrs):
    """``fn(th, tenure)`` per draw for the active subscribers (0 for churners), computed
    once per distinct ``(segment, tenure)``; dims ``(chain, draw, customer_id)``."""
    from bayesclv.predict import CUSTOMER_DIM, DrawParams

    if not isinstance(data, ContractData):
        raise ModelSpecificationError(
            f"expected a ContractData, got {type(data).__name__}."
        )
    dp = DrawParams(params, "contractual")
    cols = dp.positions(data.segment_names)[data.segment]
    code, uniq = pd.factorize(pd.MultiIndex.from_arrays([cols, data.tenure]))
    ucol = np.asarray(uniq.get_level_values(0), dtype=np.int64)
    uten = np.asarray(uniq.get_level_values(1), dtype=np.float64)
    vals = fn(dp.columns(ucol), uten)  # (n_draws, n_unique)
    out = np.where(data.churned[None, :], 0.0, vals[:, code])
    da = dp.wrap(out, CUSTOMER_DIM, data.customer_id).rename(name)
    da.attrs.update(model=dp.model, time_unit=data.time_unit, **attrs)
    return da


def retention_rate(params, data: ContractData):
    """Probability that each active subscriber renews at the end of their next period,
    ``S(n+1)/S(n)`` per draw (0 for churners); dims ``(chain, draw, customer_id)``."""
    return _per_customer(params, data, lambda th, n: _fam(params).retention(th, n + 1.0),
                         "retention_rate")  # fmt: skip


def survival(params, data: ContractData, periods: int):
    """Probability that each active subscriber is still active ``periods`` periods from
    now, ``S(n+k)/S(n)`` per draw (0 for churners)."""
    k = float(periods)
    return _per_customer(params, data, lambda th, n: _fam(params).survival_ahead(th, n, k),
                         "survival", periods=k)  # fmt: skip


def expected_residual_lifetime(params, data: ContractData, horizon: float | None = None):
    """Expected number of further periods each active subscriber renews for, per draw:
    ``sum_{k>=1} S(n+k)/S(n)`` (up to ``horizon`` periods, or for ever: ``inf`` where
    ``c alpha <= 1``, which includes every sBG with ``alpha <= 1``); 0 for churners."""
    return _per_customer(
        params, data, lambda th, n: _fam(params).residual_lifetime(th, n, 0.0, horizon),
        "expected_residual_lifetime", horizon=-1.0 if horizon is None else float(horizon),
    )


def expected_derl(params, data: ContractData, discount_rate: float,
                  horizon: float | None = None):  # fmt: skip
    """Discounted expected residual lifetime per active subscriber and draw (Fader &
    Hardie 2010, eq. 6): ``sum_{k>=1} S(n+k)/S(n) / (1+d)^(k-1)``, evaluated just
    before the next renewal, ``d`` = ``discount_rate`` per period (the data's
    ``time_unit``). Multiply by the net cash flow per period for the residual value.
    0 for churners."""
    d = float(discount_rate)
    return _per_customer(
        params, data, lambda th, n: _fam(params).residual_lifetime(th, n, d, horizon),
        "expected_derl", discount_rate=d,
        horizon=-1.0 if horizon is None else float(horizon),
    )


def _fam(params) -> ContractualFamily:
    from bayesclv.families import get_family

    return get_family(params.attrs.get("model"), "contractual")


def simulate_contracts(
    params: Mapping[str, SBGParams | BdWParams] | SBGParams | BdWParams,
    sizes: Mapping[str, int] | int,
    *,
    periods: int,
    time_unit: str = "year",
    random_seed: Any = None,
) -> ContractData:
    """Simulate cohorts joining at time 0 and observed for ``periods`` periods.

    Each subscriber's ``theta`` and lifetime are drawn from their segment's population
    (:meth:`BetaDiscreteWeibullFamily.simulate_lifetimes`); those with a lifetime up to
    ``periods`` are churners, the others are active with tenure ``periods``. The truth
    (``theta``, ``lifetime``) is in ``meta["truth"]``.
    """
    if isinstance(params, SBGParams | BdWParams):
        params = {"all": params}
    if isinstance(sizes, int | np.integer):
        sizes = {next(iter(params)): int(sizes)}
    kinds = {type(v) for v in params.values()}
    if len(kinds) != 1 or set(sizes) != set(params):
        raise ModelSpecificationError(
            "simulate_contracts: every segment needs the same parameter class and a size."
        )
    fam = BDW if kinds == {BdWParams} else SBG
    names = tuple(str(k) for k in params)
    rng = np.random.default_rng(random_seed)
    seg = np.repeat(np.arange(len(names)), [int(sizes[k]) for k in params])
    pop = {f: np.array([getattr(params[k], f) for k in params])[seg] for f in fam.params}
    drawn = fam.simulate_lifetimes(pop, rng)
    life = drawn["lifetime"]
    churned = life <= periods
    tenure = np.where(churned, life, periods).astype(np.int64)
    return ContractData(
        customer_id=np.arange(seg.size, dtype=np.int64),
        tenure=tenure,
        churned=churned,
        segment=seg,
        segment_names=names,
        time_unit=time_unit,
        meta={"truth": pd.DataFrame(drawn), "simulation": {"model": fam.name,
                                                         "params": dict(params)}},
    )
