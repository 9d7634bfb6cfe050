"""Random-variate helpers the families' simulators share (exact, vectorised)."""

from __future__ import annotations

import math
from dataclasses import fields
from typing import Any

import numpy as np

from bayesclv.errors import ModelSpecificationError

__all__ = ["validate_positive", "beta_order_stat", "geometric_count", "ordered_uniforms"]


def validate_positive(obj: Any) -> None:
    """Check (and coerce to float) every field of a frozen population-parameter dataclass."""
    for f in fields(obj):
        value = getattr(obj, f.name)
        try:
            value = float(value)
        except (TypeError, ValueError) as exc:
            raise ModelSpecificationError(
                f"{type(obj).__name__}: '{f.name}' must be a number, got {value!r}."
            ) from exc
        if not (math.isfinite(value) and value > 0):
            raise ModelSpecificationError(
                f"{type(obj).__name__}: '{f.name}' must be finite and > 0, got {value!r}."
            )
        object.__setattr__(obj, f.name, value)


def beta_order_stat(rng: np.random.Generator, k: np.ndarray, n: np.ndarray) -> np.ndarray:
    """The k-th of n uniform order statistics on (0, 1), ``Beta(k, n - k + 1)``; 0 if k = 0."""
    out = np.zeros(k.shape[0])
    pos = k > 0
    out[pos] = rng.beta(k[pos], (n[pos] - k[pos] + 1))
    return out


def geometric_count(rng: np.random.Generator, p: np.ndarray) -> np.ndarray:
    """``Geometric(p)`` on {1, 2, ...} as float, by inversion.

    Float so that ``p`` near 0 (Beta draws underflow for small ``a``) gives a huge or
    infinite count instead of an integer overflow.
    """
    u = 1.0 - rng.random(p.shape[0])  # in (0, 1]
    with np.errstate(divide="ignore"):
        n = np.ceil(np.log(u) / np.log1p(-p))
    return np.maximum(n, 1.0)


def ordered_uniforms(counts: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Sorted Uniform(0, 1) samples in consecutive groups of ``counts``, without sorting.

    Uses the spacings representation: with ``E_1..E_{m+1}`` iid Exp(1), the partial sums
    ``S_k / S_{m+1}`` (k = 1..m) are the order statistics of m uniforms (Devroye 1986,
    ch. V.2). One flat cumulative sum serves all groups.
    """
    counts = np.asarray(counts, dtype=np.int64)
    m = int(counts.sum())
    if m == 0:
        return np.empty(0)
    sizes = counts + 1
    e = rng.standard_exponential(int(sizes.sum()))
    c = np.cumsum(e)
    ends = np.cumsum(sizes) - 1
    base = np.concatenate(([0.0], c[ends[:-1]]))
    group = np.repeat(np.arange(counts.shape[0]), sizes)
    rel = (c - base[group]) / (c[ends] - base)[group]
    keep = np.ones(rel.shape[0], dtype=bool)
    keep[ends] = False
    return rel[keep]
