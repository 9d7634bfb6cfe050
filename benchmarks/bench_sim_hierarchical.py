"""Hierarchical BG/NBD + Gamma-Gamma on simulated customers in 10 segments, vs pymc-marketing.

The issue-7 target: 100K customers, 10 segments, full NUTS (4 chains x 1000 draws,
R-hat <= 1.01) in at most 90 s on a 2-core machine, and at least 5x faster than
pymc-marketing's pooled (simpler) BetaGeoModel on the same data in the same run.

Customers are simulated as in ``bench_laplace.py`` (ages of half a year to a year, times
floored to whole days), then recency and age are rounded to ``--round`` weeks with
``bayesclv.data.round_times`` (0 keeps day resolution). Both libraries get the *same*
rounded table. Every fit runs in its own process (``peers_worker.py``): ours in
.venv, pymc-marketing in benchmarks/.venv-peers (``bash benchmarks/peers_setup.sh``).

    .venv/bin/python benchmarks/bench_sim_hierarchical.py --customers 100000
    .venv/bin/python benchmarks/bench_sim_hierarchical.py --customers 100000 --round 0
    .venv/bin/python benchmarks/bench_sim_hierarchical.py --smoke

Writes benchmarks/results/sim_hierarchical_<customers>[_round<r>][_smoke].{json,md}.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, os.path.dirname(__file__))

from _common import (  # noqa: E402
    PEERS_PYTHON,
    machine_info,
    machine_markdown,
    md_table,
    run_job,
    write_results,
)
from bench_laplace import simulate  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--customers", type=int, default=100_000)
    ap.add_argument("--segments", type=int, default=10)
    ap.add_argument("--round", type=float, default=1.0, help="weeks; 0 = day resolution")
    ap.add_argument("--draws", type=int, default=1000)
    ap.add_argument("--tune", type=int, default=1000)
    ap.add_argument("--chains", type=int, default=4)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--no-peer", action="store_true")
    ap.add_argument("--peer-timeout", type=float, default=1800.0)
    ap.add_argument("--smoke", action="store_true")
    args = ap.parse_args()
    if args.smoke:
        args.customers, args.draws, args.tune, args.chains, args.no_peer = 5000, 100, 100, 2, True
    rfm, _ = simulate(args.customers, args.segments, args.seed, args.round)
    ours_py = Path(sys.executable)
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "rfm.csv"
        frame = rfm.to_frame().reset_index()
        frame = frame.rename(columns={frame.columns[0]: "customer_id"})
        frame[["customer_id", "frequency", "recency", "T", "monetary_value", "segment"]].to_csv(
            data, index=False
        )
        base = dict(
            data=str(data),
            draws=args.draws,
            tune=args.tune,
            chains=args.chains,
            target_accept=0.9,
            seed=args.seed,
        )
        # ours twice with a compile cache of its own: empty (a fresh machine), then warm
        env = {"BAYESCLV_CACHE_DIR": str(Path(tmp) / "compile-cache")}
        for cache in ("cold", "warm"):
            for model in ("bgnbd", "gamma_gamma"):
                job = dict(base, lib="ours", model=model, method="nutpie", pooling="partial")
                key = f"ours/{model} partial" + (", cold cache" if cache == "cold" else "")
                results[key] = run_job(ours_py, job, timeout=3600, env=env)
                print(key, results[key].get("fit_s"), flush=True)
        if not args.no_peer and PEERS_PYTHON.exists():
            job = dict(base, lib="pymc_marketing", model="bgnbd", method="mcmc")
            results["pymc-marketing/BetaGeoModel pooled"] = run_job(
                PEERS_PYTHON, job, timeout=args.peer_timeout
            )
    rows = []
    for name, r in results.items():
        if "error" in r:
            rows.append([name, "-", "-", "-", "-", "-", "-", f"{r['peak_tree_rss_mb']:.0f}",
                         r["error"]])  # fmt: skip
            continue
        steps = (
            r["grad_evals"] / r["n_draws_total"] if r.get("grad_evals") else float("nan")
        )
        rows.append(
            [
                name,
                f"{r.get('n_rows_likelihood', r.get('n_customers')):,}",
                f"{r['fit_s']:.1f}",
                "-" if r.get("compile_s") is None else f"{r['compile_s']:.1f}",
                f"{steps:.1f}",
                f"{r['rhat_max']:.3f}",
                r["divergences"],
                f"{r['peak_tree_rss_mb']:.0f}",
                "ok",
            ]
        )
    ours_total = sum(
        results[k]["fit_s"] for k in results
        if k.startswith("ours/") and "cold" not in k and "fit_s" in results[k]
    )
    ours_cold = sum(
        results[k]["fit_s"] for k in results
        if k.startswith("ours/") and "cold" in k and "fit_s" in results[k]
    )
    ours_bg = results.get("ours/bgnbd partial", {}).get("fit_s")
    peer = results.get("pymc-marketing/BetaGeoModel pooled", {})
    info = machine_info(peers=not args.no_peer)
    cmd = "python " + " ".join(sys.argv)
    md = (
        f"# Hierarchical BG/NBD + Gamma-Gamma: {args.customers:,} simulated customers, "
        f"{args.segments} segments\n\n"
        f"Times rounded to {args.round} week(s) (0 = day resolution), the same table for "
        f"every library. NUTS {args.chains} chains x {args.draws} draws ({args.tune} tuning), "
        "target_accept 0.9; ours: partial pooling, nutpie, 2 parallel chains; pymc-marketing: "
        "one pooled BetaGeoModel (its defaults: PyMC NUTS). fit s = build + compile + sampling "
        "inside each process (imports excluded).\n\n"
        + md_table(
            ["fit", "likelihood rows", "fit s", "compile s", "steps/draw", "R-hat max",
             "divergences", "peak RSS MB", "status"],  # fmt: skip
            rows,
        )
        + f"\n\nOurs, BG/NBD + Gamma-Gamma, warm compile cache: **{ours_total:.1f} s** "
        f"(target: at most 90 s); cold cache (a fresh machine): {ours_cold:.1f} s."
    )
    if "fit_s" in peer and ours_bg:
        md += (
            f" pymc-marketing's pooled BG/NBD alone: {peer['fit_s']:.1f} s; ratio "
            f"(theirs / our hierarchical BG/NBD + GG) **{peer['fit_s'] / ours_total:.1f}x**, "
            f"(theirs / our hierarchical BG/NBD) {peer['fit_s'] / ours_bg:.1f}x "
            "(target: at least 5x)."
        )
    elif peer:
        md += f" pymc-marketing: {peer.get('error')}."
    md += "\n\n" + machine_markdown(info) + f"\n\nCommand: `{cmd}`\n"
    stem = f"sim_hierarchical_{args.customers}" + (
        f"_round{args.round:g}" if args.round != 1.0 else ""
    )
    stem += "_smoke" if args.smoke else ""
    write_results(stem, {"args": vars(args), "results": results, "machine": info,
                         "command": cmd}, md)  # fmt: skip
    print(md)


if __name__ == "__main__":
    main()
