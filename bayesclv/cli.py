"""The ``bayesclv`` command line: fit, score/export, and a demo on the built-in CDNOW data.

Exit status: 0 success; 2 bad input or options, or an output that cannot be written
(one line on stderr says what to do, naming the flag that fixes it); 3 a fit failed its
convergence checks (pass ``--allow-bad-fit`` to proceed anyway, and the verdict is written
into every output's metadata); 1 an internal error (a bug: one line, and the traceback
with ``BAYESCLV_DEBUG=1``); 130 interrupted (no partial output files are left behind).

A fit folder is sealed: ``manifest.json``, written last, holds the SHA-256 of every file
and the facts they must agree on (run id, time unit, segment names, models, customers);
``score`` refuses a folder that differs from it in any byte
(:func:`bayesclv.saved.open_folder`). Outputs are never replaced without ``--force``.
"""

from __future__ import annotations

import argparse
import errno
import json
import math
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

EXAMPLES = """
examples:
  # the built-in CDNOW demo: partial pooling over acquisition months, BG/NBD + Gamma-Gamma
  bayesclv demo --out bayesclv-output

  # fit your own log (CSV or Parquet), segment by channel, 39 weeks of calibration
  bayesclv fit orders.csv --customer-col user --date-col ts --amount-col revenue \\
      --segment-col channel --calibration-end 2024-09-30 --time-unit week --out fits/

  # score and export CLV credible intervals: one year, 10%/year discount, 30% margin
  bayesclv score fits/ --horizon 52 --discount-rate 0.10 --discount-period 52 \\
      --margin 0.3 --out clv.xlsx
"""

EXIT_BAD_INPUT = 2
EXIT_BAD_FIT = 3
EXIT_INTERNAL = 1

#: What ``bayesclv fit`` writes into its folder; ``manifest.json`` seals them all.
FIT_FILES = (
    "purchase_fit.nc",
    "spend_fit.nc",
    "customers.parquet",
    "diagnostics.txt",
    "diagnostics.json",
    "settings.json",
)


def _default_sampler() -> str:
    """nutpie where installed (it is, with the dev extra; several times faster), else PyMC."""
    import importlib.util

    return "nutpie" if importlib.util.find_spec("nutpie") is not None else "pymc"


