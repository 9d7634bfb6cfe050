"""Benchmark: the automatic family choice, PSIS-LOO vs leave-future-out, on real logs.

Issue 16's target: on grocery and donations (the splits of their READMEs) the automatic
choice has holdout log predictive density (LPD) at least that of the best single family
minus 2 SE, and beats BG/NBD's MAE and |BIAS|.

Per data set: every candidate purchase family (those the summary can feed; BG/BB needs
whole-number opportunities and is not one here) is fitted with one pooling
(``--pooling``, default complete) to the calibration summary and evaluated on the real
holdout (LPD, MAE, BIAS). Then two automatic choices, each a stack (mixture per draw):

* **PSIS-LOO**: ``compare_families(rfm, fits=...)``, stacking weights from PSIS-LOO of
  the calibration likelihood;
* **leave-future-out**: ``compare_families(rfm, validation=validation_summary(...),
  fits=...)``: every family is also fitted to the log summarised to
  ``calibration end - L`` and scored on the purchase counts in the last ``L`` of the
  calibration period; stacking weights from those scores. ``L`` is a third of the
  calibration span (calibration end minus the first purchase in the log), in whole weeks,
  at most 52: a rule fixed before looking at any result, not tuned per data set.

The holdout is used only for the evaluation. SE of an LPD difference: sqrt(n) x the sd of
the pointwise differences (customers).

Usage::

    python benchmarks/bench_auto_choice.py --datasets grocery
    python benchmarks/bench_auto_choice.py --datasets grocery,donations,cdnow --chains 2 --draws 500
    python benchmarks/bench_auto_choice.py --smoke          # CDNOW, tiny: CI plumbing
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import RESULTS, machine_info, machine_markdown, md_table  # noqa: E402
from bench_real_data import SHARED, load_log  # noqa: E402


def validation_weeks(log, opts, cal_end) -> int:
    dates = pd.to_datetime(log[opts.get("date_col", "date")])
    span = (pd.Timestamp(cal_end) - dates.min()).days / 7.0
    return int(min(52, max(1, round(span / 3))))


def evaluate(params, rfm, seed, n_draws):
    from bayesclv.diagnostics import holdout_evaluation

    ev = holdout_evaluation(params, rfm, n_draws=n_draws, random_seed=seed, probs=())
    m = ev.metrics.loc["purchases"]
    return ({"MAE": float(m["MAE"]), "RMSE": float(m["RMSE"]), "BIAS": float(m["BIAS"]),
             "LPD": float(ev.log_predictive_density)},
            ev.predicted["log_predictive_density"].to_numpy(dtype=float))  # fmt: skip


def run(name, args) -> dict | None:
    from bayesclv.data import rfm_summary
    from bayesclv.diagnostics import convergence_report
    from bayesclv.fit import fit
    from bayesclv.models import build_model
    from bayesclv.selection import candidate_families, compare_families, validation_summary

    got = load_log(name)
    if got is None:
        print(f"{name}: no data under {SHARED}, skipped", flush=True)
        return None
    log, opts, cal_end, obs_end = got
    rfm = rfm_summary(log, time_unit="week", calibration_end=cal_end, observation_end=obs_end,
                      after_end="drop", **opts)
    fams, skipped = candidate_families(rfm)
    if args.families:
        fams = [f for f in args.families.split(",") if f in fams]
    L = validation_weeks(log, opts, cal_end)
    val = validation_summary(log, cal_end, L, time_unit="week", **opts)
    pooling = args.pooling if rfm.n_segments > 1 else "complete"
    kw = dict(sampler=args.sampler, chains=args.chains, draws=args.draws, tune=args.tune,
              random_seed=args.seed, progressbar=False)
    out = {"n_customers": rfm.n_customers, "validation_weeks": L,
           "validation_customers": val.n_customers, "families": fams,
           "not_applicable": skipped, "pooling": pooling, "single": {}}
    fits, pointwise = {}, {}
    for fam in fams:
        t0 = time.perf_counter()
        fits[fam] = fit(build_model(fam, rfm, None, pooling), **kw)
        res, pw = evaluate(fits[fam], rfm, args.seed, args.eval_draws)
        res["verdict"] = convergence_report(fits[fam]).verdict
        res["seconds"] = time.perf_counter() - t0
        out["single"][fam], pointwise[fam] = res, pw
        print(f"  {name} {fam}: {res}", flush=True)
    best = max(out["single"], key=lambda k: out["single"][k]["LPD"])
    for label, extra in (("psis-loo", {}), ("leave-future-out", {"validation": val})):
        t0 = time.perf_counter()
        cmp = compare_families(rfm, fams, pooling=pooling, fits=fits, fit_kwargs=kw,
                               random_seed=args.seed, **extra)
        res, pw = evaluate(cmp.stack, rfm, args.seed, args.eval_draws)
        diff = pw - pointwise[best]
        res.update(weights=dict(cmp.stack.weights), seconds=time.perf_counter() - t0,
                   vs_best=float(diff.sum()), vs_best_se=float(np.sqrt(diff.size) * diff.std()),
                   summary=cmp.summary())  # fmt: skip
        bg = out["single"].get("bgnbd")
        res["lpd_ok"] = res["vs_best"] >= -2 * res["vs_best_se"]
        res["beats_bgnbd"] = None if bg is None else bool(
            res["MAE"] < bg["MAE"] and abs(res["BIAS"]) < abs(bg["BIAS"]))
        out[label] = res
        print(cmp.summary(), flush=True)
        print(f"  {name} auto {label}: {res['LPD']:.1f}, vs best single ({best}) "
              f"{res['vs_best']:+.1f} +- {res['vs_best_se']:.1f}", flush=True)
    out["best_single"] = best
    return out


def markdown(info, sets, args) -> str:
    md = ["# Automatic family choice: PSIS-LOO vs leave-future-out, on real logs", "",
          machine_markdown(info), "",
          f"NUTS ({args.sampler}) {args.chains} chains x ({args.tune} + {args.draws}), "
          f"seed {args.seed}; holdout LPD from {args.eval_draws} draws. Command: "
          f"`python benchmarks/bench_auto_choice.py {' '.join(sys.argv[1:])}`", ""]
    for name, d in sets.items():
        if d is None:
            md += [f"## {name}", "", "skipped: no data", ""]
            continue
        md += [f"## {name}", "",
               f"{d['n_customers']:,} customers, pooling {d['pooling']}; validation window "
               f"{d['validation_weeks']} weeks ({d['validation_customers']:,} customers "
               f"acquired before it); families {d['families']}.", ""]
        rows = [[f, f"{r['MAE']:.3f}", f"{r['RMSE']:.3f}", f"{r['BIAS']:+.3f}",
                 f"{r['LPD']:.1f}", "", r["verdict"], f"{r['seconds']:.0f}"]
                for f, r in d["single"].items()]  # fmt: skip
        for label in ("psis-loo", "leave-future-out"):
            r = d[label]
            w = " + ".join(f"{k} {v:.2f}" for k, v in sorted(r["weights"].items(),
                                                            key=lambda kv: -kv[1]) if v > 0)
            rows.append([f"auto, {label} ({w})", f"{r['MAE']:.3f}", f"{r['RMSE']:.3f}",
                         f"{r['BIAS']:+.3f}", f"{r['LPD']:.1f}",
                         f"{r['vs_best']:+.1f} +- {r['vs_best_se']:.1f}", "-",
                         f"{r['seconds']:.0f}"])  # fmt: skip
        md += [md_table(["model", "MAE", "RMSE", "BIAS", "holdout LPD",
                         f"LPD vs best single ({d['best_single']}) +- SE", "verdict", "s"],
                        rows), ""]
        for label in ("psis-loo", "leave-future-out"):
            r = d[label]
            md.append(f"- {label}: LPD >= best single - 2 SE: "
                      f"**{'met' if r['lpd_ok'] else 'NOT met'}**; beats BG/NBD's MAE and "
                      f"|BIAS|: **{ {True: 'yes', False: 'no', None: '-'}[r['beats_bgnbd']] }**")
        md += ["", "```", d["psis-loo"]["summary"], "", d["leave-future-out"]["summary"],
               "```", ""]
    return "\n".join(md) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--datasets", default="grocery,donations")
    ap.add_argument("--families", default=None)
    ap.add_argument("--pooling", default="complete")
    ap.add_argument("--sampler", default="nutpie")
    ap.add_argument("--chains", type=int, default=2)
    ap.add_argument("--draws", type=int, default=500)
    ap.add_argument("--tune", type=int, default=500)
    ap.add_argument("--eval-draws", type=int, default=500)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--smoke", action="store_true")
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    if args.smoke:
        args.datasets, args.families = "cdnow", "bgnbd,mbgnbd"
        args.chains, args.draws, args.tune, args.eval_draws = 2, 60, 60, 60
    info = machine_info(peers=False)
    sets = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for name in args.datasets.split(","):
            print(f"== {name}", flush=True)
            sets[name] = run(name, args)
    import os

    info["load_average_end"] = list(os.getloadavg())
    stem = args.out or ("auto_choice_smoke" if args.smoke else
                        "auto_choice_" + "_".join(args.datasets.split(",")))
    RESULTS.mkdir(parents=True, exist_ok=True)
    payload = {"machine": info, "args": vars(args), "datasets": sets}
    (RESULTS / f"{stem}.json").write_text(json.dumps(payload, indent=2, default=str) + "\n")
    (RESULTS / f"{stem}.md").write_text(markdown(info, sets, args))
    print(f"wrote {RESULTS / stem}.md", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
