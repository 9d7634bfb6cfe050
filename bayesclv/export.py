"""Export: tables written to CSV, Parquet or Excel with the run's metadata.

:func:`export` writes atomically (a temporary file in the target folder, then a rename)
with the run's metadata alongside:

* Parquet: JSON in the schema metadata under the key ``b"bayesclv"``;
* Excel: a second sheet ``metadata`` with ``key``/``value`` rows (JSON values);
  :func:`export_workbook` writes the analyst's workbook instead: several formatted
  sheets (currency and percentage formats, frozen header, filters), an ``about`` sheet
  that says every setting in words, and the same ``metadata`` rows on a hidden sheet;
* CSV: a sidecar ``<name>.metadata.json`` next to the file (a sidecar rather than a
  commented header, so the CSV stays readable by every tool without options).

What a written file can be trusted for:

* **Nothing is replaced by surprise.** An existing file (or CSV sidecar) is replaced only
  with ``overwrite=True`` (``--force`` on the command line). Even then a sidecar is only
  replaced if :func:`export` wrote it for that very file (it carries a mark naming its
  data file, in whitespace after the JSON): a foreign ``<name>.metadata.json`` is kept.
  Every check (format, folder, existing files, Excel's row limit, a writable folder) is
  made by :func:`check_export_target` before any work, so a caller such as the CLI can
  make it before spending minutes scoring.
* **Permissions** are those of any new file, ``0o666`` less the umask (``0o644`` under
  umask 022); a replaced file keeps its mode.
* **Ids are text**: ``customer_id`` is written as text in Parquet and Excel (Excel stores
  numbers as doubles, so 1234567890123456789 would become 1234567890123457024), and so is
  any other integer column beyond 2**53 in Excel; a CSV holds integer ids digit for
  digit. In Excel a negative integer id, as text, starts with '-' and so gets the
  apostrophe below.
* **Strict JSON**: a NaN or infinite metadata value is written as ``null`` and listed under
  ``"nonfinite_as_null"`` (``{"path.to.key": "NaN"}``), so any JSON parser reads the file.
* **No formulas**: string cells that a spreadsheet would run as a formula (first
  character ``=``, ``+``, ``-``, ``@``, tab or carriage return, after Unicode NFKC
  normalisation, so the fullwidth ``＝`` and its kin count too) get an apostrophe in front
  in CSV and Excel (OWASP "CSV injection"). Parquet is typed data, written as is.
* Excel holds at most 1,048,575 rows below the header: a larger table is refused before
  any work (export it to CSV or Parquet, which have no such limit).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import tempfile
import unicodedata
import warnings
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from bayesclv.errors import OutputError

__all__ = [
    "export",
    "export_workbook",
    "currency_format",
    "read_metadata",
    "check_export_target",
    "export_targets",
    "atomic_write",
    "escape_formulas",
    "XLSX_MAX_ROWS",
    "FORMULA_PREFIXES",
    "METADATA_KEY",
]

#: First characters that make a spreadsheet read a text cell as a formula
#: (:func:`escape_formulas` prefixes such cells with a quote).
FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r")
#: Key of the Parquet file metadata entry holding the run's metadata (JSON).
METADATA_KEY = b"bayesclv"
_FORMULA_PREFIXES = FORMULA_PREFIXES  # old private names, used in this module
_METADATA_KEY = METADATA_KEY
#: Rows an .xlsx sheet holds below its header row (1,048,576 rows in all).
XLSX_MAX_ROWS = 1_048_575
_FORMATS = ("csv", "parquet", "xlsx")
_NONFINITE_KEY = "nonfinite_as_null"


# --------------------------------------------------------------------------- files
def new_file_mode() -> int:
    """The mode ``open()`` gives a new file: ``0o666`` less the process umask.

    ``tempfile.mkstemp`` makes files ``0o600`` (right while a file is written, wrong for
    a result colleagues must read). Linux reports the umask in /proc without changing
    it; elsewhere it is read by setting and restoring it.
    """
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return 0o666 & ~int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    old = os.umask(0o022)
    os.umask(old)
    return 0o666 & ~old


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # pragma: no cover - Windows cannot open a folder
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover - some file systems refuse
        pass
    finally:
        os.close(fd)


def _place(tmp: Path, path: Path, overwrite: bool) -> None:
    """Rename ``tmp`` to ``path``; without ``overwrite``, never replace an existing file
    (``os.link`` fails if the target exists, atomically, where a check then a rename
    could lose a file written in between)."""
    if overwrite:
        os.replace(tmp, path)
        return
    try:
        os.link(tmp, path)
    except FileExistsError:
        raise OutputError(
            f"{path} appeared while it was written; nothing was replaced. Pass "
            f"overwrite=True (--force on the command line) to replace it."
        ) from None
    except OSError:  # a file system without hard links (FAT, some network shares)
        if path.exists():
            raise OutputError(
                f"{path} exists; pass overwrite=True (--force) to replace it."
            ) from None
        os.replace(tmp, path)
        return
    tmp.unlink()


def atomic_write(path: Path, writer: Callable[[Path], None], *, overwrite: bool = True) -> None:
    """Call ``writer(tmp)`` on a temporary file next to ``path``, then rename it.

    On any exception the temporary file is removed and ``path`` is untouched (a reader
    never sees a partial file: the rename is atomic on POSIX and Windows). The file gets
    the mode of any new file under the umask (a replaced file keeps its mode). With
    ``overwrite=False`` an existing ``path`` is never replaced (:class:`OutputError`).
    """
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        writer(tmp_path)
        with open(tmp_path, "rb+") as fh:
            os.fsync(fh.fileno())
        try:
            mode = path.stat().st_mode & 0o7777
        except OSError:
            mode = new_file_mode()
        os.chmod(tmp_path, mode)
        _place(tmp_path, path, overwrite)
        _fsync_dir(path.parent)
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise


def _sidecar(path: Path) -> Path:
    """``customers.csv`` -> ``customers.metadata.json`` (same directory)."""
    return path.with_name(path.stem + ".metadata.json")


# The sidecar must hold exactly the metadata (readers, and tests, compare it with what
# they passed), so its ownership cannot be a JSON key. JSON allows only whitespace after
# the value, so the mark is there: a last line of 48 spaces and tabs spelling a hash of
# the data file's name and of the JSON text. A file a person or another tool wrote never
# ends so; a sidecar edited by hand loses its mark and is then kept, the safe side.
_MARK_BITS = 48


def _mark(data_name: str, body: str) -> str:
    digest = hashlib.sha256(f"bayesclv sidecar of {data_name}\n{body}".encode()).digest()
    bits = int.from_bytes(digest[: _MARK_BITS // 8], "big")
    return "".join("\t" if bits >> i & 1 else " " for i in range(_MARK_BITS - 1, -1, -1))


def _sidecar_text(meta: Mapping[str, Any], data_name: str) -> str:
    body = json.dumps(meta, indent=2, sort_keys=True, allow_nan=False) + "\n"
    return body + _mark(data_name, body) + "\n"


def _is_our_sidecar(path: Path, data_name: str) -> bool:
    """Did :func:`export` write this file, as the sidecar of ``data_name``?"""
    try:
        if path.stat().st_size > 64 * 2**20:
            return False
        text = path.read_text(encoding="utf-8")
    except (OSError, ValueError):
        return False
    n = _MARK_BITS + 1
    body, mark = text[:-n], text[-n:-1]
    return text.endswith("\n") and len(text) > n and mark == _mark(data_name, body)


def _format_of(path: Path, format: str | None) -> str:
    fmt = (format or path.suffix.lstrip(".")).lower()
    if fmt == "xls":
        fmt = "xlsx"
    if fmt not in _FORMATS:
        raise OutputError(
            f"cannot tell the format of {str(path)!r}; use a .csv, .parquet or .xlsx suffix "
            f"or pass format=."
        )
    return fmt


def export_targets(path: str | os.PathLike, format: str | None = None) -> list[Path]:
    """Every file :func:`export` writes for ``path``: the file, and a CSV's sidecar."""
    path = Path(path)
    fmt = _format_of(path, format)
    return [path, _sidecar(path)] if fmt == "csv" else [path]


