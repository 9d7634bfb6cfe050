"""The last step: intervals, per-draw totals, tidy tables and export with metadata.

Everything before this module keeps ``(chain, draw, ...)``; here, and only here, draws
are summarised. Totals are summed per draw first (:func:`segment_totals`) and then
summarised, never the other way round: interval bounds are not additive.

Export (:func:`export`) writes CSV, Parquet or Excel atomically (a temporary file in the
target directory, then ``os.replace``) with the run's metadata alongside:

* Parquet: JSON in the schema metadata under the key ``b"bayesclv"``;
* Excel: a second sheet ``metadata`` with ``key``/``value`` rows;
* CSV: a sidecar ``<name>.metadata.json`` next to the file (a sidecar rather than a
  commented header, so the CSV stays readable by every tool without options).

String cells that a spreadsheet would run as a formula (first character ``=``, ``+``,
``-``, ``@``, tab or carriage return) are prefixed with an apostrophe in CSV and Excel
(OWASP "CSV injection"). Parquet is typed data, not a spreadsheet, and is written as is.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
import warnings
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import xarray as xr

from bayesclv.data import RFMData

__all__ = [
    "interval_arrays",
    "clv_intervals",
    "segment_totals",
    "customer_table",
    "totals_table",
    "export",
    "read_metadata",
    "TABLE_COLUMNS",
]

SAMPLE_DIMS = ("chain", "draw")

#: Columns of :func:`customer_table`, in order.
TABLE_COLUMNS = (
    "customer_id",
    "segment",
    "clv_mean",
    "clv_median",
    "clv_lower",
    "clv_upper",
    "p_alive",
    "expected_purchases",
    "interval_kind",
    "interval_prob",
    "horizon",
    "time_unit",
)

_FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r")
_METADATA_KEY = b"bayesclv"


# --------------------------------------------------------------------------- intervals
def _check_interval(prob: float, kind: str) -> float:
    prob = float(prob)
    if not 0.0 < prob < 1.0:
        raise ValueError(f"prob must be strictly between 0 and 1, got {prob!r}.")
    if kind not in ("eti", "hdi"):
        raise ValueError(f"kind must be 'eti' (equal-tailed) or 'hdi', got {kind!r}.")
    return prob


def _hdi_sorted(sorted_rows: np.ndarray, prob: float) -> tuple[np.ndarray, np.ndarray]:
    """Narrowest window holding ``floor(prob * n)`` + 1 sorted draws, per row.

    The same rule as ``arviz.hdi`` (Chen & Shao 1999 sorted-window estimator), vectorised
    over rows.
    """
    n = sorted_rows.shape[-1]
    inc = int(math.floor(prob * n))
    n_win = n - inc
    if n_win < 1 or inc < 1:
        return sorted_rows[..., 0].copy(), sorted_rows[..., -1].copy()
    widths = sorted_rows[..., inc:] - sorted_rows[..., :n_win]
    start = np.argmin(widths, axis=-1)[..., None]
    lower = np.take_along_axis(sorted_rows, start, axis=-1)[..., 0]
    upper = np.take_along_axis(sorted_rows, start + inc, axis=-1)[..., 0]
    return lower, upper


def _sorted_quantile(srt: np.ndarray, q: float) -> np.ndarray:
    """Quantile ``q`` of sorted rows, linear interpolation (numpy's default method)."""
    n = srt.shape[-1]
    h = (n - 1) * q
    lo = int(math.floor(h))
    hi = min(lo + 1, n - 1)
    frac = h - lo
    a, b = srt[..., lo], srt[..., hi]
    return a + frac * (b - a) if frac else a.copy()


def interval_arrays(samples: np.ndarray, prob: float = 0.94, kind: str = "eti") -> dict:
    """Mean, median and a ``prob`` interval of each row of ``samples``.

    Parameters
    ----------
    samples : ndarray, shape (..., n_samples)
        Draws along the last axis.
    prob : float
        Probability mass of the interval.
    kind : {"eti", "hdi"}
        Equal-tailed (quantiles ``(1-prob)/2`` and ``(1+prob)/2``, linear interpolation)
        or highest-density (narrowest window of sorted draws, as ``arviz.hdi``).

    Returns
    -------
    dict of ndarray
        ``mean``, ``median``, ``lower``, ``upper``, each of shape ``samples.shape[:-1]``.
    """
    prob = _check_interval(prob, kind)
    samples = np.asarray(samples)
    if samples.shape[-1] == 0:
        raise ValueError("no draws to summarise.")
    mean = samples.mean(axis=-1, dtype=np.float64)
    # One sort serves every quantile and the HDI (faster than np.quantile's partitions).
    srt = np.sort(samples, axis=-1)
    med = _sorted_quantile(srt, 0.5)
    if kind == "eti":
        lo = _sorted_quantile(srt, (1 - prob) / 2)
        hi = _sorted_quantile(srt, (1 + prob) / 2)
    else:
        lo, hi = _hdi_sorted(srt, prob)
    return {"mean": mean, "median": med, "lower": lo, "upper": hi}


def clv_intervals(
    draws: xr.DataArray, prob: float = 0.94, kind: str = "eti", sample_dims=SAMPLE_DIMS
) -> xr.Dataset:
    """Summarise draws: mean, median and lower/upper bounds of a ``prob`` interval.

    Parameters
    ----------
    draws : xarray.DataArray
        Any quantity with dims ``(chain, draw, ...)`` (CLV, totals, P(alive)).
    prob : float
        Probability mass of the interval, e.g. 0.94 or 0.5.
    kind : {"eti", "hdi"}
        Equal-tailed or highest-density interval.

    Returns
    -------
    xarray.Dataset
        Variables ``mean, median, lower, upper`` over the remaining dims; attrs
        ``interval_prob`` and ``interval_kind``.
    """
    missing = [d for d in sample_dims if d not in draws.dims]
    if missing:
        raise ValueError(f"draws lack sample dims {missing}; they have {draws.dims}.")
    rest = [d for d in draws.dims if d not in sample_dims]
    arr = draws.transpose(*rest, *sample_dims).values
    arr = arr.reshape(*arr.shape[: len(rest)], -1)
    out = interval_arrays(arr, prob, kind)
    coords = {d: draws[d] for d in rest if d in draws.coords}
    ds = xr.Dataset({k: (rest, v) for k, v in out.items()}, coords=coords)
    ds.attrs.update(interval_prob=float(prob), interval_kind=kind)
    return ds


# --------------------------------------------------------------------------- totals
def segment_sums(values: np.ndarray, codes: np.ndarray, n_segments: int) -> np.ndarray:
    """Sum ``values`` (n_draws, n_customers) over customers of each segment, per draw.

    Returns an array (n_draws, n_segments); used to accumulate totals chunk by chunk.
    """
    values = np.asarray(values, dtype=np.float64)
    onehot = np.zeros((codes.shape[0], n_segments), dtype=np.float64)
    onehot[np.arange(codes.shape[0]), codes] = 1.0
    return values @ onehot


def segment_totals(clv_draws: xr.DataArray, rfm: RFMData) -> xr.Dataset:
    """Sum customer values per draw: per segment and for the whole portfolio.

    Parameters
    ----------
    clv_draws : xarray.DataArray
        Dims ``(chain, draw, customer)``, customers in the order of ``rfm``.
    rfm : RFMData
        Gives each customer's segment.

    Returns
    -------
    xarray.Dataset
        ``segment_total`` with dims ``(chain, draw, segment)`` (every named segment,
        zeros for empty ones) and ``portfolio_total`` with dims ``(chain, draw)``. Take
        intervals of these with :func:`clv_intervals` or :func:`totals_table`.
    """
    if clv_draws.sizes.get("customer") != rfm.n_customers:
        raise ValueError(
            f"clv_draws has {clv_draws.sizes.get('customer')} customers but rfm has "
            f"{rfm.n_customers}; pass the RFMData the draws were computed for."
        )
    arr = clv_draws.transpose("chain", "draw", "customer").values
    c, d, n = arr.shape
    seg = segment_sums(arr.reshape(c * d, n), rfm.segment, rfm.n_segments).reshape(c, d, -1)
    return _totals_dataset(seg, clv_draws, rfm.segment_names)


def _totals_dataset(seg: np.ndarray, like, segment_names) -> xr.Dataset:
    coords = {"segment": list(segment_names)}
    for dim in ("chain", "draw"):
        if like is not None and dim in like.coords:
            coords[dim] = like[dim].values
    return xr.Dataset(
        {
            "segment_total": (("chain", "draw", "segment"), seg),
            "portfolio_total": (("chain", "draw"), seg.sum(axis=-1)),
        },
        coords=coords,
    )


def totals_table(totals: xr.Dataset, prob: float = 0.94, kind: str = "eti") -> pd.DataFrame:
    """One row per segment plus a ``"portfolio"`` row: mean, median and interval."""
    seg = clv_intervals(totals["segment_total"], prob, kind)
    port = clv_intervals(totals["portfolio_total"], prob, kind)
    rows = pd.DataFrame(
        {
            "segment": [str(s) for s in totals["segment"].values] + ["portfolio"],
            **{
                f"total_{k}": np.append(seg[k].values, port[k].values)
                for k in ("mean", "median", "lower", "upper")
            },
        }
    )
    rows["interval_kind"] = kind
    rows["interval_prob"] = float(prob)
    return rows


# --------------------------------------------------------------------------- tables
def table_from_arrays(
    customer_id: np.ndarray,
    segment: np.ndarray,
    clv: np.ndarray,
    *,
    p_alive: np.ndarray | None,
    expected_purchases: np.ndarray | None,
    prob: float,
    kind: str,
    horizon: float | None,
    time_unit: str | None,
) -> pd.DataFrame:
    """Build :data:`TABLE_COLUMNS` from ``clv`` of shape (n_customers, n_samples).

    ``p_alive`` and ``expected_purchases`` are per-customer posterior means (or None).
    """
    return table_from_summaries(
        customer_id,
        segment,
        interval_arrays(clv, prob, kind),
        p_alive=p_alive,
        expected_purchases=expected_purchases,
        prob=prob,
        kind=kind,
        horizon=horizon,
        time_unit=time_unit,
    )


def table_from_summaries(
    customer_id: np.ndarray,
    segment: np.ndarray,
    summaries: Mapping[str, np.ndarray],
    *,
    p_alive: np.ndarray | None,
    expected_purchases: np.ndarray | None,
    prob: float,
    kind: str,
    horizon: float | None,
    time_unit: str | None,
) -> pd.DataFrame:
    """Build :data:`TABLE_COLUMNS` from per-customer ``mean, median, lower, upper``."""
    n = len(customer_id)
    nan = np.full(n, np.nan)
    return pd.DataFrame(
        {
            "customer_id": customer_id,
            "segment": segment,
            "clv_mean": summaries["mean"],
            "clv_median": summaries["median"],
            "clv_lower": summaries["lower"],
            "clv_upper": summaries["upper"],
            "p_alive": nan if p_alive is None else p_alive,
            "expected_purchases": nan if expected_purchases is None else expected_purchases,
            "interval_kind": kind,
            "interval_prob": float(prob),
            "horizon": np.nan if horizon is None else float(horizon),
            "time_unit": time_unit,
        },
        columns=list(TABLE_COLUMNS),
    )


def customer_table(
    clv_draws: xr.DataArray,
    rfm: RFMData,
    *,
    p_alive: xr.DataArray | None = None,
    expected_purchases: xr.DataArray | None = None,
    prob: float = 0.94,
    kind: str = "eti",
    horizon: float | None = None,
) -> pd.DataFrame:
    """Tidy per-customer table: one row per customer of ``rfm``, in its order.

    Parameters
    ----------
    clv_draws : xarray.DataArray
        ``(chain, draw, customer)`` from :func:`bayesclv.clv.expected_clv` or
        :func:`bayesclv.clv.simulate_clv`.
    rfm : RFMData
        The customers; every one appears exactly once (checked).
    p_alive, expected_purchases : xarray.DataArray, optional
        ``(chain, draw, customer)``; their posterior means fill the columns (NaN if None).
    prob, kind : interval probability and ``"eti"`` / ``"hdi"``.
    horizon : float, optional
        Defaults to ``clv_draws.attrs["horizon"]``.

    Returns
    -------
    pandas.DataFrame
        Columns :data:`TABLE_COLUMNS`.
    """
    if clv_draws.sizes.get("customer") != rfm.n_customers:
        raise ValueError(
            f"clv_draws has {clv_draws.sizes.get('customer')} customers, rfm has "
            f"{rfm.n_customers}."
        )
    if "customer" in clv_draws.coords:
        ids = clv_draws["customer"].values
        if not np.array_equal(ids, rfm.customer_id):
            raise ValueError("clv_draws customers are not those of rfm, in the same order.")
    arr = clv_draws.transpose("customer", "chain", "draw").values
    arr = arr.reshape(arr.shape[0], -1)

    def mean_of(da):
        if da is None:
            return None
        return da.transpose("customer", "chain", "draw").values.reshape(arr.shape[0], -1).mean(-1)

    if horizon is None:
        horizon = clv_draws.attrs.get("horizon")
    table = table_from_arrays(
        rfm.customer_id,
        rfm.segment_labels(),
        arr,
        p_alive=mean_of(p_alive),
        expected_purchases=mean_of(expected_purchases),
        prob=prob,
        kind=kind,
        horizon=horizon,
        time_unit=rfm.time_unit,
    )
    check_one_row_per_customer(table, rfm.customer_id)
    return table


def check_one_row_per_customer(table: pd.DataFrame, customer_id: np.ndarray) -> None:
    """Raise if ``table`` does not hold every customer exactly once."""
    ids = pd.Index(table["customer_id"])
    if len(ids) != len(customer_id) or ids.has_duplicates or not ids.equals(pd.Index(customer_id)):
        missing = pd.Index(customer_id).difference(ids)
        raise AssertionError(
            f"customer table must hold every customer exactly once: {len(ids)} rows for "
            f"{len(customer_id)} customers, {int(ids.duplicated().sum())} duplicated, "
            f"{len(missing)} missing."
        )


# --------------------------------------------------------------------------- export
def _escape_cell(value: Any) -> Any:
    if isinstance(value, str) and value.startswith(_FORMULA_PREFIXES):
        return "'" + value
    return value


def escape_formulas(table: pd.DataFrame) -> pd.DataFrame:
    """Copy of ``table`` with formula-like string cells (and column names) escaped."""
    out = table.copy()
    for col in out.columns:
        s = out[col]
        if s.dtype == object or pd.api.types.is_string_dtype(s) or isinstance(
            s.dtype, pd.CategoricalDtype
        ):
            out[col] = s.astype(object).map(_escape_cell)
    out.columns = [_escape_cell(str(c)) for c in out.columns]
    return out


#: Control characters that the xlsx format cannot store (as openpyxl's
#: ILLEGAL_CHARACTERS_RE): writing one fails deep inside openpyxl.
_XLSX_ILLEGAL = r"[\x00-\x08\x0b\x0c\x0e-\x1f]"


def _check_excel_text(table: pd.DataFrame) -> None:
    """Refuse text an xlsx file cannot hold, naming the column and rows (never altered:
    a changed customer id would no longer match its customer)."""
    from bayesclv.errors import DataValidationError, describe_rows

    for col in table.columns:
        s = table[col]
        if not (
            s.dtype == object
            or pd.api.types.is_string_dtype(s)
            or isinstance(s.dtype, pd.CategoricalDtype)
        ):
            continue
        bad = np.array(s.astype(object).map(lambda v: isinstance(v, str)), dtype=bool)
        if bad.any():
            text = s[bad].astype(str)
            hit = text.str.contains(_XLSX_ILLEGAL, regex=True).to_numpy(dtype=bool)
            bad[bad] = hit
        if bad.any():
            raise DataValidationError(
                f"column '{col}': {int(bad.sum())} cells hold control characters that an .xlsx "
                f"file cannot store (rows {describe_rows(np.flatnonzero(bad))}). Export to "
                f".csv or .parquet, or clean the text first."
            )


def _jsonable(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, float | int | str | bool) or value is None:
        return value
    return str(value)


def atomic_write(path: Path, writer: Callable[[Path], None]) -> None:
    """Call ``writer(tmp)`` on a temporary file next to ``path``, then rename it.

    On any exception the temporary file is removed and ``path`` is untouched (a reader
    never sees a partial file: ``os.replace`` is atomic on POSIX and Windows).
    """
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        writer(tmp_path)
        with open(tmp_path, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp_path, path)
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise


def _sidecar(path: Path) -> Path:
    """``customers.csv`` -> ``customers.metadata.json`` (same directory)."""
    return path.with_name(path.stem + ".metadata.json")


def _verdict_of(value: Any) -> Any:
    """A verdict string from a ConvergenceReport, a verdict, or a mapping of them."""
    if isinstance(value, Mapping):
        return {str(k): _verdict_of(v) for k, v in value.items()}
    return getattr(value, "verdict", value)


def _flat_verdicts(value: Any) -> list:
    if isinstance(value, Mapping):
        return [v for item in value.values() for v in _flat_verdicts(item)]
    return [value]


def _check_convergence(meta: dict, convergence: Any) -> None:
    """Record the convergence verdict(s) in ``meta``; warn when a fit failed its checks."""
    if convergence is not None:
        meta["convergence_verdict"] = _verdict_of(convergence)
    if "convergence_verdict" not in meta:
        return
    verdicts = _flat_verdicts(meta["convergence_verdict"])
    failed = any(v == "fail" for v in verdicts)
    meta["convergence_failed"] = failed
    if failed or any(v == "warning" for v in verdicts):
        from bayesclv.diagnostics import ConvergenceWarning

        warnings.warn(
            f"exporting CLV from a fit whose convergence verdict is "
            f"{meta['convergence_verdict']}: "
            + (
                "it FAILED its checks, the intervals should not be used. "
                if failed
                else "some checks gave warnings. "
            )
            + "The verdict is written into the file's metadata; see "
            "bayesclv.diagnostics.convergence_report for what to do.",
            ConvergenceWarning,
            stacklevel=3,
        )


def export(
    table: pd.DataFrame,
    path: str | os.PathLike,
    *,
    metadata: Mapping[str, Any],
    format: str | None = None,
    convergence: Any = None,
) -> Path:
    """Write a table with its run metadata, atomically.

    Parameters
    ----------
    table : pandas.DataFrame
        E.g. :func:`customer_table` or :func:`totals_table`.
    path : path-like
        Target file; its directory must exist.
    metadata : mapping
        Models, priors, horizon, discounting, interval, convergence verdict, package
        version... Stored as JSON (non-JSON values as ``str``).
    format : {"csv", "parquet", "xlsx"}, optional
        Default: from the suffix of ``path``.
    convergence : ConvergenceReport, str or mapping of them, optional
        The fit(s) behind the table (e.g. ``{"purchase": report, "spend": report}``);
        their verdicts are stored as ``metadata["convergence_verdict"]`` (a verdict may
        also be given there directly). If any is ``"fail"`` or ``"warning"`` a
        :class:`~bayesclv.diagnostics.ConvergenceWarning` is issued, and
        ``metadata["convergence_failed"]`` records whether any fit failed.

    Returns
    -------
    pathlib.Path
        The path written. For CSV the metadata go to ``<stem>.metadata.json`` next to it.
    """
    path = Path(path)
    fmt = (format or path.suffix.lstrip(".")).lower()
    if fmt == "xls":
        fmt = "xlsx"
    if fmt not in ("csv", "parquet", "xlsx"):
        raise ValueError(
            f"cannot tell the format of {str(path)!r}; use a .csv, .parquet or .xlsx suffix "
            f"or pass format=."
        )
    if not path.parent.is_dir():
        raise FileNotFoundError(f"directory {str(path.parent)!r} does not exist.")
    meta = dict(metadata)
    _check_convergence(meta, convergence)
    meta = _jsonable(meta)
    meta_json = json.dumps(meta, indent=2, sort_keys=True)

    if fmt == "parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        def write(tmp: Path) -> None:
            tbl = pa.Table.from_pandas(table, preserve_index=False)
            merged = dict(tbl.schema.metadata or {})
            merged[_METADATA_KEY] = meta_json.encode()
            pq.write_table(tbl.replace_schema_metadata(merged), tmp)

        atomic_write(path, write)
    elif fmt == "csv":
        safe = escape_formulas(table)
        # The table is written first, to a temporary file; the sidecar is renamed into
        # place just before the table. An interruption while the table is written (the
        # long part) leaves the previous pair untouched; only a kill between the two
        # renames (microseconds) could pair a new sidecar with the old table.
        sidecar = _sidecar(path)

        def write_both(tmp: Path) -> None:
            # CRLF (RFC 4180) line ends: then a cell holding a lone "\r" is quoted too;
            # with "\n" line ends it is not, and every reader splits the row there.
            safe.to_csv(tmp, index=False, lineterminator="\r\n")
            atomic_write(sidecar, lambda t: t.write_text(meta_json, encoding="utf-8"))

        atomic_write(path, write_both)
    else:
        _check_excel_text(table)
        safe = escape_formulas(table)
        meta_rows = pd.DataFrame(
            {
                "key": list(meta),
                "value": [v if isinstance(v, str) else json.dumps(v) for v in meta.values()],
            }
        )
        _check_excel_text(meta_rows)
        meta_rows = escape_formulas(meta_rows)

        def write(tmp: Path) -> None:
            with pd.ExcelWriter(tmp, engine="openpyxl") as xw:
                safe.to_excel(xw, sheet_name="customers", index=False)
                meta_rows.to_excel(xw, sheet_name="metadata", index=False)

        atomic_write(path, write)
    return path


def read_metadata(path: str | os.PathLike) -> dict:
    """Read back the metadata :func:`export` stored with ``path``."""
    path = Path(path)
    fmt = path.suffix.lstrip(".").lower()
    if fmt == "parquet":
        import pyarrow.parquet as pq

        raw = pq.read_schema(path).metadata or {}
        return json.loads(raw[_METADATA_KEY])
    if fmt == "csv":
        return json.loads(_sidecar(path).read_text(encoding="utf-8"))
    if fmt == "xlsx":
        rows = pd.read_excel(path, sheet_name="metadata")
        out = {}
        for k, v in zip(rows["key"], rows["value"], strict=True):
            try:
                out[k] = json.loads(v)
            except (TypeError, ValueError):
                out[k] = v
        return out
    raise ValueError(f"unknown format of {str(path)!r}.")
