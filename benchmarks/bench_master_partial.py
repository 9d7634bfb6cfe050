"""CDNOW master (23,570 customers), partial pooling over the 3 acquisition months:
BG/NBD + Gamma-Gamma with NUTS, the issue's "under 60 s in all" target.

Reports, per model: numba compile time (nutpie), sampling time, leapfrog steps per draw,
divergences and the convergence verdict, plus the total; each phase separately because
nutpie's numba compilation is not cached between processes and dominates.

    .venv/bin/python benchmarks/bench_master_partial.py [--sampler nutpie] [--repeats 1]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(__file__))

from _common import machine_info, machine_markdown, md_table, write_results  # noqa: E402


def run_once(sampler: str, draws: int, tune: int, chains: int, seed: int) -> dict:
    from bayesclv.datasets import load_cdnow_rfm
    from bayesclv.diagnostics import convergence_report
    from bayesclv.fit import fit
    from bayesclv.models import build_bgnbd, build_gamma_gamma

    t0 = time.perf_counter()
    rfm = load_cdnow_rfm("master")
    out = {"summary_s": time.perf_counter() - t0}
    for name, builder in (("bgnbd", build_bgnbd), ("gamma_gamma", build_gamma_gamma)):
        t = time.perf_counter()
        model = builder(rfm, pooling="partial")
        build_s = time.perf_counter() - t
        idata = fit(
            model,
            sampler=sampler,
            draws=draws,
            tune=tune,
            chains=chains,
            random_seed=seed,
            progressbar=False,
        )
        total = time.perf_counter() - t
        timings = json.loads(idata.attrs["timings"])
        ss = idata.sample_stats
        steps = ss["n_steps"] if "n_steps" in ss else 2 ** ss["tree_depth"] - 1
        compile_s = timings.get("compile_s", 0.0) + timings.get("map_init_s", 0.0)
        out[name] = {
            "build_s": build_s,
            "compile_s": compile_s,
            "sampling_s": total - build_s - compile_s,
            "total_s": total,
            "steps_per_draw": float(steps.mean()),
            "divergences": int(ss["diverging"].sum()),
            "verdict": convergence_report(idata).verdict,
        }
    out["all_s"] = time.perf_counter() - t0
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sampler", default="nutpie")
    ap.add_argument("--draws", type=int, default=1000)
    ap.add_argument("--tune", type=int, default=1000)
    ap.add_argument("--chains", type=int, default=4)
    ap.add_argument("--repeats", type=int, default=1)
    args = ap.parse_args()
    load_before = os.getloadavg()
    runs = [
        run_once(args.sampler, args.draws, args.tune, args.chains, s) for s in range(args.repeats)
    ]
    med = lambda key, sub=None: statistics.median(  # noqa: E731
        r[key][sub] if sub else r[key] for r in runs
    )
    rows = []
    for name in ("bgnbd", "gamma_gamma"):
        rows.append(
            [
                name,
                f"{med(name, 'compile_s'):.1f}",
                f"{med(name, 'sampling_s'):.1f}",
                f"{med(name, 'total_s'):.1f}",
                f"{med(name, 'steps_per_draw'):.2f}",
                max(r[name]["divergences"] for r in runs),
                runs[-1][name]["verdict"],
            ]
        )
    info = machine_info(peers=False)
    cmd = "python " + " ".join(sys.argv)
    md = (
        "# CDNOW master, partial pooling over acquisition months: BG/NBD + Gamma-Gamma\n\n"
        f"{args.chains} chains x {args.draws} draws ({args.tune} tuning), sampler "
        f"{args.sampler}, parameterization='auto', init='auto'; median of {args.repeats} "
        f"run(s). Load average before: {load_before[0]:.2f}, after: {os.getloadavg()[0]:.2f}.\n\n"
        + md_table(
            ["model", "compile s", "sampling s", "total s", "steps/draw", "divergences", "verdict"],
            rows,
        )
        + f"\n\nEverything (summary, both builds, compiles and fits): {med('all_s'):.1f} s; "
        "target < 60 s.\n\n" + machine_markdown(info) + f"\n\nCommand: `{cmd}`\n"
    )
    payload = {"runs": runs, "args": vars(args), "machine": info, "command": cmd}
    write_results("master_partial", payload, md)
    print(md)


if __name__ == "__main__":
    main()
