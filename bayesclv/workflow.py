"""What the command line does, as functions: read a log, fit, seal, load, score, export.

:mod:`bayesclv.cli` parses arguments and turns errors into one line and an exit status;
everything it runs is here, callable from Python with the same settings objects.

Fit folders
-----------
``fit_models`` writes a folder sealed by :func:`bayesclv.saved.seal_folder`:

* one purchase family (``--model NAME``): ``purchase_fit.nc``, ``spend_fit.nc`` (absent
  for a log without amounts), ``customers.parquet``, ``diagnostics.txt/.json``,
  ``settings.json``, ``manifest.json`` (written last);
* the automatic choice (``--model auto``): ``purchase_<family>.nc`` for every candidate,
  ``comparison.json`` (the PSIS-LOO table, the stacking weights, the families of the
  stack in order and its seed, and the summary in words), and the same other files.

The manifest's ``models`` fact says which: ``{"purchase": "bgnbd", "spend":
"gamma_gamma"}`` or ``{"purchase": "auto", "candidates": [...], "spend": ...}``.
:func:`load_fit_dir` checks every file against it and the files against each other;
``score`` then uses the stack of an automatic choice (or one candidate, ``model=``).

Time units
----------
Defaults follow the data's time unit: the horizon and the discount rate's period are
one year (:data:`PERIODS_PER_YEAR`: 52 weeks, 12 months, 365 days, 1 year) unless given,
and every output says so in words ("52 weeks (1 year)").
"""

from __future__ import annotations

import json
import math
import re
import sys
import time
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from bayesclv.errors import ModelSpecificationError, OutputError, SavedModelError
from bayesclv.families import FAMILIES
from bayesclv.predict import CUSTOMER_DIM
from bayesclv.rfm import DAYS_PER_UNIT

__all__ = [
    "FitSettings",
    "ReadOptions",
    "ScoreOptions",
    "FittedFolder",
    "CovariateOptions",
    "Scored",
    "PERIODS_PER_YEAR",
    "read_log",
    "fit_models",
    "load_fit_dir",
    "score",
    "export_scores",
    "describe_period",
    "interval_meaning",
    "top_share_columns",
]

#: One year in each time unit, for defaults and for saying a period in words.
PERIODS_PER_YEAR: dict[str, float] = {"day": 365.0, "week": 52.0, "month": 12.0, "year": 1.0}

#: Files of a one-family fit folder (``manifest.json`` seals them all).
FIT_FILES = (
    "purchase_fit.nc",
    "spend_fit.nc",
    "customers.parquet",
    "diagnostics.txt",
    "diagnostics.json",
    "settings.json",
)
COMPARISON = "comparison.json"
#: The covariate table a covariate fit was made with, validated, and (time-varying
#: covariates) the calibration purchase days they are placed by; sealed with the rest.
COVARIATE_FILE = "covariates.parquet"
PURCHASE_DAYS_FILE = "calibration_purchases.parquet"
AUTO = "auto"
#: Values held at once when ranking customers per draw (P(top k%)): draws are thinned
#: beyond this (the ranking then uses fewer draws, and says how many).
RANK_VALUES = 20_000_000


