"""NUTS geometry on low-repeat data: Pareto/NBD and BG/NBD with default priors (issue 15).

The regime of the report: two merchants of 1,000 customers each, 23% and 32% of them
with a repeat purchase in a 26-week calibration, then 9 holdout weeks. Simulated here
from a Pareto/NBD population per segment (``bayesclv.simulate.simulate_rfm``):

- segment A: r = 0.5, alpha = 21, s = 1, beta = 40 (23.3% repeaters, 400,000 draws);
- segment B: r = 0.5, alpha = 12, s = 1, beta = 40 (32.5% repeaters);
- customers acquired uniformly over the first 13 weeks, ``T ~ U(13, 26)`` weeks;
  holdout 9 weeks. Mean lifetime 40 weeks, dropout-rate CV 1: most dropout happens
  after the calibration ends, so the data say little about its heterogeneity.

Each seed draws a new data set (``random_seed=seed``) and fits it with ``fit(...,
sampler="nutpie", random_seed=seed)`` at fit's defaults otherwise (target_accept 0.9,
low-rank mass matrix, chains started at the builder's start), for each model
(``--models``) and pooling (``--poolings``). Reported per fit: divergences, max R-hat
and min bulk / tail ESS over every sampled and derived variable, leapfrog steps per
draw, compile / sampling seconds, and the 94% equal-tailed intervals (3%, 97%) of the
dropout side per segment: Pareto/NBD the dropout-rate CV ``1/sqrt(s)``, ``s``, ``beta``,
the mean dropout rate ``s/beta`` and the share of customers still alive 26 weeks after
acquisition ``(beta/(beta+26))^s``; BG/NBD the mean dropout probability ``a/(a+b)``,
the concentration ``a+b`` and ``a``, ``b``.

``--cdnow`` adds the check that the geometry fix leaves CDNOW alone: Pareto/NBD, complete
pooling, weak priors (``weak_priors(ParetoNBDPriors, 10)``), nutpie 4 x 1000, seed 1,
medians against the published values (Fader, Hardie & Lee 2005).

    .venv/bin/python benchmarks/bench_low_repeat.py --label before     # current defaults
    .venv/bin/python benchmarks/bench_low_repeat.py --cdnow            # 4 seeds, all fits
    .venv/bin/python benchmarks/bench_low_repeat.py --smoke            # tiny, for CI

Writes benchmarks/results/low_repeat[_<label>|_smoke].{json,md}; when
``low_repeat_before.json`` exists, the Markdown of a later run sets it beside the new one.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import RESULTS, machine_info, machine_markdown, md_table, write_results  # noqa: E402

TRUTH = {
    "A": {"r": 0.5, "alpha": 21.0, "s": 1.0, "beta": 40.0},
    "B": {"r": 0.5, "alpha": 12.0, "s": 1.0, "beta": 40.0},
}
T_RANGE = (13.0, 26.0)
HOLDOUT = 9.0
ALIVE_AT = 26.0
CDNOW_PUBLISHED = {"r": 0.553, "alpha": 10.578, "s": 0.606, "beta": 11.669}


def simulate(seed: int, size: int):
    from bayesclv.simulate import ParetoNBDParams, simulate_rfm

    params = {k: ParetoNBDParams(**v) for k, v in TRUTH.items()}
    return simulate_rfm(params, dict.fromkeys(TRUTH, size), T=T_RANGE,
                        holdout_length=HOLDOUT, random_seed=seed)  # fmt: skip


def _eti(x: np.ndarray) -> list[float]:
    lo, med, hi = np.quantile(x, [0.03, 0.5, 0.97])
    return [float(lo), float(med), float(hi)]


def dropout_intervals(model: str, post) -> dict:
    """Per segment: [3%, 50%, 97%] of the dropout quantities (see the module docstring)."""
    out = {}
    for k, seg in enumerate(post["s" if model == "pareto_nbd" else "a"].segment.values):
        if model == "pareto_nbd":
            s = post["s"].values[..., k].ravel()
            beta = post["beta"].values[..., k].ravel()
            q = {
                "cv": 1.0 / np.sqrt(s),
                "s": s,
                "beta": beta,
                "mean_dropout_rate": s / beta,
                f"alive_{ALIVE_AT:g}": np.exp(-s * np.log1p(ALIVE_AT / beta)),
            }
        else:
            a = post["a"].values[..., k].ravel()
            b = post["b"].values[..., k].ravel()
            q = {"phi": a / (a + b), "kappa": a + b, "a": a, "b": b}
        out[str(seg)] = {name: _eti(v) for name, v in q.items()}
    return out


def convergence(idata) -> dict:
    import arviz as az

    post = idata.posterior
    rhat = az.rhat(post)
    bulk = az.ess(post, method="bulk")
    tail = az.ess(post, method="tail")

    def extreme(ds, fn):
        vals = {v: float(fn(ds[v].values)) for v in ds.data_vars if np.isfinite(ds[v]).all()}
        name = (max if fn is np.max else min)(vals, key=vals.get)
        return vals[name], name

    rhat_max, rhat_var = extreme(rhat, np.max)
    bulk_min, bulk_var = extreme(bulk, np.min)
    tail_min, tail_var = extreme(tail, np.min)
    st = idata.sample_stats
    return {
        "divergences": int(st["diverging"].sum()),
        "divergences_per_chain": [int(v) for v in st["diverging"].sum("draw").values],
        "rhat_max": rhat_max, "rhat_max_var": rhat_var,
        "ess_bulk_min": bulk_min, "ess_bulk_min_var": bulk_var,
        "ess_tail_min": tail_min, "ess_tail_min_var": tail_var,
        "steps_per_draw": float(st["n_steps"].mean()),
        "max_depth": int(st["depth"].max()),
        "step_size": float(st["step_size"].mean()),
    }  # fmt: skip


def fit_one(model: str, pooling: str, rfm, seed: int, args, priors=None) -> dict:
    from bayesclv.fit import fit
    from bayesclv.models import build_bgnbd, build_pareto_nbd

    build = {"pareto_nbd": build_pareto_nbd, "bgnbd": build_bgnbd}[model]
    t0 = time.perf_counter()
    m = build(rfm, priors, pooling=pooling)
    build_s = time.perf_counter() - t0
    idata = fit(m, sampler="nutpie", draws=args.draws, tune=args.tune, chains=args.chains,
                random_seed=seed, progressbar=False)  # fmt: skip
    timings = json.loads(idata.attrs["timings"])
    row = {
        "model": model, "pooling": pooling, "seed": seed,
        "build_s": build_s, "compile_s": timings.get("compile_s"),
        "total_s": timings["total_s"],
        "sample_s": timings["total_s"] - timings.get("compile_s", 0.0),
        **convergence(idata),
        "dropout": dropout_intervals(model, idata.posterior),
    }  # fmt: skip
    names = ("r", "alpha", "s", "beta") if model == "pareto_nbd" else ("r", "alpha", "a", "b")
    row["medians"] = {
        p: [float(np.median(idata.posterior[p].values[..., k]))
            for k in range(idata.posterior[p].shape[-1])]
        for p in names
    }  # fmt: skip
    return row


def _priors(model: str, coords: str):
    """Default priors; ``coords="old"``: Pareto/NBD with ``log(s/beta)`` sampled as is
    beside ``cv`` (the coordinates before CVPrior.rate), the same prior."""
    if model != "pareto_nbd" or coords == "new":
        return None
    from bayesclv.priors import CVPrior, ParetoNBDPriors

    pr = ParetoNBDPriors()
    object.__setattr__(pr, "log_s", CVPrior(pr.log_s.sigma))  # no rate: the old sampler
    return pr


def cdnow_check(args) -> dict:
    from bayesclv.datasets import load_cdnow_rfm
    from bayesclv.priors import ParetoNBDPriors, weak_priors

    rfm = load_cdnow_rfm("sample")
    row = fit_one("pareto_nbd", "complete", rfm, 1, args, weak_priors(ParetoNBDPriors, 10.0))
    med = {k: v[0] for k, v in row["medians"].items()}
    row["published"] = CDNOW_PUBLISHED
    row["median_rel_error"] = {k: med[k] / CDNOW_PUBLISHED[k] - 1 for k in CDNOW_PUBLISHED}
    return row


def _fmt_eti(v: list[float]) -> str:
    return f"{v[1]:.3g} [{v[0]:.3g}, {v[2]:.3g}]"


def fits_table(rows: list[dict]) -> str:
    return md_table(
        ["model", "pooling", "seed", "divergences", "R-hat max", "ESS bulk min",
         "ESS tail min", "steps/draw", "compile s", "sample s"],
        [[r["model"], r["pooling"], r["seed"], r["divergences"], f"{r['rhat_max']:.4f}",
          f"{r['ess_bulk_min']:.0f}", f"{r['ess_tail_min']:.0f}",
          f"{r['steps_per_draw']:.1f}", f"{r['compile_s']:.1f}", f"{r['sample_s']:.1f}"]
         for r in rows],
    )  # fmt: skip


def dropout_table(rows: list[dict]) -> str:
    out = []
    for model in dict.fromkeys(r["model"] for r in rows):
        sub = [r for r in rows if r["model"] == model]
        names = list(next(iter(sub[0]["dropout"].values())))
        body = [[r["pooling"], r["seed"], seg, *(_fmt_eti(q[n]) for n in names)]
                for r in sub for seg, q in r["dropout"].items()]  # fmt: skip
        out.append(f"\n{model}: median [3%, 97%]\n\n")
        out.append(md_table(["pooling", "seed", "segment", *names], body))
    return "".join(out)


def summary_lines(rows: list[dict]) -> str:
    out = []
    for key in dict.fromkeys((r["model"], r["pooling"]) for r in rows):
        sub = [r for r in rows if (r["model"], r["pooling"]) == key]
        out.append(
            f"- {key[0]} {key[1]}: {len(sub)} seeds, divergences "
            f"{[r['divergences'] for r in sub]} (total {sum(r['divergences'] for r in sub)}), "
            f"R-hat max {max(r['rhat_max'] for r in sub):.4f}, ESS bulk min "
            f"{min(r['ess_bulk_min'] for r in sub):.0f}, tail min "
            f"{min(r['ess_tail_min'] for r in sub):.0f}, sampling s "
            + ", ".join(f"{r['sample_s']:.0f}" for r in sub)
            + "\n"
        )
    return "".join(out)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seeds", default="1,2,3,4")
    ap.add_argument("--models", default="pareto_nbd,bgnbd")
    ap.add_argument("--poolings", default="complete,partial")
    ap.add_argument("--size", type=int, default=1000, help="customers per segment")
    ap.add_argument("--draws", type=int, default=1000)
    ap.add_argument("--tune", type=int, default=1000)
    ap.add_argument("--chains", type=int, default=4)
    ap.add_argument("--cdnow", action="store_true", help="also the CDNOW weak-prior check")
    ap.add_argument("--label", default="", help="result file suffix, e.g. 'before'")
    ap.add_argument("--smoke", action="store_true", help="tiny, for CI (plumbing only)")
    ap.add_argument("--coords", default="old,new",
                    help="Pareto/NBD sampler coordinates, alternating in one run: 'old' "
                         "(log(s/beta) and cv) and/or 'new' (log cumulative hazard given s)")
    args = ap.parse_args(argv)
    if args.smoke:
        args.seeds, args.size, args.draws, args.tune, args.chains = "1", 200, 60, 60, 2
        args.poolings, args.coords = "complete", "new"
    seeds = [int(s) for s in args.seeds.split(",")]

    info = machine_info(peers=False)
    data, rows = [], []
    for seed in seeds:
        rfm = simulate(seed, args.size)
        rep = [float((rfm.frequency[rfm.segment == k] > 0).mean()) for k in range(2)]
        data.append({"seed": seed, "repeat_share": dict(zip(TRUTH, rep, strict=True))})
        print(f"seed {seed}: repeat buyers {rep}", flush=True)
        for model in args.models.split(","):
            coords_list = args.coords.split(",") if model == "pareto_nbd" else ["new"]
            for pooling in args.poolings.split(","):
                for coords in coords_list:
                    r = fit_one(model, pooling, rfm, seed, args, _priors(model, coords))
                    if model == "pareto_nbd" and coords == "old":
                        r["model"] = "pareto_nbd (old coords)"
                    rows.append(r)
                    print(f"  {r['model']} {pooling}: div {r['divergences']} rhat "
                          f"{r['rhat_max']:.4f} ({r['rhat_max_var']}) ess "
                          f"{r['ess_bulk_min']:.0f}/{r['ess_tail_min']:.0f} "
                          f"{r['sample_s']:.0f} s", flush=True)  # fmt: skip
    cdnow = cdnow_check(args) if args.cdnow else None
    info["load_average_end"] = list(os.getloadavg())

    stem = "low_repeat" + ("_smoke" if args.smoke else (f"_{args.label}" if args.label else ""))
    md = [
        "# Pareto/NBD and BG/NBD NUTS on low-repeat data (issue 15)\n\n",
        machine_markdown(info),
        f"- data: 2 segments x {args.size} customers simulated from Pareto/NBD (A: r 0.5, "
        f"alpha 21, s 1, beta 40; B: r 0.5, alpha 12, s 1, beta 40), T ~ U(13, 26) weeks, "
        f"holdout {HOLDOUT:g} weeks; a new data set per seed (repeat-buyer shares: "
        + "; ".join(
            f"seed {d['seed']} A {d['repeat_share']['A']:.1%} B {d['repeat_share']['B']:.1%}"
            for d in data
        )  # fmt: skip
        + ")\n"
        f"- fits: default priors, `fit(sampler='nutpie')`, {args.chains} chains x "
        f"({args.tune} tune + {args.draws} draws), target_accept 0.9, low-rank mass matrix; "
        "R-hat / ESS over every variable in the posterior\n\n",
        "## Summary\n\n",
        summary_lines(rows),
        "\n## Fits\n\n",
        fits_table(rows),
        "\n## Dropout side, 94% intervals (wide, not divergent)\n",
        dropout_table(rows),
    ]
    before_path = RESULTS / "low_repeat_before.json"
    cdnow_before = None
    if args.label != "before" and not args.smoke and before_path.exists():
        before = json.loads(before_path.read_text())
        md += ["\n## Before (", before["machine"]["git_commit"][:10], ", ",
               before["machine"]["date"], ")\n\n", summary_lines(before["rows"]),
               "\n", fits_table(before["rows"])]  # fmt: skip
        cdnow_before = before.get("cdnow")
    if cdnow:
        md.append("\n## CDNOW check (Pareto/NBD complete, weak priors, seed 1)\n\n")
        entries = [("this run", cdnow)]
        if cdnow_before:
            entries.insert(0, ("before", cdnow_before))
        md.append(md_table(
            ["run", "r", "alpha", "s", "beta", "max rel. error", "divergences", "R-hat max",
             "ESS bulk min", "sample s"],
            [[label, *(f"{c['medians'][k][0]:.4g}" for k in CDNOW_PUBLISHED),
              f"{max(abs(v) for v in c['median_rel_error'].values()):.2%}", c["divergences"],
              f"{c['rhat_max']:.4f}", f"{c['ess_bulk_min']:.0f}", f"{c['sample_s']:.1f}"]
             for label, c in entries],
        ))  # fmt: skip
        md.append(f"\npublished: {CDNOW_PUBLISHED}\n")
    payload = {"machine": info, "settings": vars(args), "truth": TRUTH, "T": T_RANGE,
               "data": data, "rows": rows, "cdnow": cdnow}  # fmt: skip
    jpath, mpath = write_results(stem, payload, "".join(md))
    print(f"wrote {jpath} and {mpath}")


if __name__ == "__main__":
    main()
