"""Saving and loading fits, and sealing a folder of them: a fit on disk is either exactly
what was saved or refused.

Split from :mod:`bayesclv.fit` (saving a fit is not fitting); ``bayesclv.fit.save_fit``
and ``bayesclv.fit.load_fit`` re-export these.

A saved fit (netCDF/HDF5, no pickle) carries a **manifest**: one SHA-256 per item, where
an item is each top-level attribute, each group's attributes, and each variable and
coordinate of each group (its values, dtype, dims, shape and attributes), and a SHA-256
of the manifest itself. :func:`load_fit` requires both, recomputes the manifest and
refuses any difference with :class:`~bayesclv.errors.SavedModelError` naming the items
(e.g. "attribute 'time_unit' differs; posterior coordinate 'segment' differs"). It also
refuses bytes put before the HDF5 signature or after the end the HDF5 superblock records
(a standalone file cannot hold its own file hash, so this is how appended or prepended
bytes are told apart from the fit).

A fit **folder** (what ``bayesclv fit`` writes) is sealed by :func:`seal_folder`: a
``manifest.json`` written last, with the SHA-256 and size of every file in it (the two
fits, ``customers.parquet``, ``settings.json``, the diagnostics), the facts every file
must agree on (run id, time unit, segment names, models, number of customers) and a
SHA-256 of itself. :func:`open_folder` checks all of it before anything is read.

What this protects against: damage, truncation, hand edits (h5py, a hex editor, a text
editor), files swapped between folders or runs. What it does not: someone who edits a
file and then recomputes every hash on purpose; that needs a signature with a secret key.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import tempfile
import warnings
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import arviz as az
import numpy as np

from bayesclv.errors import OutputError, SavedModelError
from bayesclv.transforms import NATURAL

__all__ = [
    "FORMAT_VERSION",
    "FOLDER_MANIFEST",
    "save_fit",
    "load_fit",
    "fit_manifest",
    "seal_folder",
    "open_folder",
    "file_sha256",
    "package_version",
    "attr_json",
]

#: 2: a manifest of every array and attribute (1: a hash of the numeric arrays only).
FORMAT_VERSION = 2
FOLDER_FORMAT = 1
FOLDER_MANIFEST = "manifest.json"
_MANIFEST_ATTR = "bayesclv_manifest"
_HASH_ATTR = "bayesclv_sha256"
_HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"


def package_version() -> str:
    """The installed bayesclv version, as written into saved fits."""
    from bayesclv import __version__

    return __version__


def attr_json(idata: az.InferenceData, key: str):
    """The JSON attribute ``key`` of a fit, decoded; a SavedModelError if it is not there."""
    try:
        return json.loads(idata.attrs[key])
    except (KeyError, TypeError, json.JSONDecodeError) as exc:
        raise SavedModelError(
            f"This InferenceData has no valid bayesclv attribute '{key}'; was it made by "
            f"bayesclv.fit?"
        ) from exc


# Old private names, kept until bayesclv/fit.py imports the public ones.
_version = package_version
_attr_json = attr_json


# --------------------------------------------------------------------------- manifest
def _canon(value: Any) -> Any:
    """An attribute value in the form it has after a netCDF round trip, as JSON.

    netCDF turns ints into numpy int64, lists into arrays (and a one-element list into
    a scalar), bools into ints; these forms hash alike, any other change does not.
    """
    if isinstance(value, np.ndarray):
        value = value.tolist()
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, bytes):
        value = value.decode("utf-8", "surrogateescape")
    if isinstance(value, list | tuple):
        items = [_canon(v) for v in value]
        return items[0] if len(items) == 1 else items
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, float) and not math.isfinite(value):
        return repr(value)
    if isinstance(value, int | float | str) or value is None:
        return value
    return str(value)


def _attrs_json(attrs: Mapping) -> bytes:
    return json.dumps(
        {str(k): _canon(v) for k, v in attrs.items()}, sort_keys=True, ensure_ascii=False
    ).encode("utf-8", "surrogateescape")


def _digest_array(da) -> str:
    """SHA-256 of one variable: dims, shape, dtype, attributes and every value exactly
    (raw bytes for numbers, booleans and dates; the text of each string)."""
    values = np.asarray(da.values)
    h = hashlib.sha256()
    h.update(json.dumps({"dims": list(da.dims), "shape": list(values.shape)}).encode())
    h.update(_attrs_json(da.attrs))
    kind = values.dtype.kind
    if kind in "biufcmM":
        native = values.astype(values.dtype.newbyteorder("="), copy=False)
        h.update(f"{kind}{native.dtype.itemsize}{native.dtype.str[1:]}".encode())
        h.update(np.ascontiguousarray(native).tobytes())
    else:
        text = [
            v.decode("utf-8", "surrogateescape") if isinstance(v, bytes) else str(v)
            for v in values.ravel().tolist()
        ]
        h.update(b"text")
        h.update(json.dumps(text, ensure_ascii=False).encode("utf-8", "surrogateescape"))
    return h.hexdigest()


def fit_manifest(idata: az.InferenceData) -> dict[str, str]:
    """One SHA-256 per item of a fit: ``attr:<key>``, ``<group>:attrs``,
    ``<group>/<variable>`` and ``<group>/coord:<name>`` (the hash attributes excluded)."""
    items = {"groups": hashlib.sha256(json.dumps(sorted(idata.groups())).encode()).hexdigest()}
    for key, value in idata.attrs.items():
        if key in (_MANIFEST_ATTR, _HASH_ATTR):
            continue
        items[f"attr:{key}"] = hashlib.sha256(_attrs_json({"v": value})).hexdigest()
    for group in idata.groups():
        ds = idata[group]
        items[f"{group}:attrs"] = hashlib.sha256(_attrs_json(ds.attrs)).hexdigest()
        for name in ds.data_vars:
            items[f"{group}/{name}"] = _digest_array(ds[name])
        for name in ds.coords:
            items[f"{group}/coord:{name}"] = _digest_array(ds[name])
    return items


def _manifest_hash(manifest: Mapping[str, str]) -> str:
    return hashlib.sha256(json.dumps(dict(manifest), sort_keys=True).encode()).hexdigest()


def _describe(key: str) -> str:
    if key == "groups":
        return "the list of groups"
    if key.startswith("attr:"):
        return f"attribute '{key[5:]}'"
    if key.endswith(":attrs"):
        return f"the attributes of group '{key[:-6]}'"
    group, _, name = key.partition("/")
    if name.startswith("coord:"):
        return f"{group} coordinate '{name[6:]}'"
    return f"{group} variable '{name}'"


def _differences(stored: Mapping[str, str], actual: Mapping[str, str]) -> list[str]:
    out = [f"{_describe(k)} differs" for k in stored if k in actual and stored[k] != actual[k]]
    out += [f"{_describe(k)} is missing" for k in stored if k not in actual]
    out += [f"{_describe(k)} was added" for k in actual if k not in stored]
    return out


def _listing(items: list[str], limit: int = 8) -> str:
    more = f" (and {len(items) - limit} more)" if len(items) > limit else ""
    return "; ".join(items[:limit]) + more


# --------------------------------------------------------------------------- HDF5 extent
def _hdf5_extent_problem(path: Path) -> str | None:
    """Bytes before the HDF5 signature or after the end of file its superblock records.

    HDF5 finds a superblock at byte 0, 512, 1024, ... and ignores trailing bytes, so a
    file with bytes put in front or appended opens as if nothing happened. Superblock
    layouts: HDF5 file format specification, section II.A (versions 0 to 3).
    """
    size = path.stat().st_size
    with open(path, "rb") as fh:
        head = fh.read(64)
        if not head.startswith(_HDF5_SIGNATURE):
            offset = 512
            while offset < min(size, 2**24):
                fh.seek(offset)
                if fh.read(8) == _HDF5_SIGNATURE:
                    return f"{offset} bytes were put in front of its HDF5 data"
                offset *= 2
            return "it does not start with the HDF5 signature (not a netCDF-4 file)"
    if len(head) < 48:
        return "it is shorter than an HDF5 superblock"
    version = head[8]
    if version in (0, 1):
        size_of_offsets = head[13]
        base_at = 24 if version == 0 else 28
        eof_at = base_at + 2 * size_of_offsets
    elif version in (2, 3):
        size_of_offsets = head[9]
        base_at = 12
        eof_at = base_at + 2 * size_of_offsets
    else:  # a future layout: let the HDF5 library judge
        return None
    if size_of_offsets != 8 or eof_at + 8 > len(head):
        return None
    base = int.from_bytes(head[base_at : base_at + 8], "little")
    end = base + int.from_bytes(head[eof_at : eof_at + 8], "little")
    if size < end:
        return f"it ends at byte {size:,} but its HDF5 data run to byte {end:,} (truncated)"
    if size > end:
        return f"{size - end:,} bytes were appended after the end of its HDF5 data"
    return None


# --------------------------------------------------------------------------- save / load
def _check_segments(idata: az.InferenceData, where: str) -> None:
    """The segment names live in one attribute; a ``segment`` coordinate must agree."""
    try:
        names = json.loads(idata.attrs["segment_names"])
    except (KeyError, TypeError, ValueError) as exc:
        raise SavedModelError(f"{where} has no valid segment names: incomplete file.") from exc
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise SavedModelError(f"{where}: attribute segment_names is not a list of names.")
    if len(set(names)) != len(names):
        raise SavedModelError(f"{where}: segment_names repeats a name: {names}.")
    for group in idata.groups():
        ds = idata[group]
        if "segment" in ds.coords:
            coord = [str(v) for v in ds["segment"].values.tolist()]
            if coord != names:
                raise SavedModelError(
                    f"{where}: the {group} coordinate 'segment' {coord} disagrees with the "
                    f"attribute segment_names {names}: inconsistent fit."
                )


def save_fit(idata: az.InferenceData, path: str | Path) -> Path:
    """Write a fit to netCDF (no pickle), atomically: a failure leaves no partial file.

    The file carries the fit's manifest (see the module docstring), checked by
    :func:`load_fit`; before the file is renamed into place it is read back and checked
    the same way, so a fit that would not load as saved is never written. The file gets
    the mode of any new file under the umask.

    Raises
    ------
    SavedModelError
        ``idata`` was not made by :func:`bayesclv.fit.fit`, or is inconsistent.
    OutputError
        The folder is missing, read-only or full (the previous file, if any, stays).
    """
    from bayesclv.export import new_file_mode

    if "model" not in idata.attrs:
        raise SavedModelError("Only fits made by bayesclv.fit can be saved with save_fit.")
    path = Path(path)
    if not path.parent.is_dir():
        raise OutputError(
            f"cannot save to {path}: the folder {path.parent} does not exist; create it first."
        )
    _check_segments(idata, "this fit")
    saved_attrs = dict(idata.attrs)
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as exc:
        raise OutputError(
            f"cannot save to {path} ({exc.strerror or exc}): the folder is read-only or not "
            f"yours. Choose another folder."
        ) from exc
    os.close(fd)
    try:
        for key in (_MANIFEST_ATTR, _HASH_ATTR):
            idata.attrs.pop(key, None)
        idata.attrs["bayesclv_format"] = FORMAT_VERSION
        manifest = fit_manifest(idata)
        idata.attrs[_MANIFEST_ATTR] = json.dumps(manifest, sort_keys=True)
        idata.attrs[_HASH_ATTR] = _manifest_hash(manifest)
        image = _netcdf_image(idata)
        try:
            with open(tmp, "wb") as fh:
                fh.write(image)
                fh.flush()
                os.fsync(fh.fileno())
        except OSError as exc:
            raise OutputError(
                f"could not write {path} ({exc}); nothing was replaced. Free some space or "
                f"check permissions, or save elsewhere."
            ) from exc
        back = fit_manifest(_read(Path(tmp)))
        if back != manifest:
            raise SavedModelError(
                f"saving to {path} would not round-trip: "
                f"{_listing(_differences(manifest, back))}. This is a bug in bayesclv; "
                f"please report it with the fit's attributes."
            )
        try:
            os.chmod(tmp, path.stat().st_mode & 0o7777 if path.exists() else new_file_mode())
            os.replace(tmp, path)
        except OSError as exc:
            raise OutputError(f"could not write {path} ({exc.strerror or exc}).") from exc
    finally:
        idata.attrs.clear()
        idata.attrs.update(saved_attrs)
        if os.path.exists(tmp):
            os.remove(tmp)
    return path


def _netcdf_image(idata: az.InferenceData) -> memoryview:
    """The bytes of ``idata.to_netcdf()``, made in memory.

    HDF5 crashes the process (a segmentation fault, no Python exception) when a write
    fails half-way, as on a full disk. So HDF5 writes only to memory here, and the file
    is written with Python's own I/O, where a full disk is an OSError. Same layout as
    ``InferenceData.to_netcdf``: the attributes in the root group, one netCDF group per
    InferenceData group, numeric variables zlib-compressed.
    """
    import io

    import xarray as xr

    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        xr.Dataset(attrs=dict(idata.attrs)).to_netcdf(buffer, mode="w", engine="h5netcdf")
        for group in idata.groups():
            ds = idata[group]
            encoding = {
                name: {"zlib": True}
                for name, var in ds.variables.items()
                if var.dtype.kind in "biufcS"
            }
            ds.to_netcdf(buffer, mode="a", group=group, engine="h5netcdf", encoding=encoding)
    return buffer.getbuffer()


def _read(path: Path) -> az.InferenceData:
    """Every group of a netCDF file, in memory, with the file closed again."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        idata = az.from_netcdf(path)
        for group in idata.groups():
            idata[group].load()
            idata[group].close()
    return idata