def log(msg: str) -> None:
    print(f"[bayesclv {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# =====================================================================================
# Settings
# =====================================================================================
@dataclass(frozen=True)
class FitSettings:
    """What ``fit`` needs, in one frozen object (also written to ``settings.json``).

    ``model`` is a purchase family of :data:`bayesclv.families.FAMILIES` or ``"auto"``
    (fit ``candidates``, default every applicable family, and compare them: by PSIS-LOO,
    or with ``choose_by="forecast"`` by leave-future-out over the last
    ``validation_length`` time units of the calibration period; the command line's
    default is auto by PSIS-LOO). ``with_spend=False`` fits no spend model (a log
    without amounts).
    """

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
    candidates: tuple[str, ...] | None = None
    with_spend: bool = True
    choose_by: str = "loo"
    validation_length: float | None = None


@dataclass(frozen=True)
class ReadOptions:
    """How the transaction log was read (kept in ``settings.json``, so that ``report``
    reads the same log the same way)."""

    source: str
    customer_col: str
    date_col: str
    amount_col: str | None
    segment_col: str | None = None
    time_unit: str = "week"
    calibration_end: str | None = None
    observation_end: str | None = None
    date_format: str | None = None
    sep: str | None = None
    decimal: str = "."
    encoding: str = "utf-8"
    negative_amounts: str = "error"
    zero_amounts: str = "keep"
    duplicates: str = "keep"
    after_end: str = "error"
    round_times: float = 0.0

    def mapping_in_words(self) -> str:
        fmt = f" (written {self.date_format})" if self.date_format else ""
        amount = (
            "none (the log has no amounts: purchase models only)"
            if self.amount_col is None
            else f"'{self.amount_col}'" + (f" (decimal mark '{self.decimal}')"
                                           if self.decimal != "." else "")
        )
        parts = [
            f"customer id: '{self.customer_col}'",
            f"date: '{self.date_col}'{fmt}",
            f"amount: {amount}",
            f"segment: '{self.segment_col}'" if self.segment_col else "segment: none (one "
            "segment 'all')",
        ]
        if self.sep not in (None, ","):
            parts.append(f"fields separated by '{self.sep}'")
        if self.encoding.lower().replace("-", "") != "utf8":
            parts.append(f"text encoding {self.encoding}")
        return "; ".join(parts)

    def cleaning_in_words(self) -> str:
        return (
            f"negative amounts: {self.negative_amounts}; zero amounts: {self.zero_amounts}; "
            f"exact duplicates: {self.duplicates}; rows after the observation end: "
            f"{self.after_end}"
        )


@dataclass(frozen=True)
class CovariateOptions:
    """How the covariate table of a covariate family was read (``--covariates`` and its
    flags; kept in ``settings.json``). ``purchase``/``dropout`` name the columns acting on
    each process (``None``: every column)."""

    source: str
    id_col: str | None = None
    date_col: str = "period_start"
    freq: str | None = None
    purchase: tuple[str, ...] | None = None
    dropout: tuple[str, ...] | None = None


@dataclass(frozen=True)
class ScoreOptions:
    """How ``score`` values the customers. ``horizon`` and ``discount_period`` default
    (``None``) to one year in the data's time unit; ``model`` picks one family of an
    automatic choice instead of the stack."""

    horizon: float | None = None
    discount_rate: float = 0.10
    discount_period: float | None = None
    discounting: str = "per_period"
    margin: float = 1.0
    prob: float = 0.94
    kind: str = "eti"
    method: str = "simulate"
    random_seed: int = 2024
    top_share: float = 0.10
    currency: str | None = None
    model: str | None = None
    #: Time-varying covariates after the calibration end (``--future-covariates``).
    future_covariates: str | None = None

    def resolved(self, time_unit: str) -> ScoreOptions:
        year = PERIODS_PER_YEAR[time_unit]
        return replace(
            self,
            horizon=year if self.horizon is None else float(self.horizon),
            discount_period=year if self.discount_period is None else float(
                self.discount_period),
        )


# =====================================================================================
# Words
# =====================================================================================
def _unit(n: float, unit: str) -> str:
    return f"{n:.4g} {unit}" + ("" if n == 1 else "s")


def describe_period(n: float, unit: str) -> str:
    """``52 weeks (1 year)``, ``26 weeks (0.5 years)``, ``30 days (0.082 years)``."""
    years = n / PERIODS_PER_YEAR[unit]
    if unit == "year":
        return _unit(n, unit)
    return f"{_unit(n, unit)} ({years:.3g} year{'' if math.isclose(years, 1) else 's'})"


def interval_meaning(method: str, prob: float, kind: str, *, of: str = "CLV") -> str:
    """What an interval is: ``94% equal-tailed credible interval of expected CLV``
    (method ``expected``: parameter uncertainty) or ``94% equal-tailed predictive
    interval of realised CLV`` (``simulate``: parameters and the customer's behaviour)."""
    shape = "equal-tailed" if kind == "eti" else "highest-density"
    if method == "expected":
        return f"{prob:.0%} {shape} credible interval of expected {of}"
    return f"{prob:.0%} {shape} predictive interval of realised {of}"


def _label(name: str) -> str:
    from bayesclv.families import FAMILIES

    fam = FAMILIES.get(name)
    return fam.label if fam is not None else str(name)


def _pooling_words(pooling: str, n_segments: int) -> str:
    if n_segments == 1:
        return f"{pooling} pooling, one segment"
    return {
        "partial": f"partial pooling over {n_segments} segments: each segment has its own "
        "parameters, shrunk toward the population (small segments more)",
        "complete": f"complete pooling: one set of parameters for all {n_segments} segments",
        "none": f"no pooling: each of the {n_segments} segments fitted on its own",
    }.get(pooling, pooling)


# =====================================================================================
# Reading
# =====================================================================================
def read_log(opts: ReadOptions, *, observation_end: Any = "from-options",
             calibration_end: Any = "from-options", return_clean: bool = False):
    """The calibration summary (``RFMData``) of the log, with the reading options; the
    cleaning report is logged. ``observation_end``/``calibration_end`` override the
    options' (``report`` reads a longer log with the fit's calibration end);
    ``return_clean`` also returns the validated log (``customer_id, date, amount``)."""
    from bayesclv.data import rfm_summary, round_times, validate_transactions

    obs = opts.observation_end if observation_end == "from-options" else observation_end
    cal = opts.calibration_end if calibration_end == "from-options" else calibration_end
    error = None
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        try:
            clean, _ = _validate(validate_transactions, opts, obs)
        except Exception as exc:  # said after the warnings, which come first
            error = exc
    guessed = set()
    for w in seen:
        # pandas guessed the date format from the first date and says so in Python
        # terms ("Pass `dayfirst=True`"): say it once, with the flag
        found = re.match(r"Parsing dates in (\S+) format when dayfirst", str(w.message))
        if found:
            guessed.add(found.group(1))
        else:
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    for fmt in sorted(guessed):
        log(f"the dates were read as {fmt}, a format guessed from the first date; pass "
            f"--date-format '{fmt}' to say so (or the format the file uses)")
    if error is not None:
        raise error
    rfm = rfm_summary(
        clean,
        segment_col="segment" if opts.segment_col else None,
        time_unit=opts.time_unit,
        calibration_end=cal,
        observation_end=obs,
    )
    report = rfm.meta.get("cleaning_report")
    if report is not None:
        log(f"cleaning report:\n{report}")
    if opts.round_times and opts.round_times > 0:
        rfm = round_times(rfm, opts.round_times)
        log(f"recency and age rounded to multiples of {opts.round_times:g} {rfm.time_unit}(s)")
    return (rfm, clean) if return_clean else rfm


def _validate(validate_transactions, opts: ReadOptions, obs):
    return validate_transactions(
        opts.source,
        customer_col=opts.customer_col,
        date_col=opts.date_col,
        amount_col=opts.amount_col,
        segment_col=opts.segment_col,
        date_format=opts.date_format,
        observation_end=obs,
        negative_amounts=opts.negative_amounts,
        zero_amounts=opts.zero_amounts,
        duplicates=opts.duplicates,
        after_end=opts.after_end,
        encoding=opts.encoding,
        sep=opts.sep,
        decimal=opts.decimal,
    )


# =====================================================================================
# Covariates
# =====================================================================================
def covariate_kind(model: str) -> str | None:
    """``"static"`` or ``"dynamic"``: the covariates a family needs (its ``design_kind``),
    or ``None`` for a family without covariates (or ``auto``)."""
    fam = FAMILIES.get(model)
    return None if fam is None else getattr(fam, "design_kind", None)


def covariate_families() -> list[str]:
    return [n for n in FAMILIES if covariate_kind(n) is not None]


def check_covariate_settings(settings: FitSettings, cov: CovariateOptions | None,
                             read: ReadOptions | None = None) -> None:
    """Refuse, before any work, a covariate flag the family cannot use, or a covariate
    family without its table."""
    kind = covariate_kind(settings.model)
    fams = ", ".join(covariate_families())
    if cov is not None and settings.model == AUTO:
        raise ModelSpecificationError(
            f"--covariates: the automatic choice (--model auto) compares families without "
            f"covariates; pick a covariate family with --model ({fams})."
        )
    if cov is not None and kind is None:
        raise ModelSpecificationError(
            f"--covariates: --model {settings.model} takes no covariates; the covariate "
            f"families are {fams}."
        )
    if cov is None and kind is not None:
        what = ("a table with one row per customer: customer id and covariate columns"
                if kind == "static" else "a table with one row per customer and period: "
                "customer id, period start (--covariate-date-col) and covariate columns")
        raise ModelSpecificationError(
            f"--model {settings.model} needs --covariates FILE ({what})."
        )
    if kind == "dynamic" and read is not None and read.round_times:
        raise ModelSpecificationError(
            "--round-times: time-varying covariates (--covariates with --model "
            f"{settings.model}) need the exact purchase days; drop --round-times."
        )


def _read_table(path: str, flag: str) -> pd.DataFrame:
    p = Path(path)
    if not p.is_file():
        from bayesclv.errors import DataValidationError

        raise DataValidationError(f"{flag} {path}: no such file; check the path.")
    name = p.name.lower()
    try:
        if name.endswith(".parquet"):
            return pd.read_parquet(p)
        if name.endswith((".xlsx", ".xls")):
            return pd.read_excel(p)
        return pd.read_csv(p, sep="\t" if name.endswith((".tsv", ".tsv.gz")) else ",")
    except (ValueError, OSError, ImportError) as exc:
        raise ModelSpecificationError(f"{flag} {path}: could not be read ({exc}).") from None


def read_covariates(cov: CovariateOptions, kind: str, *, flag: str = "--covariates",
                    customer_col: str | None = None, source: str | None = None):
    """The validated table of ``cov.source`` (or ``source``): a
    :class:`~bayesclv.covariates.StaticCovariates` (``kind="static"``) or a
    :class:`~bayesclv.covariates.TimeVaryingCovariates`; errors name ``flag``."""
    from bayesclv.covariates import StaticCovariates, TimeVaryingCovariates
    from bayesclv.errors import DataValidationError

    source = cov.source if source is None else source
    frame = _read_table(source, flag)
    id_col = cov.id_col or ("customer_id" if "customer_id" in frame.columns or
                            customer_col is None else customer_col)  # fmt: skip
    try:
        if kind == "static":
            return StaticCovariates.from_frame(frame, customer_col=id_col)
        return TimeVaryingCovariates.from_frame(frame, customer_col=id_col,
                                                date_col=cov.date_col, freq=cov.freq)
    except DataValidationError as exc:
        raise DataValidationError(f"{flag} {source}: {exc}") from None


def join_covariate_table(rfm, table, cov: CovariateOptions, purchases=None, *,
                         flag: str = "--covariates"):
    """``rfm`` with ``table`` joined (time-varying covariates placed by the calibration
    purchase days ``purchases``: ``customer_id, date``); errors name ``flag``."""
    from bayesclv.covariates import TimeVaryingCovariates, join_covariates
    from bayesclv.errors import DataValidationError

    kw = {}
    if isinstance(table, TimeVaryingCovariates):
        kw = dict(transactions=purchases, customer_col="customer_id", date_col="date")
    try:
        return join_covariates(rfm, table, purchase=cov.purchase, dropout=cov.dropout, **kw)
    except DataValidationError as exc:
        raise DataValidationError(f"{flag} {cov.source}: {exc}") from None


def covariate_frame(table) -> pd.DataFrame:
    """A validated covariate table as the long frame it is saved as (numeric columns,
    dummies made): ``customer_id`` (, ``period_start``) and the columns."""
    from bayesclv.covariates import TimeVaryingCovariates

    if isinstance(table, TimeVaryingCovariates):
        return table.to_frame()
    frame = pd.DataFrame(np.asarray(table.values), columns=list(table.columns))
    frame.insert(0, "customer_id", table.customer_id)
    return frame


def prepare_covariates(rfm, clean, cov: CovariateOptions, model: str,
                       customer_col: str | None = None, table=None) -> tuple[Any, dict]:
    """Read and validate (unless ``table`` is given, from :func:`read_covariates`) and join
    the covariates of a fit: ``(rfm with covariates, what fit_models saves)``."""
    kind = covariate_kind(model)
    if table is None:
        table = read_covariates(cov, kind, customer_col=customer_col)
    purchases = None
    if kind == "dynamic":
        end = pd.Timestamp(rfm.calibration_end)
        keep = (pd.to_datetime(clean["date"]) < end + pd.Timedelta(days=1)).to_numpy()
        purchases = pd.DataFrame({"customer_id": clean["customer_id"].to_numpy()[keep],
                                  "date": clean["date"].to_numpy()[keep]})  # fmt: skip
    joined = join_covariate_table(rfm, table, cov, purchases)
    design = joined.meta["covariates"]
    log(f"covariates ({design.kind}) from {cov.source}: purchase {list(design.purchase)}, "
        f"dropout {list(design.dropout)}")
    return joined, {"options": cov, "table": table, "purchases": purchases}


# =====================================================================================
# Fitting
# =====================================================================================
def candidates_for(rfm, settings: FitSettings) -> tuple[list[str], dict[str, str]]:
    """The families an automatic choice fits, and those left out with the reason."""
    from bayesclv.families import FAMILIES, get_family
    from bayesclv.selection import candidate_families

    if settings.candidates is None:
        names, skipped = candidate_families(rfm)
        if not names:
            raise ModelSpecificationError(
                f"no purchase family can model this data ({skipped}); pick one with --model."
            )
        return names, skipped
    names = []
    for name in settings.candidates:
        get_family(name, "purchase")
        why = FAMILIES[name].not_applicable(rfm)
        if why:
            raise ModelSpecificationError(
                f"--candidates: {name} cannot model this data: {why}. Leave it out."
            )
        if name not in names:
            names.append(name)
    return names, {}


#: The default validation window of ``choose_by="forecast"``: this share of the
#: calibration span (calibration end minus the first purchase), at most one year.
VALIDATION_SHARE = 1.0 / 3.0


def validation_for(settings: FitSettings, rfm, transactions, *, segment_col=None):
    """The validation summary of ``choose_by="forecast"`` (``None`` otherwise): the
    transactions summarised ``settings.validation_length`` (default: a third of the
    calibration span, at most a year) before the calibration end, with the purchases up
    to that end as holdout (:func:`bayesclv.selection.validation_summary`).
    ``transactions``: the validated log (``read_log(..., return_clean=True)``) or a raw
    log with standard column names; ``segment_col`` its segment column (default
    ``"segment"`` where there is one)."""
    if settings.model != AUTO or settings.choose_by != "forecast":
        return None
    from bayesclv.selection import validation_summary

    cal_end = pd.Timestamp(rfm.meta["calibration_end"])
    unit = rfm.time_unit
    days = DAYS_PER_UNIT[unit]
    dates = pd.to_datetime(transactions["date"])
    span = (cal_end - dates.min()).days / days
    length = settings.validation_length
    if length is None:
        length = min(span * VALIDATION_SHARE, 365.0 / days)
        length = max(1.0, float(round(length)))
    if not 0 < length < span:
        raise ModelSpecificationError(
            f"--validation-length {length:g} {unit}s: it must be positive and shorter than "
            f"the calibration span ({span:.1f} {unit}s)."
        )
    if segment_col is None and "segment" in transactions.columns:
        segment_col = "segment"
    recent = transactions[dates <= cal_end]
    log(f"leave-future-out validation: the last {length:g} {unit}s of the calibration "
        f"period")
    return validation_summary(recent, cal_end, length, time_unit=unit,
                              segment_col=segment_col)


def check_fit_settings(settings: FitSettings) -> None:
    """Refuse, before any work, settings that cannot give the result asked for."""
    if settings.choose_by not in ("loo", "forecast"):
        raise ModelSpecificationError(
            f"--choose-by {settings.choose_by!r}: use loo or forecast.")
    if settings.choose_by == "forecast" and settings.model != AUTO:
        raise ModelSpecificationError(
            f"--choose-by forecast ranks the families of --model auto, but --model is "
            f"{settings.model}; drop --choose-by or use --model auto.")
    if settings.model == AUTO and settings.sampler == "map":
        raise ModelSpecificationError(
            "--model auto compares the families by PSIS-LOO, which needs posterior draws, "
            "and --sampler map gives one point: use --sampler nutpie, pymc or laplace, or "
            "pick one family with --model (e.g. --model bgnbd)."
        )
    if settings.candidates is not None and settings.model != AUTO:
        raise ModelSpecificationError(
            f"--candidates chooses among families for --model auto, but --model is "
            f"{settings.model}; drop one of the two."
        )


def _fit_kwargs(settings: FitSettings) -> dict:
    return dict(
        sampler=settings.sampler,
        draws=settings.draws,
        tune=settings.tune,
        chains=settings.chains,
        target_accept=settings.target_accept,
        random_seed=settings.random_seed,
        progressbar=settings.progressbar,
        nutpie_backend=settings.nutpie_backend,
    )


def _fit_all(built: dict[str, Any], settings: FitSettings, rfm) -> dict[str, Any]:
    """Fit every model; with nutpie all at once (compilations overlap, see fit_many)."""
    import bayesclv.fit as fit_module

    kwargs = _fit_kwargs(settings)
    t0 = time.perf_counter()
    what = (f"({settings.pooling} pooling, {rfm.n_segments} segments, {settings.sampler}, "
            f"{settings.chains} chains x {settings.draws} draws)")
    if settings.sampler == "nutpie" and len(built) > 1:
        log(f"fitting {', '.join(built)} at the same time {what}")
        fits = fit_module.fit_many(list(built.values()), **kwargs)
        log(f"fitted in {time.perf_counter() - t0:.1f} s")
        return dict(zip(built, fits, strict=True))
    out = {}
    for name, model in built.items():
        log(f"fitting {name} {what}")
        t1 = time.perf_counter()
        out[name] = fit_module.fit(model, **kwargs)
        log(f"{name}: {time.perf_counter() - t1:.1f} s")
    return out


def _purchase_file(name: str, auto: bool) -> str:
    return f"purchase_{name}.nc" if auto else "purchase_fit.nc"


def fit_models(rfm, settings: FitSettings, out_dir: Path, *, allow_bad_fit: bool,
               read: ReadOptions | None = None, exit_bad_fit: int = 3,
               covariates: Mapping[str, Any] | None = None, validation=None) -> dict:
    """Fit the purchase family (or every candidate of the automatic choice) and the
    spend model, save them in a sealed folder, and return the run summary.

    ``covariates`` (from :func:`prepare_covariates`, with ``rfm`` its joined summary):
    the validated covariate table is saved as ``covariates.parquet`` (and, time-varying,
    the calibration purchase days as ``calibration_purchases.parquet``), sealed with the
    rest, its SHA-256 and columns in the manifest's ``covariates`` fact.

    Raises ``SystemExit(exit_bad_fit)`` after saving when a fit fails its convergence
    checks, unless ``allow_bad_fit``.
    """
    import uuid

    from bayesclv.diagnostics import convergence_report
    from bayesclv.fit import save_fit
    from bayesclv.models import build_model
    from bayesclv.saved import FOLDER_MANIFEST, seal_folder
    from bayesclv.summary import atomic_write

    check_fit_settings(settings)
    auto = settings.model == AUTO
    if auto:
        names, skipped = candidates_for(rfm, settings)
        for name, why in skipped.items():
            log(f"{name} not tried: {why}")
    else:
        from bayesclv.families import FAMILIES, get_family

        get_family(settings.model, "purchase")
        why = FAMILIES[settings.model].not_applicable(rfm)
        if why:
            raise ModelSpecificationError(f"--model {settings.model} cannot model this "
                                          f"data: {why}.")
        names, skipped = [settings.model], {}
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    # manifest.json is the completeness marker: removed first, written last, with the
    # hashes of every file and the id of this run, which every fit file carries too. A fit
    # interrupted half-way (or a folder mixing files of two runs, or edited) is then
    # refused by 'score' instead of scored.
    (out_dir / FOLDER_MANIFEST).unlink(missing_ok=True)
    (out_dir / "settings.json").unlink(missing_ok=True)
    # fits of an earlier run that this run may not write again (another family, no spend)
    for stale in [*out_dir.glob("purchase_*.nc"), out_dir / COMPARISON,
                  out_dir / "spend_fit.nc", out_dir / COVARIATE_FILE,
                  out_dir / PURCHASE_DAYS_FILE]:
        stale.unlink(missing_ok=True)
    run_id = uuid.uuid4().hex
    built = {}
    if settings.with_spend:
        built["gamma_gamma"] = build_model("gamma_gamma", rfm, None, settings.pooling)
    for name in names:
        built[name] = build_model(name, rfm, None, settings.pooling)
    fitted = _fit_all(built, settings, rfm)
    purchase = {name: fitted[name] for name in names}
    spend = fitted.get("gamma_gamma")
    comparison = None
    if auto:
        from bayesclv.selection import compare_families

        if validation is None:
            log("comparing the families by PSIS-LOO")
        else:
            log(f"comparing the families by leave-future-out forecast (fitting each to "
                f"{validation.n_customers} customers before the validation window)")
        cmp = compare_families(rfm, names, pooling=settings.pooling, fits=purchase,
                               random_seed=settings.random_seed, validation=validation,
                               fit_kwargs=_fit_kwargs(settings))
        cmp = replace(cmp, skipped={**skipped, **dict(cmp.skipped)})
        log(cmp.summary())
        purchase = {name: cmp.fits[name] for name in cmp.table.index}
        comparison = comparison_record(cmp, settings.random_seed)
    reports = {}
    files = []
    for name, idata in purchase.items():
        reports[name] = convergence_report(idata)
    if spend is not None:
        reports["spend"] = convergence_report(spend)
    for role, idata in [*purchase.items(), *([("spend", spend)] if spend is not None else [])]:
        idata.attrs["convergence"] = json.dumps(reports[role].to_dict(), default=str)
        idata.attrs["run_id"] = run_id
        file = "spend_fit.nc" if role == "spend" else _purchase_file(role, auto)
        save_fit(idata, out_dir / file)
        files.append(file)
        log(f"{role}: convergence: {reports[role].verdict}")
    rfm.to_frame().reset_index().to_parquet(out_dir / "customers.parquet")
    cov_fact = None
    if covariates is not None:
        cov_files, cov_fact = _save_covariates(out_dir, rfm, covariates)
        files += cov_files
    verdicts = verdicts_of(reports, auto)
    (out_dir / "diagnostics.txt").write_text(
        "\n\n".join(f"== {'spend' if role == 'spend' else 'purchase'} model "
                     f"({_label(r.model)}) ==\n{r}" for role, r in reports.items()) + "\n"
    )
    diag = {role: r.to_dict() for role, r in reports.items()}
    if auto:
        diag = {"purchase": {n: diag[n] for n in purchase}, "spend": diag.get("spend")}
    else:  # one family: the roles, as before the automatic choice
        diag = {"purchase": diag[names[0]], **({"spend": diag["spend"]} if "spend" in diag
                                              else {})}
        reports = {"purchase": reports[names[0]],
                   **({"spend": reports["spend"]} if "spend" in reports else {})}
    (out_dir / "diagnostics.json").write_text(json.dumps(diag, indent=2, default=str))
    if comparison is not None:
        (out_dir / COMPARISON).write_text(json.dumps(comparison, indent=2, allow_nan=False))
        files.append(COMPARISON)
    calibration_end = rfm.calibration_end
    settings_json = {
        **{k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(settings).items()},
        "time_unit": rfm.time_unit,
        "run_id": run_id,
        "n_customers": rfm.n_customers,
        "calibration_end": None if calibration_end is None else str(
            pd.Timestamp(calibration_end).date()),
        "input": None if read is None else asdict(read),
        "covariates": None if covariates is None else {
            k: (list(v) if isinstance(v, tuple) else v)
            for k, v in asdict(covariates["options"]).items()},
    }
    atomic_write(
        out_dir / "settings.json",
        lambda tmp: tmp.write_text(json.dumps(settings_json, indent=2)),
    )
    models = {"purchase": settings.model, "spend": "gamma_gamma" if spend is not None else None}
    if auto:
        models["candidates"] = list(purchase)
    seal_folder(
        out_dir,
        [*files, "customers.parquet", "diagnostics.txt", "diagnostics.json", "settings.json"],
        {
            "run_id": run_id,
            "time_unit": rfm.time_unit,
            "segment_names": list(rfm.segment_names),
            "models": models,
            "n_customers": int(rfm.n_customers),
            "calibration_end": settings_json["calibration_end"],
            **({"covariates": cov_fact} if cov_fact is not None else {}),
        },
    )
    try:  # what 'score' will check, checked now: a folder is never sealed inconsistent
        folder = load_fit_dir(out_dir)
    except SavedModelError:
        (out_dir / FOLDER_MANIFEST).unlink(missing_ok=True)
        raise
    failed = [role for role, r in reports.items() if r.verdict == "fail"]
    if failed and not allow_bad_fit:
        for role in failed:
            print(str(reports[role]), file=sys.stderr)
        raise SystemExit(exit_bad_fit)
    return {"fits": {**purchase, **({"spend": spend} if spend is not None else {})},
            "reports": reports, "verdicts": verdicts, "comparison": comparison,
            "folder": folder}


def _save_covariates(out_dir: Path, rfm, covariates: Mapping[str, Any]) -> tuple[list, dict]:
    """Write the covariate files of a fit; return them and the manifest's fact."""
    from bayesclv.saved import file_sha256

    table = covariates["table"]
    design = rfm.meta["covariates"]
    covariate_frame(table).to_parquet(out_dir / COVARIATE_FILE, index=False)
    files = [COVARIATE_FILE]
    if covariates.get("purchases") is not None:
        covariates["purchases"].to_parquet(out_dir / PURCHASE_DAYS_FILE, index=False)
        files.append(PURCHASE_DAYS_FILE)
    fact = {
        "kind": design.kind,
        "file": COVARIATE_FILE,
        "sha256": file_sha256(out_dir / COVARIATE_FILE),
        "columns": list(table.columns),
        "purchase": list(design.purchase),
        "dropout": list(design.dropout),
        "freq": getattr(table, "freq", None),
        "source": covariates["options"].source,
    }
    return files, fact


def verdicts_of(reports: Mapping[str, Any], auto: bool) -> dict:
    """``{"purchase": verdict, "spend": verdict}``, or for an automatic choice
    ``{"purchase": {family: verdict, ...}, "spend": verdict}``."""
    v = {role: getattr(r, "verdict", r) for role, r in reports.items()}
    spend = {"spend": v["spend"]} if "spend" in v else {}
    purchase = {k: x for k, x in v.items() if k != "spend"}
    if auto:
        return {"purchase": purchase, **spend}
    (only,) = purchase.values()
    return {"purchase": only, **spend}


def comparison_record(cmp, random_seed: int) -> dict:
    """What ``comparison.json`` holds: the table, the stack (families in order, weights,
    seed) and the summary in words."""
    table = cmp.table.copy()
    cols = [c for c in ("rank", "elpd_loo", "elpd_forecast", "se", "elpd_diff", "dse",
                        "p_loo", "weight", "n_bad_k", "verdict", "verdict_validation",
                        "seconds", "pooling") if c in table.columns]
    rows = []
    for name, row in table[cols].iterrows():
        rec = {"family": str(name)}
        for c in cols:
            v = row[c]
            rec[c] = v.item() if hasattr(v, "item") else v
            if isinstance(rec[c], float) and not math.isfinite(rec[c]):
                rec[c] = None
        rows.append(rec)
    return {
        "table": rows,
        "best": cmp.best,
        "stack": {
            "families": list(cmp.stack.weights),
            "weights": [float(w) for w in cmp.stack.weights.values()],
            "random_seed": int(cmp.stack.random_seed),
            "describe": cmp.stack.describe(),
        },
        "skipped": dict(cmp.skipped),
        "n_customers": cmp.n_customers,
        "criterion": table.attrs.get("criterion", "psis-loo"),
        "validation": table.attrs.get("validation"),
        "summary": cmp.summary(),
    }


def comparison_table(record: Mapping) -> pd.DataFrame:
    """``comparison.json``'s table as the DataFrame of ``FamilyComparison.table``."""
    table = pd.DataFrame(record["table"]).set_index("family")
    table.attrs["criterion"] = record.get("criterion", "psis-loo")
    return table


def criterion_words(record: Mapping | None) -> str:
    """How an automatic choice ranked the families, in words."""
    if record is not None and record.get("criterion") == "leave-future-out":
        v = record.get("validation") or {}
        return (f"leave-future-out forecast (each family fitted to the log up to "
                f"{v.get('cut', 'an earlier cut')} and scored on the purchases of the next "
                f"{v.get('length', 0):g} {v.get('time_unit', 'period')}s)")
    return "PSIS-LOO (leave-one-out predictive accuracy over customers)"


# =====================================================================================
# Loading
# =====================================================================================
@dataclass(frozen=True)
class FittedFolder:
    """A sealed fit folder, checked: the fits, the customers, the settings."""

    path: Path
    purchase: Mapping[str, Any]
    spend: Any
    rfm: Any
    settings: Mapping[str, Any]
    manifest: Mapping[str, Any]
    comparison: Mapping[str, Any] | None = None
    #: The validated covariate table of a covariate fit (``rfm`` carries it joined) and,
    #: for time-varying covariates, the calibration purchase days (``customer_id, date``).
    covariates: Any = None
    purchase_days: Any = None

    @property
    def covariate_options(self) -> CovariateOptions | None:
        opts = self.settings.get("covariates")
        if not opts:
            return None
        opts = dict(opts)
        for k in ("purchase", "dropout"):
            opts[k] = None if opts.get(k) is None else tuple(opts[k])
        return CovariateOptions(**opts)

    def with_future_covariates(self, source: str) -> FittedFolder:
        """The folder with ``rfm`` re-joined to its time-varying covariates extended by the
        table ``source`` (``--future-covariates``: customer id, period start, the fit's
        columns), so that predictions can follow each customer's path past the
        calibration end."""
        from bayesclv.covariates import TimeVaryingCovariates
        from bayesclv.errors import DataValidationError

        flag = "--future-covariates"
        if not isinstance(self.covariates, TimeVaryingCovariates):
            raise ModelSpecificationError(
                f"{flag}: {self.path} holds a fit without time-varying covariates ("
                f"{self.model_words()}); drop {flag}."
            )
        cov = self.covariate_options
        fact = self.manifest["covariates"]
        opts = replace(cov, freq=fact.get("freq") or cov.freq)
        future = read_covariates(opts, "dynamic", flag=flag, source=source,
                                 customer_col=(self.read_options.customer_col
                                               if self.read_options else None))
        try:
            table = self.covariates.extend(future)
        except DataValidationError as exc:
            raise DataValidationError(f"{flag} {source}: {exc}") from None
        rfm = join_covariate_table(self.rfm, table, replace(cov, source=source),
                                   self.purchase_days, flag=flag)
        return replace(self, rfm=rfm)

    @property
    def auto(self) -> bool:
        return self.comparison is not None

    @property
    def families(self) -> list[str]:
        return list(self.purchase)

    @property
    def calibration_end(self) -> str | None:
        return self.settings.get("calibration_end")

    @property
    def read_options(self) -> ReadOptions | None:
        opts = self.settings.get("input")
        return None if not opts else ReadOptions(**opts)

    def purchase_params(self, model: str | None = None):
        """The stack of an automatic choice (or the one family's draws); ``model``
        picks one family of the folder."""
        from bayesclv.stacking import PurchaseStack

        if model is not None:
            if model not in self.purchase:
                raise ModelSpecificationError(
                    f"--model {model}: {self.path} holds fits of {self.families}; pick one "
                    f"of them (or leave --model out for "
                    f"{'the stack' if self.auto else 'its only family'})."
                )
            return posterior_params(self.purchase[model])
        if not self.auto:
            (only,) = self.purchase.values()
            return posterior_params(only)
        st = self.comparison["stack"]
        return PurchaseStack(
            {k: posterior_params(self.purchase[k]) for k in st["families"]},
            dict(zip(st["families"], st["weights"], strict=True)),
            random_seed=int(st["random_seed"]),
        )

    def spend_params(self):
        return None if self.spend is None else posterior_params(self.spend)

    def n_draws(self) -> int:
        first = next(iter(self.purchase.values())).posterior
        return int(first.sizes["chain"] * first.sizes["draw"])

    def verdicts(self) -> dict:
        try:
            reports = {name: json.loads(idata.attrs.get("convergence", "{}")).get("verdict")
                       for name, idata in self.purchase.items()}
            if self.spend is not None:
                reports["spend"] = json.loads(self.spend.attrs.get("convergence", "{}")).get(
                    "verdict")
        except (ValueError, AttributeError) as exc:
            raise SavedModelError(f"{self.path}: unreadable convergence verdicts; refit.") from exc
        return verdicts_of(reports, self.auto)

    def model_words(self, model: str | None = None) -> str:
        """Which purchase model the scores use, in words."""
        if model is not None and self.auto:
            return (f"{_label(model)}, one of the candidates of the automatic choice, picked "
                    f"with --model (the choice itself: {self.comparison['stack']['describe']})")
        if not self.auto:
            return f"{_label(self.families[0])} (chosen with --model)"
        labels = ", ".join(_label(n) for n in self.families)
        return (
            f"chosen automatically among {labels} by {criterion_words(self.comparison)}; "
            f"the scores mix the families draw by draw with the stacking weights: "
            f"{self.comparison['stack']['describe']}"
        )


def posterior_params(idata):
    """:func:`bayesclv.fit.posterior_params`, imported on first use (the CLI starts
    without PyMC)."""
    from bayesclv.fit import posterior_params as from_fit

    return from_fit(idata)


def _agree(fit_dir: Path, what: str, copies: dict[str, Any], refit: str) -> Any:
    """The one value every file of a fit folder holds for ``what``, or an error naming
    which file says what."""
    values = list(copies.values())
    if all(v == values[0] for v in values[1:]):
        return values[0]
    said = ", ".join(f"{name} {value!r}" for name, value in copies.items())
    raise SavedModelError(
        f"{fit_dir}: its files disagree about the {what} ({said}): the folder mixes runs "
        f"or was edited. {refit}."
    )


def load_fit_dir(fit_dir: Path) -> FittedFolder:
    """The fits, the customers and the settings of a sealed fit folder, each checked
    against the folder's manifest and against each other (run id, time unit, segment
    names, models, number of customers: one value, held by the manifest)."""
    from bayesclv.data import RFMData
    from bayesclv.fit import load_fit
    from bayesclv.saved import open_folder

    fit_dir = Path(fit_dir)
    refit = f"Run 'bayesclv fit ... --out {fit_dir} --force' again"
    if not fit_dir.is_dir():
        raise SavedModelError(
            f"{fit_dir} is not a folder: pass the folder that 'bayesclv fit --out' wrote."
        )
    if not any(fit_dir.glob("purchase_*.nc")):
        raise SavedModelError(
            f"{fit_dir} has no purchase fit: run 'bayesclv fit ... --out {fit_dir}' first."
        )
    manifest = open_folder(fit_dir, refit=refit)
    models = manifest.get("models") if isinstance(manifest.get("models"), dict) else {}
    auto = models.get("purchase") == AUTO
    candidates = models.get("candidates") if auto else [models.get("purchase")]
    if not isinstance(candidates, list) or not all(isinstance(c, str) for c in candidates) \
            or not candidates:
        raise SavedModelError(f"{fit_dir}: its manifest names no purchase model. {refit}.")
    has_spend = models.get("spend") is not None
    expected = [_purchase_file(c, auto) for c in candidates]
    expected += ["customers.parquet", "diagnostics.txt", "diagnostics.json", "settings.json"]
    expected += ["spend_fit.nc"] if has_spend else []
    expected += [COMPARISON] if auto else []
    unlisted = [name for name in expected if name not in manifest["files"]]
    if unlisted:
        raise SavedModelError(f"{fit_dir}: its manifest does not list {unlisted}. {refit}.")
    try:
        settings = json.loads((fit_dir / "settings.json").read_text())
    except (OSError, ValueError) as exc:
        raise SavedModelError(f"{fit_dir / 'settings.json'} is unreadable ({exc}). {refit}.") \
            from exc
    if not isinstance(settings, dict):
        raise SavedModelError(
            f"{fit_dir / 'settings.json'} holds a {type(settings).__name__}, not the settings "
            f"of a fit. {refit}."
        )
    purchase = {}
    for name in candidates:
        file = _purchase_file(name, auto)
        idata = load_fit(fit_dir / file)
        held = FAMILIES.get(idata.attrs.get("model"))
        if held is not None and held.kind != "purchase":
            raise SavedModelError(
                f"{fit_dir / file} holds a {held.name} ({held.kind}) fit, not a purchase "
                f"model; the fit folder's files were swapped or mixed. {refit}."
            )
        purchase[name] = idata
    spend = load_fit(fit_dir / "spend_fit.nc", expect_model="gamma_gamma") if has_spend else None
    comparison = None
    if auto:
        try:
            comparison = json.loads((fit_dir / COMPARISON).read_text())
            st = comparison["stack"]
            if sorted(st["families"]) != sorted(candidates) or len(st["weights"]) != len(
                    st["families"]):
                raise ValueError("the stack's families are not the folder's fits")
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise SavedModelError(f"{fit_dir / COMPARISON} is unreadable ({exc}). {refit}.") \
                from exc
    try:
        df = pd.read_parquet(fit_dir / "customers.parquet")
    except Exception as exc:  # pyarrow raises several types on a bad file
        raise SavedModelError(
            f"{fit_dir / 'customers.parquet'} is missing or unreadable ({exc}). {refit}."
        ) from exc
    files = {_purchase_file(n, auto): idata.attrs for n, idata in purchase.items()}
    if spend is not None:
        files["spend_fit.nc"] = spend.attrs
    _agree(
        fit_dir, "run id",
        {"manifest.json": manifest.get("run_id"), "settings.json": settings.get("run_id"),
         **{name: attrs.get("run_id") for name, attrs in files.items()}},
        refit,
    )
    time_unit = _agree(
        fit_dir, "time unit",
        {"manifest.json": manifest.get("time_unit"), "settings.json": settings.get("time_unit"),
         **{name: attrs.get("time_unit") for name, attrs in files.items()}},
        refit,
    )
    names = _agree(
        fit_dir, "segment names",
        {"manifest.json": manifest.get("segment_names"),
         **{name: json.loads(attrs["segment_names"]) for name, attrs in files.items()}},
        refit,
    )
    _agree(
        fit_dir, "purchase model",
        {"manifest.json": models.get("purchase"), "settings.json": settings.get("model"),
         **({} if auto else {"purchase_fit.nc": purchase[candidates[0]].attrs.get("model")})},
        refit,
    )
    for name, idata in purchase.items():
        if auto:
            _agree(fit_dir, f"family of {_purchase_file(name, auto)}",
                   {"manifest.json": name, _purchase_file(name, auto): idata.attrs.get("model")},
                   refit)
    _agree(
        fit_dir, "number of customers",
        {"manifest.json": manifest.get("n_customers"),
         "settings.json": settings.get("n_customers"), "customers.parquet": len(df)},
        refit,
    )
    if "calibration_end" in manifest:
        _agree(fit_dir, "calibration end",
               {"manifest.json": manifest.get("calibration_end"),
                "settings.json": settings.get("calibration_end")}, refit)
    columns = ["customer_id", "frequency", "recency", "T", "monetary_value", "segment"]
    lacking = [c for c in columns if c not in df.columns]
    if lacking:
        raise SavedModelError(f"{fit_dir / 'customers.parquet'} lacks columns {lacking}. {refit}.")
    segments = df["segment"].astype(str)
    unseen = sorted(set(segments) - set(names))
    if unseen:
        raise SavedModelError(
            f"{fit_dir / 'customers.parquet'} has customers in segments {unseen} that the "
            f"fit has no parameters for (its segments: {names}). {refit}."
        )
    rfm = RFMData.from_frame(
        df.assign(segment=segments),
        customer_id="customer_id",
        segment="segment",
        time_unit=time_unit,
    )
    if tuple(names) != rfm.segment_names:  # keep the fitted segment order (from_frame sorts)
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
            litt=rfm.litt,
        )
    covariates = purchase_days = None
    if manifest.get("covariates") is not None:
        rfm, covariates, purchase_days = _load_covariates(fit_dir, manifest, settings, rfm,
                                                          refit)
    return FittedFolder(fit_dir, purchase, spend, rfm, settings, manifest, comparison,
                        covariates, purchase_days)