def check_export_target(
    path: str | os.PathLike,
    *,
    format: str | None = None,
    overwrite: bool = False,
    n_rows: int | None = None,
) -> str:
    """Make every check :func:`export` makes before writing, and return the format.

    Raises :class:`~bayesclv.errors.OutputError` (a ``ValueError``) naming the fix when
    the format is unknown, the folder is missing or not writable, a target exists and
    ``overwrite`` is false, a CSV sidecar exists that export did not write, or ``n_rows``
    do not fit in an .xlsx sheet. Cheap: call it before the work that makes the table.
    """
    path = Path(path)
    fmt = _format_of(path, format)
    folder = path.parent
    if not folder.is_dir():
        raise OutputError(
            f"cannot write {path}: the folder {str(folder)!r} does not exist. Create it "
            f"first (mkdir -p {folder}) or choose another path."
        )
    if fmt == "xlsx" and n_rows is not None and n_rows > XLSX_MAX_ROWS:
        raise OutputError(
            f"{n_rows:,} rows do not fit in an .xlsx sheet (at most {XLSX_MAX_ROWS:,} rows "
            f"below the header). Export to .csv or .parquet instead."
        )
    for target in export_targets(path, fmt):
        if target.is_dir():
            raise OutputError(f"cannot write {target}: it is a folder. Choose a file name.")
        if not (target.exists() or target.is_symlink()):
            continue
        if not overwrite:
            raise OutputError(
                f"{target} exists; nothing was written. Pass overwrite=True (--force on "
                f"the command line) to replace it, or choose another name."
            )
        if target != path and not _is_our_sidecar(target, path.name):
            raise OutputError(
                f"{target} exists and was not written by bayesclv (it is not an export "
                f"metadata sidecar), so it is not replaced, even with overwrite=True "
                f"(--force). Move it away, or choose another name for {path.name}."
            )
    try:  # the only sure test of a writable folder (permissions, read-only mounts, root)
        fd, probe = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=folder)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise OutputError(
            f"cannot write in {str(folder)!r} ({exc.strerror or exc}): read-only or no "
            f"permission. Choose another folder."
        ) from exc
    return fmt


