"""CDNOW master (23,570 customers), partial pooling over the 3 acquisition months:
BG/NBD + Gamma-Gamma with NUTS, the issue's "under 60 s in all" target.

Reports, per model: numba compile time (nutpie), sampling time, leapfrog steps per draw,
divergences and the convergence verdict, plus the total; each phase separately because
nutpie's numba compilation is not cached between processes and dominates.

    .venv/bin/python benchmarks/bench_master_partial.py [--sampler nutpie] [--repeats 3]
        [--modes concurrent,sequential]
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

NAMES = {"bgnbd": "r", "gamma_gamma": "p"}


def run_once(sampler: str, draws: int, tune: int, chains: int, seed: int, mode: str) -> dict:
    """One end-to-end run: summary from the transaction log, both builds, both fits;
    ``mode`` "sequential" (one after the other) or "concurrent" (``fit_many``)."""
    from bayesclv.datasets import load_cdnow_rfm
    from bayesclv.diagnostics import convergence_report
    from bayesclv.fit import fit_many
    from bayesclv.models import build_bgnbd, build_gamma_gamma

    t0 = time.perf_counter()
    rfm = load_cdnow_rfm("master")
    out = {"mode": mode, "summary_s": time.perf_counter() - t0}
    t = time.perf_counter()
    # Gamma-Gamma first: with mode="concurrent" it goes to the worker process.
    models = [build_gamma_gamma(rfm, pooling="partial"), build_bgnbd(rfm, pooling="partial")]
    out["build_s"] = time.perf_counter() - t
    fits = fit_many(
        models,
        concurrent=mode == "concurrent",
        sampler=sampler,
        draws=draws,
        tune=tune,
        chains=chains,
        random_seed=seed,
        progressbar=False,
    )
    for name, idata in zip(("gamma_gamma", "bgnbd"), fits, strict=True):
        timings = json.loads(idata.attrs["timings"])
        ss = idata.sample_stats
        steps = ss["n_steps"] if "n_steps" in ss else 2 ** ss["tree_depth"] - 1
        compile_s = timings.get("compile_s", 0.0) + timings.get("map_init_s", 0.0)
        out[name] = {
            "compile_s": compile_s,
            "sampling_s": timings["total_s"] - compile_s,
            "total_s": timings["total_s"],
            "steps_per_draw": float(steps.mean()),
            "divergences": int(ss["diverging"].sum()),
            "verdict": convergence_report(idata).verdict,
            "posterior_mean": float(idata.posterior[NAMES[name]].mean()),
        }
    out["all_s"] = time.perf_counter() - t0
    return out


def same_draws(runs: list[dict]) -> str:
    """Whether every run (both modes, same seed) gave the same posterior means of r, p."""
    lines = []
    for name, param in NAMES.items():
        means = sorted({r[name]["posterior_mean"] for r in runs})
        verdict = "identical in every run" if len(means) == 1 else f"{len(means)} values"
        lines.append(f"posterior mean of {param} ({name}): {verdict} ({means[0]:.10g})")
    return "Same seed in every run: " + "; ".join(lines) + "."


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sampler", default="nutpie")
    ap.add_argument("--draws", type=int, default=1000)
    ap.add_argument("--tune", type=int, default=1000)
    ap.add_argument("--chains", type=int, default=4)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument(
        "--modes",
        default="concurrent,sequential",
        help="comma-separated: concurrent (fit_many, the CLI's way), sequential",
    )
    args = ap.parse_args()
    modes = args.modes.split(",")
    load_before = os.getloadavg()
    runs = [
        run_once(args.sampler, args.draws, args.tune, args.chains, 1, mode)
        for _ in range(args.repeats)
        for mode in modes  # alternating, so both see the same machine
    ]
    rows = []
    for mode in modes:
        mine = [r for r in runs if r["mode"] == mode]
        med = lambda key, sub=None, mine=mine: statistics.median(  # noqa: E731
            r[key][sub] if sub else r[key] for r in mine
        )
        for name in ("bgnbd", "gamma_gamma"):
            rows.append(
                [
                    mode,
                    name,
                    f"{med(name, 'compile_s'):.1f}",
                    f"{med(name, 'sampling_s'):.1f}",
                    f"{med(name, 'total_s'):.1f}",
                    f"{med(name, 'steps_per_draw'):.2f}",
                    max(r[name]["divergences"] for r in mine),
                    mine[-1][name]["verdict"],
                    f"**{med('all_s'):.1f}**",
                ]
            )
    info = machine_info(peers=False)
    cmd = "python " + " ".join(sys.argv)
    md = (
        "# CDNOW master, partial pooling over acquisition months: BG/NBD + Gamma-Gamma\n\n"
        f"{args.chains} chains x {args.draws} draws ({args.tune} tuning), sampler "
        f"{args.sampler}, parameterization='auto', init='auto'; median of {args.repeats} "
        f"run(s) per mode, modes alternating. Load average before: {load_before[0]:.2f}, "
        f"after: {os.getloadavg()[0]:.2f}.\n\n"
        + md_table(
            [
                "mode",
                "model",
                "compile s",
                "sampling s",
                "model total s",
                "steps/draw",
                "divergences",
                "verdict",
                "everything s",
            ],
            rows,
        )
        + "\n\n*everything* = summary of the transaction log, both builds, compiles and "
        "fits, end to end; target < 60 s. *concurrent*: `fit_many([gamma_gamma, bgnbd])`, "
        "Gamma-Gamma in a worker process while BG/NBD is fitted in this one (compilation "
        "is single-threaded, so the two compilations overlap); the per-model seconds then "
        "include the contention.\n\n"
        + same_draws(runs)
        + "\n\n"
        + machine_markdown(info)
        + f"\n\nCommand: `{cmd}`\n"
    )
    payload = {"runs": runs, "args": vars(args), "machine": info, "command": cmd}
    write_results("master_partial", payload, md)
    print(md)


if __name__ == "__main__":
    main()
