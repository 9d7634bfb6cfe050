"""Reading, validating and cleaning a transaction log.

:func:`validate_transactions` reads a DataFrame or a CSV, Excel or Parquet file, checks every
column (errors name the column, the first rows and the fix) and removes what the options
ask for, counting every row and customer it removes in a :class:`CleaningReport`.
Summarising the clean log is :mod:`bayesclv.log_summary`'s job.

The option tuples and the small helpers listed in ``__all__`` after the two entry points
are shared with :mod:`bayesclv.log_summary` and :mod:`bayesclv.bigdata` (the DuckDB path
offers the same cleaning and must word its errors the same way).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from types import MappingProxyType
from typing import Any

import numpy as np
import pandas as pd

from bayesclv.errors import DataValidationError, describe_rows

__all__ = [
    "CleaningReport",
    "validate_transactions",
    "NEGATIVE_OPTIONS",
    "ZERO_OPTIONS",
    "DUPLICATE_OPTIONS",
    "AFTER_END_OPTIONS",
    "CLEANING_REASONS",
    "REPORT_ATTR",
    "as_day",
    "check_option",
    "factorize_ids",
    "unique_pairs",
    "raise_for_rows",
    "raise_missing_columns",
]


#: Choices of :func:`validate_transactions` (and of :mod:`bayesclv.bigdata`, which
#: offers the same cleaning) for ``negative_amounts``, ``zero_amounts``,
#: ``duplicates`` and ``after_end``.
NEGATIVE_OPTIONS = ("error", "drop")
ZERO_OPTIONS = ("keep", "drop")
DUPLICATE_OPTIONS = ("keep", "drop")
AFTER_END_OPTIONS = ("error", "drop")
_MERGE_PERIODS = ("day", "week", "month", "none")

#: Reasons a whole customer can disappear during cleaning, in the order rows are
#: assigned to them (a row that is both negative and after the end counts as negative).
CLEANING_REASONS = ("negative_amount", "zero_amount", "after_observation_end", "exact_duplicate")

#: Key of ``DataFrame.attrs`` under which :func:`validate_transactions` leaves its report,
#: so that :func:`rfm_summary` does not validate the same frame twice.
REPORT_ATTR = "bayesclv_cleaning_report"


def _freeze_groups(groups: Mapping[str, Any] | None) -> Mapping[str, tuple]:
    return MappingProxyType({str(k): tuple(v) for k, v in (groups or {}).items()})


def _short_ids(ids: tuple, limit: int = 5) -> str:
    return describe_rows(ids, limit) if ids else "none"


@dataclass(frozen=True)
class CleaningReport:
    """What :func:`validate_transactions` (and :func:`rfm_summary`) removed, and why.

    Every row that goes in either comes out or is counted under exactly one reason, so
    ``rows_in == rows_out + negative_removed + zero_removed + after_end_removed +
    duplicates_removed``. Customers whose every row was removed are listed by id in
    ``customers_removed`` under the reason(s) of their rows.

    Parameters
    ----------
    rows_in, rows_out : int
        Transaction rows before and after cleaning.
    negative_removed, zero_removed, after_end_removed, duplicates_removed : int
        Rows removed because the amount was negative (returns, refunds), zero, the date
        was after ``observation_end``, or the row repeated an earlier row exactly
        (same customer, timestamp, amount and segment; the first copy is kept).
    duplicates_found : int
        Exact duplicate rows present in the input (kept when ``duplicates="keep"``).
    customers_in, customers_out : int
        Distinct customers before and after cleaning.
    customers_removed : mapping of str to tuple
        Reason -> ids of customers who lost all their rows. A customer whose rows were
        removed for several reasons is listed under the reasons joined by ``"+"``.
    excluded_from_summary : mapping of str to tuple
        Reason -> ids of customers present in the clean log but left out of the
        calibration summary by :func:`rfm_summary` (for example
        ``"first_purchase_after_calibration_end"``).
    notes : tuple of str
        Conversions applied (time zones, id parsing) and the options used.
    """

    rows_in: int
    rows_out: int
    negative_removed: int = 0
    zero_removed: int = 0
    after_end_removed: int = 0
    duplicates_removed: int = 0
    duplicates_found: int = 0
    customers_in: int = 0
    customers_out: int = 0
    customers_removed: Mapping[str, tuple] = field(default_factory=dict)
    excluded_from_summary: Mapping[str, tuple] = field(default_factory=dict)
    notes: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "customers_removed", _freeze_groups(self.customers_removed))
        object.__setattr__(
            self, "excluded_from_summary", _freeze_groups(self.excluded_from_summary)
        )
        object.__setattr__(self, "notes", tuple(str(n) for n in self.notes))

    # The report is immutable: copies may share it. pandas deep-copies ``DataFrame.attrs``
    # on every operation, so this also keeps a large report from being copied each time.
    def __copy__(self) -> CleaningReport:
        return self

    def __deepcopy__(self, memo: dict) -> CleaningReport:
        return self

    def __reduce__(self) -> tuple:
        # mappingproxy cannot be pickled; rebuild from plain dicts.
        state = {f.name: getattr(self, f.name) for f in fields(self)}
        for name in ("customers_removed", "excluded_from_summary"):
            state[name] = dict(state[name])
        return (_rebuild_report, (state,))

    @property
    def rows_removed(self) -> int:
        return self.rows_in - self.rows_out

    @property
    def customers_in_summary(self) -> int:
        """Customers left after cleaning and after the summary's exclusions."""
        return self.customers_out - sum(len(v) for v in self.excluded_from_summary.values())

    def to_dict(self) -> dict[str, Any]:
        """Plain, JSON-friendly dictionary (ids converted to Python scalars)."""

        def plain(ids: tuple) -> list:
            return [x.item() if isinstance(x, np.generic) else x for x in ids]

        return {
            "rows_in": self.rows_in,
            "rows_out": self.rows_out,
            "negative_removed": self.negative_removed,
            "zero_removed": self.zero_removed,
            "after_end_removed": self.after_end_removed,
            "duplicates_removed": self.duplicates_removed,
            "duplicates_found": self.duplicates_found,
            "customers_in": self.customers_in,
            "customers_out": self.customers_out,
            "customers_removed": {k: plain(v) for k, v in self.customers_removed.items()},
            "excluded_from_summary": {
                k: plain(v) for k, v in self.excluded_from_summary.items()
            },
            "notes": list(self.notes),
        }

    def __str__(self) -> str:
        lines = [
            "Cleaning report",
            f"  rows:      {self.rows_in:,} in -> {self.rows_out:,} out "
            f"({self.rows_removed:,} removed)",
            f"    negative amount:       {self.negative_removed:,}",
            f"    zero amount:           {self.zero_removed:,}",
            f"    after observation_end: {self.after_end_removed:,}",
            f"    exact duplicates:      {self.duplicates_removed:,} "
            f"(found {self.duplicates_found:,})",
            f"  customers: {self.customers_in:,} in -> {self.customers_out:,} out",
        ]
        for reason, ids in self.customers_removed.items():
            lines.append(f"    removed ({reason}): {len(ids):,} [{_short_ids(ids)}]")
        for reason, ids in self.excluded_from_summary.items():
            lines.append(
                f"    not in the summary ({reason}): {len(ids):,} [{_short_ids(ids)}]"
            )
        if self.excluded_from_summary:
            lines.append(f"  customers in the summary: {self.customers_in_summary:,}")
        lines.extend(f"  note: {n}" for n in self.notes)
        return "\n".join(lines)