def _log(msg: str) -> None:
    print(f"[bayesclv {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


@dataclass(frozen=True)
class FitSettings:
    """What ``fit`` needs, in one frozen object (also written to ``settings.json``)."""

    model: str = "bgnbd"
    pooling: str = "partial"
    sampler: str = "pymc"
    draws: int = 1000
    tune: int = 1000
    chains: int = 4
    target_accept: float = 0.9
    random_seed: int = 2024
    progressbar: bool = True
    nutpie_backend: str = "numba"


_BUILDERS = {"bgnbd", "mbgnbd", "pareto_nbd"}


def fit_models(rfm, settings: FitSettings, out_dir: Path, *, allow_bad_fit: bool) -> dict:
    """Fit the purchase model and Gamma-Gamma, save both, and return the run summary."""
    from bayesclv import models
    from bayesclv.diagnostics import convergence_report
    from bayesclv.errors import BayesCLVError
    from bayesclv.fit import fit, fit_many, save_fit
    from bayesclv.saved import FOLDER_MANIFEST, seal_folder
    from bayesclv.summary import atomic_write

    builders = {
        "bgnbd": models.build_bgnbd,
        "mbgnbd": models.build_mbgnbd,
        "pareto_nbd": models.build_pareto_nbd,
    }
    import uuid

    out_dir.mkdir(parents=True, exist_ok=True)
    # manifest.json is the completeness marker: removed first, written last, with the
    # hashes of every file and the id of this run, which every fit file carries too. A fit
    # interrupted half-way (or a folder mixing files of two runs, or edited) is then
    # refused by 'score' instead of scored.
    (out_dir / FOLDER_MANIFEST).unlink(missing_ok=True)
    (out_dir / "settings.json").unlink(missing_ok=True)
    run_id = uuid.uuid4().hex
    reports = {}
    fits = {}
    names = {"purchase": settings.model, "spend": "gamma_gamma"}
    built = {
        "spend": models.build_gamma_gamma(rfm, pooling=settings.pooling),
        "purchase": builders[settings.model](rfm, pooling=settings.pooling),
    }
    fit_kwargs = dict(
        sampler=settings.sampler,
        draws=settings.draws,
        tune=settings.tune,
        chains=settings.chains,
        target_accept=settings.target_accept,
        random_seed=settings.random_seed,
        progressbar=settings.progressbar,
        nutpie_backend=settings.nutpie_backend,
    )
    # nutpie compiles each model single-threaded for tens of seconds: fit the two models
    # at once (Gamma-Gamma in a worker process) so the compilations overlap. Same draws
    # as one after the other (benchmarks/bench_master_partial.py measures both).
    concurrent = settings.sampler == "nutpie"
    t0 = time.perf_counter()
    if concurrent:
        _log(
            f"fitting {names['purchase']} and gamma_gamma at the same time ({settings.pooling} "
            f"pooling, {rfm.n_segments} segments, {settings.sampler}, {settings.chains} chains "
            f"x {settings.draws} draws; gamma_gamma in a worker process)"
        )
        results = dict(zip(built, fit_many(list(built.values()), **fit_kwargs), strict=True))
    else:
        results = {}
        for role, model in built.items():
            _log(
                f"fitting {names[role]} ({settings.pooling} pooling, {rfm.n_segments} "
                f"segments, {settings.sampler}, {settings.chains} chains x {settings.draws} "
                "draws)"
            )
            t1 = time.perf_counter()
            results[role] = fit(model, **fit_kwargs)
            _log(f"{names[role]}: {time.perf_counter() - t1:.1f} s")
    if concurrent:
        _log(f"both fitted in {time.perf_counter() - t0:.1f} s")
    for role in ("purchase", "spend"):
        idata = results[role]
        report = convergence_report(idata)
        idata.attrs["convergence"] = json.dumps(report.to_dict(), default=str)
        idata.attrs["run_id"] = run_id
        _log(f"{names[role]}: convergence: {report.verdict}")
        save_fit(idata, out_dir / f"{role}_fit.nc")
        reports[role] = report
        fits[role] = idata
    rfm.to_frame().reset_index().to_parquet(out_dir / "customers.parquet")
    verdicts = {role: r.verdict for role, r in reports.items()}
    (out_dir / "diagnostics.txt").write_text(
        "\n\n".join(f"== {role} model ==\n{r}" for role, r in reports.items()) + "\n"
    )
    (out_dir / "diagnostics.json").write_text(
        json.dumps({role: r.to_dict() for role, r in reports.items()}, indent=2, default=str)
    )
    settings_json = {
        **settings.__dict__,
        "time_unit": rfm.time_unit,
        "run_id": run_id,
        "n_customers": rfm.n_customers,
    }
    atomic_write(
        out_dir / "settings.json",
        lambda tmp: tmp.write_text(json.dumps(settings_json, indent=2)),
    )
    seal_folder(
        out_dir,
        FIT_FILES,
        {
            "run_id": run_id,
            "time_unit": rfm.time_unit,
            "segment_names": list(rfm.segment_names),
            "models": names,
            "n_customers": int(rfm.n_customers),
        },
    )
    try:  # what 'score' will check, checked now: a folder is never sealed inconsistent
        _load_fit_dir(out_dir)
    except BayesCLVError:
        (out_dir / FOLDER_MANIFEST).unlink(missing_ok=True)
        raise
    failed = [role for role, v in verdicts.items() if v == "fail"]
    if failed and not allow_bad_fit:
        for role in failed:
            print(str(reports[role]), file=sys.stderr)
        raise SystemExit(EXIT_BAD_FIT)
    return {"fits": fits, "reports": reports, "verdicts": verdicts}


def _agree(fit_dir: Path, what: str, copies: dict[str, Any], refit: str) -> Any:
    """The one value every file of a fit folder holds for ``what``, or an error naming
    which file says what."""
    values = list(copies.values())
    if all(v == values[0] for v in values[1:]):
        return values[0]
    said = ", ".join(f"{name} {value!r}" for name, value in copies.items())
    raise _saved_error(
        f"{fit_dir}: its files disagree about the {what} ({said}): the folder mixes runs "
        f"or was edited. {refit}."
    )


def _saved_error(message: str):
    from bayesclv.errors import SavedModelError

    return SavedModelError(message)


def _load_fit_dir(fit_dir: Path):
    """The two fits, the customers and the settings of a sealed fit folder, each checked
    against the folder's manifest and against each other (run id, time unit, segment
    names, models, number of customers: one value, held by the manifest)."""
    import numpy as np
    import pandas as pd

    from bayesclv.data import RFMData
    from bayesclv.fit import load_fit
    from bayesclv.saved import open_folder

    refit = f"Run 'bayesclv fit ... --out {fit_dir} --force' again"
    if not fit_dir.is_dir():
        raise _saved_error(
            f"{fit_dir} is not a folder: pass the folder that 'bayesclv fit --out' wrote."
        )
    if not (fit_dir / "purchase_fit.nc").exists():
        raise _saved_error(
            f"{fit_dir} has no purchase_fit.nc: run 'bayesclv fit ... --out {fit_dir}' first."
        )
    manifest = open_folder(fit_dir, refit=refit)
    unlisted = [name for name in FIT_FILES if name not in manifest["files"]]
    if unlisted:
        raise _saved_error(f"{fit_dir}: its manifest does not list {unlisted}. {refit}.")
    try:
        settings = json.loads((fit_dir / "settings.json").read_text())
    except (OSError, ValueError) as exc:
        raise _saved_error(f"{fit_dir / 'settings.json'} is unreadable ({exc}). {refit}.") from exc
    if not isinstance(settings, dict):
        raise _saved_error(
            f"{fit_dir / 'settings.json'} holds a {type(settings).__name__}, not the settings "
            f"of a fit. {refit}."
        )
    purchase = load_fit(fit_dir / "purchase_fit.nc")
    spend = load_fit(fit_dir / "spend_fit.nc", expect_model="gamma_gamma")
    if purchase.attrs.get("model") == "gamma_gamma":
        raise _saved_error(
            f"{fit_dir / 'purchase_fit.nc'} holds a gamma_gamma (spend) fit, not a purchase "
            f"model; the fit folder's files were swapped or mixed. {refit}."
        )
    try:
        df = pd.read_parquet(fit_dir / "customers.parquet")
    except Exception as exc:  # pyarrow raises several types on a bad file
        raise _saved_error(
            f"{fit_dir / 'customers.parquet'} is missing or unreadable ({exc}). {refit}."
        ) from exc
    models = manifest.get("models") if isinstance(manifest.get("models"), dict) else {}
    both = {"purchase_fit.nc": purchase.attrs, "spend_fit.nc": spend.attrs}
    _agree(
        fit_dir,
        "run id",
        {
            "manifest.json": manifest.get("run_id"),
            "settings.json": settings.get("run_id"),
            **{name: attrs.get("run_id") for name, attrs in both.items()},
        },
        refit,
    )
    time_unit = _agree(
        fit_dir,
        "time unit",
        {
            "manifest.json": manifest.get("time_unit"),
            "settings.json": settings.get("time_unit"),
            **{name: attrs.get("time_unit") for name, attrs in both.items()},
        },
        refit,
    )
    names = _agree(
        fit_dir,
        "segment names",
        {
            "manifest.json": manifest.get("segment_names"),
            **{name: json.loads(attrs["segment_names"]) for name, attrs in both.items()},
        },
        refit,
    )
    _agree(
        fit_dir,
        "purchase model",
        {
            "manifest.json": models.get("purchase"),
            "settings.json": settings.get("model"),
            "purchase_fit.nc": purchase.attrs.get("model"),
        },
        refit,
    )
    _agree(
        fit_dir,
        "number of customers",
        {
            "manifest.json": manifest.get("n_customers"),
            "settings.json": settings.get("n_customers"),
            "customers.parquet": len(df),
        },
        refit,
    )
    columns = ["customer_id", "frequency", "recency", "T", "monetary_value", "segment"]
    lacking = [c for c in columns if c not in df.columns]
    if lacking:
        raise _saved_error(f"{fit_dir / 'customers.parquet'} lacks columns {lacking}. {refit}.")
    segments = df["segment"].astype(str)
    unseen = sorted(set(segments) - set(names))
    if unseen:
        raise _saved_error(
            f"{fit_dir / 'customers.parquet'} has customers in segments {unseen} that the "
            f"fit has no parameters for (its segments: {names}). {refit}."
        )
    rfm = RFMData.from_frame(
        df.assign(segment=segments),
        customer_id="customer_id",
        segment="segment",
        time_unit=time_unit,
    )
    # keep the fitted segment order (from_frame sorts names)
    if tuple(names) != rfm.segment_names:
        order = {n: i for i, n in enumerate(names)}
        codes = np.array([order[s] for s in rfm.segment_labels()], dtype=np.int64)
        rfm = RFMData(
            customer_id=rfm.customer_id,
            frequency=rfm.frequency,
            recency=rfm.recency,
            T=rfm.T,
            monetary_value=rfm.monetary_value,
            segment=codes,
            segment_names=tuple(names),
            time_unit=rfm.time_unit,
        )
    return purchase, spend, rfm, settings


def score_and_export(
    purchase,
    spend,
    rfm,
    out: Path,
    *,
    horizon: float,
    discount_rate: float,
    discount_period: float,
    discounting: str,
    margin: float,
    prob: float,
    kind: str,
    method: str,
    random_seed: int,
    overwrite: bool = False,
) -> dict[str, Any]:
    """Score every customer, export the table (and segment totals) with metadata.

    Both outputs are checked (folder, existing files, format limits) before scoring."""
    from bayesclv import __version__
    from bayesclv.clv import score_customers
    from bayesclv.fit import posterior_params
    from bayesclv.summary import export, totals_table

    totals_out = out.with_name(out.stem + "_segments" + out.suffix)
    _check_outputs(out, overwrite=overwrite, n_rows=rfm.n_customers)
    _log(
        f"scoring {rfm.n_customers:,} customers ({method} CLV, horizon {horizon:g} "
        f"{rfm.time_unit}s)"
    )
    scores = score_customers(
        posterior_params(purchase),
        posterior_params(spend),
        rfm,
        horizon=horizon,
        discount_rate=discount_rate,
        discount_period=discount_period,
        discounting=discounting,
        margin=margin,
        prob=prob,
        kind=kind,
        method=method,
        random_seed=random_seed,
    )
    verdict = {
        "purchase": json.loads(purchase.attrs.get("convergence", "{}")).get("verdict"),
        "spend": json.loads(spend.attrs.get("convergence", "{}")).get("verdict"),
    }
    metadata = {
        "bayesclv_version": __version__,
        "models": {"purchase": purchase.attrs["model"], "spend": "gamma_gamma"},
        "pooling": purchase.attrs["pooling"],
        "priors": {
            "purchase": json.loads(purchase.attrs["priors"]),
            "spend": json.loads(spend.attrs["priors"]),
        },
        "sampler": purchase.attrs["sampler"],
        "horizon": horizon,
        "time_unit": rfm.time_unit,
        "discount_rate": discount_rate,
        "discount_period": discount_period,
        "discounting": discounting,
        "margin": margin,
        "interval": {"kind": kind, "prob": prob},
        "clv_method": method,
        "convergence_verdict": verdict,
        "n_customers": rfm.n_customers,
    }
    path = export(scores.table, out, metadata=metadata, convergence=verdict, overwrite=overwrite)
    totals = totals_table(scores.totals, prob, kind)
    totals_path = export(
        totals, totals_out, metadata=metadata, convergence=verdict, overwrite=overwrite
    )
    _log(f"wrote {path} ({len(scores.table):,} customers) and {totals_path}")
    return {"table": scores.table, "totals": totals, "scores": scores, "path": path}


def _check_outputs(out: Path, *, overwrite: bool, n_rows: int | None = None) -> None:
    """Every check export makes, for the table and its segment totals, before any work."""
    from bayesclv.errors import OutputError
    from bayesclv.export import check_export_target

    if out.suffix.lower() not in (".csv", ".parquet", ".xlsx"):
        raise OutputError(f"--out {out}: use a .csv, .parquet or .xlsx file name.")
    totals_out = out.with_name(out.stem + "_segments" + out.suffix)
    for target in (out, totals_out):
        check_export_target(target, overwrite=overwrite, n_rows=n_rows)


def _check_fit_folder(out: Path, *, overwrite: bool) -> None:
    """Before fitting: the folder can be made and written, and holds no fit unless
    ``--force`` (a fit takes minutes; a read-only or taken folder should not wait)."""
    import tempfile

    from bayesclv.errors import OutputError
    from bayesclv.saved import FOLDER_MANIFEST

    if out.exists() and not out.is_dir():
        raise OutputError(f"--out {out} is a file; pass a folder for the fitted models.")
    held = [n for n in (FOLDER_MANIFEST, *FIT_FILES) if (out / n).exists()]
    if held and not overwrite:
        raise OutputError(
            f"--out {out} already holds a fit ({', '.join(held)}); pass --force to replace "
            f"it, or choose another folder."
        )
    out.mkdir(parents=True, exist_ok=True)
    fd, probe = tempfile.mkstemp(prefix=".bayesclv.", suffix=".tmp", dir=out)
    os.close(fd)
    os.unlink(probe)


def _rfm_from_args(args) -> Any:
    from bayesclv.data import rfm_summary

    rfm = rfm_summary(
        args.transactions,
        customer_col=args.customer_col,
        date_col=args.date_col,
        amount_col=args.amount_col,
        segment_col=args.segment_col,
        time_unit=args.time_unit,
        calibration_end=args.calibration_end,
        observation_end=args.observation_end,
        negative_amounts=args.negative_amounts,
        zero_amounts=args.zero_amounts,
        duplicates=args.duplicates,
        encoding=args.encoding,
        date_format=args.date_format,
    )
    report = rfm.meta.get("cleaning_report")
    if report is not None:
        _log(f"cleaning report:\n{report}")
    return _maybe_round(rfm, args)


def _maybe_round(rfm, args) -> Any:
    step = getattr(args, "round_times", 0.0) or 0.0
    if step <= 0:
        return rfm
    from bayesclv.data import round_times

    out = round_times(rfm, step)
    _log(f"recency and age rounded to multiples of {step:g} {rfm.time_unit}(s)")
    return out


def _settings_from_args(args) -> FitSettings:
    return FitSettings(
        model=args.model,
        pooling=args.pooling,
        sampler=args.sampler,
        draws=args.draws,
        tune=args.tune,
        chains=args.chains,
        target_accept=args.target_accept,
        random_seed=args.seed,
        progressbar=not args.no_progress,
        nutpie_backend=args.nutpie_backend,
    )


def run_demo(args) -> int:
    """CDNOW: partial pooling over acquisition months, purchase model + Gamma-Gamma."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from bayesclv import plotting
    from bayesclv.datasets import load_cdnow, load_cdnow_rfm
    from bayesclv.diagnostics import holdout_evaluation, tracking
    from bayesclv.fit import posterior_params

    out = Path(args.out)
    _check_fit_folder(out / "fit", overwrite=args.force)
    _check_outputs(out / f"clv_customers.{args.format}", overwrite=args.force)
    for name in ("holdout.txt", "p_alive_matrix.png", "clv_by_segment.png"):
        if (out / name).exists() and not args.force:
            from bayesclv.errors import OutputError

            raise OutputError(
                f"{out / name} exists (an earlier demo?); pass --force to replace the demo's "
                f"outputs, or choose another --out."
            )
    _log(f"loading the built-in CDNOW {args.which} (Fader & Hardie), 39-week calibration")
    log = load_cdnow(args.which)  # the raw log, for the tracking plot
    rfm = _maybe_round(load_cdnow_rfm(args.which), args)
    _log(f"{rfm}")
    settings = _settings_from_args(args)
    res = fit_models(rfm, settings, out / "fit", allow_bad_fit=args.allow_bad_fit)
    purchase, spend = res["fits"]["purchase"], res["fits"]["spend"]
    scored = score_and_export(
        purchase,
        spend,
        rfm,
        out / f"clv_customers.{args.format}",
        horizon=args.horizon,
        discount_rate=args.discount_rate,
        discount_period=args.discount_period,
        discounting="per_period",
        margin=args.margin,
        prob=args.prob,
        kind=args.interval,
        method=args.method,
        random_seed=args.seed,
        overwrite=args.force,
    )
    _log("holdout check (weeks 40-78) and plots")
    pp, sp = posterior_params(purchase), posterior_params(spend)
    ev = holdout_evaluation(pp, rfm, spend_params=sp, n_draws=300, random_seed=args.seed)
    holdout_text = (
        "holdout metrics (BIAS = sum(predicted) / sum(actual) - 1):\n"
        f"{ev.metrics.round(3).to_string()}\n\n"
        "coverage of per-customer posterior predictive intervals:\n"
        f"{ev.coverage.round(3).to_string()}\n"
    )
    (out / "holdout.txt").write_text(holdout_text)
    figures = {}
    fig, ax = plt.subplots(figsize=(7, 4.5))
    largest = str(rfm.segment_sizes().idxmax())
    plotting.plot_probability_alive_matrix(pp, T=float(rfm.T.max()), segment=largest, ax=ax)
    figures["p_alive_matrix.png"] = fig
    fig, ax = plt.subplots(figsize=(9.5, 4.8))
    plotting.plot_clv_distribution(
        scored["scores"].totals["segment_total"],
        label=f"{args.horizon:g}-week CLV",
        currency="$",
        ax=ax,
    )
    figures["clv_by_segment.png"] = fig
    fig, ax = plt.subplots(figsize=(7, 4.5))
    plotting.plot_segment_shrinkage(
        {"partial": pp}, "r", segment_sizes=dict(rfm.segment_sizes()), ax=ax
    )
    figures["segment_parameters.png"] = fig
    track = tracking(pp, rfm, log, n_draws=300, random_seed=args.seed)
    fig, ax = plt.subplots(figsize=(8, 4.5))
    plotting.plot_tracking(track, kind="cumulative", ax=ax)
    figures["tracking_cumulative.png"] = fig
    for name, f in figures.items():
        f.tight_layout()
        f.savefig(out / name, dpi=110)
        plt.close(f)
    top = scored["table"].sort_values("clv_mean", ascending=False).head(5)
    print("\n== bayesclv demo: CDNOW ==")
    print(f"convergence: {res['verdicts']}")
    print(f"holdout (weeks 40-78):\n{holdout_text}")
    print("segment totals:")
    print(scored["totals"].to_string(index=False))
    print("top customers:")
    print(
        top[["customer_id", "segment", "clv_mean", "clv_lower", "clv_upper", "p_alive"]].to_string(
            index=False
        )
    )
    print(f"outputs in {out.resolve()}")
    return 0


class _Parser(argparse.ArgumentParser):
    """argparse with a one-line error (argparse prints the whole usage first)."""

    def error(self, message: str):
        self.exit(
            EXIT_BAD_INPUT,
            f"bayesclv: error: {message} (see '{self.prog} --help')\n",
        )


def _number(
    kind: str,
    *,
    low: float | None = None,
    high: float | None = None,
    low_open: bool = False,
    high_open: bool = False,
    example: str = "",
):
    """An argparse ``type`` for a finite number within bounds; the message names the
    bounds and an example (argparse adds the flag's name)."""
    cast = int if kind == "integer" else float

    def parse(text: str):
        try:
            value = cast(text)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"{text!r} is not {'an' if kind == 'integer' else 'a'} {kind}{example}"
            ) from None
        bad = not math.isfinite(value)
        bad |= low is not None and (value <= low if low_open else value < low)
        bad |= high is not None and (value >= high if high_open else value > high)
        if bad:
            lo = "" if low is None else f"{'>' if low_open else '>='} {low:g}"
            hi = "" if high is None else f"{'<' if high_open else '<='} {high:g}"
            raise argparse.ArgumentTypeError(
                f"must be a finite {kind} {' and '.join(x for x in (lo, hi) if x)}, got "
                f"{text}{example}"
            )
        return value

    return parse


def _add_fit_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--model",
        choices=sorted(_BUILDERS),
        default="bgnbd",
        help="purchase model (default: bgnbd); spend is always Gamma-Gamma",
    )
    p.add_argument("--pooling", choices=["partial", "complete", "none"], default="partial")
    p.add_argument(
        "--sampler",
        choices=["pymc", "nutpie", "map", "laplace", "advi"],
        default=_default_sampler(),
        help="default: nutpie if installed, else pymc; 'laplace' is a fast Normal "
        "approximation for millions of customers",
    )
    p.add_argument(
        "--nutpie-backend",
        choices=["numba", "jax"],
        default="numba",
        help="how nutpie compiles the models: numba (default; fastest sampling, 15-50 s "
        "to compile each model) or jax (needs the jax extra; compiles in seconds, samples "
        "slower: worth it for short fits such as Pareto/NBD on a few thousand customers)",
    )
    p.add_argument(
        "--round-times",
        type=_number("number", low=0, example=" (e.g. --round-times 1; 0: no rounding)"),
        default=0.0,
        metavar="STEP",
        help="round recency and age to multiples of STEP time units before "
        "fitting (fewer distinct rows, faster; default 0: no rounding)",
    )
    p.add_argument(
        "--draws", type=_number("integer", low=1, example=" (e.g. --draws 1000)"), default=1000
    )
    p.add_argument(
        "--tune", type=_number("integer", low=0, example=" (e.g. --tune 1000)"), default=1000
    )
    p.add_argument(
        "--chains", type=_number("integer", low=1, example=" (e.g. --chains 4)"), default=4
    )
    p.add_argument(
        "--target-accept",
        type=_number(
            "number",
            low=0,
            high=1,
            low_open=True,
            high_open=True,
            example=" (e.g. --target-accept 0.9)",
        ),
        default=0.9,
        help="NUTS target acceptance (default 0.9)",
    )
    p.add_argument("--seed", type=_SEED, default=2024)
    p.add_argument(
        "--force",
        action="store_true",
        help="replace a fit (and, for demo, outputs) already in the --out folder",
    )
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")
    p.add_argument(
        "--allow-bad-fit",
        action="store_true",
        help="continue (exit 0) even if a fit fails its convergence checks",
    )


