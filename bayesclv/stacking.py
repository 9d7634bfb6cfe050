"""Predictions from a stack of purchase families: a mixture over posterior draws.

Stacking (Yao, Vehtari, Simpson & Gelman 2018, "Using stacking to average Bayesian
predictive distributions", Bayesian Analysis 13(3)) weighs the posterior predictive
distributions of several models to maximise the leave-one-out log score of the mixture.
A mixture's draws are drawn from each component in proportion to its weight, so a
:class:`PurchaseStack` assigns every posterior draw position ``d = 0..N-1`` to one family
(a seeded, stratified allocation: ``round(w_j N)`` draws each) and takes that draw from
that family's posterior. Every quantity downstream (P(alive), expected purchases, CLV,
segment totals) keeps ``(chain, draw, ...)`` and is then summarised as usual: "draws all
the way down" holds for the stack too.

This module works on draws only (no PyMC); :func:`bayesclv.selection.compare_families`
fits the families and computes the weights.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import numpy as np
import xarray as xr

from bayesclv.errors import ModelSpecificationError

__all__ = ["PurchaseStack", "allocate_draws", "draw_subset", "stacked", "stacking_weights"]


def stacking_weights(log_scores: np.ndarray) -> np.ndarray:
    """Stacking weights from pointwise log predictive densities.

    ``log_scores[i, k]`` is the log predictive density of observation ``i`` under model
    ``k`` (leave-one-out or out-of-time); the weights maximise the summed log score of the
    mixture, ``sum_i log sum_k w_k exp(log_scores[i, k])``, over the simplex (Yao et al.
    2018, eq. 4). Solved over softmax coordinates (the objective is concave in ``w``, so
    the optimum is global) with L-BFGS and the exact gradient, then polished with the
    EM fixed point ``w_k <- mean_i w_k p_ik / sum_j w_j p_ij``.
    """
    from scipy.optimize import minimize
    from scipy.special import softmax

    lp = np.asarray(log_scores, dtype=np.float64)
    if lp.ndim != 2 or lp.shape[1] < 1 or not np.isfinite(lp).all():
        raise ModelSpecificationError(
            "stacking_weights needs a finite (observations x models) array of log scores."
        )
    n, k = lp.shape
    if k == 1:
        return np.ones(1)
    # shift each row by its maximum: the weights do not change and exp() stays in range
    dens = np.exp(lp - lp.max(axis=1, keepdims=True))

    def objective(z):
        w = softmax(np.append(z, 0.0))
        mix = dens @ w
        g_w = (dens / mix[:, None]).sum(axis=0)  # d/dw of sum log mix
        g_z = w * (g_w - w @ g_w)  # softmax Jacobian
        return -np.log(mix).sum() / n, -g_z[:-1] / n

    res = minimize(objective, np.zeros(k - 1), jac=True, method="L-BFGS-B",
                   options={"ftol": 1e-15, "gtol": 1e-12, "maxiter": 2000})
    w = softmax(np.append(res.x, 0.0))
    # polish with the EM fixed point of mixture weights, which never lowers the score
    for _ in range(500):
        resp = dens * w
        new = (resp / resp.sum(axis=1, keepdims=True)).mean(axis=0)
        done = np.max(np.abs(new - w)) < 1e-12
        w = new
        if done:
            break
    return w


def allocate_draws(weights: Mapping[str, float], n_draws: int, random_seed=0) -> np.ndarray:
    """Which family each of ``n_draws`` draw positions takes: an array of family indices.

    Family ``j`` gets ``round(w_j n)`` positions (largest remainders, so they sum to
    ``n``), placed at random positions (seeded), so chains and draws of every family
    are spread over the whole ``(chain, draw)`` grid.
    """
    names = list(weights)
    w = np.array([float(weights[k]) for k in names])
    if (w < 0).any() or not np.isfinite(w).all() or w.sum() <= 0:
        raise ModelSpecificationError(f"stacking weights must be >= 0 and sum > 0: {weights}.")
    w = w / w.sum()
    exact = w * n_draws
    counts = np.floor(exact).astype(int)
    rest = n_draws - counts.sum()
    counts[np.argsort(-(exact - counts), kind="stable")[:rest]] += 1
    labels = np.repeat(np.arange(len(names)), counts)
    return np.random.default_rng(random_seed).permutation(labels)


def draw_subset(params: xr.Dataset, flat: np.ndarray) -> xr.Dataset:
    """The draws at flattened positions ``flat`` of a ``(chain, draw, ...)`` Dataset, as
    one chain of ``len(flat)`` draws (attributes kept)."""
    stacked_ = params.stack(sample=("chain", "draw"))
    sub = stacked_.isel(sample=np.asarray(flat)).drop_vars(["sample", "chain", "draw"])
    sub = sub.rename(sample="draw").expand_dims(chain=[0]).assign_coords(
        draw=np.arange(len(flat))
    )
    dims = [d for d in ("chain", "draw") if d in sub.dims]
    sub = sub.transpose(*dims, ...)
    sub.attrs = dict(params.attrs)
    return sub


@dataclass(frozen=True)
class PurchaseStack:
    """Several purchase families' posterior draws and their stacking weights.

    ``params`` maps a label (usually the family name) to the draws of that family
    (``bayesclv.fit.posterior_params``), all with the same number of chains x draws;
    ``weights`` maps the same labels to stacking weights. Families with weight 0 are
    kept for the record and take no draws.
    """

    params: Mapping[str, xr.Dataset]
    weights: Mapping[str, float]
    random_seed: int = 0
    labels: np.ndarray = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if set(self.params) != set(self.weights) or not self.params:
            raise ModelSpecificationError(
                f"PurchaseStack: params {sorted(self.params)} and weights "
                f"{sorted(self.weights)} must name the same families."
            )
        sizes = {k: (v.sizes["chain"], v.sizes["draw"]) for k, v in self.params.items()}
        if len(set(sizes.values())) != 1:
            raise ModelSpecificationError(
                f"PurchaseStack: every family needs the same chains x draws, got {sizes}."
            )
        first = next(iter(self.params.values()))
        n = first.sizes["chain"] * first.sizes["draw"]
        object.__setattr__(
            self, "labels", allocate_draws(dict(self.weights), n, self.random_seed)
        )

    @property
    def names(self) -> list[str]:
        return list(self.weights)

    @property
    def like(self) -> xr.Dataset:
        """The first family's draws: the ``(chain, draw)`` layout of the stack."""
        return next(iter(self.params.values()))

    @property
    def n_draws(self) -> int:
        return int(self.labels.size)

    def positions(self, name: str) -> np.ndarray:
        """The flattened draw positions taken from family ``name``."""
        return np.flatnonzero(self.labels == self.names.index(name))

    def components(self) -> list[tuple[str, np.ndarray, xr.Dataset]]:
        """``(label, positions, draws at those positions)`` of each family with draws."""
        out = []
        for name in self.names:
            pos = self.positions(name)
            if pos.size:
                out.append((name, pos, draw_subset(self.params[name], pos)))
        return out

    def describe(self) -> str:
        """``"pareto_nbd 0.71 + bgnbd 0.29"``: the families with weight, largest first."""
        parts = sorted(self.weights.items(), key=lambda kv: -kv[1])
        return " + ".join(f"{k} {w:.2f}" for k, w in parts if w > 0)