# --------------------------------------------------------------------------- cells
def _escape_cell(value: Any) -> Any:
    # NFKC first: '＝' (fullwidth), '﹦' (small) or '⁼' (superscript) are '=' to a
    # spreadsheet that normalises input. The first few characters are enough (NFKC
    # works per character here) and keep this cheap on long text.
    if isinstance(value, str) and (
        value.startswith(_FORMULA_PREFIXES)
        or unicodedata.normalize("NFKC", value[:4]).startswith(_FORMULA_PREFIXES)
    ):
        return "'" + value
    return value


def _is_text(s: pd.Series) -> bool:
    return (
        s.dtype == object
        or pd.api.types.is_string_dtype(s)
        or isinstance(s.dtype, pd.CategoricalDtype)
    )


def escape_formulas(table: pd.DataFrame) -> pd.DataFrame:
    """Copy of ``table`` with formula-like string cells (and column names) escaped."""
    out = table.copy()
    for col in out.columns:
        if _is_text(out[col]):
            out[col] = out[col].astype(object).map(_escape_cell)
    out.columns = [_escape_cell(str(c)) for c in out.columns]
    return out


def _as_text(s: pd.Series) -> pd.Series:
    """Each value as its exact text (``str`` of an integer is exact at any size)."""
    return s.astype(object).map(lambda v: v if isinstance(v, str) else str(v))


def _ids_as_text(table: pd.DataFrame, fmt: str) -> pd.DataFrame:
    """``customer_id`` as text in Parquet and Excel (a CSV is text already: integers are
    written digit for digit); in Excel, which stores every number as a double, also every
    integer column with values beyond 2**53 (not exact as doubles)."""
    if fmt == "csv":
        return table
    out = None
    for col in table.columns:
        s = table[col]
        to_text = col == "customer_id" and not pd.api.types.is_string_dtype(s)
        if not to_text and fmt == "xlsx" and pd.api.types.is_integer_dtype(s) and len(s):
            to_text = bool(np.abs(s.to_numpy(dtype=np.float64)).max() > 2.0**53)
        if to_text:
            out = table.copy() if out is None else out
            out[col] = _as_text(s)
    return table if out is None else out


