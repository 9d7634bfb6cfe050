"""The transaction data layer, in one import.

Three modules, one job each:

* :mod:`bayesclv.transactions` - reading, validating and cleaning a transaction log
  (:func:`validate_transactions`, :class:`CleaningReport`);
* :mod:`bayesclv.log_summary` - the clean log -> one row per customer
  (:func:`rfm_summary`);
* :mod:`bayesclv.rfm` - that per-customer table, :class:`RFMData`, the one input every
  model builder takes (with :data:`DAYS_PER_UNIT` and :func:`round_times`).

``from bayesclv.data import ...`` keeps working for every name below.
"""

from __future__ import annotations

from bayesclv.log_summary import rfm_summary
from bayesclv.rfm import DAYS_PER_UNIT, RFMData, round_times
from bayesclv.transactions import CleaningReport, validate_transactions

__all__ = [
    "DAYS_PER_UNIT",
    "RFMData",
    "CleaningReport",
    "validate_transactions",
    "rfm_summary",
    "round_times",
]
