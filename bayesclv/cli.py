"""The ``bayesclv`` command line: argument parsing, one-line errors and exit statuses.

What each command does lives in :mod:`bayesclv.workflow` (fit, load, score, export) and
:mod:`bayesclv.report` (the analyst's report); this module parses the arguments, says
every failure in one line and returns the exit status.

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
import re
import sys
import warnings
from dataclasses import replace
from pathlib import Path

from bayesclv import workflow
from bayesclv.workflow import (  # noqa: F401  (the public names of the old cli module)
    FIT_FILES,
    FitSettings,
    ReadOptions,
    ScoreOptions,
    check_outputs,
    load_fit_dir,
)

EXAMPLES = """
examples:
  # the built-in CDNOW demo: BG/NBD, MBG/NBD and Pareto/NBD compared, partial pooling
  # over acquisition months, Gamma-Gamma spend, report and plots
  bayesclv demo --out bayesclv-output

  # fit your own log (CSV, Excel or Parquet), segment by channel; the purchase model is
  # chosen by PSIS-LOO among the applicable families (--model auto, the default)
  bayesclv fit orders.csv --customer-col user --date-col ts --amount-col revenue \\
      --segment-col channel --calibration-end 2024-09-30 --time-unit week --out fits/

  # a European CSV: ';' between fields, decimal commas, day-first dates
  bayesclv fit orders.csv --sep ';' --decimal , --date-format %d/%m/%Y \\
      --customer-col kunde --date-col datum --amount-col betrag --out fits/

  # score and export: one workbook (customers, segments, about); one year, 10%/year
  # discount (the defaults follow the time unit), 30% margin, amounts in EUR
  bayesclv score fits/ --margin 0.3 --currency EUR --out clv.xlsx

  # Pareto/NBD with covariates: static (one row per customer: id + columns) or
  # time-varying (id, period start, columns); the table is sealed in the fit folder,
  # and a time-varying fit is scored along the future path given at score time
  bayesclv fit orders.csv --customer-col user --date-col ts --amount-col revenue \\
      --model pareto_nbd_dyncov --covariates weekly.csv --out fits-cov/
  bayesclv score fits-cov/ --method expected --horizon 26 \\
      --future-covariates weekly_next.csv --out clv_cov.xlsx

  # the report an analyst can send: holdout check, plots, one-page HTML and PNG
  bayesclv report fits/ --log orders_until_today.csv --out report/

notes:
  PyTensor's warning that it could not link to a BLAS library is silenced here (it
  only means slower compiled code, not different results); BAYESCLV_DEBUG=1 shows it,
  and shows the traceback of an internal error.
"""

EXIT_BAD_INPUT = 2
EXIT_BAD_FIT = 3
EXIT_INTERNAL = 1
_BLAS = "PyTensor could not link to a BLAS"


def _default_sampler() -> str:
    """nutpie where installed (it is, with the dev extra; several times faster), else PyMC."""
    import importlib.util

    return "nutpie" if importlib.util.find_spec("nutpie") is not None else "pymc"


def _purchase_models() -> list[str]:
    from bayesclv.families import purchase_families

    return purchase_families()


class _Formatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Defaults shown after every flag's help, examples kept as written."""


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


_SEED = _number("integer", low=0, example=" (e.g. --seed 2024)")


