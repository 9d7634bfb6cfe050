"""The fast approximation at scale: Laplace vs NUTS, hierarchical BG/NBD + Gamma-Gamma.

Simulates ``--customers`` customers in ``--segments`` segments of equal size (each
segment with its own BG/NBD and Gamma-Gamma parameters, ages of half a year to a year,
times floored to whole days as a real log has them), rounds recency and age to
``--round`` weeks (``bayesclv.data.round_times``; 0 keeps day resolution), and fits
partial pooling with ``fit(sampler="laplace")`` on all customers (Normal at the mode,
importance-resampled with PSIS when its k-hat is at most 0.7). Then, on the first
``--nuts-customers`` of them (a random subsample, all segments kept), fits both Laplace
and NUTS (nutpie, 4 x 1000) and reports how far the Laplace posterior means are from the
NUTS ones: relative difference per segment parameter (and for what CLV uses: the mean
purchase rate r/alpha, the mean dropout probability a/(a+b), the mean spend
p v/(q-1)), and in NUTS posterior sds.

    .venv/bin/python benchmarks/bench_laplace.py --customers 1000000 --nuts-customers 100000
    .venv/bin/python benchmarks/bench_laplace.py --smoke      # seconds, for CI

Writes benchmarks/results/laplace_<customers>[_smoke].{json,md}.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(__file__))

from _common import machine_info, machine_markdown, md_table, write_results  # noqa: E402


def simulate(n: int, n_segments: int, seed: int, round_weeks: float):
    from bayesclv.data import RFMData, round_times
    from bayesclv.simulate import BGNBDParams, GammaGammaParams, simulate_rfm

    rng = np.random.default_rng(seed)
    segs = [f"s{i}" for i in range(n_segments)]
    truth = {
        s: BGNBDParams(
            r=0.25 * np.exp(rng.normal(0, 0.2)),
            alpha=4.4 * np.exp(rng.normal(0, 0.2)),
            a=0.8,
            b=2.4 * np.exp(rng.normal(0, 0.2)),
        )
        for s in segs
    }
    spend = {s: GammaGammaParams(p=6.0, q=3.7, v=15.0 * np.exp(rng.normal(0, 0.2))) for s in segs}
    sizes = {s: n // n_segments for s in segs}
    rfm = simulate_rfm(truth, sizes, T=(26.0, 52.0), spend=spend, random_seed=seed + 1)
    day = 1.0 / 7.0
    rfm = RFMData(
        customer_id=rfm.customer_id,
        frequency=rfm.frequency,
        recency=np.floor(rfm.recency / day) * day,
        T=np.maximum(np.floor(rfm.T / day) * day, day),
        monetary_value=rfm.monetary_value,
        segment=rfm.segment,
        segment_names=rfm.segment_names,
        time_unit="week",
    )
    return (round_times(rfm, round_weeks) if round_weeks > 0 else rfm), truth


def fit_both(rfm, sampler: str, seed: int, draws: int, tune: int) -> dict:
    from bayesclv.fit import fit, posterior_params
    from bayesclv.models import build_bgnbd, build_gamma_gamma, model_spec

    out = {}
    for name, builder in (("bgnbd", build_bgnbd), ("gamma_gamma", build_gamma_gamma)):
        t = time.perf_counter()
        model = builder(rfm, pooling="partial")
        idata = fit(
            model,
            sampler=sampler,
            draws=draws,
            tune=tune,
            chains=4,
            random_seed=seed,
            progressbar=False,
        )
        wall = time.perf_counter() - t
        params = posterior_params(idata)
        # what CLV uses: the mean purchase rate, the mean dropout probability, mean spend
        if name == "bgnbd":
            params = params.assign(
                purchase_rate=params["r"] / params["alpha"],
                dropout=params["a"] / (params["a"] + params["b"]),
            )
        else:
            params = params.assign(mean_spend=params["p"] * params["v"] / (params["q"] - 1))
        row = {
            "seconds": wall,
            "rows": model_spec(model).n_rows,
            "mean": {k: params[k].mean(("chain", "draw")).values.tolist() for k in params},
            "sd": {k: params[k].std(("chain", "draw")).values.tolist() for k in params},
            "timings": json.loads(idata.attrs["timings"]),
        }
        if "sample_stats" in idata.groups():
            from bayesclv.diagnostics import convergence_report

            ss = idata.sample_stats
            row["steps_per_draw"] = float(ss["n_steps"].mean()) if "n_steps" in ss else None
            row["divergences"] = int(ss["diverging"].sum())
            report = convergence_report(idata)
            row["verdict"] = report.verdict
            row["rhat_max"] = report.rhat_max
        out[name] = row
    return out


def compare(lap: dict, nuts: dict) -> dict:
    """Largest |Laplace mean - NUTS mean| relative to the NUTS mean and to its sd."""
    res = {}
    for model in lap:
        rel, in_sd = {}, {}
        for k, mean_n in nuts[model]["mean"].items():
            mean_n = np.asarray(mean_n)
            diff = np.abs(np.asarray(lap[model]["mean"][k]) - mean_n)
            rel[k] = float(np.max(diff / np.abs(mean_n)))
            in_sd[k] = float(np.max(diff / np.asarray(nuts[model]["sd"][k])))
        res[model] = {"max_rel_diff": rel, "max_diff_in_sd": in_sd}
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--customers", type=int, default=1_000_000)
    ap.add_argument("--segments", type=int, default=10)
    ap.add_argument("--round", type=float, default=1.0, help="weeks; 0 = day resolution")
    ap.add_argument("--nuts-customers", type=int, default=100_000, help="0 = no NUTS check")
    ap.add_argument("--draws", type=int, default=1000)
    ap.add_argument("--tune", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--smoke", action="store_true")
    args = ap.parse_args()
    if args.smoke:
        args.customers, args.nuts_customers, args.draws, args.tune = 20_000, 0, 200, 0
    load_before = os.getloadavg()
    t0 = time.perf_counter()
    rfm, truth = simulate(args.customers, args.segments, args.seed, args.round)
    sim_s = time.perf_counter() - t0
    print(f"simulated {rfm.n_customers:,} customers in {sim_s:.1f} s", flush=True)

    t = time.perf_counter()
    full = fit_both(rfm, "laplace", args.seed, args.draws, 0)
    full_s = time.perf_counter() - t
    print(f"Laplace on all: {full_s:.1f} s", flush=True)

    check = None
    if args.nuts_customers:
        rng = np.random.default_rng(args.seed)
        keep = np.zeros(rfm.n_customers, dtype=bool)
        keep[rng.choice(rfm.n_customers, min(args.nuts_customers, rfm.n_customers), False)] = 1
        sub = rfm.subset(keep)
        lap = fit_both(sub, "laplace", args.seed, args.draws, 0)
        nuts = fit_both(sub, "nutpie", args.seed, args.draws, args.tune)
        check = {"customers": sub.n_customers, "laplace": lap, "nuts": nuts}
        check["diff"] = compare(lap, nuts)
        print(json.dumps(check["diff"], indent=1), flush=True)

    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    info = machine_info(peers=False)
    cmd = "python " + " ".join(sys.argv)
    truth_rate = [tr.r / tr.alpha for tr in truth.values()]
    est_rate = np.asarray(full["bgnbd"]["mean"]["r"]) / np.asarray(full["bgnbd"]["mean"]["alpha"])
    rows = [
        [
            m,
            f"{full[m]['rows']:,}",
            f"{full[m]['timings']['laplace_mode_s']:.1f}",
            f"{full[m]['timings']['laplace_hessian_s']:.1f}",
            f"{full[m]['timings']['laplace_importance_s']:.1f}",
            f"{full[m]['timings']['laplace_psis_khat']:.2f}",
            "yes" if full[m]["timings"]["laplace_resampled"] else "no (k-hat > 0.7)",
            f"{full[m]['seconds']:.1f}",
        ]
        for m in full
    ]
    md = (
        f"# Laplace approximation at {args.customers:,} customers, {args.segments} segments\n\n"
        f"Partial pooling, BG/NBD + Gamma-Gamma, `fit(sampler='laplace')`, {4 * args.draws} "
        f"draws. Times rounded to {args.round} week(s) "
        f"(`round_times`; 0 = day resolution). Simulation: {sim_s:.1f} s. Load average "
        f"before: {load_before[0]:.2f}, after: {os.getloadavg()[0]:.2f}. Peak RSS of the "
        f"process: {peak_mb:,.0f} MB.\n\n"
        + md_table(
            ["model", "distinct rows", "mode s", "Hessian s", "importance s", "PSIS k-hat",
             "resampled", "total s"],  # fmt: skip
            rows,
        )
        + f"\n\nBoth models, all customers: **{full_s:.1f} s** (target: at most 300 s).\n\n"
        f"Purchase rate r/alpha per segment, truth vs Laplace mean: max relative error "
        f"{np.max(np.abs(est_rate / np.asarray(truth_rate) - 1)):.2%}.\n"
    )
    if check:
        md += (
            f"\n## Laplace vs NUTS on a subsample of {check['customers']:,} customers\n\n"
            "NUTS: nutpie, 4 chains x "
            f"{args.draws} draws ({args.tune} tuning). Largest difference of the posterior "
            "means over the segments, relative to the NUTS mean and in NUTS posterior sds:\n\n"
        )
        tab = []
        for m, d in check["diff"].items():
            for k in d["max_rel_diff"]:
                tab.append([m, k, f"{d['max_rel_diff'][k]:.3%}", f"{d['max_diff_in_sd'][k]:.2f}"])
        md += md_table(["model", "parameter", "max rel. diff", "max diff / sd"], tab)
        t_rows = []
        for m in ("bgnbd", "gamma_gamma"):
            n = check["nuts"][m]
            t_rows.append(
                [
                    m,
                    f"{check['laplace'][m]['seconds']:.1f}",
                    f"{check['laplace'][m]['timings']['laplace_psis_khat']:.2f}",
                    f"{n['seconds']:.1f}",
                    f"{n.get('steps_per_draw') or float('nan'):.1f}",
                    n.get("divergences"),
                    n.get("verdict"),
                ]
            )
        md += "\n\n" + md_table(
            ["model", "Laplace s", "Laplace k-hat", "NUTS s", "NUTS steps/draw", "divergences",
             "NUTS verdict"],  # fmt: skip
            t_rows,
        )
    md += "\n\n" + machine_markdown(info) + f"\n\nCommand: `{cmd}`\n"
    payload = {
        "args": vars(args),
        "simulate_s": sim_s,
        "laplace_all_s": full_s,
        "laplace_all": full,
        "check": check,
        "peak_rss_mb": peak_mb,
        "truth": {s: vars(tr) if hasattr(tr, "__dict__") else list(tr) for s, tr in truth.items()},
        "machine": info,
        "command": cmd,
    }
    stem = f"laplace_{args.customers}" + ("_smoke" if args.smoke else "")
    write_results(stem, payload, md)
    print(md)


if __name__ == "__main__":
    main()
