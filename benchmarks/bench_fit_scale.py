"""Fit scale curve: customers vs seconds and peak memory, NUTS and the Laplace approximation.

Hierarchical (partial pooling) BG/NBD + Gamma-Gamma over 10 simulated segments (the
simulation of ``bench_laplace.py``; recency and age rounded to ``--round`` weeks).
Each fit runs in its own process (``peers_worker.py``) so peak memory is per fit: the
process tree's resident set, sampled every 50 ms. NUTS (nutpie, 4 x ``--draws``) runs up
to ``--nuts-max`` customers; Laplace at every size. The scoring curve is
``bench_scale_scoring.py``.

    .venv/bin/python benchmarks/bench_fit_scale.py
    .venv/bin/python benchmarks/bench_fit_scale.py --sizes 10000,100000 --nuts-max 10000

Writes benchmarks/results/fit_scale.{json,md,png}.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, os.path.dirname(__file__))

from _common import (  # noqa: E402
    RESULTS,
    machine_info,
    machine_markdown,
    md_table,
    plot_scale_curve,
    run_job,
    write_results,
)
from bench_laplace import simulate  # noqa: E402

MODELS = ("bgnbd", "gamma_gamma")


def plot(rows: list[dict], path: Path) -> None:
    series = {}
    for method, style, label in (("nutpie", "o-", "NUTS (nutpie, 4 x 1000)"),
                                 ("laplace", "s--", "Laplace")):  # fmt: skip
        rs = sorted((r for r in rows if r["method"] == method), key=lambda r: r["customers"])
        if rs:
            series[label] = (style, [r["customers"] for r in rs], [r["seconds"] for r in rs],
                             [r["peak_mb"] for r in rs])  # fmt: skip
    plot_scale_curve(series, path, "Fit: hierarchical BG/NBD + Gamma-Gamma, 10 segments, 2 CPUs",
                     ("seconds (build + compile + fit)", "peak RSS per fit (MB)"))  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="10000,30000,100000,300000,1000000")
    ap.add_argument("--nuts-max", type=int, default=100_000)
    ap.add_argument("--round", type=float, default=1.0)
    ap.add_argument("--draws", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=7)
    args = ap.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for n in sizes:
            rfm, _ = simulate(n, 10, args.seed, args.round)
            frame = rfm.to_frame().reset_index()
            frame = frame.rename(columns={frame.columns[0]: "customer_id"})
            data = Path(tmp) / f"rfm_{n}.csv"
            frame[["customer_id", "frequency", "recency", "T", "monetary_value", "segment"]].to_csv(
                data, index=False
            )
            methods = ["laplace"] + (["nutpie"] if n <= args.nuts_max else [])
            for method in methods:
                seconds, peak, rows_lik, bad = 0.0, 0.0, [], []
                for model in MODELS:
                    job = dict(
                        lib="ours", model=model, method=method, pooling="partial",
                        data=str(data), draws=args.draws, tune=args.draws, chains=4,
                        target_accept=0.9, seed=args.seed,
                    )  # fmt: skip
                    r = run_job(Path(sys.executable), job, timeout=3600)
                    if "error" in r:
                        bad.append(f"{model}: {r['error']}")
                        continue
                    seconds += r["fit_s"] + r["build_s"]
                    peak = max(peak, r["peak_tree_rss_mb"])
                    rows_lik.append(r["n_rows_likelihood"])
                    if method == "nutpie" and (r["divergences"] or r["rhat_max"] > 1.01):
                        bad.append(f"{model}: {r['divergences']} div, R-hat {r['rhat_max']:.3f}")
                row = dict(customers=n, method=method, seconds=seconds, peak_mb=peak,
                           rows=rows_lik, problems=bad)  # fmt: skip
                rows.append(row)
                print(row, flush=True)
    info = machine_info(peers=False)
    cmd = "python " + " ".join(sys.argv)
    png = RESULTS / "fit_scale.png"
    plot(rows, png)
    md = (
        "# Fit scale curve: hierarchical BG/NBD + Gamma-Gamma, 10 segments\n\n"
        f"Simulated customers, times rounded to {args.round} week(s); partial pooling; NUTS = "
        f"nutpie 4 chains x {args.draws} draws ({args.draws} tuning); seconds = build + "
        "compile + fit of both models, each in its own process; peak = the larger of the two "
        "processes' peak RSS.\n\n"
        + md_table(
            ["customers", "method", "likelihood rows (BG/NBD, GG)", "seconds", "peak MB",
             "problems"],  # fmt: skip
            [
                [f"{r['customers']:,}", r["method"], ", ".join(f"{x:,}" for x in r["rows"]),
                 f"{r['seconds']:.1f}", f"{r['peak_mb']:.0f}", "; ".join(r["problems"]) or "-"]
                for r in rows
            ],  # fmt: skip
        )
        + f"\n\n![fit scale curve]({png.name})\n\n"
        + machine_markdown(info)
        + f"\n\nCommand: `{cmd}`\n"
    )
    write_results("fit_scale", {"args": vars(args), "rows": rows, "machine": info,
                                "command": cmd}, md)  # fmt: skip
    print(md)


if __name__ == "__main__":
    main()