def _add_fit_options(p: argparse.ArgumentParser, *, demo: bool = False) -> None:
    p.add_argument(
        "--model",
        choices=["auto", *_purchase_models()],
        default="auto",
        help="purchase family; 'auto' fits the candidates and chooses by PSIS-LOO "
        "(stacking weights; needs posterior draws, so not with --sampler map; the covariate "
        "families pareto_nbd_cov (static) and pareto_nbd_dyncov (time-varying) are never "
        "candidates: pick them here, with --covariates). Spend is always Gamma-Gamma",
    )
    p.add_argument(
        "--candidates",
        default=None,
        metavar="F1,F2",
        help="families --model auto compares, comma-separated (default: "
        + ("bgnbd,mbgnbd,pareto_nbd for the demo" if demo else
           "every family that can model the data")
        + ")",
    )
    p.add_argument(
        "--choose-by",
        choices=["loo", "forecast"],
        default="loo",
        help="how --model auto ranks and stacks the families: 'loo' = PSIS-LOO of the "
        "calibration likelihood; 'forecast' = leave-future-out: each family is also fitted "
        "to the log cut --validation-length earlier and scored on the purchase counts of "
        "that last stretch of the calibration period (about twice the fitting time; it "
        "measures what the scores are used for, the future purchase counts)",
    )
    p.add_argument(
        "--validation-length",
        type=float,
        default=None,
        metavar="N",
        help="with --choose-by forecast: the validation window in --time-unit units "
        "(default: a third of the calibration span, at most one year)",
    )
    p.add_argument("--pooling", choices=["partial", "complete", "none"], default="partial",
                   help="how segments share information: partial (hierarchical), complete "
                   "(one set of parameters), none (each segment alone)")
    p.add_argument(
        "--sampler",
        choices=["pymc", "nutpie", "map", "laplace", "advi"],
        default=_default_sampler(),
        help="nutpie (if installed) or pymc: NUTS; map: the posterior mode only (one "
        "draw); laplace: a fast Normal approximation for millions of customers; advi",
    )
    p.add_argument(
        "--nutpie-backend",
        choices=["numba", "jax"],
        default="numba",
        help="how nutpie compiles the models: numba (fastest sampling, 15-50 s to compile "
        "each model) or jax (needs the jax extra; compiles in seconds, samples slower)",
    )
    p.add_argument(
        "--round-times",
        type=_number("number", low=0, example=" (e.g. --round-times 1; 0: no rounding)"),
        default=0.0,
        metavar="STEP",
        help="round recency and age to multiples of STEP time units before fitting "
        "(fewer distinct rows, faster; 0: no rounding)",
    )
    p.add_argument("--draws", type=_number("integer", low=1, example=" (e.g. --draws 1000)"),
                   default=1000, help="posterior draws per chain")
    p.add_argument("--tune", type=_number("integer", low=0, example=" (e.g. --tune 1000)"),
                   default=1000, help="tuning (warm-up) steps per chain")
    p.add_argument("--chains", type=_number("integer", low=1, example=" (e.g. --chains 4)"),
                   default=4, help="NUTS chains")
    p.add_argument(
        "--target-accept",
        type=_number("number", low=0, high=1, low_open=True, high_open=True,
                     example=" (e.g. --target-accept 0.9)"),
        default=0.9,
        help="NUTS target acceptance",
    )
    p.add_argument("--seed", type=_SEED, default=2024, help="random seed of fitting and "
                   "scoring")
    p.add_argument("--force", action="store_true",
                   help="replace a fit (and, for demo, outputs) already in the --out folder")
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")
    p.add_argument("--allow-bad-fit", action="store_true",
                   help="continue (exit 0) even if a fit fails its convergence checks")


def _add_score_options(p: argparse.ArgumentParser, *, method: str = "simulate") -> None:
    p.add_argument(
        "--horizon",
        type=_number("number", low=0, low_open=True, example=" time units (e.g. --horizon 52)"),
        default=None,
        help="CLV horizon in the data's time unit (default: one year, i.e. 52 weeks, 12 "
        "months, 365 days or 1 year)",
    )
    p.add_argument(
        "--discount-rate",
        type=_number("number", low=0, example=" (e.g. --discount-rate 0.10; 0: none)"),
        default=0.10,
        help="discount rate per --discount-period",
    )
    p.add_argument(
        "--discount-period",
        type=_number("number", low=0, low_open=True, example=" time units (e.g. 52)"),
        default=None,
        help="length of the discount rate's period in time units (default: one year in "
        "the data's time unit, i.e. an annual rate)",
    )
    p.add_argument("--discounting", choices=["per_period", "continuous"], default="per_period",
                   help="discount at the end of each time unit, or at each purchase's time")
    p.add_argument(
        "--margin",
        type=_number("number", low=0, low_open=True, example=" (e.g. --margin 0.3)"),
        default=1.0,
        help="profit margin (1: CLV is revenue)",
    )
    p.add_argument(
        "--prob",
        type=_number("number", low=0, high=1, low_open=True, high_open=True,
                     example=" (e.g. --prob 0.94)"),
        default=0.94,
        help="interval probability, strictly between 0 and 1",
    )
    p.add_argument("--interval", choices=["eti", "hdi"], default="eti",
                   help="equal-tailed or highest-density intervals")
    p.add_argument(
        "--method",
        choices=["expected", "simulate"],
        default=method,
        help="'expected': expected CLV per posterior draw (credible interval of expected "
        "CLV); 'simulate': purchases, dropout and spend simulated (predictive interval of "
        "realised CLV; needs posterior draws, refused for a MAP fit)",
    )
    p.add_argument(
        "--top-share",
        type=_number("number", low=0, high=1, low_open=True, high_open=True,
                     example=" (e.g. --top-share 0.1)"),
        default=0.10,
        help="the p_top column: posterior probability of being in this top share by CLV",
    )
    p.add_argument("--currency", default=None,
                   help="currency of the amounts, e.g. EUR or $ (formats and labels only; "
                   "nothing is converted)")