def _load_covariates(fit_dir: Path, manifest: Mapping, settings: Mapping, rfm, refit: str):
    """The covariate table sealed in a fit folder, validated again, joined to ``rfm``."""
    from dataclasses import replace as dc_replace

    from bayesclv.covariates import StaticCovariates, TimeVaryingCovariates
    from bayesclv.errors import DataValidationError

    fact = manifest["covariates"]
    need = [COVARIATE_FILE] + ([PURCHASE_DAYS_FILE] if fact.get("kind") == "dynamic" else [])
    unlisted = [n for n in need if n not in manifest["files"]]
    if unlisted or not isinstance(settings.get("covariates"), dict):
        raise SavedModelError(f"{fit_dir}: its manifest does not list {unlisted or need} "
                              f"(or settings.json lacks the covariates). {refit}.")
    try:
        frame = pd.read_parquet(fit_dir / COVARIATE_FILE)
        cov = CovariateOptions(**{**settings["covariates"], "purchase": fact["purchase"],
                                  "dropout": fact["dropout"]})
        if fact["kind"] == "static":
            table = StaticCovariates.from_frame(frame, customer_col="customer_id")
            days = None
        else:
            table = TimeVaryingCovariates.from_frame(frame, customer_col="customer_id",
                                                     date_col="period_start",
                                                     freq=fact.get("freq"))
            days = pd.read_parquet(fit_dir / PURCHASE_DAYS_FILE)
            rfm = dc_replace(rfm, calibration_end=pd.Timestamp(settings["calibration_end"]))
        if list(table.columns) != list(fact["columns"]):
            raise DataValidationError(f"columns {list(table.columns)}, the manifest "
                                      f"{fact['columns']}")
        joined = join_covariate_table(rfm, table, cov, days)
    except Exception as exc:  # a sealed folder's files are ours: any failure is damage
        raise SavedModelError(
            f"{fit_dir / COVARIATE_FILE}: the covariates of this fit cannot be read back or "
            f"joined to its customers ({exc}). {refit}."
        ) from exc
    return joined, table, days


