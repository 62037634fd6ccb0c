"""The three real data sets: download, extract, verify, parse, split and standardise.

Sources, member names and hashes are in the config (``data.real``); see shared/data/uci/README.md.
The archive's own checksum is not stable (UCI rebuilds its zips), so the SHA-256 of the extracted
member is verified. A URL may point at a zip archive (searched by member name, nested zips too) or
directly at the data file.

Licences: the UCI sets are CC BY 4.0 (Antal & Hajdu 2014; Lim, Loh & Shih 2000 / Dua & Graff 2017);
KEEL asks for a citation of Alcalá-Fdez et al. (2011). The prepared files carry this in ``citation``.
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
import urllib.error
import urllib.request
import zipfile
from pathlib import Path

import numpy as np

from fmvae import store
from fmvae.config import derive_seed, to_json
from fmvae.data.simulate import SPLITS, observed_mask

log = logging.getLogger(__name__)

CITATIONS = {
    "diabetic_retinopathy": "Antal, B. & Hajdu, A. (2014). An ensemble-based system for automatic screening of "
                            "diabetic retinopathy. Knowledge-Based Systems 60. UCI ML Repository (CC BY 4.0).",
    "contraceptive": "Lim, T.-S., Loh, W.-Y. & Shih, Y.-S. (2000); Dua, D. & Graff, C. (2017). UCI Machine Learning "
                     "Repository, Contraceptive Method Choice (CC BY 4.0).",
    "titanic": "Alcalá-Fdez, J. et al. (2011). KEEL Data-Mining Software Tool: Data Set Repository. Journal of "
               "Multiple-Valued Logic and Soft Computing 17. Titanic data (Simonoff 1997).",
}


class DataSourceError(RuntimeError):
    """A real data file could not be obtained or verified; the message says how to place it by hand."""


def sha256_of(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _source_error(spec: dict, out_path, problem: str) -> DataSourceError:
    return DataSourceError(
        f"Could not obtain {spec['member']!r} for data set {spec['dataset']!r}.\n"
        f"  URL: {spec['url']}\n"
        f"  Problem: {problem}\n"
        f"  Expected SHA-256 of {spec['member']}: {spec['sha256']}\n"
        f"  To place it by hand: download {spec['url']} on a machine with access, extract {spec['member']} "
        f"(if it is an archive) and copy it to {out_path}; the workflow checks its SHA-256 and goes on.")


def extract_member(payload: bytes, member: str, depth: int = 0) -> bytes | None:
    """The member named ``member`` (by base name) from a zip payload, searching nested zips; a
    payload that is not a zip is taken to be the member itself."""
    if not zipfile.is_zipfile(io.BytesIO(payload)):
        return payload if depth == 0 else None
    with zipfile.ZipFile(io.BytesIO(payload)) as archive:
        names = [n for n in archive.namelist() if not n.endswith("/")]
        for name in names:
            if os.path.basename(name) == member:
                return archive.read(name)
        if depth < 2:
            for name in names:
                if name.lower().endswith(".zip"):
                    found = extract_member(archive.read(name), member, depth + 1)
                    if found is not None:
                        return found
    return None


def fetch(spec: dict, out_path: str | os.PathLike) -> None:
    """Download ``spec['url']``, extract ``spec['member']``, verify it and write it to ``out_path``.

    A file already at ``out_path`` (placed by hand) is verified and kept. Nothing is written unless
    the member's SHA-256 matches.
    """
    out_path = Path(out_path)
    if out_path.exists():
        if sha256_of(out_path.read_bytes()) == spec["sha256"]:
            log.info("%s: %s already present and verified", spec["dataset"], out_path)
            return
        raise _source_error(spec, out_path, f"the file already at {out_path} has SHA-256 "
                            f"{sha256_of(out_path.read_bytes())}; remove or replace it")
    log.info("%s: downloading %s", spec["dataset"], spec["url"])
    try:
        with urllib.request.urlopen(spec["url"], timeout=spec["timeout_s"]) as response:
            payload = response.read()
    except (urllib.error.URLError, OSError, ValueError) as err:
        raise _source_error(spec, out_path, f"download failed ({err})") from None
    data = extract_member(payload, spec["member"])
    if data is None:
        raise _source_error(spec, out_path, f"the archive holds no file named {spec['member']!r}")
    digest = sha256_of(data)
    if digest != spec["sha256"]:
        raise _source_error(spec, out_path, f"SHA-256 mismatch: got {digest}")
    with store.atomic_path(out_path) as tmp:
        tmp.write_bytes(data)
    log.info("%s: wrote %s (%d bytes, SHA-256 verified)", spec["dataset"], out_path, len(data))


def _rows(lines) -> np.ndarray:
    rows = [[float(v) for v in line.split(",")] for line in lines if line.strip()]
    return np.array(rows, dtype=np.float64)


def parse_arff(text: str):
    """Numeric ARFF; the last attribute is the label. Returns (features, labels, feature names)."""
    names, data_lines, in_data = [], [], False
    for line in text.splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith("%"):
            continue
        lower = stripped.lower()
        if in_data:
            data_lines.append(stripped)
        elif lower.startswith("@attribute"):
            names.append(stripped.split()[1].strip("'\""))
        elif lower.startswith("@data"):
            in_data = True
    table = _rows(data_lines)
    return table[:, :-1], table[:, -1], names[:-1]


def parse_csv(text: str):
    """Headerless numeric CSV; the last column is the label."""
    table = _rows(text.splitlines())
    return table[:, :-1], table[:, -1], [f"x{i}" for i in range(table.shape[1] - 1)]


def parse_keel(text: str):
    """KEEL .dat: '@' header lines (``@inputs`` names the features), then CSV rows; the last column
    is the output."""
    names, data_lines = [], []
    for line in text.splitlines():
        stripped = line.strip()
        if stripped.lower().startswith("@inputs"):
            names = [n.strip() for n in stripped[len("@inputs"):].split(",")]
        elif stripped and not stripped.startswith("@"):
            data_lines.append(stripped)
    table = _rows(data_lines)
    return table[:, :-1], table[:, -1], names or [f"x{i}" for i in range(table.shape[1] - 1)]


PARSERS = {"arff": parse_arff, "csv": parse_csv, "keel": parse_keel}


def load_raw(spec: dict, raw_path) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[str]]:
    """Verify and parse the raw file: features, class index 0..C−1, the raw label values, names."""
    data = Path(raw_path).read_bytes()
    if sha256_of(data) != spec["sha256"]:
        raise _source_error(spec, raw_path, f"{raw_path} has SHA-256 {sha256_of(data)}")
    features, raw_labels, names = PARSERS[spec["format"]](data.decode("utf-8"))
    label_values, labels = np.unique(raw_labels, return_inverse=True)
    return features, labels.astype(np.int64), label_values, names


def make_split(spec: dict, features: np.ndarray, labels: np.ndarray, split: int):
    """Split ``split``: a seeded permutation cut into equal thirds, standardised with training
    statistics [choice], 10% of training labels observed (stratified)."""
    rng = np.random.default_rng(derive_seed(spec["seed"], spec["dataset"], "split", split))
    parts = np.array_split(rng.permutation(len(labels)), 3)
    train_x = features[parts[0]]
    if spec["standardize"] == "train":
        mean, std = train_x.mean(axis=0), train_x.std(axis=0)
        std = np.where(std > 0, std, 1.0)
    else:
        mean, std = np.zeros(features.shape[1]), np.ones(features.shape[1])
    out = {name: {"x": (features[idx] - mean) / std, "y": labels[idx]} for name, idx in zip(SPLITS, parts)}
    out["train"]["y_observed"] = observed_mask(rng, out["train"]["y"], spec["label_fraction"], discrete=True)
    return out, mean, std


def write_real(path, spec: dict, raw_path, split: int) -> None:
    """Prepare split ``split`` of a real data set from its verified raw file and write it atomically."""
    if not 0 <= split < spec["splits"]:
        raise ValueError(f"{spec['dataset']}: split {split} outside 0..{spec['splits'] - 1}")
    features, labels, label_values, names = load_raw(spec, raw_path)
    arrays, mean, std = make_split(spec, features, labels, split)
    attrs = {
        "dataset": spec["dataset"], "split": split,
        "seed": derive_seed(spec["seed"], spec["dataset"], "split", split),
        "n_classes": len(label_values), "label_values": label_values, "feature_names": names,
        "feature_mean": mean, "feature_std": std, "source_url": spec["url"], "sha256": spec["sha256"],
        "citation": CITATIONS.get(spec["dataset"], ""), "config": to_json(spec),
    }
    with store.write_h5(path, attrs) as f:
        for name, group_arrays in arrays.items():
            store.write_arrays(f.create_group(name, track_order=True), group_arrays)
