"""Saving and loading fits: a fit on disk, checked on the way back in.

Split from :mod:`bayesclv.fit` (saving a fit is not fitting); ``bayesclv.fit.save_fit``
and ``bayesclv.fit.load_fit`` re-export these.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import arviz as az
import numpy as np

from bayesclv.errors import SavedModelError
from bayesclv.transforms import NATURAL

__all__ = ["FORMAT_VERSION", "save_fit", "load_fit"]

FORMAT_VERSION = 1


def _version() -> str:
    from bayesclv import __version__

    return __version__


def _attr_json(idata: az.InferenceData, key: str):
    try:
        return json.loads(idata.attrs[key])
    except (KeyError, TypeError, json.JSONDecodeError) as exc:
        raise SavedModelError(
            f"This InferenceData has no valid bayesclv attribute '{key}'; was it made by "
            f"bayesclv.fit?"
        ) from exc


def _content_hash(idata: az.InferenceData) -> str:
    """SHA-256 of every numeric array in the fit (names, shapes and values as float64).

    HDF5 checksums its metadata but not the data: bytes zeroed inside a saved array
    read back as plausible numbers. This hash, stored in the file, catches that.
    """
    import hashlib

    h = hashlib.sha256()
    for group in sorted(idata.groups()):
        ds = idata[group]
        for name in sorted(ds.data_vars):
            values = np.asarray(ds[name].values)
            if values.dtype.kind not in "biuf":
                continue
            h.update(f"{group}/{name}{values.shape}".encode())
            h.update(np.ascontiguousarray(values, dtype=np.float64).tobytes())
    return h.hexdigest()


def save_fit(idata: az.InferenceData, path: str | Path) -> Path:
    """Write a fit to netCDF (no pickle), atomically: a failure leaves no partial file.

    The file carries a SHA-256 of the fit's arrays, checked by :func:`load_fit`.
    """
    import os
    import tempfile

    if "model" not in idata.attrs:
        raise SavedModelError("Only fits made by bayesclv.fit can be saved with save_fit.")
    path = Path(path)
    if not path.parent.is_dir():
        raise SavedModelError(f"cannot save to {path}: the folder {path.parent} does not exist.")
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    had = "bayesclv_sha256" in idata.attrs
    old = idata.attrs.get("bayesclv_sha256")
    try:
        idata.attrs["bayesclv_sha256"] = _content_hash(idata)
        idata.to_netcdf(tmp)
        os.replace(tmp, path)
    finally:
        if had:
            idata.attrs["bayesclv_sha256"] = old
        else:
            idata.attrs.pop("bayesclv_sha256", None)
        if os.path.exists(tmp):
            os.remove(tmp)
    return path


def load_fit(path: str | Path, *, expect_model: str | None = None) -> az.InferenceData:
    """Read a fit written by :func:`save_fit`, checking that it is complete and compatible.

    Raises :class:`~bayesclv.errors.SavedModelError` for a missing, truncated or
    corrupt file (including arrays whose content no longer matches the stored hash), a
    file from another package or file-format version, a fit of another model than
    ``expect_model``, and a fit whose parameters or segments are inconsistent. netCDF
    holds arrays and attributes only: nothing is unpickled.
    """
    path = Path(path)
    if not path.is_file():
        raise SavedModelError(f"No saved fit at {path}.")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            idata = az.from_netcdf(path)
            for group in idata.groups():
                idata[group].load()
    except Exception as exc:  # netCDF/HDF5 raise many types on corrupt files
        raise SavedModelError(
            f"{path} is not a readable bayesclv fit (truncated or corrupt netCDF?): {exc}"
        ) from exc
    attrs = idata.attrs
    kind = attrs.get("model")
    if kind not in NATURAL or "bayesclv_format" not in attrs or "posterior" not in idata.groups():
        raise SavedModelError(f"{path} was not written by bayesclv.save_fit (no model metadata).")
    try:
        file_format = int(attrs["bayesclv_format"])
    except (TypeError, ValueError):
        file_format = None
    if file_format != FORMAT_VERSION:
        raise SavedModelError(
            f"{path} uses bayesclv file format {attrs['bayesclv_format']} (written by "
            f"bayesclv {attrs.get('bayesclv_version')}); this is bayesclv {_version()} with "
            f"format {FORMAT_VERSION}. Refit, or load it with the version that wrote it."
        )
    if expect_model is not None and kind != expect_model:
        raise SavedModelError(f"{path} holds a {kind} fit, not {expect_model}.")
    stored = attrs.get("bayesclv_sha256")
    if stored is not None and stored != _content_hash(idata):
        raise SavedModelError(
            f"{path} is corrupt: its arrays do not match the checksum written with them "
            f"(damaged on disk or in transfer, or edited). Use a backup copy or refit."
        )
    missing = [p for p in NATURAL[kind] if p not in idata.posterior]
    if missing:
        raise SavedModelError(f"{path} lacks posterior variables {missing}: incomplete file.")
    try:
        names = json.loads(attrs["segment_names"])
    except (KeyError, TypeError, ValueError) as exc:
        raise SavedModelError(f"{path} has no valid segment names: incomplete file.") from exc
    for p in NATURAL[kind]:
        da = idata.posterior[p]
        if da.dims != ("chain", "draw", "segment") or da.sizes["segment"] != len(names):
            raise SavedModelError(
                f"{path}: posterior '{p}' has dims {dict(da.sizes)}, expected (chain, draw, "
                f"segment) with {len(names)} segments {names}: inconsistent file."
            )
    return idata