def _rebuild_report(state: dict[str, Any]) -> CleaningReport:
    return CleaningReport(**state)


def raise_for_rows(
    col: str, problem: str, mask: np.ndarray, labels: pd.Index, fix: str
) -> None:
    """Raise a DataValidationError naming the column, the count, the first rows and a fix."""
    n = int(mask.sum())
    raise DataValidationError(
        f"column '{col}': {n:,} row{'s' if n != 1 else ''} {problem} "
        f"(first rows: {describe_rows(labels[mask])}). {fix}"
    )


def _decimal_comma_numbers(values: pd.Series, decimal: str) -> pd.Series:
    """Text amounts written with ``decimal`` (``","``) as floats: ``230,30`` -> 230.3,
    ``1.230,50`` -> 1230.5 (a ``.``, space or no-break space between groups of three
    digits is a thousands separator). Text of any other shape (``12.5``) is an error
    naming the rows, never a guess; missing cells stay missing for the amount check."""
    if decimal == "." or not (values.dtype == object or pd.api.types.is_string_dtype(values)):
        return values
    text = np.array(
        [v.strip() if isinstance(v, str) else v for v in values.tolist()], dtype=object
    )
    d = re.escape(decimal)
    pattern = re.compile(rf"[+-]?(?:\d{{1,3}}(?:[. \u00a0]\d{{3}})+|\d+)(?:{d}\d+)?")
    ok = np.array([isinstance(v, str) and pattern.fullmatch(v) is not None for v in text],
                  dtype=bool)
    text_cells = np.array([isinstance(v, str) for v in text], dtype=bool)
    if (text_cells & ~ok).any():
        bad = text_cells & ~ok
        raise_for_rows(
            str(values.name),
            f"are not amounts written with the decimal mark {decimal!r} (values: "
            f"{describe_rows(text[bad])})",
            bad,
            values.index,
            "Fix those cells, or pass the decimal mark the file uses (decimal='.').",
        )
    out = np.full(len(text), np.nan)
    out[ok] = [float(re.sub(r"[. \u00a0]", "", v).replace(decimal, ".")) for v in text[ok]]
    numeric = ~text_cells & pd.notna(text)
    out[numeric] = pd.to_numeric(pd.Series(text[numeric]), errors="coerce").to_numpy(float)
    return pd.Series(out, index=values.index, name=values.name)


def _separator_hint(header: list[str], sep: str) -> str:
    """When a CSV header read with ``sep`` is one column holding another separator."""
    if len(header) != 1:
        return ""
    for other, name in ((";", "semicolon"), ("\t", "tab"), ("|", "pipe"), (",", "comma")):
        if other != sep and other in str(header[0]):
            flag = "'\\t'" if other == "\t" else f"'{other}'"
            return (
                f" The header reads as one column {header[0]!r}: the file seems to use "
                f"{name}s between fields; pass sep={flag} (--sep {flag} on the command line)."
            )
    return ""


