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

With ``--stream`` the table is not kept: rows go to a temporary Parquet file chunk by
chunk (``score_customers(out_parquet=..., keep_table=False)``), the production path.

``--compare-peer`` instead compares expected CLV with pymc-marketing's
``GammaGammaModel.expected_customer_lifetime_value`` (which averages the Gamma-Gamma spend
over draws and calls ``pymc_marketing.clv.utils.customer_lifetime_value``) on the SAME
customers and the SAME posterior draws (one segment: pymc-marketing's ``BetaGeoModel``
has one parameter set), alternating ours and the peer at each size in fresh processes
(the peer in ``benchmarks/.venv-peers`` through ``peers_worker.py``, with a wall-time
limit and an address-space limit so that running out of memory is reported, not
suffered). The peer's units are fixed by its API: ``future_t`` months, converted to
weeks by its hard-coded factor 4.345 (``time_unit="W"``), and a *monthly* discount rate
applied at the end of each month. We match them explicitly: horizon ``12 x 4.345 =
52.14`` weeks in ``steps=12`` monthly steps, ``discount_rate = 1.10**(1/12) - 1`` per
``discount_period = 4.345`` weeks (10 % a year), so a purchase in month ``k`` is worth
``1.10**(-k/12)`` in both. The per-customer means then agree up to the peer averaging
spend over draws before multiplying (reported as ``agreement``).

Usage::

    python benchmarks/bench_clv_scoring.py                 # 1M customers x 1000 draws
    python benchmarks/bench_clv_scoring.py --smoke         # tiny, for CI
    python benchmarks/bench_clv_scoring.py --n-customers 100000 --draws 1000 --repeats 1
    python benchmarks/bench_clv_scoring.py --compare-peer --compare-sizes 10000,100000 \
        --draws 1000 --repeats 1
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
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

