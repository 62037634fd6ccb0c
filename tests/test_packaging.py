"""Packaging: outputs honour the umask."""

from __future__ import annotations

import contextlib
import os
import stat

import h5py
import numpy as np
import pytest

from fmvae import store


@contextlib.contextmanager
def _umask(mask: int):
    old = os.umask(mask)
    try:
        yield
    finally:
        os.umask(old)


@pytest.mark.parametrize("mask, mode", [(0o022, 0o644), (0o002, 0o664), (0o077, 0o600)])
def test_atomic_writes_honour_the_umask(tmp_path, mask, mode):
    with _umask(mask):
        with store.atomic_path(tmp_path / "out" / "table.csv") as tmp:
            tmp.write_text("a,b\n1,2\n")
        with store.write_h5(tmp_path / "out" / "data.h5") as f:
            f["x"] = np.arange(3)
    assert stat.S_IMODE((tmp_path / "out" / "table.csv").stat().st_mode) == mode
    assert stat.S_IMODE((tmp_path / "out" / "data.h5").stat().st_mode) == mode
    assert (tmp_path / "out" / "table.csv").read_text() == "a,b\n1,2\n"
    with h5py.File(tmp_path / "out" / "data.h5", "r") as f:
        assert list(f["x"][:]) == [0, 1, 2]
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["data.h5", "table.csv"]  # no temporary left


def test_atomic_path_leaves_nothing_when_the_block_fails(tmp_path):
    with pytest.raises(RuntimeError), store.atomic_path(tmp_path / "table.csv") as tmp:
        tmp.write_text("partial")
        raise RuntimeError("killed")
    assert list(tmp_path.iterdir()) == []