# =====================================================================================
# Scoring
# =====================================================================================
@dataclass(frozen=True)
class Scored:
    """What :func:`score` computed: the two tables, the per-draw totals, the metadata
    (with ``about``, the same settings in words)."""

    customers: pd.DataFrame
    segments: pd.DataFrame
    totals: Any
    metadata: dict
    about: pd.DataFrame
    options: ScoreOptions
    value: str = "CLV"
    columns: dict = field(default_factory=dict)


def _thin(params, step: int):
    from bayesclv.stacking import PurchaseStack

    if step <= 1:
        return params
    if isinstance(params, PurchaseStack):
        return PurchaseStack({k: v.isel(draw=slice(None, None, step))
                              for k, v in params.params.items()},
                             dict(params.weights), random_seed=params.random_seed)
    return params.isel(draw=slice(None, None, step))


def _n_draws(params) -> tuple[int, int]:
    from bayesclv.stacking import PurchaseStack

    like = params.like if isinstance(params, PurchaseStack) else params
    return int(like.sizes["chain"]), int(like.sizes["draw"])


def top_share_columns(draws: np.ndarray, share: float, prob: float,
                      random_seed: int | None = 0) -> dict[str, np.ndarray]:
    """P(top ``share``) and the rank interval of each customer, from value draws.

    ``draws`` is ``(n_draws, n_customers)``. In each draw the customers are ranked by
    value (1 = highest; ties broken at random, seeded), and the top ``ceil(share * n)``
    are "in the top". Per customer: ``p_top`` (share of draws in the top), its Monte
    Carlo standard error ``sqrt(p (1 - p) / n_draws)`` (as if the draws were
    independent), and the median and central ``prob`` interval of the rank.
    """
    d, n = draws.shape
    m = max(1, math.ceil(share * n))
    rng = np.random.default_rng(random_seed)
    order = np.lexsort((rng.random((d, n)), -draws), axis=-1)
    ranks = np.empty((d, n), dtype=np.int64)
    np.put_along_axis(ranks, order, np.broadcast_to(np.arange(1, n + 1), (d, n)), axis=1)
    p = (ranks <= m).mean(axis=0)
    lo, med, hi = np.quantile(ranks, [(1 - prob) / 2, 0.5, (1 + prob) / 2], axis=0,
                              method="nearest")
    return {"p_top": p, "p_top_mcse": np.sqrt(p * (1 - p) / d), "rank_median": med,
            "rank_lower": lo, "rank_upper": hi, "n_top": m, "n_draws": d}


