"""Pointwise log-likelihood per customer and ELPD (PSIS-LOO) comparison of fits."""

from __future__ import annotations

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
from bayesclv.predict import (
    DrawParams,
)


# =====================================================================================
# Pointwise log-likelihood and model comparison
# =====================================================================================
def pointwise_log_likelihood(
    idata: az.InferenceData, rfm: RFMData, *, chunk_size: int = 2_000_000
) -> az.InferenceData:
    """A copy of ``idata`` with a ``log_likelihood`` group, dims ``(chain, draw, customer)``.

    The models' likelihood is a ``pm.Potential`` (summed over customers), so PyMC stores
    no pointwise values; they are recomputed here with the same log-densities
    (:mod:`bayesclv.likelihoods`), once per distinct ``(segment, data)`` row and then
    expanded to customers. Variable ``"purchases"`` (BG/NBD, MBG/NBD, Pareto/NBD) or
    ``"spend"`` (Gamma-Gamma: customers with a repeat purchase and positive mean spend).
    ``chunk_size`` bounds the number of (draw x row) values evaluated at once.
    """
    fam = get_family(idata.attrs.get("model"))
    params = as_params(idata)
    dp = DrawParams(params, fam.kind)
    rows = fam.model_rows(rfm)
    keep, data = rows.mask, list(rows.columns)
    var = {"purchase": "purchases", "spend": "spend"}.get(fam.kind, fam.kind)
    cols = dp.positions(rfm.segment_names)[rfm.segment[keep]]
    stacked = np.column_stack([cols.astype(float), *data])
    uniq, inv = np.unique(stacked, axis=0, return_inverse=True)
    inv = inv.ravel()
    ucols = uniq[:, 0].astype(np.int64)
    ll_u = np.empty((dp.n_draws, uniq.shape[0]))
    step = max(1, chunk_size // max(dp.n_draws, 1))
    for sl in chunks(uniq.shape[0], step):
        th = [dp.values[n][:, ucols[sl]] for n in dp.values]
        d = [uniq[sl, j + 1] for j in range(len(data))]
        ll_u[:, sl] = fam.logp(*th, *d)
    ll = ll_u[:, inv].reshape(dp.n_chain, dp.n_draw, -1)
    ds = xr.Dataset(
        {var: (("chain", "draw", "customer"), ll)},
        coords={
            "chain": idata.posterior.chain.values,
            "draw": idata.posterior.draw.values,
            "customer": rfm.customer_id[keep],
        },
    )
    out = idata.copy()
    if "log_likelihood" in out.groups():
        del out.log_likelihood
    out.add_groups(log_likelihood=ds)
    return out


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
    with_ll = {k: pointwise_log_likelihood(f, rfm) for k, f in fits.items()}
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
