"""Frozen prior specifications.

Every model parameter is sampled on an unconstrained scale chosen for interpretability
and for posterior geometry (see each spec). A prior is a Normal on that scale
(:class:`NormalPrior`), except for the Pareto/NBD dropout shape, whose prior is a
HalfNormal on the coefficient of variation of the dropout rates (:class:`CVPrior`, the
reason is there). With ``pooling="partial"`` each unconstrained parameter of segment
``s`` is ``theta_s = mu + sigma * z_s``: the spec's prior becomes the prior of the
population mean ``mu``, and ``sigma ~ HalfNormal(segment_sigma)`` is the between-segment
spread.

The defaults are weak. They are stated in words in each class docstring and checked by
prior predictive simulation in ``tests/test_models.py``.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields

import numpy as np

from bayesclv.errors import ModelSpecificationError

__all__ = [
    "NormalPrior",
    "CVPrior",
    "BGNBDPriors",
    "ParetoNBDPriors",
    "GammaGammaPriors",
    "AbePriors",
    "priors_to_dict",
    "weak_priors",
    "priors_from_dict",
]


@dataclass(frozen=True)
class NormalPrior:
    """Normal(mu, sigma) on a parameter's unconstrained scale."""

    mu: float
    sigma: float

    def __post_init__(self) -> None:
        if not (math.isfinite(self.mu) and math.isfinite(self.sigma) and self.sigma > 0):
            raise ModelSpecificationError(
                f"NormalPrior needs a finite mu and a finite sigma > 0, got mu={self.mu}, "
                f"sigma={self.sigma}."
            )

    @property
    def center(self) -> float:
        """A central value on the unconstrained scale (starting points)."""
        return self.mu

    @property
    def spread(self) -> float:
        """The prior's standard deviation on the unconstrained scale."""
        return self.sigma

    def draw(self, rng: np.random.Generator, size=None) -> np.ndarray:
        """Draws of the unconstrained parameter (prior predictive simulation)."""
        return rng.normal(self.mu, self.sigma, size)

    def log_density(self, theta):
        """Log density at ``theta`` (NumPy), the objective a MAP search maximises."""
        z = (np.asarray(theta, dtype=np.float64) - self.mu) / self.sigma
        return -0.5 * z * z - math.log(self.sigma) - 0.5 * math.log(2.0 * math.pi)


