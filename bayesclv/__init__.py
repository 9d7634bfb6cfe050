"""bayesclv: hierarchical Bayesian customer-lifetime-value models fitted with PyMC."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("bayesclv")
except PackageNotFoundError:  # running from a source tree without installation
    __version__ = "0.0.0+unknown"

from bayesclv.data import (  # noqa: E402
    CleaningReport,
    RFMData,
    rfm_summary,
    round_times,
    validate_transactions,
)
from bayesclv.errors import (  # noqa: E402
    BayesCLVError,
    ConvergenceError,
    DataValidationError,
    ModelSpecificationError,
    SavedModelError,
)

__all__ = [
    "__version__",
    "RFMData",
    "CleaningReport",
    "rfm_summary",
    "round_times",
    "validate_transactions",
    "BayesCLVError",
    "DataValidationError",
    "ModelSpecificationError",
    "ConvergenceError",
    "SavedModelError",
]