def _read_input(
    data: Any,
    columns: list[str],
    id_col: str,
    date_col: str,
    encoding: str = "utf-8",
    *,
    amount_col: str | None = None,
    sep: str | None = None,
    decimal: str = ".",
) -> pd.DataFrame:
    """A DataFrame from a DataFrame, a CSV, Excel (.xlsx) or Parquet path (no copy of a
    DataFrame's data). ``sep`` is the CSV field separator (default ``","``, tab for
    ``.tsv``); ``decimal`` the decimal mark of text amounts (``","`` for 230,30)."""
    if isinstance(data, pd.DataFrame):
        if amount_col is not None and decimal != "." and amount_col in data.columns:
            data = data.assign(**{amount_col: _decimal_comma_numbers(data[amount_col], decimal)})
        return data
    if not isinstance(data, str | Path):
        raise DataValidationError(
            f"transactions must be a pandas DataFrame or the path of a CSV, Excel or Parquet "
            f"file, got {type(data).__name__}."
        )
    path = Path(data)
    if not path.is_file():
        raise DataValidationError(f"transaction file not found: '{path}'. Check the path.")
    suffixes = [s.lower() for s in path.suffixes]
    frame = None
    try:
        if suffixes and suffixes[-1] in (".parquet", ".pq"):
            import pyarrow.parquet as pq

            names = pq.read_schema(path).names
            missing = [c for c in columns if c not in names]
            if missing:
                raise_missing_columns(missing, names)
            frame = pd.read_parquet(path, columns=columns)
        elif suffixes and suffixes[-1] in (".xlsx", ".xlsm"):
            # the first sheet; ids as text (as for CSV), dates as Excel stores them
            header = pd.read_excel(path, nrows=0).columns
            missing = [c for c in columns if c not in header]
            if missing:
                raise_missing_columns(missing, list(header))
            dtype = {id_col: str} if decimal == "." or amount_col is None else {
                id_col: str, amount_col: str}
            frame = pd.read_excel(path, usecols=columns, dtype=dtype)
            frame = _ids_to_int_if_canonical(frame, id_col)
        elif suffixes and suffixes[-1] == ".xls":
            raise DataValidationError(
                f"'{path}' is an old-style Excel .xls file, which is not read; save it as "
                f".xlsx (or .csv) in Excel and pass that file."
            )
        elif ".csv" in suffixes or ".txt" in suffixes or ".tsv" in suffixes:
            if sep is None:
                sep = "\t" if ".tsv" in suffixes else ","
            header = pd.read_csv(path, sep=sep, nrows=0, encoding=encoding).columns
            missing = [c for c in columns if c not in header]
            if missing:
                try:
                    raise_missing_columns(missing, list(header))
                except DataValidationError as exc:
                    raise DataValidationError(
                        str(exc) + _separator_hint(list(header), sep)
                    ) from None
            # Ids are read as text so that zero-padded ids ("007" vs "7") stay distinct;
            # ids that are all plain integers are turned back into integers below. Dates
            # are read as text and parsed by _parse_dates, as for a DataFrame. The pyarrow
            # parser, unlike pandas' C parser with usecols, refuses a row with more fields
            # than the header: "1,2024-01-01,1,50" (an unquoted decimal comma) would
            # otherwise be read silently as an amount of 1. With a decimal comma the
            # amounts are read as text (pyarrow would read "1.230" as 1.23) and converted
            # by _decimal_comma_numbers.
            dtype = {id_col: str, date_col: str}
            if decimal != "." and amount_col is not None:
                dtype[amount_col] = str
            frame = pd.read_csv(
                path,
                sep=sep,
                usecols=columns,
                dtype=dtype,
                encoding=encoding,
                engine="pyarrow",
            )
            frame = _ids_to_int_if_canonical(frame, id_col)
    except DataValidationError:
        raise
    except Exception as exc:  # a parser error from pandas/pyarrow: say which file
        text = str(exc)
        if isinstance(exc, UnicodeDecodeError) or "UTF8" in text or "utf-8" in text:
            raise DataValidationError(
                f"could not read transaction file '{path}' as {encoding} text ({text}). "
                f"Pass the file's encoding, e.g. encoding='latin-1' (or --encoding latin-1 "
                f"on the command line); Excel on Windows often writes 'cp1252'."
            ) from exc
        if "Expected" in text and "columns" in text:
            raise DataValidationError(
                f"could not read transaction file '{path}': a row has a different number of "
                f"fields than the header ({text}). Quote fields that contain the separator "
                f"(e.g. a decimal comma in an amount: or pass sep=';' and decimal=',', "
                f"--sep ';' --decimal ',' on the command line) or fix the row."
            ) from exc
        raise DataValidationError(
            f"could not read transaction file '{path}': {type(exc).__name__}: {exc}"
        ) from exc
    if frame is None:
        raise DataValidationError(
            f"cannot tell the format of '{path}' from its name; use a .csv (optionally .gz), "
            f".xlsx or .parquet file, or read it yourself and pass a DataFrame."
        )
    if amount_col is not None and decimal != "." and amount_col in frame.columns:
        frame[amount_col] = _decimal_comma_numbers(frame[amount_col], decimal)
    return frame


def _ids_to_int_if_canonical(frame: pd.DataFrame, col: str) -> pd.DataFrame:
    """Text ids to int64 only if every id is written exactly as Python prints its integer
    (no sign on zero, no leading zeros, no '+', no spaces, at most 18 digits).

    Then the conversion is one-to-one: two different ids can never become one number.
    '0' and '-0', or '01' and '1', are two customers, so a column holding either form
    stays text.
    """
    ids = frame[col]
    if ids.isna().any() or len(ids) == 0:
        return frame
    if ids.str.fullmatch(r"0|-?[1-9][0-9]{0,17}").all():
        frame[col] = ids.astype(np.int64)
    return frame


def raise_missing_columns(missing: list[str], existing: list[str]) -> None:
    """Raise a DataValidationError naming the missing columns and the ones there are."""
    raise DataValidationError(
        f"missing column{'s' if len(missing) > 1 else ''} {missing}; the data has columns "
        f"{list(existing)[:30]}. Pass the right names, e.g. customer_col='CustomerID', "
        f"date_col='InvoiceDate', amount_col='Revenue'."
    )


_OK_ID_KINDS = {"integer", "string", "floating", "categorical", "empty"}


