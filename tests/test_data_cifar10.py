"""CIFAR-10 loader on CIFAR-format files the test writes: pickled batches, the tarball,
its download and extraction, and every way they can be missing or broken. No network."""

import hashlib
import io
import os
import pickle
import struct
import tarfile
import urllib.error
import urllib.request

import numpy as np
import pytest

from pixelcnn_pp.data import cifar10_data
from pixelcnn_pp.data.loader import CorruptDatasetError, DatasetNotFoundError

PER_BATCH = 6


def fake_batches(seed=0):
    """{batch name: (x (n, 32, 32, 3) uint8, labels list)} for the 6 batch files."""
    rng = np.random.RandomState(seed)
    return {name: (rng.randint(0, 256, (PER_BATCH, 32, 32, 3)).astype(np.uint8),
                   [int(v) for v in rng.randint(0, 10, PER_BATCH)])
            for name in cifar10_data.TRAIN_BATCHES + cifar10_data.TEST_BATCHES}


def to_planes(x):
    """(n, 32, 32, 3) -> (n, 3072): the release's row layout, 1024 R then 1024 G then 1024 B
    values, each plane row by row."""
    flat = np.zeros((len(x), 3072), np.uint8)
    for c in range(3):
        for r in range(32):
            flat[:, c * 1024 + r * 32:c * 1024 + r * 32 + 32] = x[:, r, :, c]
    return flat


class Py2Pickler(pickle._Pickler):
    """Writes what Python 2's cPickle wrote for the release: byte strings (dict keys, the
    arrays' raw data) as Python 2 `str` (BINSTRING), numpy under `numpy.core.multiarray`."""
    dispatch = pickle._Pickler.dispatch.copy()

    def save_str(self, obj):
        if len(obj) < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([len(obj)]) + obj)
        else:
            self.write(pickle.BINSTRING + struct.pack("<i", len(obj)) + obj)
        self.memoize(obj)
    dispatch[bytes] = save_str


def pickled(x, labels, py2):
    """A batch as the release has it (py2: Python 2 pickle, protocol 2, str keys that Python 3
    reads as latin1), or as a Python 3 re-pickle (str keys, protocol 4)."""
    k = (lambda s: s.encode()) if py2 else (lambda s: s)
    d = {k("batch_label"): k("training batch 1 of 5"), k("labels"): labels,
         k("data"): to_planes(x), k("filenames"): [k(f"img_{i}.png") for i in range(len(x))]}
    if not py2:
        return pickle.dumps(d, protocol=4)
    buf = io.BytesIO()
    Py2Pickler(buf, protocol=2).dump(d)
    raw = buf.getvalue().replace(b"cnumpy._core.multiarray\n", b"cnumpy.core.multiarray\n")
    assert b"cnumpy.core.multiarray\n_reconstruct" in raw and b"_codecs" not in raw
    return raw


def write_batches(folder, batches, py2=True):
    os.makedirs(folder, exist_ok=True)
    for name, (x, labels) in batches.items():
        with open(os.path.join(folder, name), "wb") as f:
            f.write(pickled(x, labels, py2))


def write_tarball(path, batches, extra=()):
    """A cifar-10-python.tar.gz holding cifar-10-batches-py/<batches>, plus extra
    (TarInfo, bytes) members."""
    with tarfile.open(path, "w:gz") as tar:
        members = [(f"{cifar10_data.FOLDER}/{n}", pickled(x, y, True))
                   for n, (x, y) in batches.items()]
        members.append((f"{cifar10_data.FOLDER}/batches.meta", pickle.dumps({"label_names": []})))
        for name, payload in members:
            info = tarfile.TarInfo(name)
            info.size = len(payload)
            tar.addfile(info, io.BytesIO(payload))
        for info, payload in extra:
            tar.addfile(info, io.BytesIO(payload) if payload is not None else None)
    return path


def expect_subset(batches, subset):
    names = cifar10_data.TRAIN_BATCHES if subset == "train" else cifar10_data.TEST_BATCHES
    return (np.concatenate([batches[n][0] for n in names]),
            np.concatenate([batches[n][1] for n in names]))


def patch_constants_to(monkeypatch, tarball, url=None):
    with open(tarball, "rb") as f:
        raw = f.read()
    monkeypatch.setattr(cifar10_data, "SIZE", len(raw))
    monkeypatch.setattr(cifar10_data, "MD5", hashlib.md5(raw).hexdigest())
    if url is not None:
        monkeypatch.setattr(cifar10_data, "URL", url)


@pytest.fixture
def offline(monkeypatch):
    """Any attempt to download fails as it does without a network; records the attempts."""
    attempts = []

    def urlopen(url, *args, **kwargs):
        attempts.append(url)
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")
    monkeypatch.setattr(urllib.request, "urlopen", urlopen)
    return attempts


