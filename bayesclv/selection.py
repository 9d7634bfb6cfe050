"""Let the data choose the purchase family: fit the candidates, rank them, stack them.

:func:`compare_families` fits each candidate family (same data, same pooling), takes
each fit's pointwise log-likelihood per customer (the ``log_likelihood`` group ``fit``
stores, or recomputed where a fit lacks it; the same convention for every family:
the log-likelihood of the customer's calibration summary, so the values are comparable),
ranks the fits by PSIS-LOO (Vehtari, Gelman & Gabry 2017) and computes stacking weights
(Yao, Vehtari, Simpson & Gelman 2018) with ArviZ. The result carries the fits, the table
and a :class:`bayesclv.stacking.PurchaseStack`, whose predictions are the weighted
mixture of the families' posterior predictive distributions, per draw.

With ``validation=`` the ranking is by **leave-future-out** forecast instead (Bürkner,
Gabry & Vehtari 2020): every candidate is also fitted to the same log summarised to an
earlier cut (:func:`validation_summary`), and scored by the log predictive density of
each customer's purchase count between that cut and the calibration end; the stacking
weights maximise the mixture's score of those counts (:func:`bayesclv.stacking.
stacking_weights`). PSIS-LOO scores the calibration likelihood, which includes how
regular the past inter-purchase times were; what the scores are used for is the count of
future purchases, and the two can disagree: on the grocery log of Reutterer, Platzer &
Schröder (2021) the regularity families win PSIS-LOO by about 800 nats and lose the
holdout log predictive density by 240 (``benchmarks/results/real_data_grocery.md``).

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

__all__ = ["FamilyComparison", "compare_families", "candidate_families", "validation_summary"]

#: What the ranking measures, by criterion (the table's ``attrs["criterion"]``).
CRITERIA = {
    "psis-loo": "PSIS-LOO over customers of the calibration likelihood",
    "leave-future-out": "log predictive density of the purchase counts in a validation "
                        "window at the end of the calibration period (leave-future-out)",
}

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
        the convergence verdict and seconds. With ``validation=``: ``elpd_forecast``
        (summed validation log predictive density) instead of ``elpd_loo`` / ``p_loo`` /
        ``n_bad_k``, and ``verdict_validation`` (the validation fit's convergence).
        ``attrs["criterion"]`` is ``"psis-loo"`` or ``"leave-future-out"``.
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
        lfo = t.attrs.get("criterion") == "leave-future-out"
        if lfo:
            v = t.attrs["validation"]
            head = (f"family choice by leave-future-out forecast: fitted to {v['n_customers']}"
                    f" customers up to {v['cut']}, scored on their purchases in the next "
                    f"{v['length']:g} {v['time_unit']}s")
        else:
            head = f"family choice by PSIS-LOO over {self.n_customers} customers"
        lines = [f"{head}: best {self.best} (stack: {self.stack.describe()})"]
        col = "elpd_forecast" if lfo else "elpd_loo"
        for name, row in t.iterrows():
            diff = "" if row["elpd_diff"] == 0 else (
                f", {row['elpd_diff']:.1f} +- {row['dse']:.1f} nats behind"
            )
            lines.append(
                f"  {name:<12} {col} {row[col]:.1f} (se {row['se']:.1f}){diff}, "
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
    validation: RFMData | None = None,
    validation_draws: int = 500,
    validation_fit_kwargs: Mapping[str, Any] | None = None,
) -> FamilyComparison:
    """Fit candidate purchase families to ``rfm`` and compare them by PSIS-LOO, or by
    leave-future-out forecast with ``validation``.

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
        Seed of the stack's allocation of draws to families (and of the validation
        scores' Monte Carlo).
    validation : RFMData, optional
        The same log summarised to an earlier cut, with the purchases from that cut to
        the calibration end as its holdout (:func:`validation_summary`). Each family is
        fitted to it and ranked by the summed log predictive density of those holdout
        counts; the stacking weights maximise the mixture's score (per customer). Then
        the families with weight are fitted to ``rfm`` unless ``fits`` has them:
        ``FamilyComparison.fits`` holds those and any other given in ``fits``.
    validation_draws : int
        Posterior draws per family for the validation scores.
    validation_fit_kwargs : mapping, optional
        ``fit`` settings of the validation fits (default: ``fit_kwargs`` with at most 2
        chains x (500 tuning + 500 draws), which is more than the ``validation_draws``
        the scores use: the scores need a posterior, not the final fit's precision).

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
    if validation is not None:
        if validation_fit_kwargs is None:
            validation_fit_kwargs = dict(fit_kwargs)
            for key, cap in (("chains", 2), ("draws", 500), ("tune", 500)):
                validation_fit_kwargs[key] = min(int(fit_kwargs.get(key) or cap), cap)
        return _compare_forecast(rfm, list(families), pooling, priors, fit_kwargs, done,
                                 random_seed, validation, validation_draws, skipped,
                                 dict(validation_fit_kwargs))
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


def _compare_forecast(rfm, families, pooling, priors, fit_kwargs, done, random_seed,
                      validation, n_draws, skipped, val_kwargs) -> FamilyComparison:
    """``compare_families(validation=...)``: leave-future-out ranking and stacking."""
    import time

    from bayesclv.diagnostics import convergence_report, holdout_evaluation
    from bayesclv.diagnostics.common import check_holdout
    from bayesclv.fit import fit, posterior_params
    from bayesclv.models import build_model
    from bayesclv.stacking import stacking_weights

    check_holdout(validation)
    for name in families:
        why = FAMILIES[name].not_applicable(validation)
        if why:
            raise ModelSpecificationError(
                f"compare_families: {name} cannot model the validation summary: {why}.")
    scores, seconds, v_verdicts = {}, {}, {}
    for name in families:
        t0 = time.perf_counter()
        vfit = fit(build_model(name, validation, priors.get(name), pooling), **val_kwargs)
        v_verdicts[name] = convergence_report(vfit).verdict
        ev = holdout_evaluation(vfit, validation, n_draws=n_draws, random_seed=random_seed,
                                probs=())
        scores[name] = ev.predicted["log_predictive_density"].to_numpy(dtype=float)
        seconds[name] = time.perf_counter() - t0
    lp = np.column_stack([scores[k] for k in families])
    w = dict(zip(families, stacking_weights(lp), strict=True))
    elpd = {k: float(v.sum()) for k, v in scores.items()}
    order = sorted(families, key=lambda k: -elpd[k])
    best = order[0]
    n = lp.shape[0]
    table = pd.DataFrame(
        {
            "rank": range(len(order)),
            "elpd_forecast": [elpd[k] for k in order],
            "se": [float(np.sqrt(n) * scores[k].std()) for k in order],
            "elpd_diff": [elpd[best] - elpd[k] for k in order],
            "dse": [float(np.sqrt(n) * (scores[best] - scores[k]).std()) for k in order],
            "weight": [w[k] for k in order],
        },
        index=order,
    )
    w = {k: (v if v >= MIN_WEIGHT else 0.0) for k, v in w.items()}
    if sum(w.values()) <= 0:
        w[best] = 1.0
    w = {k: v / sum(w.values()) for k, v in w.items()}
    used = [k for k in order if w[k] > 0]
    for name in used:
        t0 = time.perf_counter()
        if name not in done:
            done[name] = fit(build_model(name, rfm, priors.get(name), pooling), **fit_kwargs)
        seconds[name] += time.perf_counter() - t0
    verdicts = {k: convergence_report(done[k]).verdict for k in order if k in done}
    table["verdict"] = [verdicts.get(k, "not refitted (weight 0)") for k in order]
    table["verdict_validation"] = [v_verdicts[k] for k in order]
    table["seconds"] = [seconds[k] for k in order]
    table["pooling"] = pooling
    table.attrs.update(
        n_customers=rfm.n_customers,
        criterion="leave-future-out",
        validation={"n_customers": int(validation.n_customers),
                    "cut": _day(validation.meta.get("calibration_end")),
                    "length": float(validation.holdout_length),
                    "time_unit": validation.time_unit},
    )
    stack = PurchaseStack({k: posterior_params(done[k]) for k in used},
                          {k: w[k] for k in used}, random_seed=random_seed)
    return FamilyComparison(table=table, fits={k: done[k] for k in order if k in done},
                            stack=stack, best=best, skipped=skipped)


def _day(value) -> str:
    return "the validation cut" if value is None else pd.Timestamp(value).date().isoformat()


def validation_summary(transactions, calibration_end, validation_length: float, *,
                       time_unit: str = "week", **options) -> RFMData:
    """The summary :func:`compare_families` needs for ``validation=``: the same log
    summarised to ``calibration_end - validation_length`` (in ``time_unit``), with the
    purchases from then to ``calibration_end`` as its holdout; later rows are left out
    (``after_end="drop"``). ``options`` go to :func:`bayesclv.data.rfm_summary`
    (column names, ``segment_col``, ``merge_period``, ...): use those of the calibration
    summary, so that both describe the customers the same way."""
    from bayesclv.data import DAYS_PER_UNIT, rfm_summary

    if not validation_length > 0:
        raise ModelSpecificationError(
            f"validation_length must be positive, got {validation_length!r}.")
    end = pd.Timestamp(calibration_end)
    cut = end - pd.Timedelta(days=round(float(validation_length) * DAYS_PER_UNIT[time_unit]))
    options.setdefault("after_end", "drop")
    return rfm_summary(transactions, time_unit=time_unit, calibration_end=cut,
                       observation_end=end, **options)