def _check_labels(values: pd.Series, col: str, labels: pd.Index, what: str) -> None:
    """Missing values and mixed types in an id or segment column."""
    missing = values.isna().to_numpy()
    if missing.any():
        fix = (
            "Drop these rows or fill the ids before calling validate_transactions."
            if what == "id"
            else "Fill them with a segment name such as 'unknown'."
        )
        raise_for_rows(col, f"have a missing {what}", missing, labels, fix)
    if values.dtype != object:
        return
    kind = pd.api.types.infer_dtype(values, skipna=True)
    if kind in _OK_ID_KINDS or (what == "segment" and kind == "boolean"):
        return
    types = values.map(lambda v: type(v).__name__)
    counts = types.value_counts()
    if len(counts) > 1:
        minority = (types != counts.index[0]).to_numpy()
        mix = ", ".join(f"{t} ({c:,} rows)" for t, c in counts.items())
        raise_for_rows(
            col,
            f"have a {what} whose type differs from the rest: the column mixes {mix}, so "
            f"1 and '1' would be two different customers",
            minority,
            labels,
            f"Convert the column to one type, e.g. df['{col}'] = df['{col}'].astype(str).",
        )
    raise DataValidationError(
        f"column '{col}': {what}s of type {counts.index[0]} are not supported; use integers "
        f"or strings, e.g. df['{col}'] = df['{col}'].astype(str)."
    )


def _is_tz_aware(values: pd.Series) -> np.ndarray:
    """Per-row flag: does the raw value carry a time zone or UTC offset?"""
    if values.dtype == object:
        has_tz = np.array(values.map(lambda v: getattr(v, "tzinfo", None) is not None), bool)
        text = np.array(values.map(lambda v: isinstance(v, str)), dtype=bool)
    else:
        has_tz = np.zeros(len(values), dtype=bool)
        text = np.ones(len(values), dtype=bool)
    if text.any():
        pattern = r"(?:Z|[+-]\d{2}:?\d{2}|UTC|GMT)\s*$"
        as_text = values[text].astype(str).str.strip()
        has_tz[text] = as_text.str.contains(pattern, regex=True).to_numpy()
    return has_tz


#: Dates that fit in ``datetime64[ns]`` (1677-09-22 to 2262-04-11): outside, a year such
#: as 1500 or 3000 is almost surely a typo, and a cast to ns would wrap around silently.
_FIRST_NS_DAY = np.datetime64("1677-09-22", "D")
_LAST_NS_DAY = np.datetime64("2262-04-10", "D")


def _to_ns(parsed: Any, col: str, labels: pd.Index) -> np.ndarray:
    """Naive dates (any datetime64 unit) as datetime64[ns], refusing dates out of range.

    numpy's unit cast does not check for overflow: 1500-01-01 in microseconds cast to
    nanoseconds becomes a date in 2084 without a word.
    """
    arr = np.asarray(parsed)
    if arr.dtype.kind != "M":
        arr = pd.Series(parsed).to_numpy()
    day = arr.astype("datetime64[D]")
    out = (day < _FIRST_NS_DAY) | (day > _LAST_NS_DAY)
    if out.any():
        shown = describe_rows([str(d) for d in day[out]])
        raise_for_rows(
            col,
            f"have dates outside 1677-09-22..2262-04-10 (values: {shown}), most likely typos "
            f"such as a year 1500 or 3000",
            out,
            labels,
            "Fix or drop these rows.",
        )
    return arr.astype("datetime64[ns]")


def _ambiguous_day_month(values: pd.Series, parsed: pd.Series, col: str) -> None:
    """Refuse dates that read as well day first as month first, e.g. 03/04/2024.

    Without a format pandas infers one from the first date, month first when it can
    (03/04/2024 is 4 March). If every day in the column is 12 or less, the day-first
    reading is as valid and gives other dates: a day-first file read month first,
    silently. Year-first dates (ISO 8601, 2024-03-04) and month names are unambiguous.
    """
    import re

    from pandas.tseries.api import guess_datetime_format

    text = values[values.map(lambda v: isinstance(v, str))]
    if text.empty or not isinstance(parsed, pd.Series):
        return
    first = str(text.iloc[0]).strip()
    fmt = guess_datetime_format(first)
    if fmt is not None:
        if "%d" not in fmt or "%m" not in fmt:
            return
        year = min((fmt.find(y) for y in ("%Y", "%y") if y in fmt), default=-1)
        if 0 <= year < min(fmt.find("%m"), fmt.find("%d")):
            return
    elif re.match(r"\d{4}", first) or re.search(r"[A-Za-z]{3}", first):
        return
    day, month = parsed.dt.day, parsed.dt.month
    if day.max() > 12 or (day == month).all():
        return
    example = str(values[(day != month).to_numpy()].iloc[0]).strip()
    read = parsed[(day != month).to_numpy()].iloc[0]
    other = read.replace(day=read.month, month=read.day)
    day_first = (
        fmt.replace("%d", "\0").replace("%m", "%d").replace("\0", "%m") if fmt else "%d/%m/%y"
    )
    month_first = fmt or "%m/%d/%y"
    raise DataValidationError(
        f"column '{col}': the dates are ambiguous: every day is 12 or less, so "
        f"'{example}' is {read.day} {read:%B %Y} read month first and {other.day} "
        f"{other:%B %Y} read day first. Say how the dates are written: pass "
        f"date_format='{day_first}' (day first) or date_format='{month_first}' (month "
        f"first); on the command line --date-format '{day_first}'."
    )


