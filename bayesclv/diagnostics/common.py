"""Helpers the diagnostics share: draws from fits or stacks, subsamples, chunks."""

from __future__ import annotations

import arviz as az
import numpy as np
import xarray as xr

from bayesclv.data import RFMData
from bayesclv.errors import ModelSpecificationError
from bayesclv.predict import (
    DrawParams,
    expected_purchases,
)
from bayesclv.stacking import PurchaseStack, stacked


# =====================================================================================
# Shared helpers
# =====================================================================================
def as_params(obj: xr.Dataset | az.InferenceData) -> xr.Dataset:
    if isinstance(obj, az.InferenceData):
        from bayesclv.fit import posterior_params

        return posterior_params(obj)
    return obj


def expected_purchases_any(params, rfm: RFMData, horizon: float) -> xr.DataArray:
    """:func:`bayesclv.predict.expected_purchases` for draws or a purchase stack."""
    if isinstance(params, PurchaseStack):
        return stacked(expected_purchases, params, rfm, horizon)
    return expected_purchases(params, rfm, horizon)


def draw_groups(params) -> tuple[int, list[tuple[DrawParams, np.ndarray]]]:
    """The posterior's number of draws and its parts: ``(DrawParams, positions)`` per
    family of a purchase stack, or the one family with every position."""
    if isinstance(params, PurchaseStack):
        return params.n_draws, [
            (DrawParams(sub, "purchase"), pos) for _, pos, sub in params.components()
        ]
    dp = DrawParams(params, "purchase")
    return dp.n_draws, [(dp, np.arange(dp.n_draws))]


def draw_subset(n_total: int, n_draws: int | None, rng: np.random.Generator) -> np.ndarray:
    """Indices of ``n_draws`` flattened posterior draws for simulation.

    A seeded subsample without replacement when the posterior has more draws; with
    fewer (a MAP fit, published point estimates) draws are reused, so the simulated
    predictive distribution still carries the customers' latent uncertainty. ``None``:
    every draw once.
    """
    if n_draws is None or n_draws == n_total:
        return np.arange(n_total)
    if n_draws < n_total:
        return np.sort(rng.choice(n_total, size=int(n_draws), replace=False))
    return np.sort(rng.choice(n_total, size=int(n_draws), replace=True))


def chunks(n: int, size: int):
    for start in range(0, n, size):
        yield slice(start, min(n, start + size))


def bin_labels(max_count: int) -> list[str]:
    return [str(k) for k in range(max_count)] + [f"{max_count}+"]


def check_holdout(rfm: RFMData) -> None:
    if not rfm.has_holdout or rfm.holdout_length is None:
        raise ModelSpecificationError(
            "holdout evaluation needs an RFMData with a holdout period: build it with "
            "rfm_summary(..., calibration_end=..., observation_end=...) with observation_end "
            "after calibration_end."
        )