def _add_covariate_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group(
        "covariates (--model pareto_nbd_cov or pareto_nbd_dyncov)",
        "The table is validated, saved and sealed in the fit folder; 'score' uses it.")
    g.add_argument(
        "--covariates", default=None, metavar="FILE",
        help="covariate table (.csv, .parquet, .xlsx): for pareto_nbd_cov one row per "
        "customer (customer id + numeric or text columns; text becomes dummies); for "
        "pareto_nbd_dyncov one row per customer and calendar period (customer id, period "
        "start, columns), covering every period from each customer's first purchase "
        "through --calibration-end")
    g.add_argument("--covariate-id-col", default=None,
                   help="customer id column of --covariates; unset: customer_id if the "
                   "table has one, else the log's --customer-col")
    g.add_argument("--covariate-date-col", default="period_start",
                   help="period start column of time-varying --covariates")
    g.add_argument("--covariate-freq", default=None, metavar="FREQ",
                   help="period grid of time-varying --covariates as a pandas frequency "
                   "(e.g. W-SUN, MS); unset: inferred from the period starts")
    g.add_argument("--purchase-covariates", default=None, metavar="C1,C2",
                   help="columns acting on the purchase rate, or 'none'; unset: every column")
    g.add_argument("--dropout-covariates", default=None, metavar="C1,C2",
                   help="columns acting on the dropout process, or 'none'; unset: every column")


def _add_read_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--customer-col", required=True, help="column of customer ids")
    p.add_argument("--date-col", required=True, help="column of transaction dates")
    p.add_argument("--amount-col", required=True,
                   help="column of amounts; 'none' for a log without amounts (purchase "
                   "models only: the scores are expected purchases, not money)")
    p.add_argument("--segment-col", default=None, help="column of each customer's segment")
    p.add_argument("--time-unit", default="week", choices=["day", "week", "month", "year"],
                   help="unit of recency, age and the horizon")
    p.add_argument("--calibration-end", default=None,
                   help="last day of the calibration period, the date the scores are as of "
                   "(default: the last day in the data)")
    p.add_argument("--observation-end", default=None,
                   help="last day of observation (default: the last day in the data)")
    p.add_argument("--negative-amounts", choices=["error", "drop"], default="error",
                   help="negative amounts (returns?): stop, or drop those rows (counted)")
    p.add_argument("--zero-amounts", choices=["keep", "drop"], default="keep",
                   help="zero-amount rows: keep as purchases, or drop (counted)")
    p.add_argument("--duplicates", choices=["keep", "drop"], default="keep",
                   help="exact duplicate rows: keep, or drop all but the first (counted)")
    p.add_argument("--after-end", choices=["error", "drop"], default="error",
                   help="rows dated after --observation-end: stop, or drop them (counted)")
    p.add_argument(
        "--date-format",
        default=None,
        metavar="FORMAT",
        help="how the dates are written, as for strptime, e.g. %%d/%%m/%%Y (day first) or "
        "%%m/%%d/%%Y; needed when dates such as 03/04/2024 could be read either way",
    )
    p.add_argument("--sep", default=None,
                   help="field separator of a CSV, e.g. ';' (default: ',', tab for .tsv)")
    p.add_argument("--decimal", choices=[".", ","], default=".",
                   help="decimal mark of the amounts: ',' reads 230,30 as 230.3 and "
                   "1.230,50 as 1230.5")
    p.add_argument("--encoding", default="utf-8",
                   help="text encoding of a CSV log, e.g. latin-1, cp1252")


