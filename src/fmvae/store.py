"""HDF5 store: atomic writes and the provenance attributes every output file carries.

Every file is written under a temporary name in the destination folder and renamed into place
only after it has been closed, so a killed job never leaves a file that looks complete. Files are
written without HDF5 object timestamps so the same inputs give byte-identical files.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path

import h5py
import numpy as np

from fmvae import __version__


def _create_temp(folder: Path, prefix: str, suffix: str) -> Path:
    """Create a new empty file ``folder/prefix<random>suffix`` with mode 0o666 less the umask.

    ``tempfile.mkstemp`` creates its files 0o600 whatever the umask, and the rename keeps that mode,
    so no one else in a group could read the results. Here the kernel applies the umask (and any
    default ACL of the folder) at creation, as for a plain ``open(path, "w")``: under umask 022 a
    file is 0o644, under 002 0o664. The umask itself is never read or changed (``os.umask`` can
    only be read by setting it, which races with other threads).
    """
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_NOFOLLOW", 0)
    for _ in range(tempfile.TMP_MAX):
        tmp = folder / f"{prefix}{secrets.token_hex(6)}{suffix}"
        try:
            fd = os.open(tmp, flags, 0o666)
        except FileExistsError:
            continue
        os.close(fd)
        return tmp
    raise FileExistsError(f"no unused temporary name {prefix}*{suffix} in {folder}")


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it to ``path`` if the block succeeds.

    The file gets the mode the umask gives new files (see :func:`_create_temp`); writers that
    truncate the temporary file (``open(tmp, "w")``, ``h5py.File(tmp, "w")``, ``savefig``,
    ``torch.save``) keep it.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _create_temp(path.parent, prefix=f".{path.name}.", suffix=suffix or f".tmp{path.suffix}")
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
    with atomic_path(path) as tmp, h5py.File(tmp, "w", track_order=True) as f:
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