@pytest.mark.parametrize("py2", [True, False], ids=["py2-pickle", "py3-pickle"])
@pytest.mark.parametrize("subset", ["train", "test"])
def test_extracted_folder_loads_as_nhwc(tmp_path, offline, py2, subset):
    batches = fake_batches()
    write_batches(tmp_path / cifar10_data.FOLDER, batches, py2)
    x, y = cifar10_data.load(str(tmp_path), subset)
    ex, ey = expect_subset(batches, subset)
    assert x.dtype == np.uint8 and x.shape == ex.shape
    np.testing.assert_array_equal(x, ex)
    np.testing.assert_array_equal(y, ey)
    assert not offline


def test_original_nested_layout_and_dataloader(tmp_path, offline):
    batches = fake_batches(1)
    write_batches(tmp_path / "cifar-10-python" / cifar10_data.FOLDER, batches)
    loader = cifar10_data.DataLoader(str(tmp_path), "train", 4, return_labels=True)
    assert loader.get_observation_size() == (32, 32, 3)
    assert loader.get_num_labels() == 10
    got = list(loader)
    assert len(got) == 5 * PER_BATCH // 4
    ex, ey = expect_subset(batches, "train")
    np.testing.assert_array_equal(np.concatenate([x for x, _ in got]), ex[:len(got) * 4])
    np.testing.assert_array_equal(np.concatenate([y for _, y in got]), ey[:len(got) * 4])


def test_tarball_in_data_dir_is_verified_and_extracted(tmp_path, monkeypatch, offline):
    batches = fake_batches(2)
    tarball = write_tarball(str(tmp_path / cifar10_data.FILENAME), batches)
    patch_constants_to(monkeypatch, tarball)
    x, y = cifar10_data.load(str(tmp_path), "test")
    np.testing.assert_array_equal(x, expect_subset(batches, "test")[0])
    assert (tmp_path / cifar10_data.FOLDER / "data_batch_5").is_file()
    assert sorted(os.listdir(tmp_path)) == sorted([cifar10_data.FILENAME, cifar10_data.FOLDER])
    assert not offline


def test_download_verifies_extracts_and_is_not_repeated(tmp_path, monkeypatch, capsys):
    batches = fake_batches(3)
    server = tmp_path / "server"
    server.mkdir()
    tarball = write_tarball(str(server / cifar10_data.FILENAME), batches)
    patch_constants_to(monkeypatch, tarball, url=(server / cifar10_data.FILENAME).as_uri())
    data_dir = tmp_path / "new" / "data"
    x, y = cifar10_data.load(str(data_dir), "train")
    np.testing.assert_array_equal(x, expect_subset(batches, "train")[0])
    out = capsys.readouterr().out
    assert "Downloading cifar-10-python.tar.gz" in out and "100.0%" in out
    assert (data_dir / cifar10_data.FILENAME).is_file()
    assert not list(data_dir.glob("*.part"))
    # A second load reads what is there, even offline.
    monkeypatch.setattr(urllib.request, "urlopen", lambda *a, **k: pytest.fail("downloaded"))
    np.testing.assert_array_equal(cifar10_data.load(str(data_dir), "train")[0], x)


def test_download_of_the_wrong_bytes_leaves_nothing(tmp_path, monkeypatch):
    server = tmp_path / "server"
    server.mkdir()
    tarball = write_tarball(str(server / cifar10_data.FILENAME), fake_batches(4))
    patch_constants_to(monkeypatch, tarball, url=(server / cifar10_data.FILENAME).as_uri())
    monkeypatch.setattr(cifar10_data, "MD5", "0" * 32)
    data_dir = tmp_path / "data"
    with pytest.raises(CorruptDatasetError, match="md5"):
        cifar10_data.load(str(data_dir), "train")
    assert os.listdir(data_dir) == []


def test_absent_and_offline_is_one_clear_error(tmp_path, offline):
    data_dir = tmp_path / "data"
    with pytest.raises(DatasetNotFoundError) as e:
        cifar10_data.load(str(data_dir), "train")
    assert isinstance(e.value, OSError)
    message = str(e.value)
    for needed in (cifar10_data.FILENAME, cifar10_data.URL, str(data_dir / cifar10_data.FILENAME),
                   cifar10_data.MD5, "could not be downloaded"):
        assert needed in message
    assert offline == [cifar10_data.URL]
    assert os.listdir(data_dir) == []


