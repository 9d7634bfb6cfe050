"""Shared helpers of the fit benchmarks: run one job in a child process, record the machine.

``run_job`` starts ``benchmarks/peers_worker.py`` with a given interpreter (ours:
``.venv/bin/python``; peers: ``benchmarks/.venv-peers/bin/python``, made by
``benchmarks/peers_setup.sh``), so ours and the peers are timed the same way and their
peak memory is that of a process of their own. Peak memory is measured twice: by the
worker itself (``resource.getrusage``: its own maximum RSS and that of its largest child,
e.g. one of PyMC's chain processes), and by the parent, which samples the summed RSS of
the worker's whole process tree every 50 ms (``psutil``), the figure to compare when a
tool runs chains in several processes.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import shlex
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
RESULTS = HERE / "results"
WORKER = HERE / "peers_worker.py"
OURS_PYTHON = Path(sys.executable)
PEERS_PYTHON = HERE / ".venv-peers" / "bin" / "python"

OUR_PACKAGES = ("bayesclv", "pymc", "pytensor", "arviz", "numpy", "scipy", "nutpie")
PEER_PACKAGES = ("pymc-marketing", "lifetimes", "pymc", "pytensor", "arviz", "numpy", "scipy")


def _versions(python: Path, packages: tuple[str, ...]) -> dict[str, str | None]:
    code = (
        "import importlib.metadata as md, json, sys\n"
        "out = {'python': sys.version.split()[0]}\n"
        f"for p in {list(packages)!r}:\n"
        "    try: out[p] = md.version(p)\n"
        "    except md.PackageNotFoundError: out[p] = None\n"
        "print(json.dumps(out))\n"
    )
    res = subprocess.run([str(python), "-c", code], capture_output=True, text=True, check=True)
    return json.loads(res.stdout)


def _git_state() -> dict:
    """The commit measured, and bayesclv files that differ from it (others' work in progress)."""

    def git(*a: str) -> str:
        res = subprocess.run(["git", *a], capture_output=True, text=True, cwd=ROOT)
        return res.stdout.strip()

    dirty = git("status", "--porcelain", "--", "bayesclv")
    return {"git_commit": git("rev-parse", "HEAD"), "bayesclv_uncommitted": dirty.splitlines()}


def machine_info(peers: bool) -> dict:
    """Date, CPUs, load, versions (ours and, if ``peers``, the peers venv), the command."""
    import platform

    info = {
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "cpu_count": os.cpu_count(),
        "load_average_start": list(os.getloadavg()),
        "platform": platform.platform(),
        "command": " ".join(shlex.quote(a) for a in [sys.executable, *sys.argv]),
        "versions_ours": _versions(OURS_PYTHON, OUR_PACKAGES),
        **_git_state(),
    }
    if peers:
        if not PEERS_PYTHON.exists():
            raise SystemExit(
                f"{PEERS_PYTHON} is missing: run `bash benchmarks/peers_setup.sh` first."
            )
        info["versions_peers"] = _versions(PEERS_PYTHON, PEER_PACKAGES)
    return info


def _tree_rss(proc) -> int:
    import psutil

    total = 0
    try:
        procs = [proc, *proc.children(recursive=True)]
    except psutil.Error:
        return 0
    for p in procs:
        try:
            total += p.memory_info().rss
        except psutil.Error:
            pass
    return total


def run_job(python: Path, job: dict, timeout: float, env: dict | None = None) -> dict:
    """Run one worker job; return its result plus parent-side wall time and tree peak RSS.

    On timeout the worker's process group is killed and ``{"timed_out": True, ...}`` is
    returned with what was measured until then.
    """
    import psutil

    cmd = [str(python), str(WORKER), json.dumps(job)]
    t0 = time.perf_counter()
    proc = subprocess.Popen(
        cmd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
        env={**os.environ, **(env or {})},
        start_new_session=True,
    )
    peak = [0]
    done = threading.Event()

    def sample() -> None:
        ps = psutil.Process(proc.pid)
        while not done.is_set():
            peak[0] = max(peak[0], _tree_rss(ps))
            done.wait(0.05)

    watcher = threading.Thread(target=sample, daemon=True)
    watcher.start()
    timed_out = False
    try:
        stdout, stderr = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        timed_out = True
        os.killpg(proc.pid, signal.SIGKILL)
        stdout, stderr = proc.communicate()
    wall = time.perf_counter() - t0
    done.set()
    watcher.join()
    out: dict = {
        "wall_s": wall,
        "peak_tree_rss_mb": peak[0] / 2**20,
        "timed_out": timed_out,
        "returncode": proc.returncode,
        "load_average_end": list(os.getloadavg()),
    }
    if timed_out:
        out["error"] = f"killed after the {timeout:.0f} s time limit"
        out["stderr_tail"] = stderr[-2000:]
        return out
    lines = [ln for ln in stdout.splitlines() if ln.startswith("RESULT ")]
    if proc.returncode != 0 or not lines:
        out["error"] = f"worker failed (exit {proc.returncode})"
        out["stderr_tail"] = stderr[-4000:]
        return out
    out.update(json.loads(lines[-1][len("RESULT ") :]))
    return out


def write_results(stem: str, payload: dict, markdown: str) -> tuple[Path, Path]:
    RESULTS.mkdir(parents=True, exist_ok=True)
    jpath, mpath = RESULTS / f"{stem}.json", RESULTS / f"{stem}.md"
    jpath.write_text(json.dumps(payload, indent=2, default=str) + "\n")
    mpath.write_text(markdown)
    return jpath, mpath


def md_table(header: list[str], rows: list[list]) -> str:
    def cell(v) -> str:
        if v is None:
            return "-"
        if isinstance(v, float):
            if v != v:  # NaN
                return "nan"
            return f"{v:.3g}" if abs(v) < 100 else f"{v:.0f}"
        return str(v)

    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell(v) for v in r) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def machine_markdown(info: dict) -> str:
    ours = ", ".join(f"{k} {v}" for k, v in info["versions_ours"].items())
    lines = [
        f"- date: {info['date']}; CPUs: {info['cpu_count']}; platform: {info['platform']}",
        "- load average (1, 5, 15 min) at start: "
        + ", ".join(f"{x:.2f}" for x in info["load_average_start"])
        + (
            "; at end: " + ", ".join(f"{x:.2f}" for x in info["load_average_end"])
            if "load_average_end" in info
            else ""
        ),
        f"- ours: {ours}",
    ]
    if "versions_peers" in info:
        peers = ", ".join(f"{k} {v}" for k, v in info["versions_peers"].items())
        lines.append(f"- peers venv: {peers}")
    if "git_commit" in info:
        dirty = info["bayesclv_uncommitted"]
        lines.append(
            f"- git commit {info['git_commit'][:10]}"
            + (f"; uncommitted bayesclv files: {', '.join(dirty)}" if dirty else "")
        )
    lines.append(f"- command: `{info['command']}`")
    return "\n".join(lines) + "\n"


def plot_scale_curve(series: dict, path: Path, title: str, ylabels: tuple[str, str]) -> None:
    """Two log-x panels, seconds (log y) and peak memory, one line per series.

    ``series`` maps a label to ``(style, customers, seconds, memory)``.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4))
    for label, (style, n, seconds, memory) in series.items():
        ax1.plot(n, seconds, style, label=label)
        ax2.plot(n, memory, style, label=label)
    for ax, ylabel in zip((ax1, ax2), ylabels, strict=True):
        ax.set_xscale("log")
        ax.set_xlabel("customers")
        ax.set_ylabel(ylabel)
        ax.grid(True, alpha=0.3)
        ax.legend()
    ax1.set_yscale("log")
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
