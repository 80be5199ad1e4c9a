"""The shipped demo set: shapes, classes, held-out test regions, exact rendering, integrity."""

import fnmatch
import os

import numpy as np
import pytest

from pixelcnn_pp.data import demo_data
from pixelcnn_pp.data.loader import CorruptDatasetError

CLASSES = ["astronaut", "cat", "coffee", "galaxies", "rocket", "retina"]


@pytest.fixture(scope="module")
def demo():
    return {s: demo_data.load(s) for s in ("train", "test")}


def test_shapes_classes_and_counts(demo):
    for subset, per_class in (("train", 1500), ("test", 175)):
        x, y, names = demo[subset]
        assert names == CLASSES
        assert x.dtype == np.uint8 and x.shape == (per_class * 6, 32, 32, 3)
        np.testing.assert_array_equal(np.bincount(y), [per_class] * 6)
        assert x.std() > 20   # photographs, not blank images
        assert len(np.unique(x.reshape(len(x), -1), axis=0)) > 0.99 * len(x)   # distinct crops


def test_dataloader_ignores_data_dir():
    loader = demo_data.DataLoader(None, "test", 16, np.random.RandomState(0), shuffle=True,
                                  return_labels=True)
    assert loader.get_observation_size() == (32, 32, 3) and loader.get_num_labels() == 6
    assert loader.class_names == CLASSES
    batches = list(loader)
    assert len(batches) == 1050 // 16
    assert all(xb.shape == (16, 32, 32, 3) and yb.shape == (16,) for xb, yb in batches)
    assert demo_data.DataLoader("/does/not/matter", "train", 16).data.shape[0] == 9000


def test_test_crops_come_from_a_region_no_train_crop_touches():
    with np.load(demo_data.DEMO_FILE) as f:
        train, test = f["train_crops"].astype(int), f["test_crops"].astype(int)
        widths = [f[f"photo_{c}"].shape[1] for c in range(6)]
    for c in range(6):
        tr, te = train[train[:, 0] == c], test[test[:, 0] == c]
        train_right = (tr[:, 2] + tr[:, 3]).max()
        test_left = te[:, 2].min()
        assert train_right <= test_left                          # disjoint columns
        assert test_left >= 0.69 * widths[c]                     # the right-most ~30%
        assert tr[:, 3].min() >= 32 and tr[:, 3].max() <= 96     # 1x to 3x shrinking


def area_average_reference(patch, size=32):
    """Independent area averaging in exact rationals: each output pixel is the mean of the
    input over its cell, partial pixels weighted by their covered area."""
    from fractions import Fraction
    side = patch.shape[0]
    cell = Fraction(side, size)

    def weights(i):   # overlap of output cell i with each input pixel
        lo, hi = i * cell, (i + 1) * cell
        return [max(Fraction(0), min(hi, j + 1) - max(lo, j)) for j in range(side)]
    W = [weights(i) for i in range(size)]
    out = np.zeros((size, size, 3), np.uint8)
    for i in range(size):
        for k in range(size):
            for c in range(3):
                total = sum(W[i][j] * W[k][l] * int(patch[j, l, c])
                            for j in range(side) if W[i][j] for l in range(side) if W[k][l])
                mean = total / (cell * cell)
                out[i, k, c] = int(mean + Fraction(1, 2))   # round half up
    return out


def test_render_crops_is_exact_area_averaging():
    rng = np.random.RandomState(0)
    photo = rng.randint(0, 256, (70, 80, 3)).astype(np.uint8)
    crops = np.array([[0, 3, 5, 32, 0],     # 1:1, a copy
                      [0, 0, 0, 64, 0],     # 2x2 blocks
                      [0, 10, 2, 45, 1],    # fractional cells, flipped
                      [0, 1, 7, 37, 0]])
    got = demo_data.render_crops([photo], crops)
    np.testing.assert_array_equal(got[0], photo[3:35, 5:37])
    blocks = photo[:64, :64].reshape(32, 2, 32, 2, 3).astype(int).sum((1, 3))
    np.testing.assert_array_equal(got[1], (blocks + 2) // 4)
    np.testing.assert_array_equal(got[2], area_average_reference(photo[10:55, 2:47])[:, ::-1])
    np.testing.assert_array_equal(got[3], area_average_reference(photo[1:38, 7:44]))


def test_a_damaged_file_is_detected(tmp_path):
    with np.load(demo_data.DEMO_FILE) as f:
        arrays = {k: f[k] for k in f.files}
    arrays["photo_2"] = arrays["photo_2"].copy()
    arrays["photo_2"][100:200, 100:200] ^= 1
    np.savez(tmp_path / "demo.npz", **arrays)
    with pytest.raises(CorruptDatasetError, match="damaged"):
        demo_data.load("train", path=str(tmp_path / "demo.npz"))
    (tmp_path / "cut.npz").write_bytes(open(demo_data.DEMO_FILE, "rb").read()[:100000])
    with pytest.raises(CorruptDatasetError):
        demo_data.load("test", path=str(tmp_path / "cut.npz"))


def test_shipped_files_are_small_and_covered_by_package_data():
    folder = os.path.dirname(demo_data.DEMO_FILE)
    assert os.path.getsize(demo_data.DEMO_FILE) < 4e6
    patterns = ["*.npz", "*.md"]   # pyproject.toml: package-data "pixelcnn_pp.data"
    for name in os.listdir(folder):
        assert any(fnmatch.fnmatch(name, p) for p in patterns), name
    project = open(os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                                "pyproject.toml")).read()
    assert '"pixelcnn_pp.data" = ["demo/*.npz", "demo/*.md"]' in project


def test_generation_script_is_importable_and_matches_the_shipped_parameters():
    """The table of sources in the tool is what the shipped file holds."""
    import importlib.util
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    spec = importlib.util.spec_from_file_location(
        "make_demo_set", os.path.join(root, "tools", "make_demo_set.py"))
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    assert list(tool.SOURCES) == CLASSES
    with np.load(demo_data.DEMO_FILE) as f:
        assert len(f["train_crops"]) == 6 * tool.TRAIN_PER_CLASS
        assert len(f["test_crops"]) == 6 * tool.TEST_PER_CLASS
        sides = f["train_crops"][:, 3]
        assert sides.min() >= tool.MIN_SIDE and sides.max() <= tool.MAX_SIDE
