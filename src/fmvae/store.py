"""HDF5 store: atomic writes and the provenance attributes every output file carries.

Every file is written under a temporary name in the destination folder and renamed into place
only after it has been closed, so a killed job never leaves a file that looks complete. Files are
written without HDF5 object timestamps so the same inputs give byte-identical files.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from pathlib import Path
from typing import Iterator, Mapping

import h5py
import numpy as np

from fmvae import __version__


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it to ``path`` if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix or f".tmp{path.suffix}", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp)
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


@contextlib.contextmanager
def write_h5(path: str | os.PathLike, attrs: Mapping | None = None) -> Iterator[h5py.File]:
    """Open a new HDF5 file for writing, atomically; ``attrs`` become file attributes.

    The file always gets ``package_version``; dicts in ``attrs`` are stored as JSON strings.
    """
    with atomic_path(path) as tmp:
        with h5py.File(tmp, "w", track_order=True) as f:
            set_attrs(f, {"package_version": __version__, **(attrs or {})})
            yield f


def set_attrs(obj: h5py.HLObject, attrs: Mapping) -> None:
    for key, value in attrs.items():
        if isinstance(value, (dict, list, tuple)) and not _is_numeric_sequence(value):
            value = json.dumps(value, sort_keys=True)
        elif value is None:
            value = ""
        obj.attrs[key] = value


def _is_numeric_sequence(value) -> bool:
    try:
        return np.asarray(value).dtype.kind in "biuf"
    except (ValueError, TypeError):
        return False


def write_arrays(group: h5py.Group, arrays: Mapping[str, np.ndarray]) -> None:
    """Write arrays as datasets (no timestamps, so output bytes depend on content only)."""
    for name, array in arrays.items():
        group.create_dataset(name, data=np.asarray(array), track_times=False)


def read_attrs(obj: h5py.HLObject) -> dict:
    """Attributes as Python values; JSON strings written by :func:`set_attrs` are decoded."""
    out = {}
    for key, value in obj.attrs.items():
        if isinstance(value, bytes):
            value = value.decode()
        if isinstance(value, str) and value[:1] in "[{":
            try:
                value = json.loads(value)
            except json.JSONDecodeError:
                pass
        elif isinstance(value, np.generic):
            value = value.item()
        out[key] = value
    return out


def read_split(path: str | os.PathLike, split: str) -> dict[str, np.ndarray]:
    """All arrays of one split group (``train``, ``val`` or ``test``) of a data file."""
    with h5py.File(path, "r") as f:
        return {name: f[split][name][()] for name in f[split]}