def _pct(share: float) -> str:
    return f"{share * 100:g}".replace(".", "_") + "pct"


def check_method(folder: FittedFolder, method: str) -> None:
    """``simulate`` on a one-draw fit (MAP) would give one simulated future per customer:
    a CLV of exactly 0 for most and zero-width intervals. Refused, with the fix."""
    n = folder.n_draws()
    if method == "simulate" and n == 1:
        raise ModelSpecificationError(
            f"--method simulate needs posterior draws, but {folder.path} holds a one-draw "
            f"fit (sampler {folder.settings.get('sampler')}): it would simulate one future "
            f"per customer (most would get CLV 0, every interval zero width). Use --method "
            f"expected, or refit with --sampler nutpie, pymc or laplace."
        )
    if method == "simulate" and folder.spend is None:
        raise ModelSpecificationError(
            f"{folder.path} was fitted without amounts (--amount-col none): there is no "
            f"value to simulate; use --method expected (expected purchases per customer)."
        )


def check_covariate_horizon(folder: FittedFolder, pp, opts: ScoreOptions) -> None:
    """Before scoring: the covariates reach every customer's ``(T, T + horizon]`` (time-
    varying covariates), or an error naming ``--future-covariates`` and what is missing."""
    from bayesclv.errors import DataValidationError
    from bayesclv.predict import DrawParams, customer_kwargs
    from bayesclv.stacking import PurchaseStack

    if folder.covariates is None or isinstance(pp, PurchaseStack):
        return
    fam = DrawParams(pp, "purchase").family
    try:
        customer_kwargs(fam, folder.rfm, horizon=opts.horizon)
    except DataValidationError as exc:
        given = opts.future_covariates
        cols = ", ".join(folder.covariates.columns)
        raise DataValidationError(
            f"--future-covariates{' ' + given if given else ' is needed'}: the time-varying "
            f"covariates{' with it' if given else ' of the fit'} do not cover the --horizon "
            f"({describe_period(opts.horizon, folder.rfm.time_unit)} after the calibration "
            f"end {folder.calibration_end}): {exc} Pass --future-covariates FILE (customer "
            f"id, period start, {cols}) with every customer's periods through the end of "
            f"the horizon, or a shorter --horizon."
        ) from None