@dataclass(frozen=True)
class CVPrior:
    """HalfNormal(sigma) on the coefficient of variation ``1 / sqrt(k)`` of a Gamma
    mixing distribution with shape ``k``; the parameter is still reported as ``log k``.

    Why not a Normal on ``log k``: as ``k`` grows the Gamma mixture tends to equal rates
    for every customer, and the likelihood tends to a constant instead of falling off.
    For the Pareto/NBD dropout shape ``s`` on the CDNOW sample that constant is only
    5.4 log-units below the maximum (``s`` = 0.61), so a wide Normal on ``log s`` puts
    posterior mass on a plateau running out to ``s`` = e^20 and beyond: NUTS then
    diverges between the plateau and the peak, and the posterior median of ``s`` moves
    10% and that of ``beta`` 19% away from the maximum likelihood (measured with
    sigma = 10). A prior on the coefficient of variation gives equal rates (cv = 0) a
    finite density instead of an infinitely long flat stretch; it is the usual weak
    prior for a Gamma/negative-binomial overdispersion parameter (a penalised-complexity
    style prior shrinking toward the simpler model). The model samples ``cv`` on the
    log scale, where the tail toward equal rates decays like ``cv``.

    ``rate`` names the unconstrained parameter that is the log of the same Gamma's mean
    (Pareto/NBD: ``log_dropout_rate``; :class:`ParetoNBDPriors` sets it). The two are then
    sampled together in coordinates the data can tell apart: ``cv`` and the log of the
    population's cumulative hazard at a reference time ``t0``,
    ``log H = log(k log1p(t0 m / k))`` with ``m`` the mean rate (``exp(-H)`` is the share
    of customers whose event, e.g. dropout, has not happened by ``t0``:
    :meth:`log_hazard_from_rate`). ``t0`` is the prior median of the mean time to the
    event, ``exp(-mu)`` of the rate's prior. Why: when the data see few events (low
    repeat buying, a short calibration) they fix roughly how many customers dropped out
    within the window, not the shape; with a large ``cv`` (small ``k``) the mean rate is
    then carried by a few customers who drop out at once, and the ridge of equal
    likelihood bends away as ``log m ~ H cv^2``: NUTS diverges in that bend (issue 15,
    benchmarks/bench_low_repeat.py). Along that ridge ``log H(t0)`` moves by at most
    ``|log(t0 / t_data)|`` whatever ``cv`` is. The prior is unchanged: the rate keeps its
    Normal prior on ``log m``, with the Jacobian of the change of coordinates; ``rate``
    only moves the sampler, so it takes no part in comparisons of priors.
    """

    sigma: float
    rate: str | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        if not (math.isfinite(self.sigma) and self.sigma > 0):
            raise ModelSpecificationError(f"CVPrior needs a finite sigma > 0, got {self.sigma}.")
        if self.rate is not None and not (isinstance(self.rate, str) and self.rate):
            raise ModelSpecificationError(
                f"CVPrior.rate must name an unconstrained parameter, got {self.rate!r}."
            )

    # The coordinates of (log mean rate, log k) described above, backend-neutral (NumPy or
    # PyTensor). With q = t0 m / k: log H = log k + log(log1p(q)) = log k + log softplus(log
    # q), whose inverse is log q = log expm1(exp(log H - log k)). Below -30 the first-order
    # forms (log H = log m + log t0 to 1e-13) avoid underflow; each branch sees clipped
    # arguments, so that the branch not taken has finite gradients too.
    @staticmethod
    def log_hazard_from_rate(log_rate, log_k, log_t0):
        """``log H(t0) = log(k log1p(t0 m / k))`` from ``log m`` and ``log k``."""
        from bayesclv.ops import ops_for

        o = ops_for(log_rate, log_k)
        lq = log_t0 + log_rate - log_k
        return log_k + o.where(lq < -30.0, lq, o.log(o.softplus(o.maximum(lq, -30.0))))

    @staticmethod
    def rate_from_log_hazard(log_hazard, log_k, log_t0):
        """Inverse of :meth:`log_hazard_from_rate`: ``log m`` from ``log H(t0)``."""
        from bayesclv.ops import ops_for

        o = ops_for(log_hazard, log_k)
        z = log_hazard - log_k
        y = o.exp(o.minimum(o.maximum(z, -30.0), 700.0))
        return log_k - log_t0 + o.where(z < -30.0, z, y + o.log(-o.expm1(-y)))

    @staticmethod
    def log_hazard_jacobian(log_hazard, log_k):
        """``log |d log m / d log H|`` at fixed ``k`` (it does not depend on ``t0``)."""
        from bayesclv.ops import ops_for

        o = ops_for(log_hazard, log_k)
        z = log_hazard - log_k
        zs = o.minimum(o.maximum(z, -30.0), 700.0)
        y = o.exp(zs)
        return o.where(z < -30.0, 0.5 * y, zs - o.log(-o.expm1(-y)))

    @staticmethod
    def cv(theta):
        """The coefficient of variation ``exp(-theta / 2)`` for ``theta = log k``."""
        return np.exp(-0.5 * np.asarray(theta, dtype=np.float64))

    @property
    def center(self) -> float:
        """``log k`` at the prior median of cv (0.674 sigma)."""
        return -2.0 * math.log(0.6744897501960817 * self.sigma)

    @property
    def spread(self) -> float:
        """The prior's standard deviation of ``log k`` (pi / sqrt 2, whatever sigma)."""
        return math.pi / math.sqrt(2.0)

    def draw(self, rng: np.random.Generator, size=None) -> np.ndarray:
        """Draws of ``log k`` (prior predictive simulation)."""
        return -2.0 * np.log(self.sigma * np.abs(rng.standard_normal(size)))

    def log_density(self, theta):
        """Log density of cv at ``cv(theta)`` (NumPy): the objective that a MAP search on
        the model's free variable ``cv`` maximises (no Jacobian of the change to log k)."""
        c = self.cv(theta)
        return (
            -0.5 * (c / self.sigma) ** 2 - math.log(self.sigma) + 0.5 * math.log(2.0 / math.pi)
        )