def _parse_dates(
    values: pd.Series, col: str, labels: pd.Index, date_format: str | None, notes: list[str]
) -> np.ndarray:
    """Naive datetime64[ns] array; tz-aware input is converted to UTC (noted)."""
    missing = values.isna().to_numpy()
    if missing.any():
        raise_for_rows(col, "have a missing date", missing, labels, "Drop or fill these rows.")
    if isinstance(values.dtype, pd.PeriodDtype):
        values = values.dt.to_timestamp()
    if isinstance(values.dtype, pd.DatetimeTZDtype) or (
        isinstance(values.dtype, pd.ArrowDtype) and getattr(values.dtype.pyarrow_dtype, "tz", None)
    ):
        notes.append(f"'{col}' had time zone {values.dt.tz}; converted to UTC, then tz dropped.")
        return _to_ns(values.dt.tz_convert("UTC").dt.tz_localize(None), col, labels)
    if pd.api.types.is_datetime64_any_dtype(values.dtype):
        return _to_ns(values, col, labels)
    if pd.api.types.is_numeric_dtype(values.dtype) or pd.api.types.is_bool_dtype(values.dtype):
        if date_format is None:
            raise DataValidationError(
                f"column '{col}' holds numbers ({values.dtype}), not dates. If they are dates "
                f"written as digits pass date_format, e.g. date_format='%Y%m%d'; if they are "
                f"Unix timestamps convert them first with pd.to_datetime(df['{col}'], unit='s')."
            )
        if pd.api.types.is_float_dtype(values.dtype):
            frac = values.to_numpy(dtype=np.float64) % 1 != 0
            if frac.any():
                raise_for_rows(
                    col,
                    "are not whole numbers, so not dates written as digits",
                    frac,
                    labels,
                    "Fix these rows or convert the column yourself with pd.to_datetime.",
                )
        values = values.astype(np.int64).astype(str)
    mixed_offsets = False
    try:
        parsed = pd.to_datetime(values, format=date_format, errors="coerce")
    except (ValueError, TypeError) as exc:
        if "mixed time" not in str(exc).lower() and "mixed timezones" not in str(exc).lower():
            raise DataValidationError(
                f"column '{col}': dates could not be parsed ({exc}). Pass date_format, e.g. "
                f"date_format='%Y-%m-%d'."
            ) from exc
        # Several UTC offsets: legitimate for tz-aware data; convert all to UTC below,
        # but first make sure no naive date hides among them (it would be read as UTC).
        mixed_offsets = True
        parsed = pd.to_datetime(values, format=date_format, errors="coerce", utc=True)
    bad = parsed.isna().to_numpy()
    aware = None
    if bad.any():
        # pandas turns the odd one out of a tz-aware/naive mix, and of dates in several
        # time zones, into NaT: tell those apart from a date that is simply unreadable.
        aware = _is_tz_aware(values)
        if aware.all() and not mixed_offsets:  # all zoned, in several zones: use UTC
            mixed_offsets = True
            parsed = pd.to_datetime(values, format=date_format, errors="coerce", utc=True)
            bad = parsed.isna().to_numpy()
    if bad.any() or mixed_offsets:
        aware = _is_tz_aware(values) if aware is None else aware
        if aware.any() and not aware.all():
            minority = aware if aware.sum() <= (~aware).sum() else ~aware
            raise_for_rows(
                col,
                f"{'carry' if minority is aware else 'lack'} a time zone while "
                f"{int((~minority).sum()):,} other rows "
                f"{'do not' if minority is aware else 'do'} (a tz-aware/naive mix)",
                minority,
                labels,
                "Make them consistent: localise the naive dates (e.g. "
                "pd.to_datetime(s).dt.tz_localize('UTC')) or strip the offsets.",
            )
        if bad.any() and date_format is None:
            # pandas infers one format from the first value; ISO 8601 dates written with
            # and without seconds or offsets are still unambiguous (no tz mix: checked).
            try:
                retry = pd.to_datetime(
                    values, format="ISO8601", errors="coerce", utc=bool(aware.all())
                )
            except (ValueError, TypeError):
                retry = None
            if retry is not None and not retry.isna().any():
                parsed, bad = retry, np.zeros(len(values), dtype=bool)
        if bad.any():
            shown = describe_rows(values[bad].astype(str).to_numpy())
            raise_for_rows(
                col,
                f"could not be read as dates (values: {shown})",
                bad,
                labels,
                "Fix or drop these rows, or pass date_format (e.g. date_format='%d/%m/%Y', "
                "or date_format='mixed' to guess each row's format separately).",
            )
    if date_format is None:
        _ambiguous_day_month(values, parsed, col)
    if isinstance(parsed.dtype, pd.DatetimeTZDtype):
        notes.append(f"'{col}' had time zones/offsets; converted to UTC, then tz dropped.")
        parsed = parsed.dt.tz_convert("UTC").dt.tz_localize(None)
    return _to_ns(parsed, col, labels)