def score(folder: FittedFolder, options: ScoreOptions) -> Scored:
    """Score every customer of a fit folder: CLV (or, without amounts, expected
    purchases) with intervals, P(alive), P(top k%) with rank intervals, and segment
    totals summed per draw; and the metadata and their words."""
    from bayesclv.clv import expected_clv, score_customers, simulate_clv
    from bayesclv.diagnostics.common import expected_purchases_any
    from bayesclv.summary import clv_intervals, interval_arrays, totals_table

    opts = options.resolved(folder.rfm.time_unit)
    if opts.future_covariates is not None:
        folder = folder.with_future_covariates(opts.future_covariates)
    rfm = folder.rfm
    check_method(folder, opts.method)
    pp = folder.purchase_params(opts.model)
    check_covariate_horizon(folder, pp, opts)
    sp = folder.spend_params()
    as_of = folder.calibration_end
    log(f"scoring {rfm.n_customers:,} customers ({opts.method} "
        f"{'CLV' if sp is not None else 'purchases'}, horizon "
        f"{describe_period(opts.horizon, rfm.time_unit)}, as of {as_of})")
    chains, draws = _n_draws(pp)
    step = max(1, math.ceil(chains * draws * rfm.n_customers / RANK_VALUES))
    if sp is not None:
        kw = dict(horizon=opts.horizon, discount_rate=opts.discount_rate,
                  discount_period=opts.discount_period, discounting=opts.discounting,
                  margin=opts.margin)
        scores = score_customers(pp, sp, rfm, prob=opts.prob, kind=opts.kind,
                                 method=opts.method, random_seed=opts.random_seed, **kw)
        table = scores.table.copy()
        totals = scores.totals
        thin_pp, thin_sp = _thin(pp, step), (sp if step <= 1 else sp.isel(
            draw=slice(None, None, step)))
        if opts.method == "expected":
            value = expected_clv(thin_pp, thin_sp, rfm, **kw)
        else:
            value = simulate_clv(thin_pp, thin_sp, rfm, random_seed=opts.random_seed, **kw)
        seg = totals_table(totals, opts.prob, opts.kind)
        value_name = "CLV"
    else:  # no amounts: expected purchases over the horizon, undiscounted
        value = expected_purchases_any(pp, rfm, opts.horizon)
        flat = value.transpose(CUSTOMER_DIM, ...).values.reshape(rfm.n_customers, -1)
        iv = interval_arrays(flat, opts.prob, opts.kind)
        from bayesclv.predict import probability_alive
        from bayesclv.stacking import PurchaseStack, stacked

        pa = (stacked(probability_alive, pp, rfm) if isinstance(pp, PurchaseStack)
              else probability_alive(pp, rfm))
        table = pd.DataFrame({
            "customer_id": rfm.customer_id,
            "segment": np.asarray(rfm.segment_names, dtype=object)[rfm.segment],
            "purchases_mean": iv["mean"], "purchases_median": iv["median"],
            "purchases_lower": iv["lower"], "purchases_upper": iv["upper"],
            "p_alive": pa.mean(("chain", "draw")).values,
            "interval_kind": opts.kind, "interval_prob": float(opts.prob),
            "horizon": float(opts.horizon), "time_unit": rfm.time_unit,
        })
        codes = rfm.segment
        per_draw = value.transpose("chain", "draw", CUSTOMER_DIM).values
        seg_tot = np.stack([per_draw[..., codes == s].sum(-1)
                            for s in range(rfm.n_segments)], axis=-1)
        import xarray as xr

        totals = xr.Dataset(
            {"segment_total": (("chain", "draw", "segment"), seg_tot),
             "portfolio_total": (("chain", "draw"), seg_tot.sum(-1))},
            coords={"segment": list(rfm.segment_names)},
        )
        seg = totals_table(totals, opts.prob, opts.kind)
        value = _thin_da(value, step)
        value_name = "expected purchases"
    # per customer of each segment, per draw, then the interval
    sizes = np.bincount(rfm.segment, minlength=rfm.n_segments).astype(float)
    per_cust = totals["segment_total"] / xr_sizes(totals, sizes)
    pc = clv_intervals(per_cust, opts.prob, opts.kind)
    n_all = float(rfm.n_customers)
    port = clv_intervals(totals["portfolio_total"] / n_all, opts.prob, opts.kind)
    seg.insert(1, "customers", np.append(sizes, n_all).astype(int))
    money = "clv" if sp is not None else "purchases"
    for k in ("mean", "lower", "upper"):
        seg[f"{money}_per_customer_{k}"] = np.append(pc[k].values, port[k].values)
    seg_meaning = interval_meaning(
        opts.method, opts.prob, opts.kind,
        of="total CLV of the segment" if sp is not None else "total purchases of the segment")
    seg["interval_meaning"] = seg_meaning
    meaning = interval_meaning(opts.method, opts.prob, opts.kind,
                               of="CLV" if sp is not None else "purchases")
    flat = value.transpose("chain", "draw", CUSTOMER_DIM).values.reshape(-1, rfm.n_customers)
    ranks = top_share_columns(flat, opts.top_share, opts.prob, opts.random_seed)
    tag = _pct(opts.top_share)
    table[f"p_top_{tag}"] = ranks["p_top"]
    table[f"p_top_{tag}_mcse"] = ranks["p_top_mcse"]
    for k in ("rank_median", "rank_lower", "rank_upper"):
        table[k] = ranks[k]
    table["interval_meaning"] = meaning
    table["as_of"] = as_of
    meta, about = _metadata(folder, opts, table, seg, ranks, meaning, value_name)
    return Scored(table, seg, totals, meta, about, opts, value_name,
                  {"top": f"p_top_{tag}", "money": money})


