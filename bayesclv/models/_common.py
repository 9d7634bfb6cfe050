"""What every model builder shares: pooling structure, row compression, metadata."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, fields
from typing import Any

import numpy as np
import pymc as pm
import pytensor.tensor as pt
from pymc.logprob.transforms import Transform

from bayesclv.data import RFMData
from bayesclv.errors import ModelSpecificationError
from bayesclv.priors import CVPrior, NormalPrior

POOLINGS = ("complete", "partial", "none")
PARAMETERIZATIONS = ("auto", "centered", "noncentered")

#: Kept for backward compatibility; ``parameterization="auto"`` no longer uses a size
#: threshold (see :func:`segment_information` and :func:`unconstrained_params`).
CENTERED_MIN_CUSTOMERS = 50_000


@dataclass(frozen=True)
class ModelSpec:
    """Metadata a built model carries to ``fit`` and into saved files."""

    model: str  # "bgnbd", "mbgnbd", "pareto_nbd", "gamma_gamma"
    pooling: str
    segment_names: tuple[str, ...]
    time_unit: str
    priors: Any
    params: tuple[str, ...]  # natural parameter names, e.g. ("r", "alpha", "a", "b")
    unconstrained: tuple[str, ...]  # names of the unconstrained parameters
    n_customers: int
    n_rows: int  # rows after compressing identical customers
    segment_sizes: tuple[int, ...]
    centered: tuple[bool, ...] = ()
    parameterization: str = ""
    extra: dict = field(default_factory=dict)


#: Name of the constant data variable through which a model carries its ModelSpec.
SPEC_VAR = "bayesclv_spec"


def _jsonable(value):
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return _jsonable(value.tolist())
    if isinstance(value, np.generic):
        return value.item()
    return value


def register_spec(model: pm.Model, spec: ModelSpec) -> None:
    """Store ``spec`` in the model itself, as JSON bytes in a constant data variable.

    The model then carries what its builder knows wherever it goes: through pickling,
    ``pm.do`` and ``clone_model`` (which keep data variables), with no side registry.
    """
    from bayesclv.priors import priors_to_dict

    d = {f.name: getattr(spec, f.name) for f in fields(spec)}
    d["priors"] = None if spec.priors is None else priors_to_dict(spec.priors)
    payload = json.dumps(_jsonable(d), allow_nan=False).encode()
    with model:
        pm.Data(SPEC_VAR, np.frombuffer(payload, dtype=np.uint8))


def model_spec(model: pm.Model) -> ModelSpec:
    """The :class:`ModelSpec` a bayesclv builder stored in ``model`` (see
    :func:`register_spec`); an error for models no builder made."""
    from bayesclv.priors import priors_from_dict

    var = model.named_vars.get(SPEC_VAR) if isinstance(model, pm.Model) else None
    if var is None:
        raise ModelSpecificationError(
            "This PyMC model was not built by a bayesclv builder (build_bgnbd, "
            "build_pareto_nbd, build_gamma_gamma, ...); fit() needs one of those."
        )
    d = json.loads(bytes(np.asarray(var.get_value(), dtype=np.uint8)).decode())
    d["priors"] = None if d["priors"] is None else priors_from_dict(d["priors"])
    for name in ("segment_names", "params", "unconstrained", "segment_sizes", "centered"):
        d[name] = tuple(d[name])
    return ModelSpec(**d)


def check_options(rfm: RFMData, pooling: str, parameterization: str) -> None:
    if not isinstance(rfm, RFMData):
        raise ModelSpecificationError(
            f"Expected an RFMData (see bayesclv.rfm_summary or RFMData.from_frame), got "
            f"{type(rfm).__name__}."
        )
    if pooling not in POOLINGS:
        raise ModelSpecificationError(f"pooling={pooling!r}; use one of {POOLINGS}.")
    if parameterization not in PARAMETERIZATIONS:
        raise ModelSpecificationError(
            f"parameterization={parameterization!r}; use one of {PARAMETERIZATIONS}."
        )
    sizes = rfm.segment_sizes()
    empty = sizes[sizes == 0]
    if pooling != "complete" and len(empty):
        raise ModelSpecificationError(
            f"Segments with no customers: {list(empty.index)}. Drop them from the "
            f"segment names (or use pooling='complete')."
        )


def compress_rows(columns: Sequence[np.ndarray]) -> tuple[list[np.ndarray], np.ndarray]:
    """Unique rows of the stacked columns and how many customers share each.

    The likelihood of identical customers is computed once and multiplied by the count.
    """
    stacked = np.column_stack([np.asarray(c, dtype=np.float64) for c in columns])
    unique, counts = np.unique(stacked, axis=0, return_counts=True)
    return [unique[:, j] for j in range(unique.shape[1])], counts.astype(np.float64)


def centered_mask(sizes: np.ndarray, parameterization: str) -> np.ndarray:
    if parameterization == "centered":
        return np.ones(len(sizes), dtype=bool)
    return np.zeros(len(sizes), dtype=bool)


def segment_information(
    log_posterior: Callable[[np.ndarray, int], float],
    n_params: int,
    n_segments: int,
    prior_sd: np.ndarray,
    start: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """Where each segment's data put its parameters, and how tightly: ``(center, scale)``.

    For each segment, the mode of its own (unpooled) log posterior on the unconstrained
    scale and the marginal standard deviations of the Laplace approximation there (the
    inverse of a finite-difference Hessian), each of shape ``(n_segments, n_params)``.
    Used only to choose the geometry of partial pooling (``parameterization="auto"``);
    the model's density does not depend on them, so a rough answer only costs speed.
    Where the optimisation or the Hessian fails, the prior's mean and sd are returned.
    """
    from scipy.optimize import minimize

    center = np.tile(np.asarray(start, dtype=np.float64), (n_segments, 1))
    scale = np.tile(np.asarray(prior_sd, dtype=np.float64), (n_segments, 1))
    h = 1e-3
    eye = np.eye(n_params) * h
    for k in range(n_segments):

        def neg(theta, k=k):
            value = -log_posterior(np.asarray(theta, dtype=np.float64), k)
            return value if np.isfinite(value) else 1e300

        res = minimize(neg, center[k], method="L-BFGS-B")
        if not np.isfinite(res.fun) or res.fun >= 1e300:
            continue
        x = res.x
        hess = np.empty((n_params, n_params))
        for i in range(n_params):
            for j in range(i, n_params):
                hess[i, j] = hess[j, i] = (
                    neg(x + eye[i] + eye[j])
                    - neg(x + eye[i] - eye[j])
                    - neg(x - eye[i] + eye[j])
                    + neg(x - eye[i] - eye[j])
                ) / (4 * h * h)
        try:
            cov = np.linalg.inv(hess)
            sd = np.sqrt(np.diag(cov))
        except np.linalg.LinAlgError:
            continue
        if np.all(np.isfinite(sd)) and np.all(sd > 0):
            center[k] = x
            scale[k] = np.minimum(sd, prior_sd)
    return center, scale


def cv_name(name: str) -> str:
    """Name of the free coefficient-of-variation variable behind ``name = "log_<k>"``
    under a :class:`~bayesclv.priors.CVPrior` (e.g. ``log_s`` -> ``s_cv``)."""
    return name.removeprefix("log_") + "_cv"


class _HazardTransform(Transform):
    """Value ``d = log(m / k)`` of a Gamma's log mean ``m`` over its shape ``k``, moved as
    the log cumulative hazard ``log H(t0) = log(k log1p(t0 e^d))`` given ``k``
    (:meth:`CVPrior.log_hazard_from_rate <bayesclv.priors.CVPrior.log_hazard_from_rate>`).

    The variable is ``d ~ Normal(mu - log k, sigma)`` (:func:`_prior_rv`), so ``log k`` is
    read back from its mean, ``mu - inputs[-2]``: the transform depends on ``k`` through
    the variable's own inputs, as PyMC's interval transform does through its bounds, and
    the model stays plain PyMC (clone_model, ``pm.do``, pickling into fit_many's workers).
    """

    name = "hazard"

    def __init__(self, mu: float, log_t0: float):
        self.mu = float(mu)
        self.log_t0 = float(log_t0)

    def _log_k(self, inputs):
        return self.mu - inputs[-2]  # the Normal's inputs end with (mean, sd)

    def forward(self, value, *inputs):
        log_k = self._log_k(inputs)
        return CVPrior.log_hazard_from_rate(value + log_k, log_k, self.log_t0)

    def backward(self, value, *inputs):
        log_k = self._log_k(inputs)
        return CVPrior.rate_from_log_hazard(value, log_k, self.log_t0) - log_k

    def log_jac_det(self, value, *inputs):
        return CVPrior.log_hazard_jacobian(value, self._log_k(inputs))


def _prior_rv(
    name: str, prior: NormalPrior | CVPrior, dims=None, *, log_k=None, shape_name: str = "k"
) -> pt.TensorVariable:
    """A free variable with the prior of unconstrained parameter ``name``, on that scale.

    A :class:`NormalPrior` is the free variable itself; a :class:`CVPrior` samples the
    coefficient of variation ``cv ~ HalfNormal(sigma)`` (named :func:`cv_name`) and
    returns ``log k = -2 log cv``.

    With ``log_k``, the log shape of the Gamma whose log mean ``name`` is (see
    :attr:`CVPrior.rate <bayesclv.priors.CVPrior>`), the prior of ``name`` is unchanged,
    ``log m ~ Normal(mu, sigma)`` independent of ``k``, but the free variable is
    ``d = log(m / k) ~ Normal(mu - log k, sigma)``, named ``{name}_per_{shape_name}``
    (Pareto/NBD: ``log_dropout_rate_per_s = -log beta``), and NUTS moves it as the log
    cumulative hazard at ``t0 = exp(-mu)`` given ``k`` (:class:`_HazardTransform`, value
    variable ``{name}_per_{shape_name}_hazard__``). Returned: ``log m = log k + d``. The
    density of ``(cv, log m)`` is the one without ``log_k``, so ``fit(sampler="map")``
    (no Jacobians) finds the same mode; the free variable starts at its prior median.
    """
    if isinstance(prior, CVPrior):
        cv = pm.HalfNormal(cv_name(name), prior.sigma, dims=dims)
        return -2.0 * pt.log(cv)
    if log_k is None:
        return pm.Normal(name, prior.mu, prior.sigma, dims=dims)
    d = pm.Normal(f"{name}_per_{shape_name}", prior.mu - log_k, prior.sigma, dims=dims,
                  transform=_HazardTransform(prior.mu, -float(prior.mu)))  # fmt: skip
    return log_k + d


def paired_params(priors_by_name: dict, pooling: str) -> list[tuple[str, str, str]]:
    """``(shape, rate, k_name)`` for each Gamma shape/log-mean pair sampled together
    (:attr:`CVPrior.rate <bayesclv.priors.CVPrior>`); the rate's free variable is then
    ``{rate}_per_{k_name}``. Complete and no pooling only: with partial pooling the
    population mean in these coordinates mixed worse than the plain ones (low-repeat
    data, seed 1: 63 vs 13 divergences, tail ESS 70 vs 322; benchmarks/bench_low_repeat.py),
    so partial pooling keeps the plain coordinates."""
    if pooling == "partial":
        return []
    out = []
    for shape, prior in priors_by_name.items():
        rate = prior.rate if isinstance(prior, CVPrior) else None
        if rate in priors_by_name and isinstance(priors_by_name[rate], NormalPrior):
            out.append((shape, rate, shape.removeprefix("log_")))
    return out


def unconstrained_params(
    priors_by_name: dict[str, NormalPrior | CVPrior],
    *,
    pooling: str,
    n_segments: int,
    segment_sigma: float,
    centered: np.ndarray,
    information: tuple[np.ndarray, np.ndarray] | None = None,
) -> dict[str, pt.TensorVariable]:
    """Create the free random variables; return each unconstrained parameter per segment.

    Must be called inside a ``pm.Model`` with a ``segment`` coordinate. Every returned
    tensor has shape ``(n_segments,)``.

    - complete: one Normal per parameter, broadcast to every segment.
    - none: an independent Normal per segment with the spec's prior.
    - a :class:`~bayesclv.priors.CVPrior` replaces the Normal by its coefficient of
      variation (see :func:`_prior_rv`); the parameter itself is then a Deterministic
      (complete, none) or the population mean ``{name}_mu`` is (partial).
    - partial: ``mu ~ spec prior``, ``sigma ~ HalfNormal(segment_sigma)``; segments with
      ``centered`` true draw ``theta_s ~ Normal(mu, sigma)``, the others
      ``theta_s = mu + sigma * z_s`` with ``z_s ~ Normal(0, 1)``.
    - partial with ``information = (center, scale)`` (``parameterization="auto"``): the
      same model, sampled in coordinates that adapt to how much each segment's data say.
      With ``c, s`` the segment's own mode and sd (:func:`segment_information`) and
      ``rho = sigma / s``, ``theta_s = m + z_s sigma / sqrt(1 + rho^2)`` where
      ``m = (mu + c rho^2) / (1 + rho^2)`` is the conditional posterior mean of a normal
      approximation, and ``z_s ~ Normal((mu - c) rho / (s sqrt(1 + rho^2)), sqrt(1 + rho^2))``
      is exactly the law that makes ``theta_s ~ Normal(mu, sigma)``. When the data say
      little (``rho`` small) this is the non-centred form; when they pin the segment down
      (``rho`` large) it is centred on the data, ``theta_s ~ c + s z_s``; in between the
      posterior of ``z_s`` stays about standard normal whatever ``sigma`` is, which removes
      both the funnel of the centred form and the ridge of the non-centred one
      (partial non-centring; Papaspiliopoulos, Roberts & Skold 2007).
    - a :class:`~bayesclv.priors.CVPrior` whose ``rate`` names another parameter (the log
      mean of the same Gamma: Pareto/NBD's ``log_dropout_rate`` beside ``log_s``): that
      parameter is created with the shape's ``log k`` (:func:`_prior_rv`) and sampled as the
      log cumulative hazard at a reference time given ``k``, where the likelihood of
      low-repeat data has a straight ridge instead of a bend (issue 15). Complete and no
      pooling: the parameter itself; partial: its population mean ``{name}_mu``, with the
      population ``log k``; the segments' deviations are as above.
    """
    out: dict[str, pt.TensorVariable] = {}
    ones = pt.ones((n_segments,))
    # Gamma shape/mean pairs sampled together (CVPrior.rate): both made first, here.
    # For complete and no pooling ``paired`` holds the parameters, for partial their
    # population means.
    paired: dict[str, pt.TensorVariable] = {}
    for shape, rate, k_name in paired_params(priors_by_name, pooling):
        prior = priors_by_name[shape]
        if pooling == "partial":
            log_k = _prior_rv(f"{shape}_pop", prior)
            paired[shape] = pm.Deterministic(f"{shape}_mu", log_k)
            log_m = _prior_rv(f"{rate}_mu", priors_by_name[rate], log_k=log_k, shape_name=k_name)
            paired[rate] = pm.Deterministic(f"{rate}_mu", log_m)
        else:
            dims = "segment" if pooling == "none" else None
            log_k = _prior_rv(shape, prior, dims=dims)
            paired[shape] = pm.Deterministic(shape, log_k, dims=dims)
            log_m = _prior_rv(rate, priors_by_name[rate], dims=dims, log_k=log_k,
                              shape_name=k_name)  # fmt: skip
            paired[rate] = pm.Deterministic(rate, log_m, dims=dims)
    for name, prior in priors_by_name.items():
        shape_prior = isinstance(prior, CVPrior)
        if name in paired and pooling != "partial":
            out[name] = paired[name] * ones if pooling == "complete" else paired[name]
            continue
        if pooling == "complete":
            theta = _prior_rv(name, prior)
            if shape_prior:
                theta = pm.Deterministic(name, theta)
            out[name] = theta * ones
        elif pooling == "none":
            theta = _prior_rv(name, prior, dims="segment")
            out[name] = pm.Deterministic(name, theta, dims="segment") if shape_prior else theta
        else:
            if information is not None:
                sigma = pm.HalfNormal(f"{name}_sigma", segment_sigma)
                j = list(priors_by_name).index(name)
                c = pt.as_tensor_variable(information[0][:, j])
                sd = pt.as_tensor_variable(information[1][:, j])
                if name in paired:
                    mu = paired[name]
                elif shape_prior:  # no closed-form law for mu given sigma: sample it as is
                    mu = pm.Deterministic(f"{name}_mu", _prior_rv(f"{name}_pop", prior))
                else:
                    # mu given sigma, with each segment's data summarised as c_s ~ N(mu,
                    # sigma^2 + sd_s^2): precision `prec`, mean `centre`; nu is mu in
                    # units of that sd, with the exact law that gives mu ~ Normal(prior).
                    w = 1.0 / (sigma**2 + sd**2)
                    prec = pt.sum(w) + 1.0 / prior.sigma**2
                    centre = (pt.sum(w * c) + prior.mu / prior.sigma**2) / prec
                    root_prec = pt.sqrt(prec)
                    nu = pm.Normal(
                        f"{name}_nu", (prior.mu - centre) * root_prec, prior.sigma * root_prec
                    )
                    mu = pm.Deterministic(f"{name}_mu", centre + nu / root_prec)
                rho = sigma / sd
                root = pt.sqrt(1.0 + rho**2)
                z = pm.Normal(f"{name}_z", (mu - c) * rho / (sd * root), root, shape=n_segments)
                theta = (mu + c * rho**2) / (1.0 + rho**2) + z * sigma / root
                out[name] = pm.Deterministic(name, theta, dims="segment")
                continue
            if name in paired:
                mu = paired[name]
            elif shape_prior:
                mu = pm.Deterministic(f"{name}_mu", _prior_rv(f"{name}_pop", prior))
            else:
                mu = pm.Normal(f"{name}_mu", prior.mu, prior.sigma)
            sigma = pm.HalfNormal(f"{name}_sigma", segment_sigma)
            idx_c = np.flatnonzero(centered)
            idx_n = np.flatnonzero(~centered)
            theta = pt.zeros((n_segments,))
            if len(idx_n):
                z = pm.Normal(f"{name}_z", 0.0, 1.0, shape=len(idx_n))
                theta = pt.set_subtensor(theta[idx_n], mu + sigma * z)
            if len(idx_c):
                th_c = pm.Normal(f"{name}_centered", mu, sigma, shape=len(idx_c))
                theta = pt.set_subtensor(theta[idx_c], th_c)
            out[name] = pm.Deterministic(name, theta, dims="segment")
    return out


def natural_params(
    transform: Callable[..., dict], thetas: dict[str, pt.TensorVariable], names: Sequence[str]
) -> dict[str, pt.TensorVariable]:
    """Apply a model's transform and register each natural parameter per segment."""
    nat = transform(**thetas)
    return {n: pm.Deterministic(n, nat[n], dims="segment") for n in names}


def segment_view(params: dict[str, pt.TensorVariable], seg_idx: np.ndarray, n_segments: int):
    """Per-row parameters: gathered by segment, or scalars when there is one segment."""
    if n_segments == 1:
        return {k: v[0] for k, v in params.items()}
    return {k: v[seg_idx] for k, v in params.items()}
