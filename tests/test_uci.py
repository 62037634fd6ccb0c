"""The real-data downloader and parsers, against a local HTTP server on 127.0.0.1 serving (a)
fixture files written here and (b) the byte-exact published files in ../shared/data/uci."""

import hashlib
import io
import zipfile

import numpy as np
import pytest

from conftest import SHARED_UCI
from fmvae import config as cfg
from fmvae import store
from fmvae.data import uci

ARFF = """@relation dr
@attribute 0 numeric
@attribute 1 numeric
@attribute Class {0,1}
@data
1,2.5,0
0,3.5,1
1,1.0,1
0,0.5,0
1,4.0,1
0,2.0,0"""


def spec_for(base_url, archive, member, data: bytes, fmt="arff", name="diabetic_retinopathy"):
    config = cfg.validate_config({"data": {"real": {
        "base_urls": {"uci": base_url},
        "datasets": {name: {"source": "uci", "archive": archive, "member": member,
                            "sha256": hashlib.sha256(data).hexdigest(), "format": fmt}}}}})
    return cfg.real_spec(config, name)


def zipped(members: dict) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return buffer.getvalue()


@pytest.fixture
def served(tmp_path, http_folder):
    folder = tmp_path / "www"
    folder.mkdir()
    data = ARFF.encode()
    (folder / "plain.arff").write_bytes(data)
    (folder / "archive.zip").write_bytes(zipped({"docs/readme.txt": b"x", "inner/features.arff": data}))
    (folder / "nested.zip").write_bytes(zipped({"outer.zip": zipped({"features.arff": data})}))
    (folder / "corrupt.zip").write_bytes(zipped({"features.arff": data.replace(b"2.5", b"9.5")}))
    return http_folder(folder), data


@pytest.mark.parametrize("archive", ["archive.zip", "nested.zip"])
def test_fetch_extracts_the_member_by_name_and_verifies_it(tmp_path, served, archive):
    base, data = served
    out = tmp_path / "raw" / "features.arff"
    uci.fetch(spec_for(base, archive, "features.arff", data), out)
    assert out.read_bytes() == data


def test_fetch_accepts_the_data_file_itself(tmp_path, served):
    base, data = served
    out = tmp_path / "raw" / "plain.arff"
    uci.fetch(spec_for(base, "plain.arff", "plain.arff", data), out)
    assert out.read_bytes() == data


@pytest.mark.parametrize("archive,problem,offline", [
    ("corrupt.zip", "SHA-256 mismatch", False),
    ("nowhere.zip", "download failed.*404", False),
    ("archive.zip", "download failed", True),  # nothing listens on port 9
])
def test_bad_source_is_a_clear_error_and_writes_nothing(tmp_path, served, archive, problem, offline):
    base, data = served
    spec = spec_for("http://127.0.0.1:9" if offline else base, archive, "features.arff", data)
    out = tmp_path / "raw" / "features.arff"
    with pytest.raises(uci.DataSourceError, match=problem) as err:
        uci.fetch(spec, out)
    message = str(err.value)
    assert spec["url"] in message and spec["sha256"] in message and str(out) in message
    assert "place it by hand" in message
    assert not out.exists()
    assert not out.parent.exists() or not any(out.parent.iterdir())  # no partial or temporary file


def test_member_absent_from_archive(tmp_path, served):
    base, data = served
    with pytest.raises(uci.DataSourceError, match="holds no file named 'missing.arff'"):
        uci.fetch(spec_for(base, "archive.zip", "missing.arff", data), tmp_path / "missing.arff")


def test_file_placed_by_hand_is_verified_not_downloaded(tmp_path):
    data = ARFF.encode()
    out = tmp_path / "features.arff"
    out.write_bytes(data)
    uci.fetch(spec_for("http://127.0.0.1:9", "archive.zip", "features.arff", data), out)  # no server needed
    out.write_bytes(data + b"\n")
    with pytest.raises(uci.DataSourceError, match="already at"):
        uci.fetch(spec_for("http://127.0.0.1:9", "archive.zip", "features.arff", data), out)


def test_prepare_splits_standardises_and_masks(tmp_path):
    rng = np.random.default_rng(0)
    rows = [f"{a:.3f},{b:.3f},{c}" for a, b, c in zip(rng.normal(5, 2, 300), rng.normal(-1, 0.1, 300), rng.integers(1, 4, 300))]
    data = "\n".join(rows).encode()
    raw = tmp_path / "fixture.data"
    raw.write_bytes(data)
    spec = spec_for("http://127.0.0.1:9", "fixture.data", "fixture.data", data, fmt="csv", name="contraceptive")
    out = tmp_path / "split1.h5"
    uci.write_real(out, spec, raw, 1)
    train, val, test = (store.read_split(out, s) for s in ("train", "val", "test"))
    assert len(train["x"]) == len(val["x"]) == len(test["x"]) == 100
    np.testing.assert_allclose(train["x"].mean(axis=0), 0, atol=1e-12)
    np.testing.assert_allclose(train["x"].std(axis=0), 1, atol=1e-12)
    assert set(np.unique(train["y"])) <= {0, 1, 2}
    assert train["y_observed"].sum() == pytest.approx(10, abs=2)
    # the splits differ and the same split is reproducible
    other = tmp_path / "split0.h5"
    uci.write_real(other, spec, raw, 0)
    assert not np.array_equal(store.read_split(other, "train")["x"], train["x"])
    again = tmp_path / "again.h5"
    uci.write_real(again, spec, raw, 1)
    assert again.read_bytes() == out.read_bytes()
    # a raw file that fails its checksum is refused before parsing
    raw.write_bytes(data + b"\n1,2,3")
    with pytest.raises(uci.DataSourceError, match="SHA-256"):
        uci.write_real(tmp_path / "bad.h5", spec, raw, 0)
    assert not (tmp_path / "bad.h5").exists()


PUBLISHED = {
    # name: (file served, member, format, rows, features, class counts in label order)
    "diabetic_retinopathy": ("messidor_features.arff", "messidor_features.arff", "arff", 1151, 19, [540, 611]),
    "contraceptive": ("cmc.data", "cmc.data", "csv", 1473, 9, [629, 333, 511]),
    "titanic": ("titanic.zip", "titanic.dat", "keel", 2201, 3, [1490, 711]),
}


@pytest.mark.skipif(not SHARED_UCI.exists(), reason="../shared/data/uci is not beside the checkout")
@pytest.mark.parametrize("name", list(PUBLISHED))
def test_published_files_download_verify_and_parse(tmp_path, http_folder, name):
    served_file, member, _, rows, features, counts = PUBLISHED[name]
    base = http_folder(SHARED_UCI)
    default = cfg.validate_config({})["data"]["real"]["datasets"][name]
    config = cfg.validate_config({"data": {"real": {"base_urls": {"uci": base, "keel": base}, "datasets": {
        name: {**default, "archive": served_file}}}}})
    spec = cfg.real_spec(config, name)
    raw = tmp_path / member
    uci.fetch(spec, raw)  # the configured (published) SHA-256 must match the real bytes
    x, y, values, names = uci.load_raw(spec, raw)
    assert x.shape == (rows, features) and len(names) == features
    assert np.bincount(y).tolist() == counts
    if name == "titanic":
        assert values.tolist() == [-1.0, 1.0] and names == ["Class", "Age", "Sex"]
    out = tmp_path / "split0.h5"
    uci.write_real(out, spec, raw, 0)
    sizes = [len(store.read_split(out, s)["y"]) for s in ("train", "val", "test")]
    assert sum(sizes) == rows and max(sizes) - min(sizes) <= 1