def build_parser() -> argparse.ArgumentParser:
    from bayesclv import __version__

    parser = _Parser(
        prog="bayesclv",
        description="Hierarchical Bayesian customer lifetime value: purchase families "
        "(BG/NBD, MBG/NBD, Pareto/NBD, BG/BB, (M)BG/CNBD-k) chosen by PSIS-LOO, "
        "Gamma-Gamma spend, credible and predictive intervals.",
        epilog=EXAMPLES,
        formatter_class=_Formatter,
    )
    parser.add_argument("--version", action="version", version=f"bayesclv {__version__}",
                        help="print the version and exit")
    sub = parser.add_subparsers(dest="command", required=True)

    def command(name: str, help: str):
        return sub.add_parser(name, help=help, description=help, epilog=EXAMPLES,
                              formatter_class=_Formatter)

    demo = command("demo", "run the whole pipeline on the built-in CDNOW data")
    demo.add_argument("--out", default="bayesclv-output", help="output folder")
    demo.add_argument("--which", choices=["sample", "master"], default="sample",
                      help="CDNOW 1/10 sample (2,357 customers) or the master (23,570)")
    demo.add_argument("--format", choices=["csv", "parquet", "xlsx"], default="xlsx",
                      help="format of the CLV table")
    _add_fit_options(demo, demo=True)
    _add_score_options(demo)

    fitp = command("fit", "fit purchase + spend models to a transaction log")
    fitp.add_argument("transactions", help="transaction log: .csv (.gz), .xlsx or .parquet")
    _add_read_options(fitp)
    fitp.add_argument("--out", required=True, help="folder for the fitted models")
    _add_fit_options(fitp)
    _add_covariate_options(fitp)

    score = command("score", "score the customers of a fit and export CLV intervals")
    score.add_argument("fit_dir", help="folder written by 'bayesclv fit'")
    score.add_argument("--out", required=True,
                       help="output file: .xlsx (one workbook: customers, segments, about), "
                       ".csv or .parquet (segment totals beside it, metadata in a sidecar)")
    score.add_argument("--model", default=None,
                       help="score one family of an automatic choice instead of the stack")
    score.add_argument("--seed", type=_SEED, default=2024,
                       help="random seed of simulation and ranking tie-breaks")
    score.add_argument("--force", action="store_true",
                       help="replace --out (and its segment totals and metadata) if they exist")
    score.add_argument("--allow-bad-fit", action="store_true",
                       help="score even if a fit failed its convergence checks (the verdict "
                       "is written into the output's metadata)")
    score.add_argument(
        "--future-covariates", default=None, metavar="FILE",
        help="a pareto_nbd_dyncov fit: the time-varying covariates after the calibration "
        "end (customer id, period start, the fit's columns), every customer's periods "
        "through the end of --horizon; not needed when the fit's --covariates already "
        "reach that far (use --method expected: simulation along covariate paths is not "
        "implemented)")
    _add_score_options(score)

    rep = command("report", "holdout check, plots and a one-page HTML/PNG report of a fit")
    rep.add_argument("fit_dir", help="folder written by 'bayesclv fit'")
    rep.add_argument("--log", default=None,
                     help="the transaction log, read as the fit read it; when it runs past "
                     "the calibration end the later purchases are the holdout check")
    rep.add_argument("--observation-end", default=None,
                     help="last day of the log to use (default: its last day)")
    rep.add_argument("--out", default="report", help="folder for the report")
    rep.add_argument("--model", default=None,
                     help="report one family of an automatic choice instead of the stack")
    rep.add_argument("--seed", type=_SEED, default=2024, help="random seed")
    rep.add_argument("--force", action="store_true", help="replace an earlier report")
    rep.add_argument("--allow-bad-fit", action="store_true",
                     help="report on a fit that failed its convergence checks")
    _add_score_options(rep, method="expected")
    return parser


# =====================================================================================
# Commands
# =====================================================================================
def _read_options(args) -> ReadOptions:
    amount = None if str(args.amount_col).lower() == "none" else args.amount_col
    return ReadOptions(
        source=str(Path(args.transactions).resolve()),
        customer_col=args.customer_col,
        date_col=args.date_col,
        amount_col=amount,
        segment_col=args.segment_col,
        time_unit=args.time_unit,
        calibration_end=args.calibration_end,
        observation_end=args.observation_end,
        date_format=args.date_format,
        sep=args.sep,
        decimal=args.decimal,
        encoding=args.encoding,
        negative_amounts=args.negative_amounts,
        zero_amounts=args.zero_amounts,
        duplicates=args.duplicates,
        after_end=args.after_end,
        round_times=args.round_times,
    )