def _parse_amounts(values: pd.Series, col: str, labels: pd.Index) -> np.ndarray:
    if pd.api.types.is_bool_dtype(values.dtype):
        raise DataValidationError(
            f"column '{col}' is boolean; amounts must be numbers (money spent per row)."
        )
    kind = values.dtype.kind if isinstance(values.dtype, np.dtype) else ""
    if kind in "cmM" and kind:  # complex, timedelta, datetime: not money, never cast
        raise DataValidationError(
            f"column '{col}' holds {values.dtype} values; amounts must be real numbers "
            f"(money spent per row). Check that amount_col names the right column."
        )
    if values.dtype == object:
        # pd.to_numeric would read True as 1 and drop the imaginary part of 1+2j.
        odd = values.map(lambda v: isinstance(v, bool | np.bool_ | complex | np.complexfloating))
        odd = odd.to_numpy(dtype=bool)
        if odd.any():
            shown = describe_rows(values[odd].astype(str).to_numpy())
            raise_for_rows(
                col,
                f"are booleans or complex numbers, not amounts (values: {shown})",
                odd,
                labels,
                "Convert the column to real numbers.",
            )
    missing = values.isna().to_numpy()
    if missing.any():
        raise_for_rows(
            col,
            "have a missing (NaN) amount",
            missing,
            labels,
            "Fill them with the amount spent or drop those rows; rows are never dropped for you.",
        )
    if pd.api.types.is_numeric_dtype(values.dtype):
        amount = values.to_numpy(dtype=np.float64, na_value=np.nan)
    else:
        amount = pd.to_numeric(values, errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
        bad = np.isnan(amount)
        if bad.any():
            shown = describe_rows(values[bad].astype(str).to_numpy())
            raise_for_rows(
                col,
                f"are not numbers (values: {shown})",
                bad,
                labels,
                "If the amounts use a decimal comma (230,30), pass decimal=','; "
                "otherwise strip currency symbols and thousands separators first, e.g. "
                f"pd.to_numeric(df['{col}'].str.replace('[$,]', '', regex=True)) for "
                "$1,230.50.",
            )
    inf = ~np.isfinite(amount)
    if inf.any():
        raise_for_rows(col, "have an infinite amount", inf, labels, "Fix or drop these rows.")
    return amount + 0.0  # turns -0.0 into 0.0 so that duplicates compare equal


def as_day(value: Any, name: str) -> np.datetime64:
    """A date argument (str, date, Timestamp) as a day; it is an inclusive last day."""
    if isinstance(value, int | float | np.number | bool | np.bool_):
        raise DataValidationError(
            f"{name}={value!r} is a number, not a date; pass e.g. {name}='1997-09-30'."
        )
    try:
        ts = pd.Timestamp(value)
    except (ValueError, TypeError, OverflowError) as exc:
        raise DataValidationError(
            f"{name}={value!r} is not a date; pass e.g. {name}='1997-09-30'."
        ) from exc
    if ts is pd.NaT:
        raise DataValidationError(f"{name} is missing (NaT); pass a date such as '1997-09-30'.")
    if ts.tzinfo is not None:
        ts = ts.tz_convert("UTC").tz_localize(None)
    if ts != ts.normalize():
        raise DataValidationError(
            f"{name}={value!r} has a time of day; pass a date (the last day included, "
            f"e.g. {name}='{ts.date()}')."
        )
    return np.datetime64(ts.date(), "D")


def _mix64(x: np.ndarray) -> np.ndarray:
    """splitmix64 finaliser (Steele et al. 2014): a cheap, well-mixed 64-bit hash."""
    x = x ^ (x >> np.uint64(30))
    x = x * np.uint64(0xBF58476D1CE4E5B9)
    x = x ^ (x >> np.uint64(27))
    x = x * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


def _duplicated(columns: list[np.ndarray]) -> np.ndarray:
    """Rows equal (in every column) to an earlier row; the first copy is not flagged.

    ``DataFrame.duplicated`` costs seconds on 10M rows; hashing the 64-bit columns and
    sorting the hashes costs a fraction of that. Only rows whose hash collides are then
    compared exactly, so a hash collision can never remove a row.
    """
    n = columns[0].shape[0]
    h = np.zeros(n, dtype=np.uint64)
    for col in columns:
        h = _mix64(h * np.uint64(0x9E3779B97F4A7C15) + np.ascontiguousarray(col).view(np.uint64))
    s = np.sort(h)
    repeated = s[1:][s[1:] == s[:-1]]
    flags = np.zeros(n, dtype=bool)
    if repeated.size == 0:
        return flags
    candidates = np.flatnonzero(np.isin(h, repeated))
    frame = pd.DataFrame({i: col[candidates] for i, col in enumerate(columns)})
    flags[candidates[frame.duplicated(keep="first").to_numpy()]] = True
    return flags


def factorize_ids(ids: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """Codes 0..k-1 and sorted unique ids (``pd.factorize(sort=True)``, faster for ints).

    Integer ids in a compact range (the usual case) are coded through a lookup table in
    O(n); hash-based factorisation of 10M ids costs about a second.
    """
    values = ids.to_numpy() if pd.api.types.is_integer_dtype(ids.dtype) else None
    if values is not None and values.dtype.kind in "iu" and values.size:
        lo, hi = int(values.min()), int(values.max())
        span = hi - lo + 1
        if span <= max(4 * values.size, 1_000_000):
            offset = (values - lo).astype(np.intp)
            present = np.zeros(span, dtype=bool)
            present[offset] = True
            table = np.cumsum(present, dtype=np.int64) - 1
            return table[offset], (np.flatnonzero(present) + lo).astype(values.dtype)
    codes, uniques = pd.factorize(ids, sort=True)
    return codes.astype(np.int64), np.asarray(uniques)


def _sorted_unique(a: np.ndarray) -> np.ndarray:
    # np.unique is about 50x slower than sort + diff on 10M int64 in numpy 2.4.
    s = np.sort(a)
    if s.size == 0:
        return s
    keep = np.empty(s.shape, dtype=bool)
    keep[0] = True
    np.not_equal(s[1:], s[:-1], out=keep[1:])
    return s[keep]


def unique_pairs(first: np.ndarray, second: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Distinct (first, second) pairs of non-negative int64 arrays, sorted."""
    if first.size == 0:
        return first.copy(), second.copy()
    width = int(second.max()) + 1
    if (int(first.max()) + 1) * width < 2**62:
        key = _sorted_unique(first * np.int64(width) + second)
        return key // width, key % width
    order = np.lexsort((second, first))  # rare: codes too large to pack in one int64
    a, b = first[order], second[order]
    keep = np.ones(a.shape, dtype=bool)
    keep[1:] = (a[1:] != a[:-1]) | (b[1:] != b[:-1])
    return a[keep], b[keep]


def check_option(name: str, value: Any, options: tuple[str, ...], why: str) -> None:
    """Raise a DataValidationError unless ``value`` is one of ``options`` (``why`` is added)."""
    if value not in options:
        raise DataValidationError(f"{name}={value!r} is not valid; use one of {options}. {why}")


def validate_transactions(
    data: pd.DataFrame | str | Path,
    *,
    customer_col: str = "customer_id",
    date_col: str = "date",
    amount_col: str | None = "amount",
    segment_col: str | None = None,
    date_format: str | None = None,
    observation_end: Any = None,
    negative_amounts: str = "error",
    zero_amounts: str = "keep",
    duplicates: str = "keep",
    after_end: str = "error",
    encoding: str = "utf-8",
    sep: str | None = None,
    decimal: str = ".",
) -> tuple[pd.DataFrame, CleaningReport]:
    """Check a transaction log and return it with standard columns, plus what was removed.

    Parameters
    ----------
    data : DataFrame, str or Path
        One row per transaction, or the path of a CSV (``.csv``, ``.csv.gz``, ``.txt``)
        or Parquet (``.parquet``) file. In CSV files, ids are read as text and turned
        into integers only if every id is a plain integer (so ``"007"`` stays ``"007"``).
    customer_col, date_col, amount_col : str
        Names of the customer id, transaction date and amount columns.
        ``amount_col=None``: a log without amounts (e.g. visits or orders only): every
        row gets amount 1, so purchase models work and a spend model does not apply
        (the note in the report says so).
    segment_col : str, optional
        Column giving each customer's segment (one segment per customer).
    date_format : str, optional
        ``strftime`` format of text dates, e.g. ``"%Y%m%d"``; required for dates stored
        as numbers such as ``19970101``. Passed to :func:`pandas.to_datetime`.
    observation_end : date-like, optional
        Last day of observation (inclusive). Rows after it are an error, or are removed
        with ``after_end="drop"``.
    negative_amounts : {"error", "drop"}
        Negative amounts are usually returns or refunds. ``"error"`` (default) stops so
        you decide; ``"drop"`` removes those rows (counted). To net returns against
        their purchases instead, do so before calling this function.
    zero_amounts : {"keep", "drop"}
        Zero-amount rows (free items, vouchers) count as purchase occasions when kept.
        Spend models need a positive mean repeat spend, so a customer whose repeat
        purchases are all zero makes :func:`rfm_summary` stop; ``"drop"`` avoids that.
    duplicates : {"keep", "drop"}
        Exact duplicates (same customer, timestamp, amount and segment). They are
        always counted; ``"drop"`` keeps only the first copy. Kept duplicates on the
        same day are merged into one purchase by :func:`rfm_summary` anyway.
    after_end : {"error", "drop"}
        What to do with rows dated after ``observation_end``.
    encoding : str
        Text encoding of a CSV file (default UTF-8, with or without a byte-order mark),
        e.g. ``"latin-1"`` or ``"cp1252"``. Ignored for DataFrames and Parquet.
    sep : str, optional
        Field separator of a CSV file (default ``","``; tab for ``.tsv``), e.g. ``";"``
        as Excel writes CSV where the decimal mark is a comma.
    decimal : {".", ","}
        Decimal mark of amounts written as text: with ``","``, ``230,30`` is 230.3 and
        ``1.230,50`` is 1230.5; text of any other shape is reported, never guessed.

    Returns
    -------
    clean : DataFrame
        Columns ``customer_id``, ``date`` (naive ``datetime64[ns]``), ``amount``
        (float64) and ``segment`` when ``segment_col`` is given; the original index
        of the kept rows, in the original order.
    report : CleaningReport
        Counts of rows and customers in and out, removed customers by reason, notes.

    Raises
    ------
    DataValidationError
        Empty input; missing columns; missing or mixed-type ids; missing segments or a
        customer in more than one segment; missing, unreadable or tz-aware/naive mixed
        dates; missing, non-numeric or infinite amounts; negative amounts or rows
        after ``observation_end`` under the ``"error"`` policy; nothing left.

    Notes
    -----
    Time zones: tz-aware dates are converted to UTC and the zone is dropped (noted in
    the report). A mix of tz-aware and naive dates is an error: there is no safe guess.
    Each removed row is counted under the first matching reason in the order negative,
    zero, after ``observation_end``, duplicate.

    Examples
    --------
    >>> from bayesclv.datasets import load_cdnow
    >>> clean, report = validate_transactions(load_cdnow())
    >>> report.rows_out
    6919
    """
    check_option(
        "negative_amounts",
        negative_amounts,
        NEGATIVE_OPTIONS,
        "Negative amounts are usually returns: 'error' stops, 'drop' removes them.",
    )
    check_option("zero_amounts", zero_amounts, ZERO_OPTIONS, "")
    check_option("duplicates", duplicates, DUPLICATE_OPTIONS, "")
    check_option("after_end", after_end, AFTER_END_OPTIONS, "")
    check_option("decimal", decimal, (".", ","), "The decimal mark of the amounts.")
    if sep is not None and (not isinstance(sep, str) or len(sep) != 1):
        raise DataValidationError(
            f"sep={sep!r} is not valid; pass the one character between fields, e.g. ';'."
        )
    columns = [customer_col, date_col] + ([amount_col] if amount_col is not None else [])
    columns += [segment_col] if segment_col else []
    if len(set(columns)) != len(columns):
        raise DataValidationError(
            f"the customer, date, amount and segment columns must be different, got {columns}."
        )
    frame = _read_input(
        data, columns, customer_col, date_col, encoding,
        amount_col=amount_col, sep=sep, decimal=decimal,
    )
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise_missing_columns(missing, list(frame.columns))
    if frame.columns.has_duplicates:
        dup = sorted({str(c) for c in frame.columns[frame.columns.duplicated()]})
        raise DataValidationError(f"column names {dup} appear more than once; rename them.")
    n_in = len(frame)
    if n_in == 0:
        raise DataValidationError(
            "the transaction log is empty (0 rows); there is nothing to summarise."
        )
    labels = frame.index
    notes: list[str] = []

    ids = frame[customer_col]
    _check_labels(ids, customer_col, labels, "id")
    codes, uniques = factorize_ids(ids)
    n_customers = len(uniques)
    seg_values = None
    if segment_col is not None:
        seg_values = frame[segment_col]
        _check_labels(seg_values, segment_col, labels, "segment")
        seg_codes = pd.factorize(seg_values)[0].astype(np.int64)
        cust, _ = unique_pairs(codes, seg_codes)
        per_customer = np.bincount(cust, minlength=n_customers)
        if (per_customer > 1).any():
            several = per_customer[codes] > 1
            bad_ids = describe_rows(np.asarray(uniques[per_customer > 1]).tolist())
            raise_for_rows(
                segment_col,
                f"belong to {int((per_customer > 1).sum()):,} customers that appear in more "
                f"than one segment (customers {bad_ids})",
                several,
                labels,
                "A customer must have one segment: take e.g. the segment of the first "
                "purchase, df[seg] = df.groupby(customer)[seg].transform('first').",
            )
    dates = _parse_dates(frame[date_col], date_col, labels, date_format, notes)
    if amount_col is None:
        amount = np.ones(n_in)
        notes.append(
            "no amount column: every transaction counted with amount 1 (purchase models "
            "only; a spend model does not apply)."
        )
    else:
        amount = _parse_amounts(frame[amount_col], amount_col, labels)

    # One reason per removed row (0 = kept), assigned in the documented order.
    reason = np.zeros(n_in, dtype=np.int8)
    negative = amount < 0
    if negative.any():
        if negative_amounts == "error":
            raise_for_rows(
                amount_col,
                "have a negative amount (returns or refunds?)",
                negative,
                labels,
                "Choose: negative_amounts='drop' removes them (counted in the report), or "
                "net each return against its purchase before validating.",
            )
        reason[negative] = 1
    zero = amount == 0
    if zero_amounts == "drop":
        reason[zero & (reason == 0)] = 2
    if observation_end is not None:
        end = as_day(observation_end, "observation_end")
        after = dates.astype("datetime64[D]") > end
        if after.any():
            if after_end == "error":
                raise_for_rows(
                    date_col,
                    f"are dated after observation_end={str(end)}",
                    after,
                    labels,
                    "Pass a later observation_end, or after_end='drop' to remove them "
                    "(counted in the report).",
                )
            reason[after & (reason == 0)] = 3
    keep = reason == 0
    dup_cols = [codes, dates.view(np.int64), amount]
    dup_all = _duplicated(dup_cols)  # segment is a function of the customer: not needed
    if duplicates == "drop":
        idx = np.flatnonzero(keep)
        dup_kept = _duplicated([c[idx] for c in dup_cols])
        reason[idx[dup_kept]] = 4
        keep = reason == 0

    rows_out = int(keep.sum())
    kept_per_customer = np.bincount(codes[keep], minlength=n_customers)
    lost = kept_per_customer == 0
    removed_groups: dict[str, tuple] = {}
    if lost.any():
        lost_rows = lost[codes]
        bits = np.zeros(n_customers, dtype=np.int64)
        np.bitwise_or.at(bits, codes[lost_rows], np.left_shift(1, reason[lost_rows] - 1))
        for combo in np.unique(bits[lost]):
            name = "+".join(r for i, r in enumerate(CLEANING_REASONS) if combo & (1 << i))
            removed_groups[name] = tuple(np.asarray(uniques[lost & (bits == combo)]).tolist())
    if rows_out == 0:
        raise DataValidationError(
            f"no transactions left after cleaning: all {n_in:,} rows were removed "
            f"(negative {int((reason == 1).sum()):,}, zero {int((reason == 2).sum()):,}, "
            f"after observation_end {int((reason == 3).sum()):,}). Check the options."
        )

    # Take from the pandas arrays (not .to_numpy()) so Arrow strings and categoricals
    # keep their type without a round trip through Python objects.
    everything = bool(keep.all())
    rows = None if everything else np.flatnonzero(keep)

    def take(values: pd.Series) -> Any:
        return values.array if everything else values.array.take(rows)

    out = {
        "customer_id": take(ids),
        "date": dates if everything else dates[rows],
        "amount": amount if everything else amount[rows],
    }
    if seg_values is not None:
        out["segment"] = take(seg_values)
    clean = pd.DataFrame(out, index=labels if everything else labels[rows], copy=False)
    notes.append(
        f"options: negative_amounts={negative_amounts!r}, zero_amounts={zero_amounts!r}, "
        f"duplicates={duplicates!r}, after_end={after_end!r}, "
        f"observation_end={observation_end if observation_end is None else str(end)!r}"
    )
    report = CleaningReport(
        rows_in=n_in,
        rows_out=rows_out,
        negative_removed=int((reason == 1).sum()),
        zero_removed=int((reason == 2).sum()),
        after_end_removed=int((reason == 3).sum()),
        duplicates_removed=int((reason == 4).sum()),
        duplicates_found=int(dup_all.sum()),
        customers_in=n_customers,
        customers_out=int((~lost).sum()),
        customers_removed=removed_groups,
        notes=tuple(notes),
    )
    clean.attrs[REPORT_ATTR] = report
    return clean, report
