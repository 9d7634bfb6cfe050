"""bayesclv: hierarchical Bayesian customer-lifetime-value models fitted with PyMC."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("bayesclv")
except PackageNotFoundError:  # running from a source tree without installation
    __version__ = "0.0.0+unknown"

from bayesclv.data import CleaningReport, RFMData, rfm_summary, validate_transactions  # noqa: E402
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
    "validate_transactions",
    "BayesCLVError",
    "DataValidationError",
    "ModelSpecificationError",
    "ConvergenceError",
    "SavedModelError",
]