def _settings_from_args(args, *, with_spend: bool = True, candidates=None) -> FitSettings:
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
        candidates=workflow.parse_candidates(args.candidates) if candidates is None
        else candidates,
        with_spend=with_spend,
        choose_by=args.choose_by,
        validation_length=args.validation_length,
    )


def _names(text: str | None, flag: str) -> tuple[str, ...] | None:
    if text is None:
        return None
    if text.strip().lower() == "none":
        return ()
    names = tuple(n.strip() for n in text.split(",") if n.strip())
    if not names:
        from bayesclv.errors import ModelSpecificationError

        raise ModelSpecificationError(f"{flag}: give column names separated by commas, or "
                                      f"'none'.")
    return names


def _covariate_options(args) -> workflow.CovariateOptions | None:
    flags = {"--covariate-id-col": args.covariate_id_col,
             "--covariate-freq": args.covariate_freq,
             "--purchase-covariates": args.purchase_covariates,
             "--dropout-covariates": args.dropout_covariates}
    if args.covariates is None:
        given = [f for f, v in flags.items() if v is not None]
        if given:
            from bayesclv.errors import ModelSpecificationError

            raise ModelSpecificationError(f"{', '.join(given)} without --covariates FILE; "
                                          f"pass the covariate table too.")
        return None
    return workflow.CovariateOptions(
        source=str(Path(args.covariates).resolve()),
        id_col=args.covariate_id_col,
        date_col=args.covariate_date_col,
        freq=args.covariate_freq,
        purchase=_names(args.purchase_covariates, "--purchase-covariates"),
        dropout=_names(args.dropout_covariates, "--dropout-covariates"),
    )


def _score_options(args) -> ScoreOptions:
    return ScoreOptions(
        horizon=args.horizon,
        discount_rate=args.discount_rate,
        discount_period=args.discount_period,
        discounting=args.discounting,
        margin=args.margin,
        prob=args.prob,
        kind=args.interval,
        method=args.method,
        random_seed=args.seed,
        top_share=args.top_share,
        currency=args.currency,
        model=getattr(args, "model_choice", None),
        future_covariates=(None if getattr(args, "future_covariates", None) is None
                           else str(Path(args.future_covariates).resolve())),
    )


def fit_models(rfm, settings: FitSettings, out_dir: Path, *, allow_bad_fit: bool,
               read: ReadOptions | None = None, covariates=None, validation=None) -> dict:
    """:func:`bayesclv.workflow.fit_models` with the command line's exit status 3."""
    return workflow.fit_models(rfm, settings, out_dir, allow_bad_fit=allow_bad_fit,
                               read=read, exit_bad_fit=EXIT_BAD_FIT, covariates=covariates,
                               validation=validation)


def _check_fit_folder(out: Path, *, overwrite: bool) -> None:
    """Before fitting: the folder can be made and written, and holds no fit unless
    ``--force`` (a fit takes minutes; a read-only or taken folder should not wait)."""
    import tempfile

    from bayesclv.errors import OutputError
    from bayesclv.saved import FOLDER_MANIFEST

    if out.exists() and not out.is_dir():
        raise OutputError(f"--out {out} is a file; pass a folder for the fitted models.")
    held = [n for n in (FOLDER_MANIFEST, *FIT_FILES, workflow.COMPARISON) if (out / n).exists()]
    held += sorted(p.name for p in out.glob("purchase_*.nc")) if out.is_dir() else []
    if held and not overwrite:
        raise OutputError(
            f"--out {out} already holds a fit ({', '.join(dict.fromkeys(held))}); pass "
            f"--force to replace it, or choose another folder."
        )
    out.mkdir(parents=True, exist_ok=True)
    fd, probe = tempfile.mkstemp(prefix=".bayesclv.", suffix=".tmp", dir=out)
    os.close(fd)
    os.unlink(probe)


def _flat(verdicts) -> dict[str, str]:
    out = {}
    for role, v in verdicts.items():
        if isinstance(v, dict):
            out.update({f"{role} {k}": x for k, x in v.items()})
        else:
            out[role] = v
    return out


