"""Pointwise log-likelihood per customer and ELPD (PSIS-LOO) comparison of fits."""

from __future__ import annotations

import hashlib
import warnings
from collections.abc import Mapping

import arviz as az
import numpy as np
import pandas as pd
import xarray as xr

from bayesclv.data import RFMData
from bayesclv.diagnostics.common import (
    as_params,
    chunks,
)
from bayesclv.errors import ModelSpecificationError
from bayesclv.families import get_family
from bayesclv.predict import CUSTOMER_DIM, DrawParams


# =====================================================================================
# Pointwise log-likelihood and model comparison
# =====================================================================================
def log_likelihood_name(kind: str) -> str:
    """Variable name of the pointwise log-likelihood of a family of ``kind``."""
    return {"purchase": "purchases", "spend": "spend"}.get(kind, kind)


def row_log_likelihood(
    params: xr.Dataset, kind: str, rows: np.ndarray, *, chunk_size: int = 2_000_000
) -> np.ndarray:
    """Log-likelihood of each distinct customer row in each draw, ``(n_draws, n_rows)``.

    ``rows`` is ``(n_rows, 1 + n_columns)``: the column of the row's segment in
    ``params`` (its ``segment`` coordinate), then the family's data columns in
    :meth:`~bayesclv.families.base.Family.logp` order. The one implementation behind
    :func:`pointwise_log_likelihood` and the ``log_likelihood`` group that
    :func:`bayesclv.fit.fit` stores. ``chunk_size`` bounds the (draw x row) values
    evaluated at once.
    """
    dp = DrawParams(params, kind)
    rows = np.asarray(rows, dtype=np.float64)
    cols = rows[:, 0].astype(np.int64)
    out = np.empty((dp.n_draws, rows.shape[0]))
    step = max(1, chunk_size // max(dp.n_draws, 1))
    for sl in chunks(rows.shape[0], step):
        th = [dp.values[n][:, cols[sl]] for n in dp.values]
        out[:, sl] = dp.family.logp(*th, *(rows[sl, j] for j in range(1, rows.shape[1])))
    return out


def log_likelihood_dataset(
    params: xr.Dataset,
    kind: str,
    rows: np.ndarray,
    customer_row: np.ndarray,
    customer_id,
    *,
    dim: str = CUSTOMER_DIM,
    chunk_size: int = 2_000_000,
) -> xr.Dataset:
    """Pointwise log-likelihood per customer, dims ``(chain, draw, dim)``: the values of
    :func:`row_log_likelihood` expanded to customers (``customer_row[i]`` is the row of
    customer ``i``)."""
    ll_rows = row_log_likelihood(params, kind, rows, chunk_size=chunk_size)
    n_chain, n_draw = params.sizes["chain"], params.sizes["draw"]
    ll = ll_rows[:, np.asarray(customer_row, dtype=np.int64)].reshape(n_chain, n_draw, -1)
    return xr.Dataset(
        {log_likelihood_name(kind): (("chain", "draw", dim), ll)},
        coords={
            "chain": params["chain"].values,
            "draw": params["draw"].values,
            dim: np.asarray(customer_id),
        },
        attrs={"bayesclv_rows_sha256": rows_fingerprint(rows, customer_row)},
    )


def customer_rows(
    params: xr.Dataset, kind: str, rfm: RFMData
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(rows, customer_row, customer_id)`` of ``rfm`` for :func:`log_likelihood_dataset`:
    the distinct ``(segment column, data)`` rows of the customers the family models."""
    fam = DrawParams(params, kind).family
    modelled = fam.model_rows(rfm)
    keep = modelled.mask
    cols = DrawParams(params, kind).positions(rfm.segment_names)[rfm.segment[keep]]
    stacked = np.column_stack([cols.astype(float), *modelled.columns])
    uniq, inv = np.unique(stacked, axis=0, return_inverse=True)
    return uniq, inv.ravel(), rfm.customer_id[keep]


def pointwise_log_likelihood(
    idata: az.InferenceData,
    rfm: RFMData,
    *,
    chunk_size: int = 2_000_000,
    dim: str = CUSTOMER_DIM,
) -> az.InferenceData:
    """A copy of ``idata`` with a ``log_likelihood`` group, dims ``(chain, draw, dim)``
    (default ``customer_id``, :data:`bayesclv.predict.CUSTOMER_DIM`).

    The models' likelihood is a ``pm.Potential`` (summed over customers), so PyMC stores
    no pointwise values; they are computed with the family's log-density, once per
    distinct ``(segment, data)`` row and then expanded to customers
    (:func:`row_log_likelihood`, the code :func:`bayesclv.fit.fit` uses for the
    ``log_likelihood`` group it stores itself, with the same dim). Use this for
    fits made without that group (``fit(..., log_likelihood=False)``, older files) or for
    other data. Variable ``"purchases"`` (purchase families) or ``"spend"`` (Gamma-Gamma:
    customers with a repeat purchase and positive mean spend). ``chunk_size`` bounds the
    number of (draw x row) values evaluated at once.
    """
    fam = get_family(idata.attrs.get("model"))
    params = as_params(idata)
    rows, customer_row, ids = customer_rows(params, fam.kind, rfm)
    ds = log_likelihood_dataset(
        params, fam.kind, rows, customer_row, ids, dim=dim, chunk_size=chunk_size
    )
    out = idata.copy()
    if "log_likelihood" in out.groups():
        del out.log_likelihood
    out.add_groups(log_likelihood=ds)
    return out


def rows_fingerprint(rows: np.ndarray, customer_row: np.ndarray) -> str:
    """SHA-256 of the customer rows a ``log_likelihood`` group was computed on (stored in
    the group's attributes, so a fit's group is used only for the same data)."""
    h = hashlib.sha256()
    h.update(np.ascontiguousarray(rows, dtype=np.float64).tobytes())
    h.update(np.ascontiguousarray(customer_row, dtype=np.int64).tobytes())
    return h.hexdigest()


def with_log_likelihood(idata: az.InferenceData, rfm: RFMData) -> az.InferenceData:
    """``idata`` itself when the ``log_likelihood`` group :func:`bayesclv.fit.fit` stored
    was computed on ``rfm``'s customers (same rows, same fingerprint), else a copy with
    the group recomputed by :func:`pointwise_log_likelihood` (dim ``customer_id``)."""
    fam = get_family(idata.attrs.get("model"))
    if "log_likelihood" in idata.groups():
        stored = idata.log_likelihood.attrs.get("bayesclv_rows_sha256")
        rows, customer_row, _ = customer_rows(as_params(idata), fam.kind, rfm)
        if stored is not None and stored == rows_fingerprint(rows, customer_row):
            return idata
    return pointwise_log_likelihood(idata, rfm)


def compare_models(
    fits: Mapping[str, az.InferenceData],
    rfm: RFMData,
    *,
    ic: str = "loo",
) -> pd.DataFrame:
    """ELPD comparison (PSIS-LOO by default) of fits to the same data, via ``arviz.compare``.

    All fits must model the same data: purchase models (BG/NBD, MBG/NBD, Pareto/NBD, any
    pooling) with each other, or Gamma-Gamma fits with each other. MAP fits (one draw)
    cannot be compared this way. The table adds ``model``, ``pooling`` and ``p_loo``
    columns and the Pareto-k count above 0.7 (``n_bad_k``): where it is not 0 the LOO
    estimate for those customers is unreliable.
    """
    if not fits:
        raise ValueError("compare_models needs at least one fit.")
    families = {get_family(f.attrs.get("model")).kind for f in fits.values()}
    if len(families) > 1:
        raise ModelSpecificationError(
            "compare_models: purchase models and Gamma-Gamma fits model different data and "
            "cannot be compared; compare each group separately."
        )
    small = [k for k, f in fits.items() if f.posterior.sizes["draw"] < 10]
    if small:
        raise ModelSpecificationError(
            f"compare_models: fits {small} have fewer than 10 draws (MAP?); LOO needs "
            f"posterior draws (sampler='pymc' or 'nutpie')."
        )
    with_ll = {k: with_log_likelihood(f, rfm) for k, f in fits.items()}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        table = az.compare(with_ll, ic=ic)
        bad = {}
        for k, f in with_ll.items():
            if ic == "loo":
                res = az.loo(f, pointwise=True)
                bad[k] = int((np.asarray(res.pareto_k) > 0.7).sum())
    table = table.copy()
    table.insert(0, "model", [fits[k].attrs.get("model") for k in table.index])
    table.insert(1, "pooling", [fits[k].attrs.get("pooling") for k in table.index])
    if bad:
        table["n_bad_k"] = [bad[k] for k in table.index]
    return table
