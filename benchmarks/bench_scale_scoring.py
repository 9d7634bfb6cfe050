"""Benchmark: scale curve of expected-CLV scoring, one machine vs a 2-worker Dask cluster.

For each number of customers (``--sizes``) two fresh child processes score the same
customers and draws (``bench_clv_scoring.make_rfm`` / ``make_params``: BG/NBD histories
at CDNOW-like parameters, synthetic draws near the CDNOW estimates, 10 segments):

* ``single``: :func:`bayesclv.clv.score_customers` (``method="expected"``), the table
  streamed to Parquet (``out_parquet``, ``keep_table=False``: the production path), all
  cores as threads;
* ``dask``: :func:`bayesclv.distributed.score_customers_dask` on a
  ``LocalCluster(n_workers=2, threads_per_worker=1, processes=True)``, the table written
  as partitioned Parquet. The cluster's start-up is timed apart.

Peak memory: the child samples the summed resident memory of its whole process tree
(itself, the scheduler and worker processes) every 50 ms with psutil; for ``single``
``getrusage(RUSAGE_SELF).ru_maxrss`` is reported too. Results (JSON, Markdown and a PNG
of seconds and peak memory against customers) go to ``benchmarks/results/``.

Usage::

    python benchmarks/bench_scale_scoring.py                       # 10K..1M, 500 draws
    python benchmarks/bench_scale_scoring.py --sizes 10000,100000 --draws 200
    python benchmarks/bench_scale_scoring.py --smoke
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import resource
import shlex
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from _common import plot_scale_curve  # noqa: E402

RESULTS = HERE / "results"
KW = dict(horizon=52.0, discount_rate=0.10, discount_period=52.0)


class TreeMemory:
    """Peak of the summed RSS of this process and its descendants, sampled."""

    def __init__(self, every: float = 0.05):
        import psutil

        self.proc, self.every, self.peak, self._stop = psutil.Process(), every, 0, False
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        import psutil

        while not self._stop:
            total = 0
            for p in [self.proc, *self.proc.children(recursive=True)]:
                try:
                    total += p.memory_info().rss
                except psutil.Error:
                    pass
            self.peak = max(self.peak, total)
            time.sleep(self.every)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop = True
        self.thread.join()


def worker(args) -> None:
    from bench_clv_scoring import BG_CDNOW, GG_CDNOW, make_params, make_rfm

    rfm = make_rfm(args.n, 10, seed=1)
    pp = make_params(BG_CDNOW, "bgnbd", args.draws, 10, seed=2)
    sp = make_params(GG_CDNOW, "gamma_gamma", args.draws, 10, seed=3)
    out: dict = {"mode": args.worker, "customers": args.n, "draws": args.draws}
    with tempfile.TemporaryDirectory(dir=args.scratch) as tmp, TreeMemory() as mem:
        if args.worker == "single":
            from bayesclv.clv import score_customers

            t0 = time.perf_counter()
            res = score_customers(
                pp, sp, rfm, out_parquet=Path(tmp) / "scores.parquet", keep_table=False, **KW
            )
            out["wall_s"] = time.perf_counter() - t0
        else:
            from dask.distributed import Client, LocalCluster

            from bayesclv.distributed import score_customers_dask

            t0 = time.perf_counter()
            with (
                LocalCluster(
                    n_workers=2,
                    threads_per_worker=1,
                    processes=True,
                    dashboard_address=None,
                    memory_limit=0,
                ) as cluster,
                Client(cluster) as client,
            ):
                out["cluster_start_s"] = time.perf_counter() - t0
                t0 = time.perf_counter()
                res = score_customers_dask(client, pp, sp, rfm, out_dir=Path(tmp) / "scores", **KW)
                out["wall_s"] = time.perf_counter() - t0
                out["partitions"] = len(res.files)
        out["portfolio_mean"] = float(res.totals["portfolio_total"].mean())
    out["peak_tree_rss_mib"] = mem.peak / 2**20
    out["ru_maxrss_self_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps(out))


def versions() -> dict:
    import importlib.metadata as md

    res = {"python": platform.python_version()}
    for p in ("bayesclv", "numpy", "dask", "distributed", "pyarrow"):
        try:
            res[p] = md.version(p)
        except md.PackageNotFoundError:
            res[p] = None
    return res


def plot(rows: list[dict], path: Path) -> None:
    series = {}
    for mode, style, label in (("single", "o-", "one machine (threads)"),
                               ("dask", "s--", "Dask, 2 workers")):  # fmt: skip
        rs = sorted(
            (r for r in rows if r["mode"] == mode and "wall_s" in r), key=lambda r: r["customers"]
        )
        if rs:
            series[label] = (style, [r["customers"] for r in rs], [r["wall_s"] for r in rs],
                             [r["peak_tree_rss_mib"] for r in rs])  # fmt: skip
    plot_scale_curve(series, path,
                     f"Expected-CLV scoring, {rows[0]['draws']} draws, 10 segments, 2 CPUs",
                     ("wall seconds", "peak RSS, process tree (MiB)"))  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", default="10000,30000,100000,300000,1000000")
    ap.add_argument("--draws", type=int, default=500)
    ap.add_argument("--modes", default="single,dask")
    ap.add_argument("--smoke", action="store_true")
    ap.add_argument("--scratch", default=None)
    ap.add_argument("--worker", choices=["single", "dask"])
    ap.add_argument("--n", type=int)
    args = ap.parse_args()
    if args.worker:
        worker(args)
        return
    if args.smoke:
        args.sizes, args.draws = "2000", 20
    rows = []
    info = {
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "versions": versions(),
        "command": " ".join(shlex.quote(a) for a in [sys.executable, *sys.argv]),
    }
    for n in [int(s) for s in args.sizes.split(",")]:
        for mode in args.modes.split(","):
            cmd = [
                sys.executable,
                __file__,
                "--worker",
                mode,
                "--n",
                str(n),
                "--draws",
                str(args.draws),
            ]
            if args.scratch:
                cmd += ["--scratch", args.scratch]
            load = os.getloadavg()[0]
            res = subprocess.run(cmd, capture_output=True, text=True)
            if res.returncode != 0:
                row = {
                    "mode": mode,
                    "customers": n,
                    "draws": args.draws,
                    "failed": True,
                    "stderr_tail": res.stderr[-2000:],
                }
            else:
                row = json.loads(res.stdout.strip().splitlines()[-1])
            row["load_before"] = load
            print(json.dumps(row), flush=True)
            rows.append(row)
    if args.smoke:
        assert all("wall_s" in r for r in rows), rows
        return
    RESULTS.mkdir(exist_ok=True)
    stem = RESULTS / "scale_scoring"
    stem.with_suffix(".json").write_text(json.dumps({"info": info, "rows": rows}, indent=2))
    plot(rows, stem.with_suffix(".png"))
    lines = [
        "# Expected-CLV scoring: one machine vs Dask (2 workers)",
        "",
        f"- date {info['date']}, {info['cpu_count']} CPUs, {info['platform']}",
        f"- versions: {info['versions']}",
        f"- command: `{info['command']}`",
        f"- {args.draws} draws x 10 segments, horizon 52 weeks, 10 % a year, weekly steps;",
        "  single = `score_customers(out_parquet=..., keep_table=False)`, all cores;",
        "  dask = `score_customers_dask` on `LocalCluster(n_workers=2, threads_per_worker=1,",
        "  processes=True)` writing partitioned Parquet (cluster start-up not included).",
        "- peak RSS = summed RSS of the process tree (client, scheduler, workers), sampled",
        "  every 50 ms. The machine is shared: the 1-minute load average before each run is",
        "  shown (a quiet 2-CPU machine shows < 2).",
        "",
        "![scale curve](scale_scoring.png)",
        "",
        "| customers | mode | wall s | peak RSS MiB | partitions | load before |",
        "|---:|---|---:|---:|---:|---:|",
    ]
    for r in rows:
        wall = "failed" if r.get("failed") else f"{r['wall_s']:.1f}"
        rss = "" if r.get("failed") else f"{r['peak_tree_rss_mib']:,.0f}"
        lines.append(
            f"| {r['customers']:,} | {r['mode']} | {wall} | {rss} | "
            f"{r.get('partitions', '')} | {r['load_before']:.1f} |"
        )
    stem.with_suffix(".md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
