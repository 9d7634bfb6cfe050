"""Built-in data sets, read from the files shipped inside the package.

The CDNOW files come from Fader & Hardie (see ``data/CDNOW_README.md`` for their
provenance, format and the calibration/holdout conventions). The donations table is
the discrete-time summary used with the BG/BB model.
"""

from __future__ import annotations

import gzip
from importlib import resources

import numpy as np
import pandas as pd

__all__ = [
    "load_cdnow",
    "load_cdnow_rfm",
    "load_cdnow_summary",
    "load_donations",
    "load_donations_rfm",
]

_PACKAGE = "bayesclv.datasets"


def _open(name: str):
    return resources.files(_PACKAGE).joinpath("data", name).open("rb")


def load_cdnow(which: str = "sample") -> pd.DataFrame:
    """The CDNOW transaction log: Q1-1997 new customers followed to 1998-06-30.

    Parameters
    ----------
    which : {"sample", "master"}
        ``"sample"``: the 1/10 sample, 2,357 customers, 6,919 records; customer ids are
        the sample ids 1..2357, the ``ID`` of the published summary files.
        ``"master"``: the full cohort, 23,570 customers, 69,659 records; ids are the
        5-digit master ids as integers.

    Returns
    -------
    DataFrame
        One row per raw record (records of one customer on one day are *not* merged;
        :func:`bayesclv.data.rfm_summary` does that), sorted as in the file, with
        columns ``customer_id`` (int64), ``date`` (datetime64), ``quantity`` (int64,
        number of CDs), ``amount`` (float64, US dollars) and ``acquisition_month``
        (``"1997-01"``, ``"1997-02"`` or ``"1997-03"``: month of the customer's first
        purchase, usable as a segment column).

    Examples
    --------
    >>> from bayesclv.data import rfm_summary
    >>> rfm = rfm_summary(load_cdnow(), segment_col="acquisition_month",
    ...                   calibration_end="1997-09-30", observation_end="1998-06-30")
    >>> rfm.segment_names
    ('1997-01', '1997-02', '1997-03')

    References
    ----------
    Fader, P. S., Hardie, B. G. S. and Lee, K. L. (2005). "Counting your customers"
    the easy way: an alternative to the Pareto/NBD model. Marketing Science 24(2).
    """
    if which == "sample":
        names = ["master_id", "customer_id", "date", "quantity", "amount"]
        header = None
        file = "CDNOW_sample.txt.gz"
    elif which == "master":
        names = ["customer_id", "date", "quantity", "amount"]
        header = 0
        file = "CDNOW_master.txt.gz"
    else:
        raise ValueError(f"which={which!r} is not a CDNOW file; use 'sample' or 'master'.")
    with _open(file) as raw, gzip.open(raw, "rt") as text:
        df = pd.read_csv(
            text,
            sep=r"\s+",
            header=header,
            names=names,
            dtype={"customer_id": np.int64, "date": str, "quantity": np.int64},
        )
    out = pd.DataFrame(
        {
            "customer_id": df["customer_id"].to_numpy(np.int64),
            "date": pd.to_datetime(df["date"], format="%Y%m%d").to_numpy("datetime64[ns]"),
            "quantity": df["quantity"].to_numpy(np.int64),
            "amount": df["amount"].to_numpy(np.float64),
        }
    )
    first = out.groupby("customer_id")["date"].transform("min")
    out["acquisition_month"] = first.dt.strftime("%Y-%m")
    return out


def load_cdnow_rfm(which: str = "sample", **options):
    """The CDNOW log summarised with the published conventions, ready for the models.

    39-week calibration (to 1997-09-30), 39-week holdout (to 1998-06-30), weeks as the
    time unit, acquisition month as the segment. ``options`` go to
    :func:`bayesclv.data.rfm_summary` (e.g. ``zero_amounts="keep"``).
    """
    from bayesclv.data import rfm_summary

    return rfm_summary(
        load_cdnow(which),
        customer_col="customer_id",
        date_col="date",
        amount_col="amount",
        segment_col="acquisition_month",
        time_unit="week",
        calibration_end="1997-09-30",
        observation_end="1998-06-30",
        **options,
    )


def load_cdnow_summary(*, with_spend: bool = True) -> pd.DataFrame:
    """The published 39-week calibration summary of the CDNOW sample (2,357 customers).

    Parameters
    ----------
    with_spend : bool
        ``True`` reads ``cdnow_customers_summary_with_transactions.csv`` (with the mean
        repeat spend ``zbar``); ``False`` reads ``cdnow_customers_summary.csv``.

    Returns
    -------
    DataFrame
        Columns ``customer_id`` (the file's ``ID``), ``frequency`` (``x``), ``recency``
        (``t_x``, weeks) and ``T`` (weeks), plus ``monetary_value`` (``zbar``, dollars)
        when ``with_spend``. Values are as published (2 decimals). For a model input:
        ``RFMData.from_frame(df, customer_id="customer_id")``.
    """
    if with_spend:
        file = "cdnow_customers_summary_with_transactions.csv"
        rename = {"ID": "customer_id", "x": "frequency", "t_x": "recency", "zbar": "monetary_value"}
    else:
        file = "cdnow_customers_summary.csv"
        rename = {"ID": "customer_id"}
    with _open(file) as fh:
        df = pd.read_csv(fh)
    return df.rename(columns=rename)


def load_donations() -> pd.DataFrame:
    """Repeat donations to a non-profit: the discrete-time (BG/BB) summary table.

    Returns
    -------
    DataFrame
        22 rows, one per distinct (frequency, recency) pattern over ``periods`` = 6
        annual opportunities, with ``weights`` = number of donors sharing the pattern
        (11,104 donors in all). Columns ``frequency``, ``recency``, ``periods``,
        ``weights`` (all int64).

    References
    ----------
    Fader, P. S., Hardie, B. G. S. and Shang, J. (2010). Customer-base analysis in a
    discrete-time noncontractual setting. Marketing Science 29(6).
    """
    with _open("donations.csv") as fh:
        return pd.read_csv(fh, dtype=np.int64)


def load_donations_rfm():
    """The donations summary as an :class:`~bayesclv.data.RFMData`, one row per donor.

    Each of the 22 patterns of :func:`load_donations` is repeated ``weights`` times
    (11,104 donors; the builders and ``fit_mle`` compress identical rows again, so this
    costs nothing). ``frequency`` = repeat donations ``x`` in the 6 annual opportunities
    1996-2001, ``recency`` = the opportunity of the last one ``t_x`` (0 if none),
    ``T`` = 6 opportunities, ``time_unit="year"``, one segment ``"all"``, no spend data
    (``monetary_value`` 0). Customer ids ``0..11103`` follow the table's row order. The
    data of the BG/BB model (``build_model("bgbb", ...)``): at the maximum likelihood
    alpha = 1.204, beta = 0.750, gamma = 0.657, delta = 2.783, LL = -33,225.6 (Fader,
    Hardie & Shang 2010).
    """
    from bayesclv.data import RFMData

    df = load_donations()
    rows = np.repeat(np.arange(len(df)), df["weights"].to_numpy())
    return RFMData(
        customer_id=np.arange(rows.size, dtype=np.int64),
        frequency=df["frequency"].to_numpy()[rows],
        recency=df["recency"].to_numpy(np.float64)[rows],
        T=df["periods"].to_numpy(np.float64)[rows],
        monetary_value=np.zeros(rows.size),
        segment=np.zeros(rows.size, dtype=np.int64),
        time_unit="year",
    )