def load_fit(path: str | Path, *, expect_model: str | None = None) -> az.InferenceData:
    """Read a fit written by :func:`save_fit`: exactly what was saved, or an error.

    Raises :class:`~bayesclv.errors.SavedModelError` for a missing, truncated or corrupt
    file; bytes put before or after its HDF5 data; any array, coordinate or attribute
    that differs from the manifest written with it (each named), or a missing manifest;
    a file from another package or file-format version; a fit of another model than
    ``expect_model``; and a fit whose parameters or segments are inconsistent. netCDF
    holds arrays and attributes only: nothing is unpickled.
    """
    path = Path(path)
    if not path.is_file():
        raise SavedModelError(f"No saved fit at {path}.")
    problem = _hdf5_extent_problem(path)
    if problem is not None:
        raise SavedModelError(
            f"{path} is not a readable bayesclv fit (truncated or corrupt netCDF?): "
            f"{problem}. Use a backup copy or refit."
        )
    try:
        idata = _read(path)
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
    try:
        stored = json.loads(attrs[_MANIFEST_ATTR])
        stored_hash = attrs[_HASH_ATTR]
        if not isinstance(stored, dict):
            raise TypeError
    except (KeyError, TypeError, ValueError) as exc:
        raise SavedModelError(
            f"{path} has no valid integrity manifest (attributes {_MANIFEST_ATTR} and "
            f"{_HASH_ATTR}): it was edited after save_fit wrote it. Use a backup copy or "
            f"refit."
        ) from exc
    if stored_hash != _manifest_hash(stored):
        raise SavedModelError(
            f"{path} is corrupt: its manifest does not match the checksum written with it "
            f"(edited by hand?). Use a backup copy or refit."
        )
    changed = _differences(stored, fit_manifest(idata))
    if changed:
        raise SavedModelError(
            f"{path} is corrupt: it differs from the checksum manifest written with it "
            f"(damaged on disk or in transfer, or edited): {_listing(changed)}. Use a "
            f"backup copy or refit."
        )
    if expect_model is not None and kind != expect_model:
        raise SavedModelError(f"{path} holds a {kind} fit, not {expect_model}.")
    missing = [p for p in NATURAL[kind] if p not in idata.posterior]
    if missing:
        raise SavedModelError(f"{path} lacks posterior variables {missing}: incomplete file.")
    _check_segments(idata, str(path))
    names = json.loads(attrs["segment_names"])
    for p in NATURAL[kind]:
        da = idata.posterior[p]
        if da.dims != ("chain", "draw", "segment") or da.sizes["segment"] != len(names):
            raise SavedModelError(
                f"{path}: posterior '{p}' has dims {dict(da.sizes)}, expected (chain, draw, "
                f"segment) with {len(names)} segments {names}: inconsistent file."
            )
    return idata