def test_truncated_tarball_fails_its_checksum(tmp_path, offline):
    with open(tmp_path / cifar10_data.FILENAME, "wb") as f:
        f.write(b"\x1f\x8b" + b"\0" * 1000)
    with pytest.raises(CorruptDatasetError, match="truncated"):
        cifar10_data.load(str(tmp_path), "train")


def test_truncated_tarball_that_passes_the_checksum_is_still_a_clear_error(tmp_path, monkeypatch,
                                                                          offline):
    """E.g. constants edited by hand: extraction itself must fail cleanly."""
    tarball = write_tarball(str(tmp_path / "full.tar.gz"), fake_batches(5))
    with open(tarball, "rb") as f:
        raw = f.read()
    cut = tmp_path / cifar10_data.FILENAME
    cut.write_bytes(raw[:len(raw) // 2])
    os.remove(tarball)
    patch_constants_to(monkeypatch, str(cut))
    with pytest.raises(CorruptDatasetError, match="could not be extracted"):
        cifar10_data.load(str(tmp_path), "train")
    assert sorted(os.listdir(tmp_path)) == [cifar10_data.FILENAME]   # no half-extracted folder


def _member(name, kind=tarfile.REGTYPE, payload=b"evil", linkname=""):
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = linkname
    info.size = len(payload) if kind == tarfile.REGTYPE else 0
    return info, payload if kind == tarfile.REGTYPE else None


@pytest.mark.parametrize("member", [
    _member("../escaped.txt"),
    _member(f"{cifar10_data.FOLDER}/../../escaped.txt"),
    _member("/tmp/escaped_absolute.txt"),
    _member(f"{cifar10_data.FOLDER}/link", tarfile.SYMTYPE, linkname="/etc/passwd"),
    _member(f"{cifar10_data.FOLDER}/hard", tarfile.LNKTYPE, linkname="../../escaped.txt"),
], ids=["dotdot", "nested-dotdot", "absolute", "symlink", "hardlink"])
def test_unsafe_tarball_is_rejected_before_anything_is_written(tmp_path, monkeypatch, offline,
                                                               member):
    data_dir = tmp_path / "a" / "b"
    data_dir.mkdir(parents=True)
    tarball = write_tarball(str(data_dir / cifar10_data.FILENAME), fake_batches(6),
                            extra=[member])
    patch_constants_to(monkeypatch, tarball)
    with pytest.raises(CorruptDatasetError, match="unsafe member"):
        cifar10_data.load(str(data_dir), "train")
    assert not (tmp_path / "a" / "escaped.txt").exists()
    assert not (tmp_path / "escaped.txt").exists()
    assert sorted(os.listdir(data_dir)) == [cifar10_data.FILENAME]


def test_corrupt_pickles_are_clear_errors(tmp_path, offline):
    folder = tmp_path / cifar10_data.FOLDER
    batches = fake_batches(7)
    write_batches(folder, batches)
    good = (folder / "test_batch").read_bytes()
    (folder / "test_batch").write_bytes(good[:len(good) // 2])           # truncated
    with pytest.raises(CorruptDatasetError, match="test_batch"):
        cifar10_data.load(str(tmp_path), "test")
    (folder / "test_batch").write_bytes(os.urandom(5000))               # garbage
    with pytest.raises(CorruptDatasetError, match="test_batch"):
        cifar10_data.load(str(tmp_path), "test")
    (folder / "test_batch").write_bytes(pickle.dumps({"data": np.zeros((3, 100), np.uint8),
                                                      "labels": [0, 1, 2]}))   # wrong shape
    with pytest.raises(CorruptDatasetError, match="3072"):
        cifar10_data.load(str(tmp_path), "test")
    (folder / "test_batch").write_bytes(pickle.dumps({"images": 1}))   # wrong keys
    with pytest.raises(CorruptDatasetError, match="'data'"):
        cifar10_data.load(str(tmp_path), "test")
    os.remove(folder / "data_batch_3")                                  # a batch missing
    with pytest.raises(DatasetNotFoundError, match="data_batch_3"):
        cifar10_data.load(str(tmp_path), "train")


class _Payload:
    """Unpickling this object would create the file `path`."""
    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


def test_a_pickle_that_would_run_code_is_refused(tmp_path, offline):
    folder = tmp_path / cifar10_data.FOLDER
    folder.mkdir()
    marker = tmp_path / "pwned"
    (folder / "test_batch").write_bytes(pickle.dumps({"data": _Payload(str(marker)),
                                                      "labels": []}))
    with pytest.raises(CorruptDatasetError, match="refusing"):
        cifar10_data.load(str(tmp_path), "test")
    assert not marker.exists()


def test_bad_subset(tmp_path):
    with pytest.raises(ValueError, match="subset"):
        cifar10_data.load(str(tmp_path), "valid")
