"""Posterior predictive check of the calibration repeat-purchase distribution."""

from __future__ import annotations

from dataclasses import dataclass

import arviz as az
import numpy as np
import pandas as pd
import xarray as xr

from bayesclv.data import RFMData
from bayesclv.diagnostics.common import (
    as_params,
    bin_labels,
    draw_subset,
)
from bayesclv.errors import ModelSpecificationError
from bayesclv.families import get_family
from bayesclv.predict import CUSTOMER_DIM, DrawParams
from bayesclv.summary import interval_arrays


# =====================================================================================
# Posterior predictive check of the calibration frequency distribution
# =====================================================================================
@dataclass(frozen=True)
class FrequencyCheck:
    """Observed vs posterior predictive counts of customers by repeat purchases.

    ``observed`` has shape ``(n_groups, n_bins)``; ``simulated`` ``(n_draws, n_groups,
    n_bins)``; group 0 is ``"all"``, then one group per segment. The last bin is
    ``max_count+``.
    """

    groups: tuple[str, ...]
    bins: tuple[str, ...]
    observed: np.ndarray
    simulated: np.ndarray
    model: str

    def table(self, prob: float = 0.9) -> pd.DataFrame:
        """Tidy table: group, bin, observed, predicted mean and ``prob`` interval."""
        iv = interval_arrays(np.moveaxis(self.simulated, 0, -1), prob)
        rows = []
        for g, name in enumerate(self.groups):
            for k, b in enumerate(self.bins):
                lo, hi = iv["lower"][g, k], iv["upper"][g, k]
                obs = self.observed[g, k]
                rows.append(
                    dict(group=name, bin=b, observed=int(obs), mean=iv["mean"][g, k],
                         lower=lo, upper=hi, inside=bool(lo <= obs <= hi))
                )
        return pd.DataFrame(rows)

    def p_values(self) -> pd.Series:
        """Posterior predictive p-value per group of a chi-square discrepancy.

        ``D = sum_k (n_k - E n_k)^2 / E n_k`` with ``E n_k`` the posterior predictive mean;
        ``p = P(D_sim >= D_obs)``. Values near 0 say the model does not reproduce the
        frequency distribution.
        """
        e = self.simulated.mean(axis=0)
        e = np.where(e > 0, e, np.nan)
        d_obs = np.nansum((self.observed - e) ** 2 / e, axis=-1)
        d_sim = np.nansum((self.simulated - e) ** 2 / e, axis=-1)
        return pd.Series((d_sim >= d_obs).mean(axis=0), index=list(self.groups), name="p_value")


def posterior_predictive_frequency(
    params: xr.Dataset | az.InferenceData,
    rfm: RFMData,
    *,
    max_count: int = 7,
    n_draws: int = 200,
    random_seed: int | None = None,
) -> FrequencyCheck:
    """Posterior predictive check of the calibration repeat-purchase distribution.

    For each of ``n_draws`` posterior draws, every customer's calibration period of
    length ``T`` is simulated afresh with :func:`bayesclv.simulate.simulate_customers`
    (the model's own process, with their segment's parameters of that draw), and the
    customers with 0, 1, ..., ``max_count``+ repeat purchases are counted, overall and
    per segment.
    """
    from bayesclv import simulate

    params = as_params(params)
    dp = DrawParams(params, "purchase")
    cls = dp.family.truth_class
    rng = np.random.default_rng(random_seed)
    idx = draw_subset(dp.n_draws, n_draws, rng)
    cols = dp.positions(rfm.segment_names)
    order = np.argsort(rfm.segment, kind="stable")
    seg_sorted = rfm.segment[order]
    T_sorted = rfm.T[order]
    present = [s for s in range(rfm.n_segments) if (rfm.segment == s).any()]
    sizes = {rfm.segment_names[s]: int((rfm.segment == s).sum()) for s in present}
    n_groups = 1 + rfm.n_segments
    n_bins = max_count + 1

    def count(x: np.ndarray, seg: np.ndarray) -> np.ndarray:
        b = np.minimum(x, max_count)
        out = np.zeros((n_groups, n_bins), dtype=np.int64)
        out[0] = np.bincount(b, minlength=n_bins)
        out[1:] = np.bincount(seg * n_bins + b, minlength=rfm.n_segments * n_bins).reshape(
            rfm.n_segments, n_bins
        )
        return out

    sim = np.empty((len(idx), n_groups, n_bins), dtype=np.int64)
    for j, d in enumerate(idx):
        pop = {
            rfm.segment_names[s]: cls(**{n: dp.values[n][d, cols[s]] for n in dp.values})
            for s in present
        }
        res = simulate.simulate_customers(pop, sizes, T=T_sorted, random_seed=rng)
        sim[j] = count(res.frequency, seg_sorted)
    observed = count(rfm.frequency, rfm.segment)
    groups = ("all", *rfm.segment_names)
    if rfm.n_segments == 1:  # the single segment is the whole population
        groups, observed, sim = ("all",), observed[:1], sim[:, :1]
    return FrequencyCheck(
        groups=groups,
        bins=tuple(bin_labels(max_count)),
        observed=observed,
        simulated=sim,
        model=dp.model,
    )