RESULTS = Path(__file__).resolve().parent / "results"
#: pymc-marketing's weeks per month (``customer_lifetime_value``'s ``{"W": 4.345}``).
PEER_WEEKS_PER_MONTH = 4.345
PEER_MONTHS = 12
ANNUAL_RATE = 0.10
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
    with tempfile.TemporaryDirectory(prefix="bench_clv_") as tmp:
        sc = score_customers(
            pp,
            sp,
            rfm,
            horizon=args.horizon,
            discount_rate=args.discount_rate,
            discount_period=args.discount_period,
            discounting="per_period",
            steps=args.steps,
            chunk_size=args.chunk_size,
            prob=0.94,
            kind=args.kind,
            method=args.method,
            random_seed=7,
            n_jobs=args.n_jobs,
            out_parquet=Path(tmp) / "scores.parquet" if args.stream else None,
            keep_table=not args.stream,
        )
        seconds = time.perf_counter() - t0
        cpu_seconds = time.process_time() - cpu0
        if args.stream:
            import pyarrow.parquet as pq

            f = pq.ParquetFile(Path(tmp) / "scores.parquet")
            rows, first = f.metadata.num_rows, f.read_row_group(0).column("clv_mean")
            first_means = [float(v) for v in first.to_numpy()[:5]]
        else:
            rows, first_means = len(sc.table), [float(v) for v in sc.table["clv_mean"][:5]]
    unique_xT = len({(a, b, c) for a, b, c in zip(rfm.segment, rfm.frequency, rfm.T, strict=True)})
    return {
        "seconds": seconds,
        "cpu_seconds": cpu_seconds,
        "load_avg_1min_before": load_before,
        "load_avg_1min_after": os.getloadavg()[0],
        "input_seconds": t_inputs,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "rows": rows,
        "streamed": bool(args.stream),
        "unique_segment_x_T": unique_xT,
        "repeat_buyers": int((rfm.frequency > 0).sum()),
        "portfolio_mean": float(sc.totals["portfolio_total"].mean()),
        "first_means": first_means,
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


def _ours_cmd(args, method: str, **over) -> list[str]:
    """Command line of one worker run (``over`` replaces size/units arguments)."""
    opts = {
        "n_customers": args.n_customers,
        "draws": args.draws,
        "segments": args.segments,
        "horizon": args.horizon,
        "steps": args.steps,
        "discount_rate": args.discount_rate,
        "discount_period": args.discount_period,
        "chunk_size": args.chunk_size,
        "n_jobs": args.n_jobs,
        **over,
    }
    cmd = [sys.executable, __file__, "--worker", "1", "--method", method, "--kind", args.kind]
    for k, v in opts.items():
        if v is not None:
            cmd += ["--" + k.replace("_", "-"), str(v)]
    if args.stream:
        cmd.append("--stream")
    return cmd


def _run_ours(cmd: list[str]) -> dict:
    out = subprocess.run(cmd, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def _parse(argv):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n-customers", type=int, default=1_000_000)
    ap.add_argument("--draws", type=int, default=1000)
    ap.add_argument("--segments", type=int, default=10)
    ap.add_argument("--horizon", type=float, default=52.0)
    ap.add_argument("--steps", type=int, default=None, help="discount steps (default: weekly)")
    ap.add_argument("--discount-rate", type=float, default=ANNUAL_RATE)
    ap.add_argument("--discount-period", type=float, default=52.0)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--chunk-size", type=int, default=8192)
    ap.add_argument("--kind", default="eti", choices=["eti", "hdi"])
    ap.add_argument("--methods", default="expected,simulate")
    ap.add_argument("--n-jobs", type=int, default=None)
    ap.add_argument("--stream", action="store_true",
                    help="write rows to Parquet chunk by chunk, keep no table")  # fmt: skip
    ap.add_argument("--smoke", action="store_true", help="tiny sizes, for CI")
    ap.add_argument("--tag", default=None, help="name of the result files")
    ap.add_argument("--compare-peer", action="store_true",
                    help="expected CLV vs pymc-marketing on the same draws")  # fmt: skip
    ap.add_argument("--compare-sizes", default="10000,100000,1000000")
    ap.add_argument("--peer-timeout", type=float, default=600.0, help="seconds per peer run")
    ap.add_argument("--peer-memory-mb", type=int, default=12_000,
                    help="peer's address-space limit")  # fmt: skip
    ap.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--method", default=None, help=argparse.SUPPRESS)
    return ap.parse_args(argv)


def main(argv=None) -> None:
    args = _parse(argv)
    if args.smoke:
        args.n_customers, args.draws, args.repeats = 2000, 50, 1
        args.compare_sizes = "2000"
    if args.worker:
        print(json.dumps(worker(args)))
        return
    if args.compare_peer:
        compare_peer(args)
        return

    results = {}
    for method in args.methods.split(","):
        runs = []
        for _ in range(args.repeats):
            runs.append(_run_ours(_ours_cmd(args, method)))
            print(method, runs[-1], file=sys.stderr)
        results[method] = {
            "median_seconds": statistics.median(r["seconds"] for r in runs),
            "max_peak_rss_mb": max(r["peak_rss_mb"] for r in runs),
            "runs": runs,
        }
    steps = args.steps or "weekly"
    record = {
        "benchmark": "clv_scoring",
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "command": " ".join(shlex.quote(a) for a in [Path(sys.executable).name, *sys.argv]),
        "cpu_count": os.cpu_count(),
        "machine": platform.machine(),
        "load_average_start": list(os.getloadavg()),
        "versions": versions(),
        "n_customers": args.n_customers,
        "draws": args.draws,
        "segments": args.segments,
        "horizon": args.horizon,
        "chunk_size": args.chunk_size,
        "streamed": args.stream,
        "interval": f"{args.kind} 0.94",
        "discounting": f"per_period, {args.discount_rate:g} per {args.discount_period:g} weeks, "
        f"{steps} steps",
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
        f"chunk {args.chunk_size}, median of {args.repeats}"
        + (", rows streamed to Parquet (no table kept)" if args.stream else ""),
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


def _write_peer_inputs(tmp: Path, n: int, draws: int) -> tuple[Path, Path]:
    """The customers and draws the worker builds for one segment, as files for the peer."""
    import pandas as pd

    rfm = make_rfm(n, 1, seed=1)
    pp = make_params(BG_CDNOW, "bgnbd", draws, 1, seed=2)
    sp = make_params(GG_CDNOW, "gamma_gamma", draws, 1, seed=3)
    data, post = tmp / "customers.csv", tmp / "posterior.npz"
    pd.DataFrame(
        {
            "customer_id": rfm.customer_id,
            "frequency": rfm.frequency,
            "recency": rfm.recency,
            "T": rfm.T,
            "monetary_value": rfm.monetary_value,
        }
    ).to_csv(data, index=False)
    arrays = {k: ds[k].values[..., 0] for ds in (pp, sp) for k in ds.data_vars}
    np.savez(post, **arrays)
    return data, post


def compare_peer(args) -> None:
    """Expected CLV, ours vs pymc-marketing, same customers and draws, per size."""
    from _common import PEERS_PYTHON, machine_info, machine_markdown, md_table, run_job
    from _common import write_results as write

    info = machine_info(peers=True)
    months, wpm = PEER_MONTHS, PEER_WEEKS_PER_MONTH
    monthly = (1 + ANNUAL_RATE) ** (1 / months) - 1
    units = {
        "ours": {"horizon": months * wpm, "steps": months, "discount_rate": monthly,
                 "discount_period": wpm, "segments": 1},
        "pymc_marketing": {"future_t": months, "discount_rate": monthly, "time_unit": "W"},
    }  # fmt: skip
    sizes = [int(v) for v in args.compare_sizes.split(",")]
    rows, runs = [], []
    for n in sizes:
        for rep in range(args.repeats):
            ours = _run_ours(_ours_cmd(args, "expected", n_customers=n, **units["ours"]))
            print("ours", n, ours, file=sys.stderr)
            with tempfile.TemporaryDirectory(prefix="bench_clv_peer_") as tmp:
                data, post = _write_peer_inputs(Path(tmp), n, args.draws)
                job = {
                    "lib": "pymc_marketing_clv",
                    "data": str(data),
                    "posterior": str(post),
                    "memory_limit_mb": args.peer_memory_mb,
                    **units["pymc_marketing"],
                }
                load = os.getloadavg()[0]
                peer = run_job(PEERS_PYTHON, job, timeout=args.peer_timeout)
                peer["load_avg_1min_before"] = load
            print("pymc-marketing", n, {k: v for k, v in peer.items() if k != "stderr_tail"},
                  file=sys.stderr)  # fmt: skip
            runs.append({"n_customers": n, "repeat": rep, "ours": ours, "peer": peer})
            rows.append(_compare_row(n, args.draws, ours, peer, args))
    info["load_average_end"] = list(os.getloadavg())
    header = ["customers", "draws", "ours s", "ours peak MB", "peer CLV s", "peer summary s",
              "peer peak MB", "ours/peer time", "ours/peer memory", "mean CLV rel. diff",
              "load (ours/peer)", "peer status"]  # fmt: skip
    md = [
        f"# Expected CLV scoring: bayesclv vs pymc-marketing ({args.draws} draws)",
        "",
        machine_markdown(info),
        "Same customers (BG/NBD histories at CDNOW-like parameters, one segment) and the same",
        f"{args.draws} posterior draws near the CDNOW estimates in both tools, each run in a",
        "fresh process, ours then the peer at each size. Horizon 12 months of 4.345 weeks",
        "(52.14 weeks), discounted at the end of each month at (1.10)^(1/12) - 1 per month",
        "(10 % a year) in both: pymc-marketing `future_t=12, time_unit='W', discount_rate="
        f"{monthly:.6f}`; ours `horizon=52.14, steps=12, discount_rate={monthly:.6f}, "
        "discount_period=4.345`.",
        "",
        "- ours: `score_customers(method='expected')`: per-customer mean, median, 94 % ETI,",
        "  P(alive), expected purchases, per-draw totals (one process, peak RSS by getrusage).",
        "- pymc-marketing "
        f"{info['versions_peers'].get('pymc-marketing')}: `GammaGammaModel."
        "expected_customer_lifetime_value(transaction_model=BetaGeoModel, ...)` on models",
        "  whose `idata` holds the same draws (CLV s), then the per-customer mean, 3 %/97 %",
        "  quantiles and per-draw portfolio total with xarray (summary s); time limit "
        f"{args.peer_timeout:.0f} s, address-space limit {args.peer_memory_mb} MB.",
        "- ratios: ours wall s / peer (CLV + summary) wall s, and peak RSS ours / peer.",
        "- mean CLV rel. diff: portfolio mean, ours vs peer; not 0 because pymc-marketing",
        "  averages the spend over draws before multiplying by the purchases (ours keeps",
        "  spend per draw, so per-draw totals and intervals include spend uncertainty).",
        "",
        md_table(header, rows),
    ]
    tag = args.tag or ("smoke" if args.smoke else f"{args.draws}draws")
    payload = {"benchmark": "clv_scoring_vs_pymc_marketing", **info, "units": units,
               "draws": args.draws, "runs": runs}  # fmt: skip
    jpath, mpath = write(f"clv_scoring_vs_pymc_marketing_{tag}", payload, "\n".join(md))
    print(mpath.read_text())


def _compare_row(n, draws, ours, peer, args) -> list:
    if peer.get("timed_out"):
        status = f"killed at the {args.peer_timeout:.0f} s limit"
    elif peer.get("out_of_memory"):
        status = (f"out of memory ({args.peer_memory_mb} MB limit) after "
                  f"{peer['failed_after_s']:.0f} s")  # fmt: skip
    elif "error" in peer:
        status = peer["error"]
    else:
        status = "ok"
    peer_s = peer.get("clv_s", 0) + peer.get("summary_s", 0) if status == "ok" else None
    peer_mb = peer.get("rss_self_mb") or peer.get("peak_tree_rss_mb")
    diff = (ours["portfolio_mean"] / peer["portfolio_mean"] - 1) if status == "ok" else None
    return [
        f"{n:,}",
        draws,
        ours["seconds"],
        ours["peak_rss_mb"],
        peer.get("clv_s"),
        peer.get("summary_s"),
        peer_mb,
        ours["seconds"] / peer_s if peer_s else None,
        ours["peak_rss_mb"] / peer_mb if status == "ok" and peer_mb else None,
        f"{diff:.1e}" if diff is not None else None,
        f"{ours['load_avg_1min_before']:.1f}/{peer['load_avg_1min_before']:.1f}",
        status,
    ]


if __name__ == "__main__":
    main()