def xr_sizes(totals, sizes: np.ndarray):
    import xarray as xr

    return xr.DataArray(sizes, dims=("segment",), coords={"segment": totals["segment"].values})


def _thin_da(da, step: int):
    return da if step <= 1 else da.isel(draw=slice(None, None, step))


def _metadata(folder: FittedFolder, opts: ScoreOptions, table: pd.DataFrame,
              seg: pd.DataFrame, ranks: dict, meaning: str, value_name: str):
    """The export metadata (machine-readable) and the ``about`` rows (in words)."""
    import datetime

    import arviz
    import pymc

    from bayesclv import __version__

    rfm = folder.rfm
    unit = rfm.time_unit
    s = folder.settings
    read = folder.read_options
    verdicts = folder.verdicts()
    families = [opts.model] if opts.model else folder.families
    priors = {n: json.loads(folder.purchase[n].attrs.get("priors", "null")) for n in families}
    if folder.spend is not None:
        priors["gamma_gamma"] = json.loads(folder.spend.attrs.get("priors", "null"))
    as_of = folder.calibration_end
    created = datetime.datetime.now(datetime.UTC).replace(microsecond=0).isoformat()
    horizon_words = describe_period(opts.horizon, unit)
    if as_of:
        end = (pd.Timestamp(as_of) + pd.Timedelta(
            days=opts.horizon * _days(unit))).date()
        horizon_words += f" after the as-of date, to about {end}"
    if opts.discount_rate == 0:
        disc_words = "none"
    else:
        when = ("at the end of each " + unit if opts.discounting == "per_period"
                else "at each purchase's exact time (continuous)")
        disc_words = (f"{opts.discount_rate:.4g} ({opts.discount_rate:.1%}) per "
                      f"{describe_period(opts.discount_period, unit)}, applied {when}")
    comparison = folder.comparison
    choice = folder.model_words(opts.model)
    top = ranks["n_top"]
    tag = _pct(opts.top_share)
    x0 = (rfm.frequency == 0)
    sure = x0 & (table["p_alive"].to_numpy() > 0.999)
    meta = {
        "bayesclv_version": __version__,
        "created": created,
        "as_of": as_of,
        "source_file": None if read is None else read.source,
        "column_mapping": None if read is None else {
            "customer_id": read.customer_col, "date": read.date_col,
            "amount": read.amount_col, "segment": read.segment_col,
            "date_format": read.date_format, "sep": read.sep, "decimal": read.decimal,
            "encoding": read.encoding},
        "models": {"purchase": opts.model or s.get("model"), "families": families,
                   "spend": None if folder.spend is None else "gamma_gamma"},
        "family_choice": None if comparison is None else comparison["summary"],
        "stacking_weights": None if comparison is None or opts.model else dict(
            zip(comparison["stack"]["families"], comparison["stack"]["weights"],
                strict=True)),
        "pooling": s.get("pooling"),
        "priors": priors,
        "sampler": s.get("sampler"),
        "chains": s.get("chains"),
        "draws": s.get("draws"),
        "tune": s.get("tune"),
        "horizon": opts.horizon,
        "time_unit": unit,
        "discount_rate": opts.discount_rate,
        "discount_period": opts.discount_period,
        "discounting": opts.discounting,
        "margin": opts.margin,
        "currency": opts.currency,
        "value": value_name,
        "interval": {"kind": opts.kind, "prob": opts.prob, "meaning": meaning},
        "clv_method": opts.method,
        "top_share": opts.top_share,
        "ranking_draws": ranks["n_draws"],
        "seeds": {"fit": s.get("random_seed"), "score": opts.random_seed},
        "convergence_verdict": verdicts,
        "n_customers": rfm.n_customers,
        "covariates": covariate_record(folder, opts),
    }
    mapping = "the built-in CDNOW data (no file)" if read is None else read.mapping_in_words()
    rows = [
        ("What this is", (
            f"{value_name} of each of {rfm.n_customers:,} customers over the next "
            f"{describe_period(opts.horizon, unit)}, with intervals, from bayesclv "
            f"{__version__}. Sheet 'customers': one row per customer; sheet 'segments': "
            f"the total of each segment (summed per posterior draw, then the interval)."
        )),
        ("As of", (
            f"{as_of or 'the last day of the data'}: the end of the calibration period. "
            "Every customer's history up to and including this day is used, and the "
            "horizon starts the day after."
        )),
        ("Source file", "built-in CDNOW sample (Fader & Hardie)" if read is None
         else str(read.source)),
        ("Column mapping", mapping),
        ("Cleaning", "as the data set ships" if read is None else read.cleaning_in_words()),
        ("Customers", (
            f"{rfm.n_customers:,} customers in {rfm.n_segments} segment"
            f"{'s' if rfm.n_segments > 1 else ''} ({', '.join(rfm.segment_names)}); "
            f"{int((rfm.frequency > 0).sum()):,} bought again after their first purchase."
        )),
        ("Purchase model", choice),
        ("Family comparison", "none: one family was fitted" if comparison is None
         else comparison["summary"].replace("\n", " | ")),
        ("Spend model", "Gamma-Gamma (spend per purchase independent of the purchase "
         "process; the first purchase's amount not used)" if folder.spend is not None
         else "none: the log has no amounts, so the table gives expected purchases, not "
         "money"),
        ("Pooling", _pooling_words(s.get("pooling", ""), rfm.n_segments)),
        ("Priors", "the families' default priors: " + json.dumps(priors, default=str)),
        ("Horizon", horizon_words),
        ("Discounting", disc_words if folder.spend is not None else "none (purchases are "
         "counted, not valued)"),
        ("Margin", f"{opts.margin:.0%} of revenue" + (": CLV is revenue" if opts.margin == 1
                                                       else ": CLV is profit")),
        ("Currency", f"{opts.currency} (the currency of the log's amounts; nothing is "
         "converted)" if opts.currency else "not stated (pass --currency, e.g. EUR)"),
        ("Interval", (
            f"{meaning}. " + (
                "It shows what is not known about the model's parameters; a customer's "
                "actual value will scatter more widely." if opts.method == "expected" else
                "It covers the parameters and the customer's own behaviour (whether and "
                "when they buy): for sparse buyers its lower end is often 0.")
        )),
        ("Ranking", (
            f"p_top_{tag}: the posterior probability that the customer is among the top "
            f"{opts.top_share:.0%} ({top:,} customers) by {value_name}, from "
            f"{ranks['n_draws']:,} posterior draws (customers ranked in each draw, ties "
            f"broken at random); p_top_{tag}_mcse: its Monte Carlo standard error; "
            f"rank_lower to rank_upper: the {opts.prob:.0%} interval of the customer's "
            f"rank (1 = highest)."
        )),
        ("P(alive)", (
            "posterior mean probability that the customer is still active at the as-of "
            "date." + (
                f" {int(sure.sum()):,} of the {int(x0.sum()):,} customers without a repeat "
                "purchase get P(alive) 1.00: this model lets customers drop out only right "
                "after a purchase, so someone who never bought again counts as alive. "
                "Rank by CLV or p_top, not by P(alive) alone." if sure.any() else "")
        )),
        ("Convergence", _verdict_words(verdicts)),
        ("Sampler", (
            f"{s.get('sampler')}, {s.get('chains')} chains x {s.get('draws')} draws after "
            f"{s.get('tune')} tuning steps, target acceptance {s.get('target_accept')}"
        ) if folder.n_draws() > 1 else f"{s.get('sampler')}: one point (the posterior mode), "
         "no draws"),
        ("Seeds", f"fit {s.get('random_seed')}; scoring {opts.random_seed} (simulation and "
         "ranking tie-breaks)"),
        ("Created", f"{created} (UTC)"),
        ("Software", f"bayesclv {__version__}, PyMC {pymc.__version__}, ArviZ "
         f"{arviz.__version__}"),
        ("Machine-readable copy", "the same settings as JSON: the hidden sheet 'metadata' "
         "of the workbook, the .metadata.json beside a CSV, the schema metadata of a "
         "Parquet file"),
    ]
    if meta["covariates"] is not None:
        rows.insert(4, ("Covariates", covariate_words(meta["covariates"])))
    if folder.n_draws() == 1:
        rows.insert(1, ("WARNING: no uncertainty", (
            f"the fit is one point (sampler {s.get('sampler')}), not posterior draws: every "
            f"interval has zero width and p_top is 0 or 1. They show no uncertainty; refit "
            f"with --sampler nutpie or pymc for intervals."
        )))
        meta["one_draw_fit"] = True
    rows += [(f"column {c}", w) for c, w in column_words(table, seg, opts, value_name).items()]
    about = pd.DataFrame(rows, columns=["item", "value"])
    meta["about"] = dict(rows)
    return meta, about