def _check_segment_sigma(obj) -> None:
    for f in fields(obj):
        value = getattr(obj, f.name)
        if f.name == "segment_sigma":
            if not (math.isfinite(value) and value > 0):
                raise ModelSpecificationError(
                    f"{type(obj).__name__}.segment_sigma must be finite and > 0, got {value}."
                )
        elif not isinstance(value, NormalPrior | CVPrior):
            raise ModelSpecificationError(
                f"{type(obj).__name__}.{f.name} must be a NormalPrior (or a CVPrior), got "
                f"{type(value).__name__}."
            )


@dataclass(frozen=True)
class BGNBDPriors:
    """Priors of the BG/NBD and MBG/NBD models (purchase rate and dropout).

    Unconstrained parameters and what the defaults say in words:

    - ``log_purchase_rate`` = log(r / alpha), the log of the mean purchase rate per time
      unit. Default Normal(log 0.1, 3): a typical customer buys about once every 10
      periods, and anything from once in ~4,000 periods to ~40 times a period is within
      two standard deviations.
    - ``log_r`` = log r, the shape of the Gamma distribution of purchase rates (small r
      means very unequal customers). Default Normal(0, 2.5): r between ~0.007 and ~150.
    - ``logit_dropout`` = logit(a / (a + b)), the mean probability of dropping out after
      a purchase. Default Normal(logit 0.2, 2): anywhere from ~0.5% to ~90%.
    - ``log_dropout_concentration`` = log(a + b), how alike customers' dropout
      probabilities are. Default Normal(log 3, 2.5).
    - ``segment_sigma``: HalfNormal scale of the between-segment standard deviation of
      each unconstrained parameter under partial pooling. Default 0.5: segments' mean
      purchase rates typically differ by a factor within ~e^1 = 2.7 of each other.
    """

    log_purchase_rate: NormalPrior = NormalPrior(math.log(0.1), 3.0)
    log_r: NormalPrior = NormalPrior(0.0, 2.5)
    logit_dropout: NormalPrior = NormalPrior(math.log(0.2 / 0.8), 2.0)
    log_dropout_concentration: NormalPrior = NormalPrior(math.log(3.0), 2.5)
    segment_sigma: float = 0.5

    def __post_init__(self) -> None:
        _check_segment_sigma(self)


@dataclass(frozen=True)
class ParetoNBDPriors:
    """Priors of the Pareto/NBD model.

    - ``log_purchase_rate`` = log(r / alpha): mean purchase rate per time unit, default
      Normal(log 0.1, 3) (about once every 10 periods).
    - ``log_r``: shape of purchase-rate heterogeneity, Normal(0, 2.5).
    - ``log_dropout_rate`` = log(s / beta): mean dropout rate per time unit, default
      Normal(log 0.02, 3): a typical customer's expected lifetime is about 50 periods.
    - ``log_s``: shape ``s`` of dropout-rate heterogeneity. Default :class:`CVPrior`
      (HalfNormal(2) on ``1 / sqrt(s)``, the coefficient of variation of customers'
      dropout rates): from nearly equal dropout rates to rates varying by a
      coefficient of variation of ~4.5 (97.5%). Not a Normal on ``log s``: see
      :class:`CVPrior` for the plateau that creates.
    - ``segment_sigma``: as in :class:`BGNBDPriors`.
    """

    log_purchase_rate: NormalPrior = NormalPrior(math.log(0.1), 3.0)
    log_r: NormalPrior = NormalPrior(0.0, 2.5)
    log_dropout_rate: NormalPrior = NormalPrior(math.log(0.02), 3.0)
    log_s: NormalPrior | CVPrior = CVPrior(2.0, rate="log_dropout_rate")
    segment_sigma: float = 0.5

    def __post_init__(self) -> None:
        _check_segment_sigma(self)
        if isinstance(self.log_s, CVPrior) and self.log_s.rate is None:
            # s and s / beta are always sampled together (CVPrior.rate), however the
            # CVPrior was written
            object.__setattr__(self, "log_s", CVPrior(self.log_s.sigma, "log_dropout_rate"))


