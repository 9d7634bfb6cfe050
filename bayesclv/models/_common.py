"""What every model builder shares: pooling structure, row compression, metadata."""

from __future__ import annotations

import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pymc as pm
import pytensor.tensor as pt

from bayesclv.data import RFMData
from bayesclv.errors import ModelSpecificationError
from bayesclv.priors import NormalPrior

POOLINGS = ("complete", "partial", "none")
PARAMETERIZATIONS = ("auto", "centered", "noncentered")

#: Under ``parameterization="auto"`` a segment with at least this many customers gets a
#: centred parameterisation, smaller ones non-centred (each segment chooses for itself).
#: Centred suits segments whose data pin their parameters down *and* differ clearly from
#: each other; non-centred suits small segments and segments that are alike (between-
#: segment sd near 0), which is common (Betancourt & Girolami 2015). Measured on CDNOW's
#: three acquisition months (~800 customers each, very alike), nutpie, 2 x 500 draws,
#: chains started at the MAP: non-centred 4 divergences, min ESS 227; centred 44
#: divergences, min ESS 81. Hence the default ``"noncentered"`` and a high threshold here.
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
    extra: dict = field(default_factory=dict)


_SPECS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def register_spec(model: pm.Model, spec: ModelSpec) -> None:
    _SPECS[model] = spec


def model_spec(model: pm.Model) -> ModelSpec:
    """The :class:`ModelSpec` of a model built by a bayesclv builder."""
    try:
        return _SPECS[model]
    except KeyError:
        raise ModelSpecificationError(
            "This PyMC model was not built by a bayesclv builder (build_bgnbd, "
            "build_pareto_nbd, build_gamma_gamma, ...); fit() needs one of those."
        ) from None


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
    if parameterization == "noncentered":
        return np.zeros(len(sizes), dtype=bool)
    return np.asarray(sizes) >= CENTERED_MIN_CUSTOMERS


def unconstrained_params(
    priors_by_name: dict[str, NormalPrior],
    *,
    pooling: str,
    n_segments: int,
    segment_sigma: float,
    centered: np.ndarray,
) -> dict[str, pt.TensorVariable]:
    """Create the free random variables; return each unconstrained parameter per segment.

    Must be called inside a ``pm.Model`` with a ``segment`` coordinate. Every returned
    tensor has shape ``(n_segments,)``.

    - complete: one Normal per parameter, broadcast to every segment.
    - none: an independent Normal per segment with the spec's prior.
    - partial: ``mu ~ spec prior``, ``sigma ~ HalfNormal(segment_sigma)``; segments with
      ``centered`` true draw ``theta_s ~ Normal(mu, sigma)``, the others
      ``theta_s = mu + sigma * z_s`` with ``z_s ~ Normal(0, 1)``.
    """
    out: dict[str, pt.TensorVariable] = {}
    ones = pt.ones((n_segments,))
    for name, prior in priors_by_name.items():
        if pooling == "complete":
            theta = pm.Normal(name, prior.mu, prior.sigma)
            out[name] = theta * ones
        elif pooling == "none":
            out[name] = pm.Normal(name, prior.mu, prior.sigma, dims="segment")
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