# --------------------------------------------------------------------------- folders
def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(2**20), b""):
            h.update(block)
    return h.hexdigest()


def _folder_hash(manifest: Mapping[str, Any]) -> str:
    body = {k: v for k, v in manifest.items() if k != "manifest_sha256"}
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()


def seal_folder(folder: Path, files: Iterable[str], facts: Mapping[str, Any]) -> Path:
    """Write ``folder/manifest.json``: the SHA-256 and size of each of ``files``, the
    ``facts`` every file must agree with, and a SHA-256 of the manifest itself.

    Write it last: it is the folder's completeness marker (remove it first when a new
    run starts writing into the folder).
    """
    from bayesclv.export import atomic_write

    folder = Path(folder)
    manifest = {
        "bayesclv_fit_folder": FOLDER_FORMAT,
        "bayesclv_version": _version(),
        **dict(facts),
        "files": {
            name: {"sha256": file_sha256(folder / name), "bytes": (folder / name).stat().st_size}
            for name in sorted(files)
        },
    }
    manifest["manifest_sha256"] = _folder_hash(manifest)
    text = json.dumps(manifest, indent=2, sort_keys=True, allow_nan=False) + "\n"
    atomic_write(folder / FOLDER_MANIFEST, lambda tmp: tmp.write_text(text, encoding="utf-8"))
    return folder / FOLDER_MANIFEST


