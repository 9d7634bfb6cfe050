"""Export: tables written to CSV, Parquet or Excel with the run's metadata.

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
import os
import tempfile
import warnings
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

__all__ = ["export", "read_metadata", "atomic_write", "escape_formulas"]

_FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r")
_METADATA_KEY = b"bayesclv"


def _escape_cell(value: Any) -> Any:
    if isinstance(value, str) and value.startswith(_FORMULA_PREFIXES):
        return "'" + value
    return value


def escape_formulas(table: pd.DataFrame) -> pd.DataFrame:
    """Copy of ``table`` with formula-like string cells (and column names) escaped."""
    out = table.copy()
    for col in out.columns:
        s = out[col]
        if (
            s.dtype == object
            or pd.api.types.is_string_dtype(s)
            or isinstance(s.dtype, pd.CategoricalDtype)
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