#: Control characters that the xlsx format cannot store (as openpyxl's
#: ILLEGAL_CHARACTERS_RE): writing one fails deep inside openpyxl.
_XLSX_ILLEGAL = r"[\x00-\x08\x0b\x0c\x0e-\x1f]"


def _check_excel_text(table: pd.DataFrame) -> None:
    """Refuse text an xlsx file cannot hold, naming the column and rows (never altered:
    a changed customer id would no longer match its customer)."""
    from bayesclv.errors import DataValidationError, describe_rows

    for col in table.columns:
        s = table[col]
        if not _is_text(s):
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


# --------------------------------------------------------------------------- metadata
def _jsonable(value: Any, notes: dict | None = None, where: str = "") -> Any:
    """``value`` as strict JSON: NaN and infinities become ``None``, listed in ``notes``
    as ``{"path.to.key": "NaN"}``; numpy values as Python ones; other objects as str."""
    if isinstance(value, Mapping):
        return {
            str(k): _jsonable(v, notes, f"{where}.{k}" if where else str(k))
            for k, v in value.items()
        }
    if isinstance(value, np.ndarray):
        value = value.tolist()
    if isinstance(value, list | tuple):
        return [_jsonable(v, notes, f"{where}[{i}]") for i, v in enumerate(value)]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        if notes is not None:
            notes[where] = (
                "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")
            )
        return None
    if isinstance(value, float | int | str | bool) or value is None:
        return value
    return str(value)


def strict_json(meta: Mapping[str, Any]) -> dict:
    """Metadata as strict-JSON-ready values, with the note on non-finite values."""
    notes: dict[str, str] = {}
    out = _jsonable(dict(meta), notes)
    if notes:
        out[_NONFINITE_KEY] = notes
    return out


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
    overwrite: bool = False,
) -> Path:
    """Write a table with its run metadata, atomically.

    Parameters
    ----------
    table : pandas.DataFrame
        E.g. :func:`bayesclv.summary.customer_table` or
        :func:`bayesclv.summary.totals_table`.
    path : path-like
        Target file; its folder must exist.
    metadata : mapping
        Models, priors, horizon, discounting, interval, convergence verdict, package
        version... Stored as strict JSON: non-JSON values as ``str``; NaN and infinities
        as ``null``, listed under ``"nonfinite_as_null"``.
    format : {"csv", "parquet", "xlsx"}, optional
        Default: from the suffix of ``path``.
    convergence : ConvergenceReport, str or mapping of them, optional
        The fit(s) behind the table (e.g. ``{"purchase": report, "spend": report}``);
        their verdicts are stored as ``metadata["convergence_verdict"]`` (a verdict may
        also be given there directly). If any is ``"fail"`` or ``"warning"`` a
        :class:`~bayesclv.diagnostics.ConvergenceWarning` is issued, and
        ``metadata["convergence_failed"]`` records whether any fit failed.
    overwrite : bool, default False
        Replace an existing file (and a CSV's sidecar, if export wrote it). Without it
        an existing target is an :class:`~bayesclv.errors.OutputError`.

    Returns
    -------
    pathlib.Path
        The path written. For CSV the metadata go to ``<stem>.metadata.json`` next to it.

    Raises
    ------
    bayesclv.errors.OutputError
        Before any work, for every problem :func:`check_export_target` finds; and when
        the write fails (disk full, ...), with the previous file (if any) untouched.
    """
    path = Path(path)
    fmt = check_export_target(path, format=format, overwrite=overwrite, n_rows=len(table))
    meta = dict(metadata)
    _check_convergence(meta, convergence)
    meta = strict_json(meta)
    meta_json = json.dumps(meta, indent=2, sort_keys=True, allow_nan=False)
    table = _ids_as_text(table, fmt)
    try:
        _write(table, path, fmt, meta, meta_json, overwrite)
    except OSError as exc:
        raise OutputError(
            f"could not write {path} ({exc.strerror or exc}); nothing was replaced. Free "
            f"some space or check permissions, or write elsewhere."
        ) from exc
    return path


