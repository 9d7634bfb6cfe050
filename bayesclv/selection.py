"""Let the data choose the purchase family: fit the candidates, rank them, stack them.

:func:`compare_families` fits each candidate family (same data, same pooling), takes
each fit's pointwise log-likelihood per customer (the ``log_likelihood`` group ``fit``
stores, or recomputed where a fit lacks it; the same convention for every family:
the log-likelihood of the customer's calibration summary, so the values are comparable),
ranks the fits by PSIS-LOO (Vehtari, Gelman & Gabry 2017) and computes stacking weights
(Yao, Vehtari, Simpson & Gelman 2018) with ArviZ. The result carries the fits, the table
and a :class:`bayesclv.stacking.PurchaseStack`, whose predictions are the weighted
mixture of the families' posterior predictive distributions, per draw.

Which families are candidates: every purchase family whose data the summary has (a
family says so with ``applicable(rfm)``; e.g. the regularity families need each
customer's log inter-purchase times, the discrete-time ones integer opportunities).
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import arviz as az
import numpy as np
import pandas as pd

from bayesclv.data import RFMData
from bayesclv.errors import ModelSpecificationError
from bayesclv.families import FAMILIES, get_family, purchase_families
from bayesclv.stacking import PurchaseStack

__all__ = ["FamilyComparison", "compare_families", "candidate_families"]

#: Below this stacking weight a family is reported but takes no draws.
MIN_WEIGHT = 0.01


@dataclass(frozen=True)
class FamilyComparison:
    """What :func:`compare_families` found.

    Attributes
    ----------
    table : DataFrame
        One row per family, best first: ``elpd_loo``, ``se``, ``elpd_diff`` and ``dse``
        (difference to the best and its standard error), ``p_loo``, ``weight`` (stacking),
        ``n_bad_k`` (customers with Pareto k > 0.7: their LOO terms are unreliable),
        the convergence verdict and seconds.
    fits : dict
        The InferenceData of each family.
    stack : PurchaseStack
        The posterior draws of the families with their stacking weights (weights below
        :data:`MIN_WEIGHT` set to 0 and the rest renormalised).
    best : str
        The family with the highest ELPD.
    skipped : dict
        Families not tried, with the reason.
    """

    table: pd.DataFrame
    fits: Mapping[str, Any]
    stack: PurchaseStack
    best: str
    skipped: Mapping[str, str] = field(default_factory=dict)

    def summary(self) -> str:
        """Which family won and by how much, in words (for reports and the CLI)."""
        t = self.table
        lines = [f"family choice by PSIS-LOO over {self.n_customers} customers: "
                 f"best {self.best} (stack: {self.stack.describe()})"]
        for name, row in t.iterrows():
            diff = "" if row["elpd_diff"] == 0 else (
                f", {row['elpd_diff']:.1f} +- {row['dse']:.1f} nats behind"
            )
            lines.append(
                f"  {name:<12} elpd_loo {row['elpd_loo']:.1f} (se {row['se']:.1f}){diff}, "
                f"weight {row['weight']:.2f}, verdict {row['verdict']}"
            )
        for name, why in self.skipped.items():
            lines.append(f"  {name:<12} not tried: {why}")
        return "\n".join(lines)

    @property
    def n_customers(self) -> int:
        return int(self.table.attrs.get("n_customers", 0))


def candidate_families(rfm: RFMData) -> tuple[list[str], dict[str, str]]:
    """The purchase families that can model ``rfm`` and, for the others, why not."""
    ok, skipped = [], {}
    for name in purchase_families():
        reason = FAMILIES[name].not_applicable(rfm)
        if reason:
            skipped[name] = reason
        else:
            ok.append(name)
    return ok, skipped


def compare_families(
    rfm: RFMData,
    families: Sequence[str] | None = None,
    *,
    pooling: str = "partial",
    priors: Mapping[str, Any] | None = None,
    fit_kwargs: Mapping[str, Any] | None = None,
    fits: Mapping[str, Any] | None = None,
    random_seed: int = 0,
) -> FamilyComparison:
    """Fit candidate purchase families to ``rfm`` and compare them by PSIS-LOO.

    Parameters
    ----------
    rfm : RFMData
        The calibration summary (every family is fitted to the same customers).
    families : sequence of str, optional
        Candidates (default: :func:`candidate_families`).
    pooling : str
        Pooling of every candidate (see :func:`bayesclv.models.build_model`).
    priors : mapping {family: priors}, optional
        Priors per family (default: each family's defaults).
    fit_kwargs : mapping, optional
        Passed to :func:`bayesclv.fit.fit` (sampler, draws, chains, random_seed...).
        LOO needs posterior draws: ``sampler="map"`` is refused.
    fits : mapping {family: InferenceData}, optional
        Fits already made (they are used instead of fitting again).
    random_seed : int
        Seed of the stack's allocation of draws to families.

    Returns
    -------
    FamilyComparison
    """
    from bayesclv.diagnostics import convergence_report, with_log_likelihood
    from bayesclv.fit import fit, posterior_params
    from bayesclv.models import build_model

    fit_kwargs = dict(fit_kwargs or {})
    if fit_kwargs.get("sampler") in ("map", "laplace_point"):
        raise ModelSpecificationError(
            "compare_families needs posterior draws (PSIS-LOO); use a NUTS sampler, not "
            "sampler='map'."
        )
    if families is None:
        families, skipped = candidate_families(rfm)
    else:
        skipped = {}
        for name in families:
            get_family(name, "purchase")
            reason = FAMILIES[name].not_applicable(rfm)
            if reason:
                raise ModelSpecificationError(f"compare_families: {name} cannot model this "
                                              f"data: {reason}.")
    if len(families) < 1:
        raise ModelSpecificationError("compare_families needs at least one family.")
    priors = dict(priors or {})
    done = dict(fits or {})
    seconds, verdicts, with_ll = {}, {}, {}
    import time

    for name in families:
        t0 = time.perf_counter()
        if name not in done:
            model = build_model(name, rfm, priors.get(name), pooling)
            done[name] = fit(model, **fit_kwargs)
        seconds[name] = time.perf_counter() - t0
        verdicts[name] = convergence_report(done[name]).verdict
        # the fit's own log_likelihood group where it was computed on these customers
        with_ll[name] = with_log_likelihood(done[name], rfm)
    sizes = {(f.posterior.sizes["chain"], f.posterior.sizes["draw"]) for f in with_ll.values()}
    if len(sizes) != 1:
        raise ModelSpecificationError(
            f"compare_families: the fits have different chains x draws {sorted(sizes)}; "
            f"fit them with the same settings."
        )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if len(with_ll) > 1:
            table = az.compare(with_ll, ic="loo", method="stacking").copy()
        else:
            (name, idata), = with_ll.items()
            res = az.loo(idata)
            table = pd.DataFrame(
                {"rank": [0], "elpd_loo": [res.elpd_loo], "p_loo": [res.p_loo],
                 "elpd_diff": [0.0], "weight": [1.0], "se": [res.se], "dse": [0.0]},
                index=[name],
            )
        bad = {k: int((np.asarray(az.loo(v, pointwise=True).pareto_k) > 0.7).sum())
               for k, v in with_ll.items()}
    table["n_bad_k"] = [bad[k] for k in table.index]
    table["verdict"] = [verdicts[k] for k in table.index]
    table["seconds"] = [seconds[k] for k in table.index]
    table["pooling"] = pooling
    table.attrs["n_customers"] = rfm.n_customers
    w = {k: float(table.loc[k, "weight"]) for k in table.index}
    w = {k: (v if v >= MIN_WEIGHT else 0.0) for k, v in w.items()}
    if sum(w.values()) <= 0:
        w[table.index[0]] = 1.0
    total = sum(w.values())
    w = {k: v / total for k, v in w.items()}
    stack = PurchaseStack(
        {k: posterior_params(done[k]) for k in table.index}, w, random_seed=random_seed
    )
    return FamilyComparison(
        table=table, fits={k: done[k] for k in table.index}, stack=stack,
        best=str(table.index[0]), skipped=skipped,
    )