def open_folder(folder: Path, *, refit: str = "refit") -> dict[str, Any]:
    """Check a sealed folder against its ``manifest.json`` and return the manifest.

    Raises :class:`~bayesclv.errors.SavedModelError` when the manifest is missing (an
    interrupted or older run), edited or damaged, or when any file it lists is missing or
    differs (all such files are named). ``refit`` is the advice appended to each message.
    """
    folder = Path(folder)
    path = folder / FOLDER_MANIFEST
    if not path.is_file():
        raise SavedModelError(
            f"{folder} has no {FOLDER_MANIFEST}: the run that wrote this folder did not "
            f"finish (interrupted?), or the folder comes from an older bayesclv. {refit}."
        )
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise SavedModelError(f"{path} is unreadable ({exc}). {refit}.") from exc
    if (
        not isinstance(manifest, dict)
        or manifest.get("bayesclv_fit_folder") != FOLDER_FORMAT
        or not isinstance(manifest.get("files"), dict)
    ):
        raise SavedModelError(
            f"{path} is not a bayesclv fit-folder manifest (format {FOLDER_FORMAT}). {refit}."
        )
    if manifest.get("manifest_sha256") != _folder_hash(manifest):
        raise SavedModelError(
            f"{path} was edited: it does not match the checksum written with it. {refit}."
        )
    problems = []
    for name, entry in manifest["files"].items():
        file = folder / name
        if not file.is_file():
            problems.append(f"{name} is missing")
        elif file.stat().st_size != entry.get("bytes"):
            problems.append(
                f"{name} has {file.stat().st_size:,} bytes, the manifest {entry.get('bytes'):,}"
            )
        elif file_sha256(file) != entry.get("sha256"):
            problems.append(f"{name} differs from the manifest")
    if problems:
        raise SavedModelError(
            f"{folder} was changed after it was written (files edited, replaced or damaged): "
            f"{_listing(problems)}. {refit}."
        )
    return manifest