def stacked(fn: Callable[..., xr.DataArray], stack: PurchaseStack, *args, paired=(),
            **kwargs) -> xr.DataArray:
    """``fn(params, *paired, *args, **kwargs)`` for the stack, mixed per draw.

    Each family with draws is evaluated only at its own draw positions (a subset of its
    posterior, :meth:`PurchaseStack.components`); ``paired`` Datasets (e.g. the spend
    draws, which pair with the purchase draws by position) are subset at the same
    positions. ``fn`` returns ``(chain, draw, ...)``; so does the result, with the
    stack's chain and draw coordinates. Works with any prediction of
    :mod:`bayesclv.predict` or :mod:`bayesclv.clv` that keeps the draws.
    """
    parts = []
    for _, pos, sub in stack.components():
        extra = [draw_subset(p, pos) for p in paired]
        da = fn(sub, *extra, *args, **kwargs).transpose("chain", "draw", ...)
        parts.append((pos, da))
    first = parts[0][1]
    rest = first.shape[2:]
    out = np.empty((stack.n_draws, *rest), dtype=first.dtype)
    for pos, da in parts:
        out[pos] = np.asarray(da.values).reshape(len(pos), *rest)
    like = stack.like
    n_chain, n_draw = like.sizes["chain"], like.sizes["draw"]
    coords = {k: v for k, v in first.coords.items() if k not in ("chain", "draw")}
    coords.update(chain=like["chain"].values, draw=like["draw"].values)
    res = xr.DataArray(out.reshape(n_chain, n_draw, *rest), dims=first.dims, coords=coords,
                       name=first.name)
    res.attrs = {**first.attrs, "purchase_model": "stack", "stack": stack.describe()}
    return res