def covariate_record(folder: FittedFolder, opts: ScoreOptions) -> dict | None:
    """The covariates a score used (the sealed table's fact, and the future path)."""
    fact = folder.manifest.get("covariates")
    if fact is None:
        return None
    return {**fact, "future_covariates": opts.future_covariates}


def covariate_words(rec: Mapping) -> str:
    def cols(c):
        return ", ".join(c) if c else "none"

    kind = "time-varying" if rec["kind"] == "dynamic" else rec["kind"]
    words = (f"{kind} covariates from {rec['source']} (sealed in the fit folder as "
             f"{rec['file']}, SHA-256 {rec['sha256'][:12]}...): on the purchase rate "
             f"{cols(rec['purchase'])}; on dropout {cols(rec['dropout'])}")
    if rec.get("future_covariates"):
        words += f"; after the calibration end, {rec['future_covariates']}"
    return words


def _days(unit: str) -> float:
    from bayesclv.data import DAYS_PER_UNIT

    return DAYS_PER_UNIT[unit]


def _verdict_words(verdicts: Mapping) -> str:
    parts = []
    for role, v in verdicts.items():
        if isinstance(v, Mapping):
            parts += [f"{_label(k)}: {x}" for k, x in v.items()]
        else:
            parts.append(f"{'Gamma-Gamma' if role == 'spend' else role}: {v}")
    return ("; ".join(parts) + ". 'ok': R-hat, effective sample sizes, divergences and "
            "E-BFMI within their thresholds; 'warning': a check missed its threshold (read "
            "diagnostics.txt); 'fail': the intervals should not be used; an approximation "
            "(MAP, Laplace, ADVI) is 'not assessed', never 'ok'.")


def column_words(table: pd.DataFrame, seg: pd.DataFrame, opts: ScoreOptions,
                 value_name: str) -> dict[str, str]:
    """One sentence per column of the two tables."""
    unit = table["time_unit"].iloc[0] if len(table) else ""
    v = value_name
    words = {
        "customer_id": "the customer's id, as text",
        "segment": "the customer's segment",
        "clv_mean": f"posterior mean of the customer's {v}",
        "clv_median": f"posterior median of the customer's {v}",
        "clv_lower": f"lower end of the {table['interval_meaning'].iloc[0]}",
        "clv_upper": f"upper end of the {table['interval_meaning'].iloc[0]}",
        "purchases_mean": f"posterior mean of the expected purchases over the horizon "
        f"({unit}s)",
        "purchases_median": "posterior median of the expected purchases",
        "purchases_lower": f"lower end of the {table['interval_meaning'].iloc[0]}",
        "purchases_upper": f"upper end of the {table['interval_meaning'].iloc[0]}",
        "p_alive": "posterior mean probability of being active at the as-of date",
        "expected_purchases": "posterior mean of the expected purchases over the horizon",
        "interval_kind": "eti: equal-tailed interval; hdi: highest-density interval",
        "interval_prob": "the interval's probability",
        "horizon": f"the horizon, in {unit}s",
        "time_unit": "the time unit of the horizon",
        "rank_median": f"median rank by {v} over posterior draws (1 = highest)",
        "rank_lower": f"lower end of the {opts.prob:.0%} interval of the rank",
        "rank_upper": f"upper end of the {opts.prob:.0%} interval of the rank",
        "interval_meaning": "what the interval is (credible interval of expected value or "
        "predictive interval of realised value)",
        "as_of": "the date the scores are as of (end of calibration)",
    }
    tag = _pct(opts.top_share)
    words[f"p_top_{tag}"] = (f"posterior probability of being in the top "
                             f"{opts.top_share:.0%} by {v}")
    words[f"p_top_{tag}_mcse"] = f"Monte Carlo standard error of p_top_{tag}"
    out = {c: words.get(c, "") for c in table.columns}
    seg_words = {
        "customers": "customers in the segment (the portfolio row: all)",
        "total_mean": f"posterior mean of the total {v} of the segment",
        "total_median": f"posterior median of the total {v} of the segment",
        "total_lower": f"lower end of the {seg['interval_meaning'].iloc[0]}",
        "total_upper": f"upper end of the {seg['interval_meaning'].iloc[0]}",
    }
    for c in seg.columns:
        if c in seg_words:
            out[f"{c} (segments)"] = seg_words[c]
        elif c.endswith("_per_customer_mean"):
            out[f"{c} (segments)"] = f"posterior mean of the segment's {v} per customer"
    return out


# =====================================================================================
# Export
# =====================================================================================
def segments_path(out: Path) -> Path:
    return out.with_name(out.stem + "_segments" + out.suffix)


def check_outputs(out: Path, *, overwrite: bool, n_rows: int | None = None) -> None:
    """Every check the export makes, for all its files, before any work."""
    from bayesclv.export import check_export_target

    if out.suffix.lower() not in (".csv", ".parquet", ".xlsx"):
        raise OutputError(f"--out {out}: use a .csv, .parquet or .xlsx file name.")
    targets = [out] if out.suffix.lower() == ".xlsx" else [out, segments_path(out)]
    for target in targets:
        check_export_target(target, overwrite=overwrite, n_rows=n_rows)


def number_formats(scored: Scored) -> dict[str, dict[str, str]]:
    from bayesclv.export import currency_format

    money = currency_format(scored.options.currency) if scored.value == "CLV" else "#,##0.00"
    cust, seg = {}, {}
    for c in scored.customers.columns:
        if c.startswith(("clv_", "purchases_")):
            cust[c] = money
        elif c.startswith("p_"):
            cust[c] = "0.0%"
        elif c.startswith("rank_"):
            cust[c] = "#,##0"
        elif c == "expected_purchases":
            cust[c] = "0.00"
        elif c == "interval_prob":
            cust[c] = "0%"
    for c in scored.segments.columns:
        if c.startswith(("total_", "clv_per_customer", "purchases_per_customer")):
            seg[c] = money
        elif c == "customers":
            seg[c] = "#,##0"
        elif c == "interval_prob":
            seg[c] = "0%"
    return {"customers": cust, "segments": seg}


def export_scores(scored: Scored, out: Path, *, overwrite: bool = False) -> list[Path]:
    """Write the scores: one workbook (.xlsx: customers, segments, about), or the
    customers and ``<name>_segments`` files (.csv/.parquet) with the same metadata."""
    import warnings

    from bayesclv.diagnostics import ConvergenceWarning
    from bayesclv.export import export, export_workbook

    out = Path(out)
    verdict = scored.metadata["convergence_verdict"]
    if out.suffix.lower() == ".xlsx":
        path = export_workbook(
            {"customers": scored.customers, "segments": scored.segments}, out,
            metadata=scored.metadata, about=scored.about, number_formats=number_formats(scored),
            convergence=verdict, overwrite=overwrite,
        )
        paths = [path]
    else:
        paths = [
            export(scored.customers, out, metadata=scored.metadata, convergence=verdict,
                   overwrite=overwrite),
        ]
        with warnings.catch_warnings():  # the verdict was told once, for the customers
            warnings.simplefilter("ignore", ConvergenceWarning)
            paths.append(export(scored.segments, segments_path(out),
                                metadata={**scored.metadata, "table": "segments"},
                                convergence=verdict, overwrite=overwrite))
    log(f"wrote {', '.join(str(p) for p in paths)} ({len(scored.customers):,} customers)")
    return paths


def score_lines(scored: Scored) -> list[str]:
    """What ``score`` prints: as of, horizon, model, interval, the top customers."""
    m = scored.metadata
    opts = scored.options
    unit = m["time_unit"]
    cur = f" {opts.currency}" if opts.currency else ""
    lines = [
        f"scores as of {m['as_of']} (end of calibration); {scored.value} over the next "
        f"{describe_period(opts.horizon, unit)}",
        f"purchase model: {m['about']['Purchase model']}",
    ]
    if m.get("family_choice"):
        lines += m["family_choice"].splitlines()
    if m.get("covariates"):
        lines.append(f"covariates: {m['about']['Covariates']}")
    if scored.value == "CLV":
        lines.append(f"discounting: {m['about']['Discounting']}; margin {opts.margin:.0%}")
    lines.append(f"intervals: {m['interval']['meaning']}")
    port = scored.segments.iloc[-1]
    lines.append(
        f"portfolio total {port['total_mean']:,.2f}{cur} "
        f"({port['total_lower']:,.2f} to {port['total_upper']:,.2f}{cur}, "
        f"{opts.prob:.0%} interval)"
    )
    if "WARNING: no uncertainty" in m["about"]:
        lines.append("WARNING: " + m["about"]["WARNING: no uncertainty"])
    lines.append(f"convergence: {json.dumps(m['convergence_verdict'])}")
    return lines


def settings_from_read(read: ReadOptions) -> dict:
    return asdict(read)


def parse_candidates(text: str | None) -> tuple[str, ...] | None:
    if text is None:
        return None
    names = tuple(n.strip() for n in text.split(",") if n.strip())
    if not names:
        raise ModelSpecificationError("--candidates: name one or more families, e.g. "
                                      "--candidates bgnbd,pareto_nbd.")
    from bayesclv.families import get_family

    for n in names:
        get_family(n, "purchase")
    return names


def families_words(names: Sequence[str]) -> str:
    return ", ".join(_label(n) for n in names)