@dataclass(frozen=True)
class GammaGammaPriors:
    """Priors of the Gamma-Gamma spend model.

    The model is parameterised so that the expected spend per purchase,
    ``p v / (q - 1)``, exists: ``q = 1 + exp(log_q_minus_1)`` keeps ``q > 1``.

    - ``log_mean_spend`` = log(p v / (q - 1)), the population mean amount per purchase,
      in the currency of the data. Default Normal(log 50, 3): from about 0.1 to 20,000.
    - ``log_p``: shape of each purchase amount around the customer's own mean (large p
      means a customer spends about the same each time). Default Normal(log 2, 2.5).
    - ``log_q_minus_1``: how alike customers' mean spends are. Default Normal(log 2, 2.5).
    - ``segment_sigma``: as in :class:`BGNBDPriors`.
    """

    log_mean_spend: NormalPrior = NormalPrior(math.log(50.0), 3.0)
    log_p: NormalPrior = NormalPrior(math.log(2.0), 2.5)
    log_q_minus_1: NormalPrior = NormalPrior(math.log(2.0), 2.5)
    segment_sigma: float = 0.5

    def __post_init__(self) -> None:
        _check_segment_sigma(self)


@dataclass(frozen=True)
class AbePriors:
    """Priors of Abe's (2009) hierarchical Bayes Pareto/NBD.

    ``(log lambda_i, log mu_i) ~ MVN(B d_i, Gamma)`` with ``d_i = (1, covariates_i)``.

    - ``log_lambda_mean``, ``log_mu_mean``: intercepts (population means of the log
      purchase and dropout rates per time unit when covariates are centred). Defaults
      Normal(log 0.1, 3) and Normal(log 0.02, 3), as in :class:`ParetoNBDPriors`.
    - ``coefficient_sigma``: Normal(0, sigma) on each covariate coefficient (covariates
      are standardised by the builder), default 1.
    - ``sd_sigma``: HalfNormal scale of the standard deviations of log lambda and log mu
      across customers, default 2; ``lkj_eta``: LKJ prior on their correlation, default 2
      (mildly favours small correlations). Abe (2009) used an inverse Wishart; the LKJ
      form separates scale and correlation and samples better.
    """

    log_lambda_mean: NormalPrior = NormalPrior(math.log(0.1), 3.0)
    log_mu_mean: NormalPrior = NormalPrior(math.log(0.02), 3.0)
    coefficient_sigma: float = 1.0
    sd_sigma: float = 2.0
    lkj_eta: float = 2.0

    def __post_init__(self) -> None:
        for name in ("coefficient_sigma", "sd_sigma", "lkj_eta"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0):
                raise ModelSpecificationError(f"AbePriors.{name} must be > 0, got {value}.")


_PRIOR_CLASSES = {
    cls.__name__: cls for cls in (BGNBDPriors, ParetoNBDPriors, GammaGammaPriors, AbePriors)
}


def weak_priors(cls, sigma: float = 10.0):
    """The defaults of a prior class widened to ``sigma`` on every parameter: each
    :class:`NormalPrior` keeps its centre with standard deviation ``sigma``, each
    :class:`CVPrior` becomes HalfNormal(``sigma``) on the coefficient of variation.
    The "weak priors" of the CDNOW reproduction (tests and benchmarks)."""
    base = cls()
    widened = {}
    for f in fields(base):
        value = getattr(base, f.name)
        if isinstance(value, NormalPrior):
            value = NormalPrior(value.mu, sigma)
        elif isinstance(value, CVPrior):
            value = CVPrior(sigma)
        widened[f.name] = value
    return cls(**widened)


def priors_to_dict(priors) -> dict:
    """A JSON-able description of a prior spec (stored with saved fits and exports)."""
    return {"class": type(priors).__name__, **asdict(priors)}


def priors_from_dict(d: dict):
    """Inverse of :func:`priors_to_dict`."""
    d = dict(d)
    name = d.pop("class")
    cls = _PRIOR_CLASSES.get(name)
    if cls is None:  # a family's own prior class, defined in its module
        from bayesclv.families import FAMILIES

        by_name = {f.priors_class.__name__: f.priors_class
                   for f in FAMILIES.values() if f.priors_class is not None}
        if name not in by_name:
            raise ModelSpecificationError(
                f"unknown prior class {name!r}; the families' prior classes are "
                f"{sorted(set(_PRIOR_CLASSES) | set(by_name))}."
            )
        cls = by_name[name]
    kwargs = {}
    for key, value in d.items():
        if isinstance(value, dict):
            value = NormalPrior(**value) if "mu" in value else CVPrior(**value)
        kwargs[key] = value
    return cls(**kwargs)
