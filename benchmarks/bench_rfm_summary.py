"""Benchmark: validate_transactions + rfm_summary on a large synthetic transaction log.

Each repeat runs in a fresh child process, which generates the log (seeded numpy, no
dependency on bayesclv.simulate), then times ``validate_transactions`` and
``rfm_summary`` on the validated frame. The parent reports the median wall times and
the peak resident memory of the children (``resource.getrusage(RUSAGE_CHILDREN)``),
which includes the generated log itself, and writes JSON and Markdown to
``benchmarks/results/``.

Usage::

    python benchmarks/bench_rfm_summary.py                      # 10M rows, 1M customers
    python benchmarks/bench_rfm_summary.py --smoke              # tiny, for CI
    python benchmarks/bench_rfm_summary.py --n-customers 100000 --n-transactions 1000000
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
import pandas as pd

RESULTS = Path(__file__).resolve().parent / "results"
START = np.datetime64("2020-01-01", "ns")
N_DAYS = 730  # two years of data: one of calibration, one of holdout
CALIBRATION_END = "2020-12-31"
OBSERVATION_END = "2021-12-30"


def make_log(n_customers: int, n_transactions: int, seed: int) -> pd.DataFrame:
    """Synthetic log, rows shuffled: every customer buys at least once."""
    if n_transactions < n_customers:
        raise SystemExit("--n-transactions must be >= --n-customers (one purchase each)")
    rng = np.random.default_rng(seed)
    first = rng.integers(0, N_DAYS // 2, n_customers)  # acquisition in the first year
    extra = rng.integers(0, n_customers, n_transactions - n_customers)
    cust = np.concatenate([np.arange(n_customers), extra])
    span = N_DAYS - first[cust]
    day = first[cust] + np.where(
        np.arange(cust.size) < n_customers, 0, (rng.random(cust.size) * span).astype(np.int64)
    )
    seconds = rng.integers(0, 86_400, cust.size)
    order = rng.permutation(cust.size)
    segment = np.array(["north", "south", "east", "west"])[rng.integers(0, 4, n_customers)]
    return pd.DataFrame(
        {
            "customer_id": (cust + 1_000_000)[order],
            "date": (START + day * np.timedelta64(86_400, "s") + seconds.astype("m8[s]"))[order],
            "amount": np.round(rng.gamma(2.0, 15.0, cust.size) + 0.01, 2)[order],
            "region": segment[cust][order],
        }
    )


def _vm_kib(field: str) -> float:
    """A field of /proc/self/status in KiB (Linux)."""
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(field + ":"):
                return float(line.split()[1])
    return float("nan")


def _reset_peak_rss() -> bool:
    """Reset VmHWM (Linux >= 4.0: write 5 to clear_refs) so the data layer's own peak
    can be read afterwards, apart from the peak reached while generating the log."""
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
        return True
    except OSError:
        return False


def child(args: argparse.Namespace) -> None:
    from bayesclv.data import rfm_summary, validate_transactions

    t0 = time.perf_counter()
    log = make_log(args.n_customers, args.n_transactions, args.seed)
    t_gen = time.perf_counter() - t0
    rss_after_gen = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    current_before = _vm_kib("VmRSS")
    hwm_reset = _reset_peak_rss()
    t0 = time.perf_counter()
    clean, report = validate_transactions(log, segment_col="region")
    t_val = time.perf_counter() - t0
    t0 = time.perf_counter()
    rfm = rfm_summary(clean, calibration_end=CALIBRATION_END, observation_end=OBSERVATION_END)
    t_sum = time.perf_counter() - t0
    peak_data_layer = _vm_kib("VmHWM") if hwm_reset else None
    # sanity: nobody lost, and the summary covers every occasion
    assert report.rows_out == args.n_transactions
    assert rfm.n_customers + sum(map(len, report.excluded_from_summary.values())) == (
        args.n_customers
    )
    print(
        json.dumps(
            {
                "generate_s": t_gen,
                "validate_s": t_val,
                "summary_s": t_sum,
                "total_s": t_val + t_sum,
                "peak_rss_after_generation_mib": rss_after_gen / 1024,
                "rss_before_data_layer_mib": current_before / 1024,
                "peak_rss_during_data_layer_mib": (
                    None if peak_data_layer is None else peak_data_layer / 1024
                ),
                "n_summary_customers": rfm.n_customers,
            }
        )
    )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--n-customers", type=int, default=1_000_000)
    p.add_argument("--n-transactions", type=int, default=10_000_000)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--seed", type=int, default=20240601)
    p.add_argument("--smoke", action="store_true", help="smallest size (1,000 rows), 1 repeat")
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--out", type=Path, default=RESULTS)
    args = p.parse_args()
    if args.smoke:
        args.n_customers, args.n_transactions, args.repeats = 100, 1_000, 1
    if args.child:
        child(args)
        return

    runs = []
    for i in range(args.repeats):
        cmd = [
            sys.executable,
            __file__,
            "--child",
            f"--n-customers={args.n_customers}",
            f"--n-transactions={args.n_transactions}",
            f"--seed={args.seed + i}",
        ]
        res = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if res.returncode != 0:
            sys.exit(f"child failed:\n{res.stderr}")
        runs.append(json.loads(res.stdout.strip().splitlines()[-1]))
        print(f"repeat {i + 1}/{args.repeats}: {runs[-1]}", flush=True)
    # ru_maxrss of RUSAGE_CHILDREN: the largest peak of any waited-for child (KiB on Linux).
    # The child resets its high-water mark after generating the log, so on Linux this is
    # the data layer's peak; without the reset it would include generation.
    peak_mib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    load = os.getloadavg()

    def med(key: str) -> float:
        return statistics.median(r[key] for r in runs)

    label = "smoke" if args.smoke else f"{args.n_transactions}tx_{args.n_customers}cust"
    result = {
        "benchmark": "rfm_summary",
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "command": " ".join(shlex.quote(a) for a in [sys.executable, *sys.argv]),
        "n_customers": args.n_customers,
        "n_transactions": args.n_transactions,
        "repeats": args.repeats,
        "seed": args.seed,
        "cpu_count": os.cpu_count(),
        "load_average_1_5_15_at_end": load,
        "platform": platform.platform(),
        "processor": platform.processor(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "pandas": pd.__version__,
        "median_validate_s": med("validate_s"),
        "median_summary_s": med("summary_s"),
        "median_total_s": med("total_s"),
        "median_generate_s": med("generate_s"),
        "peak_rss_children_getrusage_mib": peak_mib,
        "peak_rss_after_generation_mib": max(r["peak_rss_after_generation_mib"] for r in runs),
        "rss_before_data_layer_mib": max(r["rss_before_data_layer_mib"] for r in runs),
        "peak_rss_during_data_layer_mib": max(
            (r["peak_rss_during_data_layer_mib"] or float("nan")) for r in runs
        ),
        "targets": {"total_s": 10.0, "peak_rss_mib": 3072.0},
        "runs": runs,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    json_path = args.out / f"rfm_summary_{label}.json"
    json_path.write_text(json.dumps(result, indent=2) + "\n")
    md = [
        f"# rfm_summary benchmark ({label})",
        "",
        f"- date: {result['date']}",
        f"- command: `{result['command']}`",
        f"- machine: {result['cpu_count']} CPUs, {result['platform']}; load average at the "
        f"end (1/5/15 min): {load[0]:.1f}/{load[1]:.1f}/{load[2]:.1f} (a shared machine "
        f"with load above the CPU count inflates wall times)",
        f"- python {result['python']}, numpy {result['numpy']}, pandas {result['pandas']}",
        f"- log: {args.n_transactions:,} transactions, {args.n_customers:,} customers, "
        f"rows shuffled, int ids, datetime64 with time of day, 4 segments",
        "",
        f"| step | median of {args.repeats} (s) |",
        "| --- | --- |",
        f"| validate_transactions | {result['median_validate_s']:.2f} |",
        f"| rfm_summary (calibration + holdout) | {result['median_summary_s']:.2f} |",
        f"| total | {result['median_total_s']:.2f} |",
        "",
        "Peak resident memory of the child process:",
        "",
        f"- during validate_transactions + rfm_summary: "
        f"{result['peak_rss_during_data_layer_mib']:,.0f} MiB (VmHWM reset after generating "
        f"the log; getrusage RUSAGE_CHILDREN agrees: {peak_mib:,.0f} MiB), starting from "
        f"{result['rss_before_data_layer_mib']:,.0f} MiB resident (the log itself);",
        f"- while generating the log (benchmark scaffolding, not the data layer): "
        f"{result['peak_rss_after_generation_mib']:,.0f} MiB.",
        "",
        "Targets: total <= 10 s, peak <= 3,072 MiB.",
        "",
    ]
    (args.out / f"rfm_summary_{label}.md").write_text("\n".join(md))
    print(f"wrote {json_path}")
    print("\n".join(md))


if __name__ == "__main__":
    main()