def _refuse_failed(folder, args) -> int | None:
    failed = [role for role, v in _flat(folder.verdicts()).items() if v == "fail"]
    if failed and not args.allow_bad_fit:
        print(
            f"bayesclv: error: the {' and '.join(failed)} fit in {args.fit_dir} failed its "
            f"convergence checks (see {Path(args.fit_dir) / 'diagnostics.txt'}); its CLV "
            f"intervals should not be used. Refit (more tuning/draws), or pass "
            f"--allow-bad-fit to go on anyway (the verdict goes into the metadata).",
            file=sys.stderr,
        )
        return EXIT_BAD_FIT
    return None


def _fit(args) -> int:
    read = _read_options(args)
    settings = _settings_from_args(args, with_spend=read.amount_col is not None)
    workflow.check_fit_settings(settings)
    cov = _covariate_options(args)
    workflow.check_covariate_settings(settings, cov, read)
    out = Path(args.out)
    _check_fit_folder(out, overwrite=args.force)
    table = saved = None
    if cov is not None:  # validated before the log is read: a bad table costs nothing
        table = workflow.read_covariates(cov, workflow.covariate_kind(settings.model),
                                         customer_col=read.customer_col)
    rfm, clean = workflow.read_log(read, return_clean=True)
    if cov is not None:
        rfm, saved = workflow.prepare_covariates(rfm, clean, cov, settings.model,
                                                 customer_col=read.customer_col, table=table)
    validation = workflow.validation_for(settings, rfm, clean)
    res = fit_models(rfm, settings, out, allow_bad_fit=args.allow_bad_fit, read=read,
                     covariates=saved, validation=validation)
    if res["comparison"] is not None:
        print(res["comparison"]["summary"])
    print(json.dumps({"verdicts": res["verdicts"], "out": str(args.out)}))
    return 0


def _score(args) -> int:
    out = Path(args.out)
    check_outputs(out, overwrite=args.force)  # before loading: a typo costs nothing
    folder = workflow.load_fit_dir(Path(args.fit_dir))
    refused = _refuse_failed(folder, args)
    if refused is not None:
        return refused
    workflow.check_method(folder, args.method)
    args.model_choice = args.model
    scored = workflow.score(folder, _score_options(args))
    check_outputs(out, overwrite=args.force, n_rows=len(scored.customers))
    workflow.export_scores(scored, out, overwrite=args.force)
    print("\n".join(workflow.score_lines(scored)))
    return 0


def _report(args) -> int:
    from bayesclv import report

    out = Path(args.out)
    report.check_report_folder(out, overwrite=args.force)
    folder = workflow.load_fit_dir(Path(args.fit_dir))
    refused = _refuse_failed(folder, args)
    if refused is not None:
        return refused
    workflow.check_method(folder, args.method)
    rfm_h = log = None
    if args.log is not None:
        rfm_h, log = report.read_holdout(folder, args.log, observation_end=args.observation_end)
    args.model_choice = args.model
    res = report.build_report(folder, out, rfm_holdout=rfm_h, log=log,
                              options=_score_options(args), overwrite=args.force)
    print("\n".join(res.lines))
    return 0


DEMO_CANDIDATES = ("bgnbd", "mbgnbd", "pareto_nbd")