_SEED = _number("integer", low=0, example=" (e.g. --seed 2024)")


def _add_score_options(p: argparse.ArgumentParser, *, with_out: bool = True) -> None:
    p.add_argument(
        "--horizon",
        type=_number("number", low=0, low_open=True, example=" time units (e.g. --horizon 52)"),
        default=52.0,
        help="CLV horizon in the data's time unit (default 52)",
    )
    p.add_argument(
        "--discount-rate",
        type=_number("number", low=0, example=" (e.g. --discount-rate 0.10; 0: none)"),
        default=0.10,
        help="discount rate per --discount-period (default 0.10)",
    )
    p.add_argument(
        "--discount-period",
        type=_number("number", low=0, low_open=True, example=" time units (e.g. 52)"),
        default=52.0,
        help="length of the discount rate's period in time units (default 52: "
        "an annual rate with weekly data)",
    )
    p.add_argument("--discounting", choices=["per_period", "continuous"], default="per_period")
    p.add_argument(
        "--margin",
        type=_number("number", low=0, low_open=True, example=" (e.g. --margin 0.3)"),
        default=1.0,
        help="profit margin (default 1)",
    )
    p.add_argument(
        "--prob",
        type=_number(
            "number", low=0, high=1, low_open=True, high_open=True, example=" (e.g. --prob 0.94)"
        ),
        default=0.94,
        help="interval probability, strictly between 0 and 1",
    )
    p.add_argument("--interval", choices=["eti", "hdi"], default="eti")
    p.add_argument(
        "--method",
        choices=["expected", "simulate"],
        default="simulate",
        help="'simulate': full posterior predictive CLV (purchases, dropout and "
        "spend simulated); 'expected': expected CLV per draw",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="bayesclv",
        description="Hierarchical Bayesian customer lifetime value (BG/NBD, Pareto/NBD, "
        "Gamma-Gamma) with credible intervals.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", required=True)

    demo = sub.add_parser(
        "demo",
        help="run the whole pipeline on the built-in CDNOW data",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    demo.add_argument("--out", default="bayesclv-output", help="output folder")
    demo.add_argument(
        "--which",
        choices=["sample", "master"],
        default="sample",
        help="CDNOW 1/10 sample (2,357 customers) or the master (23,570)",
    )
    demo.add_argument("--format", choices=["csv", "parquet", "xlsx"], default="csv")
    _add_fit_options(demo)
    _add_score_options(demo)

    fitp = sub.add_parser(
        "fit",
        help="fit purchase + spend models to a transaction log",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    fitp.add_argument("transactions", help="CSV or Parquet transaction log")
    fitp.add_argument("--customer-col", required=True)
    fitp.add_argument("--date-col", required=True)
    fitp.add_argument("--amount-col", required=True)
    fitp.add_argument("--segment-col", default=None)
    fitp.add_argument("--time-unit", default="week", choices=["day", "week", "month", "year"])
    fitp.add_argument(
        "--calibration-end",
        default=None,
        help="last day of the calibration period (default: last day in data)",
    )
    fitp.add_argument("--observation-end", default=None)
    fitp.add_argument("--negative-amounts", choices=["error", "drop"], default="error")
    fitp.add_argument("--zero-amounts", choices=["keep", "drop"], default="keep")
    fitp.add_argument("--duplicates", choices=["keep", "drop"], default="keep")
    fitp.add_argument(
        "--date-format",
        default=None,
        metavar="FORMAT",
        help="how the dates are written, as for strptime, e.g. %%d/%%m/%%Y (day first) or "
        "%%m/%%d/%%Y; needed when dates such as 03/04/2024 could be read either way",
    )
    fitp.add_argument(
        "--encoding",
        default="utf-8",
        help="text encoding of a CSV log (default utf-8), e.g. latin-1, cp1252",
    )
    fitp.add_argument("--out", required=True, help="folder for the fitted models")
    _add_fit_options(fitp)

    score = sub.add_parser(
        "score",
        help="score customers of a fit and export CLV intervals",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    score.add_argument("fit_dir", help="folder written by 'bayesclv fit'")
    score.add_argument(
        "--out",
        required=True,
        help="output file: .csv, .parquet or .xlsx (segment totals go beside it)",
    )
    score.add_argument("--seed", type=_SEED, default=2024)
    score.add_argument(
        "--force",
        action="store_true",
        help="replace --out (and its segment totals and metadata) if they exist",
    )
    score.add_argument(
        "--allow-bad-fit",
        action="store_true",
        help="score even if a fit failed its convergence checks (the verdict "
        "is written into the output's metadata)",
    )
    _add_score_options(score)
    return parser


def _os_advice(exc: OSError) -> str:
    """One line for an operating-system error: what failed, and what to do."""
    where = f" {exc.filename}" if exc.filename else ""
    what = exc.strerror or str(exc)
    if exc.errno in (errno.ENOSPC, errno.EFBIG, getattr(errno, "EDQUOT", -1)):
        fix = "free some space, or write to another folder with --out"
    elif exc.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
        fix = "the location is read-only or not yours: choose another --out"
    elif exc.errno == errno.ENOENT:
        fix = "check the path"
    else:
        fix = "check the path and free space, or write elsewhere with --out"
    return f"could not read or write{where}: {what}; {fix}."


def _score(args) -> int:
    from bayesclv.errors import BayesCLVError

    out = Path(args.out)
    _check_outputs(out, overwrite=args.force)  # before loading: a typo costs nothing
    purchase, spend, rfm, _ = _load_fit_dir(Path(args.fit_dir))
    try:
        verdicts = {
            role: json.loads(idata.attrs.get("convergence", "{}")).get("verdict")
            for role, idata in (("purchase", purchase), ("spend", spend))
        }
    except (ValueError, AttributeError) as exc:
        raise BayesCLVError(f"{args.fit_dir}: unreadable convergence verdicts; refit.") from exc
    failed = [role for role, v in verdicts.items() if v == "fail"]
    if failed and not args.allow_bad_fit:
        print(
            f"bayesclv: error: the {' and '.join(failed)} fit in {args.fit_dir} failed its "
            f"convergence checks (see {Path(args.fit_dir) / 'diagnostics.txt'}); its CLV "
            f"intervals should not be used. Refit (more tuning/draws), or pass "
            f"--allow-bad-fit to score anyway (the verdict goes into the metadata).",
            file=sys.stderr,
        )
        return EXIT_BAD_FIT
    score_and_export(
        purchase,
        spend,
        rfm,
        out,
        horizon=args.horizon,
        discount_rate=args.discount_rate,
        discount_period=args.discount_period,
        discounting=args.discounting,
        margin=args.margin,
        prob=args.prob,
        kind=args.interval,
        method=args.method,
        random_seed=args.seed,
        overwrite=args.force,
    )
    return 0


def _run(args) -> int:
    if args.command == "demo":
        return run_demo(args)
    if args.command == "fit":
        _check_fit_folder(Path(args.out), overwrite=args.force)
        rfm = _rfm_from_args(args)
        res = fit_models(
            rfm, _settings_from_args(args), Path(args.out), allow_bad_fit=args.allow_bad_fit
        )
        print(json.dumps({"verdicts": res["verdicts"], "out": str(args.out)}))
        return 0
    return _score(args)


def main(argv: list[str] | None = None) -> int:
    """Run the command line; every failure is one line on stderr and an exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    from bayesclv.errors import BayesCLVError

    try:
        return _run(args)
    except BayesCLVError as exc:
        print(f"bayesclv: error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except OSError as exc:
        print(f"bayesclv: error: {_os_advice(exc)}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except MemoryError:
        print(
            "bayesclv: error: out of memory; use fewer --draws or --chains, or --sampler "
            "laplace for millions of customers.",
            file=sys.stderr,
        )
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        print("bayesclv: interrupted; no partial output was written.", file=sys.stderr)
        return 130
    except Exception as exc:
        if os.environ.get("BAYESCLV_DEBUG"):
            raise
        first = str(exc).splitlines()[0] if str(exc) else ""
        print(
            f"bayesclv: internal error ({type(exc).__name__}: {first}); this is a bug in "
            f"bayesclv, please report it (BAYESCLV_DEBUG=1 shows the traceback).",
            file=sys.stderr,
        )
        return EXIT_INTERNAL


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