def _write(table, path: Path, fmt: str, meta: dict, meta_json: str, overwrite: bool) -> None:
    if fmt == "parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        def write(tmp: Path) -> None:
            tbl = pa.Table.from_pandas(table, preserve_index=False)
            merged = dict(tbl.schema.metadata or {})
            merged[_METADATA_KEY] = meta_json.encode()
            pq.write_table(tbl.replace_schema_metadata(merged), tmp)

        atomic_write(path, write, overwrite=overwrite)
    elif fmt == "csv":
        safe = escape_formulas(table)
        # The table is written first, to a temporary file; the sidecar is renamed into
        # place just before the table. An interruption while the table is written (the
        # long part) leaves the previous pair untouched; only a kill between the two
        # renames (microseconds) could pair a new sidecar with the old table.
        sidecar = _sidecar(path)
        placed = []

        def write_both(tmp: Path) -> None:
            # CRLF (RFC 4180) line ends: then a cell holding a lone "\r" is quoted too;
            # with "\n" line ends it is not, and every reader splits the row there.
            safe.to_csv(tmp, index=False, lineterminator="\r\n")
            text = _sidecar_text(meta, path.name)
            atomic_write(
                sidecar, lambda t: t.write_text(text, encoding="utf-8"), overwrite=overwrite
            )
            placed.append(sidecar)

        try:
            atomic_write(path, write_both, overwrite=overwrite)
        except BaseException:
            if placed and not overwrite:  # the sidecar is new and ours: no orphan left
                sidecar.unlink(missing_ok=True)
            raise
    else:
        _check_excel_text(table)
        safe = escape_formulas(table)
        meta_rows = _meta_rows(meta)

        def write(tmp: Path) -> None:
            with pd.ExcelWriter(tmp, engine="openpyxl") as xw:
                safe.to_excel(xw, sheet_name="customers", index=False)
                meta_rows.to_excel(xw, sheet_name="metadata", index=False)

        atomic_write(path, write, overwrite=overwrite)


def currency_format(currency: str | None, decimals: int = 2) -> str:
    """An Excel number format for money: ``"EUR"`` -> ``#,##0.00 "EUR"``, ``"$"`` ->
    ``"$"#,##0.00`` (a symbol before, a code after), none -> ``#,##0.00``."""
    body = "#,##0" + ("." + "0" * decimals if decimals else "")
    if not currency:
        return body
    text = str(currency).replace('"', "")
    return f'{body} "{text}"' if text.isalpha() and len(text) > 1 else f'"{text}"{body}'


def _meta_rows(meta: Mapping[str, Any]) -> pd.DataFrame:
    rows = pd.DataFrame(
        {
            "key": list(meta),
            "value": [
                v if isinstance(v, str) else json.dumps(v, allow_nan=False)
                for v in meta.values()
            ],
        }
    )
    _check_excel_text(rows)
    return escape_formulas(rows)