def run_demo(args) -> int:
    """CDNOW: partial pooling over acquisition months, the family chosen among BG/NBD,
    MBG/NBD and Pareto/NBD, Gamma-Gamma; the CLV workbook and the report."""
    from bayesclv import report
    from bayesclv.data import round_times
    from bayesclv.datasets import load_cdnow, load_cdnow_rfm

    candidates = workflow.parse_candidates(args.candidates)
    if candidates is None and args.model == workflow.AUTO:
        candidates = DEMO_CANDIDATES
    settings = _settings_from_args(args, candidates=candidates)
    workflow.check_fit_settings(settings)
    if args.method == "simulate" and args.sampler == "map":
        from bayesclv.errors import ModelSpecificationError

        raise ModelSpecificationError(
            "--method simulate needs posterior draws and --sampler map gives one: use "
            "--method expected, or another --sampler."
        )
    out = Path(args.out)
    _check_fit_folder(out / "fit", overwrite=args.force)
    table = out / f"clv_customers.{args.format}"
    check_outputs(table, overwrite=args.force)
    report.check_report_folder(out, overwrite=args.force)
    workflow.log(f"loading the built-in CDNOW {args.which} (Fader & Hardie), 39-week "
                 "calibration")
    log = load_cdnow(args.which)
    rfm = load_cdnow_rfm(args.which)
    if args.round_times:
        rfm = round_times(rfm, args.round_times)
    workflow.log(f"{rfm}")
    validation = workflow.validation_for(settings, rfm, log, segment_col="acquisition_month")
    res = fit_models(rfm, settings, out / "fit", allow_bad_fit=args.allow_bad_fit,
                     validation=validation)
    folder = res["folder"]
    args.model_choice = None
    options = _score_options(args)
    if options.currency is None:
        options = replace(options, currency="USD")
    scored = workflow.score(folder, options)
    workflow.export_scores(scored, table, overwrite=args.force)
    rep = report.build_report(folder, out, rfm_holdout=rfm, log=log, options=options,
                              overwrite=args.force, scored=scored)
    top = scored.customers.sort_values("clv_mean", ascending=False).head(5)
    print("\n== bayesclv demo: CDNOW ==")
    print("\n".join(rep.lines))
    print("top customers:")
    print(top[["customer_id", "segment", "clv_mean", "clv_lower", "clv_upper", "p_alive",
               scored.columns["top"]]].to_string(index=False))
    print(f"outputs in {out.resolve()}")
    return 0


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


#: Python keyword arguments named in the library's advice, and their flags.
_FLAGS = ("date_format", "after_end", "negative_amounts", "zero_amounts", "duplicates",
          "encoding", "sep", "decimal", "observation_end", "calibration_end", "customer_col",
          "date_col", "amount_col", "segment_col", "time_unit", "method")


def in_flags(message: str) -> str:
    """The library's advice in command-line words: ``date_format='%d/%m/%Y'`` ->
    ``--date-format '%d/%m/%Y'``, ``overwrite=True`` -> ``--force``, and the
    "(--flag ... on the command line)" asides it then repeats dropped."""
    text = re.sub(r"\boverwrite=True\b", "--force", message)
    names = "|".join(_FLAGS)
    text = re.sub(rf"\b({names})=('[^']*'|\"[^\"]*\"|[^\s,;)]+)",
                  lambda m: f"--{m.group(1).replace('_', '-')} {m.group(2)}", text)
    text = re.sub(rf"\b(pass|or) ({names})\b(?!=)",
                  lambda m: f"{m.group(1)} --{m.group(2).replace('_', '-')}", text)
    text = re.sub(r"(--[\w-]+)\s*\(\1\)", r"\1", text)
    text = re.sub(r"\s*\((?:or )?--[^()]*? on the command line\)", "", text)
    text = re.sub(r";\s*on the command line --[\w-]+ \S+?(?=[.;]?$|[.;]\s)", "", text)
    return text


def _run(args) -> int:
    if args.command == "demo":
        return run_demo(args)
    if args.command == "fit":
        return _fit(args)
    if args.command == "report":
        return _report(args)
    return _score(args)


def _quiet_blas() -> None:
    """PyTensor warns (in every process, so twice with a worker) that it found no BLAS;
    it means slower compiled code, not other results. Silenced unless BAYESCLV_DEBUG;
    worker processes inherit the filter through PYTHONWARNINGS."""
    if os.environ.get("BAYESCLV_DEBUG"):
        return
    warnings.filterwarnings("ignore", message=_BLAS, category=UserWarning)
    rule = f"ignore:{_BLAS}:UserWarning"
    current = os.environ.get("PYTHONWARNINGS", "")
    if rule not in current:
        os.environ["PYTHONWARNINGS"] = f"{current},{rule}" if current else rule


def main(argv: list[str] | None = None) -> int:
    """Run the command line; every failure is one line on stderr and an exit status."""
    _quiet_blas()
    parser = build_parser()
    args = parser.parse_args(argv)
    from bayesclv.errors import BayesCLVError

    formatwarning = warnings.formatwarning
    # a warning is one line too (not the source line that raised it)
    warnings.formatwarning = lambda message, category, *a, **k: (
        f"bayesclv: warning: {message}\n")
    try:
        return _run(args)
    except BayesCLVError as exc:
        print(f"bayesclv: error: {in_flags(str(exc))}", file=sys.stderr)
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
    finally:
        warnings.formatwarning = formatwarning


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
