"""Holdout evaluation on CDNOW (sample, 39/39-week split): published vs our fits.

For BG/NBD and Pareto/NBD (complete pooling, and partial pooling by acquisition month;
BG/NBD also without pooling, for the shrinkage plot) plus Gamma-Gamma for spend:

* convergence report of every fit;
* holdout metrics (MAE, RMSE, MSLE, BIAS = sum(pred)/sum(actual) - 1) for holdout
  purchases and spend, the coverage of 50/80/95 % posterior predictive intervals, the
  holdout log predictive density; the same for the published maximum-likelihood
  parameters (FHL 2005: BIAS -12.1 % BG/NBD, -11.5 % Pareto/NBD; MAE 0.786 / 0.755),
  a check of the metric code;
* posterior predictive check of the calibration frequency distribution (p-values);
* PSIS-LOO comparison of the purchase models and of the spend models;
* figures: tracking (cumulative, incremental), conditional expectations, posterior
  predictive frequencies, P(alive) and expected-purchases matrices, shrinkage, CLV by
  segment, trace and rank plots.

Writes ``benchmarks/results/holdout_cdnow[_smoke].{json,md}`` and PNG figures
``holdout_cdnow[_smoke]_*.png`` with date, CPU count, versions and the exact command.

Usage::

    python benchmarks/holdout_cdnow.py                       # NUTS, 2 chains x 1000 draws
    python benchmarks/holdout_cdnow.py --smoke               # small NUTS; Pareto/NBD by MAP
    python benchmarks/holdout_cdnow.py --draws 2000 --tune 2000 --chains 4
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import shlex
import sys
import time
import warnings
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import xarray as xr  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
PUBLISHED = {
    "bgnbd": dict(r=0.243, alpha=4.414, a=0.793, b=2.426),  # FHL (2005)
    "pareto_nbd": dict(r=0.553, alpha=10.578, s=0.606, beta=11.669),  # Fader & Hardie (2005)
    "gamma_gamma": dict(p=6.25, q=3.74, v=15.44),  # FHL (2005), JMR
}
PUBLISHED_METRICS = {"bgnbd": {"BIAS": -0.121, "MAE": 0.786},
                     "pareto_nbd": {"BIAS": -0.115, "MAE": 0.755}}


def published_params(model: str, segments) -> xr.Dataset:
    vals = PUBLISHED[model]
    ds = xr.Dataset(
        {k: (("chain", "draw", "segment"), np.full((1, 1, len(segments)), v))
         for k, v in vals.items()},
        coords={"chain": [0], "draw": [0], "segment": list(segments)},
    )
    ds.attrs.update(model=model, time_unit="week")
    return ds


def versions() -> dict:
    import arviz
    import pandas
    import pymc
    import scipy

    import bayesclv

    return {"python": platform.python_version(), "bayesclv": bayesclv.__version__,
            "pymc": pymc.__version__, "arviz": arviz.__version__, "numpy": np.__version__,
            "scipy": scipy.__version__, "pandas": pandas.__version__,
            "matplotlib": matplotlib.__version__}


def git_commit() -> str:
    import subprocess

    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                              text=True, cwd=Path(__file__).parent, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--draws", type=int, default=1000)
    ap.add_argument("--tune", type=int, default=1000)
    ap.add_argument("--chains", type=int, default=2)
    ap.add_argument("--seed", type=int, default=2024)
    ap.add_argument("--sim-draws", type=int, default=500,
                    help="posterior draws used to simulate intervals and the holdout LPD")
    ap.add_argument("--smoke", action="store_true",
                    help="tiny NUTS runs (200/200, 2 chains) and MAP for Pareto/NBD")
    args = ap.parse_args(argv)
    if args.smoke:
        args.draws, args.tune, args.chains, args.sim_draws = 200, 200, 2, 200

    from bayesclv.clv import expected_clv
    from bayesclv.data import rfm_summary
    from bayesclv.datasets import load_cdnow
    from bayesclv.diagnostics import (
        compare_models,
        convergence_report,
        holdout_evaluation,
        posterior_predictive_frequency,
        tracking,
    )
    from bayesclv.fit import fit, posterior_params
    from bayesclv.models import build_bgnbd, build_gamma_gamma, build_pareto_nbd
    from bayesclv.plotting import (
        plot_clv_distribution,
        plot_conditional_expectations,
        plot_expected_purchases_matrix,
        plot_frequency_check,
        plot_probability_alive_matrix,
        plot_rank,
        plot_segment_shrinkage,
        plot_trace,
        plot_tracking,
    )
    from bayesclv.summary import segment_totals

    tag = "holdout_cdnow_smoke" if args.smoke else "holdout_cdnow"
    RESULTS.mkdir(parents=True, exist_ok=True)
    t_start = time.perf_counter()
    tx = load_cdnow("sample")
    rfm = rfm_summary(tx, customer_col="customer_id", date_col="date", amount_col="amount",
                      segment_col="acquisition_month", time_unit="week",
                      calibration_end="1997-09-30", observation_end="1998-06-30")
    segs = rfm.segment_names
    sizes = rfm.segment_sizes().to_dict()

    # ------------------------------------------------------------------ fits
    builders = {"bgnbd": build_bgnbd, "pareto_nbd": build_pareto_nbd,
                "gamma_gamma": build_gamma_gamma}
    plan = [("bgnbd", "complete"), ("bgnbd", "partial"), ("bgnbd", "none"),
            ("pareto_nbd", "complete"), ("pareto_nbd", "partial"),
            ("gamma_gamma", "complete"), ("gamma_gamma", "partial")]
    fits, timings, reports = {}, {}, {}
    for i, (kind, pooling) in enumerate(plan):
        name = f"{kind}/{pooling}"
        sampler = "map" if (args.smoke and kind == "pareto_nbd") else "pymc"
        t0 = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            idata = fit(builders[kind](rfm, pooling=pooling), sampler=sampler, draws=args.draws,
                        tune=args.tune, chains=args.chains, random_seed=args.seed + i,
                        progressbar=False)
        timings[name] = time.perf_counter() - t0
        fits[name] = idata
        reports[name] = convergence_report(idata)
        print(f"[{time.perf_counter() - t_start:6.0f}s] {name}: {timings[name]:.1f}s, "
              f"verdict {reports[name].verdict}", flush=True)

    # ------------------------------------------------------------------ holdout
    evals = {}
    for model in ("bgnbd", "pareto_nbd"):
        evals[f"{model}/published"] = holdout_evaluation(
            published_params(model, segs), rfm,
            spend_params=published_params("gamma_gamma", segs),
            n_draws=args.sim_draws, random_seed=args.seed)
        for pooling in ("complete", "partial"):
            evals[f"{model}/{pooling}"] = holdout_evaluation(
                fits[f"{model}/{pooling}"], rfm, spend_params=fits[f"gamma_gamma/{pooling}"],
                n_draws=args.sim_draws, random_seed=args.seed)
    print(f"[{time.perf_counter() - t_start:6.0f}s] holdout evaluations done", flush=True)
    ppc = {name: posterior_predictive_frequency(fits[name], rfm, n_draws=200,
                                                random_seed=args.seed)
           for name in ("bgnbd/complete", "bgnbd/partial", "pareto_nbd/complete",
                        "pareto_nbd/partial")}
    ppc_pub = {f"{m}/published": posterior_predictive_frequency(
        published_params(m, segs), rfm, n_draws=200, random_seed=args.seed)
        for m in ("bgnbd", "pareto_nbd")}
    comparisons = {}
    purchase_fits = {k: v for k, v in fits.items()
                     if not k.startswith("gamma") and v.attrs["sampler"] != "map"}
    if len(purchase_fits) > 1:
        comparisons["purchases"] = compare_models(purchase_fits, rfm)
    comparisons["spend"] = compare_models(
        {k: v for k, v in fits.items() if k.startswith("gamma")}, rfm)
    print(f"[{time.perf_counter() - t_start:6.0f}s] PPC and LOO done", flush=True)

    # ------------------------------------------------------------------ figures
    figs = {}

    def save(fig, name):
        path = RESULTS / f"{tag}_{name}.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        figs[name] = path.name

    bg_p = posterior_params(fits["bgnbd/partial"])
    track = tracking(bg_p, rfm, tx, random_seed=args.seed)
    track_pn = tracking(fits["pareto_nbd/partial"], rfm, tx, random_seed=args.seed)
    for kind in ("cumulative", "incremental"):
        fig, axes = plt.subplots(1, 2, figsize=(14, 4.5), layout="constrained", sharey=True)
        plot_tracking(track, kind=kind, ax=axes[0])
        plot_tracking(track_pn, kind=kind, ax=axes[1])
        axes[0].set_title(f"BG/NBD (partial pooling): {kind} repeat transactions")
        axes[1].set_title(f"Pareto/NBD (partial pooling): {kind} repeat transactions")
        save(fig, f"tracking_{kind}")
    fig, axes = plt.subplots(1, 2, figsize=(13, 4.5), layout="constrained", sharey=True)
    for ax, model in zip(axes, ("bgnbd", "pareto_nbd"), strict=True):
        plot_conditional_expectations(evals[f"{model}/partial"].conditional,
                                      label="partial pooling (90% interval)", ax=ax)
        pub = evals[f"{model}/published"].conditional
        ax.plot(np.arange(len(pub)), pub["predicted"], "^:", color="C2",
                label="published MLE")
        ax.legend()
        ax.set_title(f"{'BG/NBD' if model == 'bgnbd' else 'Pareto/NBD'}: mean holdout "
                     "purchases by calibration frequency")
    save(fig, "conditional_expectations")
    fig, axes = plt.subplots(2, 2, figsize=(13, 8), layout="constrained")
    for ax, group in zip(axes.ravel(), ("all", *segs), strict=False):
        plot_frequency_check(ppc["bgnbd/partial"], group=group, ax=ax)
    save(fig, "ppc_frequency")
    fig, axes = plt.subplots(1, 2, figsize=(13, 5), layout="constrained")
    plot_probability_alive_matrix(bg_p, T=39.0, segment=segs[0], ax=axes[0])
    plot_expected_purchases_matrix(bg_p, T=39.0, horizon=39.0, segment=segs[0], ax=axes[1])
    save(fig, "matrices")
    fig, axes = plt.subplots(1, 4, figsize=(18, 4.5), layout="constrained")
    est = {p: posterior_params(fits[f"bgnbd/{p}"]) for p in ("none", "partial", "complete")}
    for ax, par in zip(axes, ("r", "alpha", "a", "b"), strict=True):
        plot_segment_shrinkage(est, par, segment_sizes=sizes, ax=ax)
        ax.set_title(f"BG/NBD '{par}'")
    save(fig, "shrinkage")
    clv = expected_clv(bg_p, posterior_params(fits["gamma_gamma/partial"]), rfm,
                       horizon=52.0, discount_rate=0.1, discount_period=52.0)
    totals = segment_totals(clv, rfm)["segment_total"]
    fig, ax = plt.subplots(figsize=(7, 4.5), layout="constrained")
    plot_clv_distribution(totals, label="52-week CLV of the segment (10%/year discount)",
                          currency="USD", ax=ax)
    ax.set_title("Segment CLV totals, BG/NBD + Gamma-Gamma (partial pooling)")
    save(fig, "clv_segments")
    if fits["bgnbd/partial"].posterior.sizes["draw"] > 1:
        axes = plot_trace(fits["bgnbd/partial"], var_names=["r", "alpha", "a", "b"])
        save(axes.ravel()[0].figure, "trace")
        axes = plot_rank(fits["bgnbd/partial"], var_names=["r", "a"])
        save(np.ravel(axes)[0].figure, "rank")

    # ------------------------------------------------------------------ outputs
    command = " ".join(shlex.quote(a) for a in [sys.executable, *sys.argv])
    out = {
        "benchmark": "holdout_cdnow",
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "command": command,
        "git_commit": git_commit(),
        "cpu_count": os.cpu_count(),
        "platform": platform.platform(),
        "versions": versions(),
        "settings": {"draws": args.draws, "tune": args.tune, "chains": args.chains,
                     "seed": args.seed, "sim_draws": args.sim_draws, "smoke": args.smoke},
        "data": {"customers": rfm.n_customers, "segments": sizes,
                 "calibration_repeat_purchases": int(rfm.frequency.sum()),
                 "holdout_purchases": int(rfm.holdout_frequency.sum()),
                 "holdout_spend": float(rfm.holdout_spend.sum()),
                 "holdout_length_weeks": rfm.holdout_length},
        "fit_seconds": timings,
        "convergence": {k: r.to_dict() for k, r in reports.items()},
        "holdout": {k: e.to_dict() for k, e in evals.items()},
        "published_reference": PUBLISHED_METRICS,
        "ppc_p_values": {k: c.p_values().to_dict() for k, c in {**ppc_pub, **ppc}.items()},
        "loo": {k: json.loads(t.to_json(orient="index")) for k, t in comparisons.items()},
        "figures": figs,
        "total_seconds": time.perf_counter() - t_start,
    }
    (RESULTS / f"{tag}.json").write_text(json.dumps(out, indent=2, default=float))
    (RESULTS / f"{tag}.md").write_text(markdown(out, reports, evals, comparisons, ppc, ppc_pub))
    print(f"wrote {RESULTS / tag}.json/.md and {len(figs)} figures "
          f"({out['total_seconds']:.0f}s)")
    return 0


def markdown(out, reports, evals, comparisons, ppc, ppc_pub) -> str:
    s = out["settings"]
    lines = [
        "# Holdout evaluation on CDNOW (sample, 39/39-week split)",
        "",
        f"- date: {out['date']}; CPUs: {out['cpu_count']}; {out['platform']}",
        f"- versions: {', '.join(f'{k} {v}' for k, v in out['versions'].items())}",
        f"- command: `{out['command']}` (git {out.get('git_commit', 'unknown')})",
        f"- NUTS: {s['chains']} chains x {s['draws']} draws (tune {s['tune']}), seed "
        f"{s['seed']}; {s['sim_draws']} posterior draws per simulation"
        + ("; **smoke run: Pareto/NBD fitted by MAP**" if s["smoke"] else ""),
        f"- data: {out['data']['customers']} customers {out['data']['segments']}; "
        f"{out['data']['holdout_purchases']} holdout purchases, "
        f"${out['data']['holdout_spend']:,.0f} holdout spend over "
        f"{out['data']['holdout_length_weeks']:g} weeks",
        "",
        "## Convergence",
        "",
        "| fit | sampler | seconds | verdict | R-hat max | ESS bulk min | ESS tail min | "
        "divergences | min E-BFMI | max-depth share |",
        "|---|---|---:|---|---:|---:|---:|---:|---:|---:|",
    ]

    def f(v, spec):
        return "n/a" if v is None else format(v, spec)

    for k, r in reports.items():
        lines.append(
            f"| {k} | {r.sampler} | {out['fit_seconds'][k]:.0f} | {r.verdict} | "
            f"{f(r.rhat_max, '.3f')} | {f(r.ess_bulk_min, '.0f')} | {f(r.ess_tail_min, '.0f')} "
            f"| {f(r.divergences, 'd')} | {f(None if r.bfmi is None else min(r.bfmi), '.2f')} "
            f"| {f(r.treedepth_saturation, '.1%')} |")
    lines += ["", "## Holdout metrics (posterior-mean point predictions)", "",
              "Published FHL (2005): BIAS -12.1% (BG/NBD), -11.5% (Pareto/NBD); MAE 0.786 / "
              "0.755.", "",
              "| model | quantity | MAE | RMSE | MSLE | BIAS | predicted total | actual total |"
              " LPD (sum) |",
              "|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    for k, e in evals.items():
        for q, row in e.metrics.iterrows():
            lpd = f"{e.log_predictive_density:.1f}" if q == "purchases" else ""
            lines.append(
                f"| {k} | {q} | {row['MAE']:.3f} | {row['RMSE']:.3f} | {row['MSLE']:.3f} | "
                f"{row['BIAS']:+.1%} | {row['predicted_total']:,.1f} | "
                f"{row['actual_total']:,.1f} | {lpd} |")
    lines += ["", "## Coverage of central posterior predictive intervals (per customer)", "",
              "Holdout counts are discrete and mostly 0, so closed intervals cover more than "
              "their nominal probability even for a calibrated model; compare models with "
              "each other and with the published parameters.", "",
              "| model | purchases 50% | 80% | 95% | spend 50% | 80% | 95% |",
              "|---|---:|---:|---:|---:|---:|---:|"]
    for k, e in evals.items():
        c = e.coverage["coverage"]
        cells = [f"{c[(q, p)]:.1%}" for q in ("purchases", "spend") for p in (0.5, 0.8, 0.95)]
        lines.append(f"| {k} | " + " | ".join(cells) + " |")
    lines += ["", "## Posterior predictive check of calibration frequencies (p-values)", "",
              "Chi-square discrepancy over 0..7+ repeat purchases; small p = misfit.", "",
              "| model | " + " | ".join(next(iter(ppc.values())).groups) + " |",
              "|---|" + "---:|" * len(next(iter(ppc.values())).groups)]
    for k, c in {**ppc_pub, **ppc}.items():
        lines.append(f"| {k} | " + " | ".join(f"{v:.2f}" for v in c.p_values()) + " |")
    for name, t in comparisons.items():
        lines += ["", f"## PSIS-LOO comparison: {name}", "",
                  t.drop(columns=[c for c in ("warning", "scale") if c in t.columns])
                  .to_markdown(floatfmt=".1f") if _has_tabulate() else t.to_string()]
    lines += ["", "## Figures", ""] + [f"- `{v}`" for v in out["figures"].values()]
    lines.append(f"\nTotal time {out['total_seconds']:.0f} s.")
    return "\n".join(lines) + "\n"


def _has_tabulate() -> bool:
    try:
        import tabulate  # noqa: F401
    except ImportError:
        return False
    return True


if __name__ == "__main__":
    raise SystemExit(main())
