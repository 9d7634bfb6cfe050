"""Benchmark: score many customers x posterior draws with ``score_customers``.

Each repeat runs in a fresh child process, which builds the inputs with seeded numpy
(no dependency on ``bayesclv.simulate``): customer histories simulated from the BG/NBD
process at CDNOW-like parameters (acquisition over 12 weeks, T in whole days expressed in
weeks, 39 weeks of calibration at most) and synthetic posterior draws near the CDNOW
estimates for ``--segments`` segments. It then times
``score_customers(method=...)`` (per-customer mean, median and 94 % ETI, P(alive),
expected purchases, per-draw segment totals) and reports its own peak resident memory
(``getrusage(RUSAGE_SELF).ru_maxrss``, which includes the inputs). The parent writes the
median over repeats as JSON and Markdown to ``benchmarks/results/``.

Usage::

    python benchmarks/bench_clv_scoring.py                 # 1M customers x 1000 draws
    python benchmarks/bench_clv_scoring.py --smoke         # tiny, for CI
    python benchmarks/bench_clv_scoring.py --n-customers 100000 --draws 1000 --repeats 1
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import resource
import shlex
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

RESULTS = Path(__file__).resolve().parent / "results"
BG_CDNOW = dict(r=0.243, alpha=4.414, a=0.793, b=2.426)
GG_CDNOW = dict(p=6.25, q=3.74, v=15.44)


def make_rfm(n: int, n_segments: int, seed: int):
    """BG/NBD histories at CDNOW-like parameters, CDNOW-like observation windows."""
    from bayesclv.data import RFMData

    rng = np.random.default_rng(seed)
    T = rng.integers(27 * 7, 39 * 7 + 1, n) / 7.0  # whole days, in weeks
    lam = rng.gamma(BG_CDNOW["r"], 1.0 / BG_CDNOW["alpha"], n)
    p = rng.beta(BG_CDNOW["a"], BG_CDNOW["b"], n)
    x = np.zeros(n, dtype=np.int64)
    t_x = np.zeros(n)
    clock = np.zeros(n)
    live = np.arange(n)
    while live.size:
        clock[live] += rng.exponential(1.0 / lam[live])
        live = live[clock[live] <= T[live]]
        x[live] += 1
        t_x[live] = np.ceil(clock[live] * 7.0) / 7.0  # purchase days
        live = live[rng.random(live.size) >= p[live]]
    t_x = np.minimum(t_x, T)
    zbar = np.where(x > 0, np.round(rng.gamma(6.25, 1 / 0.2, n) / np.maximum(x, 1) ** 0.1, 2), 0)
    return RFMData(
        customer_id=np.arange(n, dtype=np.int64) + 10_000_000,
        frequency=x,
        recency=t_x,
        T=T,
        monetary_value=zbar,
        segment=rng.integers(0, n_segments, n),
        segment_names=tuple(f"seg{i}" for i in range(n_segments)),
    )


def make_params(values: dict, model: str, n_draws: int, n_segments: int, seed: int):
    import xarray as xr

    rng = np.random.default_rng(seed)
    seg = rng.normal(0.0, 0.15, (1, 1, n_segments))
    ds = xr.Dataset(
        {
            k: (
                ("chain", "draw", "segment"),
                v * np.exp(seg + 0.05 * rng.standard_normal((1, n_draws, n_segments))),
            )
            for k, v in values.items()
        },
        coords={"segment": [f"seg{i}" for i in range(n_segments)]},
    )
    ds.attrs["model"] = model
    return ds


def worker(args) -> dict:
    from bayesclv.clv import score_customers

    t0 = time.perf_counter()
    rfm = make_rfm(args.n_customers, args.segments, seed=1)
    pp = make_params(BG_CDNOW, "bgnbd", args.draws, args.segments, seed=2)
    sp = make_params(GG_CDNOW, "gamma_gamma", args.draws, args.segments, seed=3)
    t_inputs = time.perf_counter() - t0
    load_before = os.getloadavg()[0]
    t0 = time.perf_counter()
    cpu0 = time.process_time()
    sc = score_customers(
        pp,
        sp,
        rfm,
        horizon=args.horizon,
        discount_rate=0.10,
        discount_period=52.0,
        discounting="per_period",
        chunk_size=args.chunk_size,
        prob=0.94,
        kind=args.kind,
        method=args.method,
        random_seed=7,
        n_jobs=args.n_jobs,
    )
    seconds = time.perf_counter() - t0
    cpu_seconds = time.process_time() - cpu0
    unique_xT = len({(a, b, c) for a, b, c in zip(rfm.segment, rfm.frequency, rfm.T, strict=True)})
    return {
        "seconds": seconds,
        "cpu_seconds": cpu_seconds,
        "load_avg_1min_before": load_before,
        "load_avg_1min_after": os.getloadavg()[0],
        "input_seconds": t_inputs,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "rows": len(sc.table),
        "unique_segment_x_T": unique_xT,
        "repeat_buyers": int((rfm.frequency > 0).sum()),
        "portfolio_mean": float(sc.totals["portfolio_total"].mean()),
    }


def versions() -> dict:
    import pandas
    import scipy
    import xarray

    import bayesclv

    return {
        "python": platform.python_version(),
        "numpy": np.__version__,
        "scipy": scipy.__version__,
        "pandas": pandas.__version__,
        "xarray": xarray.__version__,
        "bayesclv": bayesclv.__version__,
    }


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n-customers", type=int, default=1_000_000)
    ap.add_argument("--draws", type=int, default=1000)
    ap.add_argument("--segments", type=int, default=10)
    ap.add_argument("--horizon", type=float, default=52.0)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--chunk-size", type=int, default=8192)
    ap.add_argument("--kind", default="eti", choices=["eti", "hdi"])
    ap.add_argument("--methods", default="expected,simulate")
    ap.add_argument("--n-jobs", type=int, default=None)
    ap.add_argument("--smoke", action="store_true", help="tiny sizes, for CI")
    ap.add_argument("--tag", default=None, help="name of the result files")
    ap.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--method", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.smoke:
        args.n_customers, args.draws, args.repeats = 2000, 50, 1
    if args.worker:
        print(json.dumps(worker(args)))
        return

    results = {}
    base = [sys.executable, __file__, "--worker", "1"]
    for method in args.methods.split(","):
        runs = []
        for _ in range(args.repeats):
            cmd = base + [
                "--method", method,
                "--n-customers", str(args.n_customers),
                "--draws", str(args.draws),
                "--segments", str(args.segments),
                "--horizon", str(args.horizon),
                "--chunk-size", str(args.chunk_size),
                "--kind", args.kind,
            ]  # fmt: skip
            if args.n_jobs is not None:
                cmd += ["--n-jobs", str(args.n_jobs)]
            out = subprocess.run(cmd, capture_output=True, text=True, check=True)
            runs.append(json.loads(out.stdout.strip().splitlines()[-1]))
            print(method, runs[-1], file=sys.stderr)
        results[method] = {
            "median_seconds": statistics.median(r["seconds"] for r in runs),
            "max_peak_rss_mb": max(r["peak_rss_mb"] for r in runs),
            "runs": runs,
        }
    record = {
        "benchmark": "clv_scoring",
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "command": " ".join(shlex.quote(a) for a in [Path(sys.executable).name, *sys.argv]),
        "cpu_count": os.cpu_count(),
        "machine": platform.machine(),
        "versions": versions(),
        "n_customers": args.n_customers,
        "draws": args.draws,
        "segments": args.segments,
        "horizon": args.horizon,
        "chunk_size": args.chunk_size,
        "interval": f"{args.kind} 0.94",
        "discounting": "per_period, 10 % per 52 weeks, weekly steps",
        "repeats": args.repeats,
        "results": results,
    }
    tag = args.tag or ("smoke" if args.smoke else f"{args.n_customers}cust_{args.draws}draws")
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"clv_scoring_{tag}.json").write_text(json.dumps(record, indent=2))
    lines = [
        f"# CLV scoring benchmark ({tag})",
        "",
        f"- date: {record['date']}, CPUs: {record['cpu_count']}, versions: {record['versions']}",
        f"- command: `{record['command']}`",
        f"- {args.n_customers:,} customers x {args.draws} draws, {args.segments} segments, "
        f"horizon {args.horizon:g} weeks, {record['discounting']}, interval {record['interval']}, "
        f"chunk {args.chunk_size}, median of {args.repeats}",
        "",
        "Wall seconds are sensitive to other load on the machine: the 1-minute load average",
        "before and after each run is recorded (a quiet 2-CPU machine shows < 2).",
        "",
        "| method | median wall s | median CPU s | peak RSS (MB) | load avg (before/after) |",
        "|---|---|---|---|---|",
    ]
    for m, r in results.items():
        cpu = statistics.median(x["cpu_seconds"] for x in r["runs"])
        loads = ", ".join(
            f"{x['load_avg_1min_before']:.1f}/{x['load_avg_1min_after']:.1f}" for x in r["runs"]
        )
        wall, rss = r["median_seconds"], r["max_peak_rss_mb"]
        lines.append(f"| {m} | {wall:.1f} | {cpu:.1f} | {rss:.0f} | {loads} |")
    (RESULTS / f"clv_scoring_{tag}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