# =====================================================================================
# ArviZ posterior_predictive and observed_data groups
# =====================================================================================
def posterior_predictive(
    idata: az.InferenceData,
    rfm: RFMData,
    *,
    n_draws: int | None = 200,
    random_seed: int | None = None,
) -> az.InferenceData:
    """A copy of ``idata`` with ArviZ's ``posterior_predictive`` and ``observed_data``
    groups: each customer's calibration repeat purchases, simulated afresh and observed.

    For each kept posterior draw, every customer's calibration period of length ``T`` is
    simulated by the family's own history simulator
    (:meth:`~bayesclv.families.base.PurchaseFamily.simulate_history`, with the customer's
    segment parameters of that draw), and its repeat-purchase count is stored as
    ``posterior_predictive["purchases"]``, dims ``(chain, draw, customer_id)``, beside
    ``observed_data["purchases"]`` (``rfm.frequency``), so ``az.plot_ppc(idata)`` works.

    ``n_draws`` bounds the draws simulated (memory: ``n_draws x customers`` integers):
    every chain is thinned evenly to about ``n_draws / chains`` draws, keeping the
    posterior's chain and draw coordinates; ``None`` simulates every draw. Purchase
    families only (a spend model has no purchase counts to simulate).
    """
    fam_kind = getattr(get_family(idata.attrs.get("model")), "kind", None)
    if fam_kind != "purchase":
        raise ModelSpecificationError(
            f"posterior_predictive simulates repeat purchases, so it needs a purchase "
            f"model's fit; this one is {idata.attrs.get('model')!r} ({fam_kind})."
        )
    params = as_params(idata)
    dp = DrawParams(params, "purchase")
    fam = dp.family
    n_chain, n_draw = dp.n_chain, dp.n_draw
    step = 1 if n_draws is None else max(1, -(-n_chain * n_draw // max(int(n_draws), 1)))
    keep = np.arange(0, n_draw, step)
    cols = dp.positions(rfm.segment_names)[rfm.segment]
    ages = np.asarray(rfm.T, dtype=np.float64)
    rng = np.random.default_rng(random_seed)
    sim = np.empty((n_chain, keep.size, rfm.n_customers), dtype=np.int64)
    for c in range(n_chain):
        for j, d in enumerate(keep):
            pop = {n: v[c * n_draw + d, cols] for n, v in dp.values.items()}
            sim[c, j] = fam.simulate_history(pop, ages, 0.0, rng).frequency
    ids = np.asarray(rfm.customer_id)
    pp = xr.Dataset(
        {"purchases": (("chain", "draw", CUSTOMER_DIM), sim)},
        coords={
            "chain": params["chain"].values,
            "draw": params["draw"].values[keep],
            CUSTOMER_DIM: ids,
        },
    )
    observed = xr.Dataset(
        {"purchases": ((CUSTOMER_DIM,), np.asarray(rfm.frequency, dtype=np.int64))},
        coords={CUSTOMER_DIM: ids},
    )
    out = idata.copy()
    for group in ("posterior_predictive", "observed_data"):
        if group in out.groups():
            delattr(out, group)
    out.add_groups(posterior_predictive=pp, observed_data=observed)
    return out