def export_workbook(
    sheets: Mapping[str, pd.DataFrame],
    path: str | os.PathLike,
    *,
    metadata: Mapping[str, Any],
    about: pd.DataFrame | None = None,
    number_formats: Mapping[str, Mapping[str, str]] | None = None,
    convergence: Any = None,
    overwrite: bool = False,
) -> Path:
    """One analyst workbook (.xlsx): formatted data sheets, an ``about`` sheet, metadata.

    Parameters
    ----------
    sheets : mapping {sheet name: DataFrame}
        The data sheets, in order (e.g. ``{"customers": ..., "segments": ...}``). Each
        gets a bold, frozen header row (and frozen first column), a filter on every
        column, widths that fit the header, and the formats of ``number_formats``.
    about : DataFrame, optional
        Rows of text (e.g. columns ``item`` and ``value``) for a sheet ``about``, written
        after the data sheets with wrapped text: the settings in words.
    number_formats : mapping {sheet: {column: Excel number format}}
        E.g. ``{"customers": {"clv_mean": currency_format("EUR"), "p_alive": "0.0%"}}``.
    metadata, convergence, overwrite
        As :func:`export`; the metadata go to a hidden sheet ``metadata`` (what
        :func:`read_metadata` reads), the same JSON rows :func:`export` writes.

    Ids are text and formula-like text is escaped as in :func:`export`; every check is
    made before anything is written, and the file is written atomically.
    """
    path = Path(path)
    names = list(sheets)
    reserved = {"about", "metadata"} & set(names)
    if reserved or not names:
        raise OutputError(
            f"export_workbook: give one or more data sheets, none named {sorted(reserved)} "
            f"(those names are the workbook's own)."
        )
    n_rows = max(len(t) for t in sheets.values())
    check_export_target(path, format="xlsx", overwrite=overwrite, n_rows=n_rows)
    meta = dict(metadata)
    _check_convergence(meta, convergence)
    meta = strict_json(meta)
    prepared = {}
    for name, table in sheets.items():
        table = _ids_as_text(table, "xlsx")
        _check_excel_text(table)
        prepared[name] = (escape_formulas(table), table)
    about_safe = None
    if about is not None:
        _check_excel_text(about)
        about_safe = escape_formulas(about)
    meta_rows = _meta_rows(meta)
    formats = {k: dict(v) for k, v in (number_formats or {}).items()}

    def write(tmp: Path) -> None:
        from openpyxl.styles import Alignment, Font
        from openpyxl.utils import get_column_letter

        with pd.ExcelWriter(tmp, engine="openpyxl") as xw:
            for name, (safe, raw) in prepared.items():
                safe.to_excel(xw, sheet_name=name, index=False)
                ws = xw.sheets[name]
                ws.freeze_panes = "B2"
                if len(safe.columns):
                    last = get_column_letter(len(safe.columns))
                    ws.auto_filter.ref = f"A1:{last}{len(safe) + 1}"
                for j, col in enumerate(raw.columns, start=1):
                    letter = get_column_letter(j)
                    ws.cell(row=1, column=j).font = Font(bold=True)
                    fmt = formats.get(name, {}).get(col)
                    if fmt is not None:
                        for (cell,) in ws.iter_rows(min_row=2, min_col=j, max_col=j):
                            cell.number_format = fmt
                    sample = safe[safe.columns[j - 1]].head(200).astype(str)
                    width = max([len(str(safe.columns[j - 1]))] + sample.str.len().tolist())
                    ws.column_dimensions[letter].width = min(max(10, width + 2), 48)
            if about_safe is not None:
                about_safe.to_excel(xw, sheet_name="about", index=False)
                ws = xw.sheets["about"]
                ws.freeze_panes = "A2"
                widths = [34] + [110] * (len(about_safe.columns) - 1)
                for j, w in enumerate(widths, start=1):
                    ws.column_dimensions[get_column_letter(j)].width = w
                    ws.cell(row=1, column=j).font = Font(bold=True)
                for row in ws.iter_rows(min_row=2):
                    for cell in row:
                        cell.alignment = Alignment(wrap_text=True, vertical="top")
            meta_rows.to_excel(xw, sheet_name="metadata", index=False)
            xw.sheets["metadata"].sheet_state = "hidden"

    try:
        atomic_write(path, write, overwrite=overwrite)
    except OSError as exc:
        raise OutputError(
            f"could not write {path} ({exc.strerror or exc}); nothing was replaced. Free "
            f"some space or check permissions, or write elsewhere."
        ) from exc
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
        rows = pd.read_excel(path, sheet_name="metadata", dtype=str, keep_default_na=False)
        out = {}
        for k, v in zip(rows["key"], rows["value"], strict=True):
            if isinstance(v, str) and v.startswith("'") and _escape_cell(v[1:]) != v[1:]:
                v = v[1:]  # an escaped formula-like text value
            try:
                out[k] = json.loads(v)
            except (TypeError, ValueError):
                out[k] = v
        return out
    raise ValueError(f"unknown format of {str(path)!r}.")
