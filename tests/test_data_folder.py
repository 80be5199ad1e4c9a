"""Folder-of-images loader on PNG/JPEG files of odd sizes and modes that the test writes."""

import os

import numpy as np
import pytest
from PIL import Image

from data import folder_data
from data.loader import CorruptDatasetError, DatasetNotFoundError


def solid(w, h, colour, mode="RGB"):
    return Image.new(mode, (w, h), colour)


def make_tree(root):
    """Two classes of odd-sized images in several formats and modes; returns the class ->
    sorted relative paths."""
    cats = root / "cats"
    dogs = root / "dogs"
    (cats / "more").mkdir(parents=True)
    dogs.mkdir()
    for i in range(11):   # 12 cats: the 10th (sorted) is in test
        solid(37 + i, 53, (200, 10 * i, 0)).save(cats / f"c{i:02d}.png")
    solid(100, 20, (0, 0, 255)).save(cats / "more" / "deep.jpg", quality=95)   # in a sub-folder
    solid(5, 7, (9, 9, 9)).save(dogs / "tiny.PNG")                            # enlarged
    solid(64, 48, 128, mode="L").save(dogs / "gray.png")                       # grayscale
    solid(40, 40, (255, 0, 0, 0), mode="RGBA").save(dogs / "clear.png")        # transparent
    solid(33, 65, (0, 255, 0)).save(dogs / "photo.jpeg", quality=95)
    (dogs / "notes.txt").write_text("not an image")
    (root / "stray.png").write_bytes(b"")   # a file beside the class folders is not an image


def test_subfolders_are_classes_and_images_are_square_32x32(tmp_path):
    make_tree(tmp_path)
    files, labels, names = folder_data.list_images(str(tmp_path))
    assert names == ["cats", "dogs"]
    assert files[:12] == [f"cats/c{i:02d}.png" for i in range(11)] + ["cats/more/deep.jpg"]
    assert files[12:] == ["dogs/clear.png", "dogs/gray.png", "dogs/photo.jpeg", "dogs/tiny.PNG"]
    np.testing.assert_array_equal(labels, [0] * 12 + [1] * 4)

    x, y, names = folder_data.load(str(tmp_path), "train")
    xt, yt, _ = folder_data.load(str(tmp_path), "test")
    assert x.shape == (15, 32, 32, 3) and x.dtype == np.uint8 and xt.shape == (1, 32, 32, 3)
    np.testing.assert_array_equal(yt, [0])                          # cats' 10th image, c09
    np.testing.assert_array_equal(xt[0], np.broadcast_to([200, 90, 0], (32, 32, 3)))
    np.testing.assert_array_equal(y, [0] * 11 + [1] * 4)
    dogs = dict(zip(["clear", "gray", "photo", "tiny"], x[11:]))
    np.testing.assert_array_equal(dogs["clear"], np.full((32, 32, 3), 255))   # onto white
    np.testing.assert_array_equal(dogs["gray"], np.full((32, 32, 3), 128))    # gray -> RGB
    np.testing.assert_array_equal(dogs["tiny"], np.full((32, 32, 3), 9))
    assert np.abs(dogs["photo"].astype(int) - [0, 255, 0]).max() <= 3          # JPEG


def test_every_tenth_image_of_each_class_is_test(tmp_path):
    for c, n in (("a", 25), ("b", 9)):
        (tmp_path / c).mkdir()
        for i in range(n):
            solid(8, 8, (i, 0, 0)).save(tmp_path / c / f"{i:03d}.png")
    xt, yt, _ = folder_data.load(str(tmp_path), "test", image_size=8)
    np.testing.assert_array_equal(yt, [0, 0])                       # b has fewer than 10
    np.testing.assert_array_equal(xt[:, 0, 0, 0], [9, 19])
    x, y, _ = folder_data.load(str(tmp_path), "train", image_size=8)
    assert len(x) == 23 + 9 and 9 not in x[y == 0][:, 0, 0, 0]


def test_centre_crop_and_area_resize(tmp_path):
    # 96x64: a 16-pixel red strip each side of a 64x64 centre of 1-pixel black/white
    # checkerboard. The centre square, area-averaged to 32x32, is uniform mid-gray; a resize
    # without antialiasing would keep black and white pixels, a wrong crop would show red.
    img = np.zeros((64, 96, 3), np.uint8)
    img[:, :16] = img[:, 80:] = (255, 0, 0)
    yy, xx = np.mgrid[:64, :64]
    img[:, 16:80] = ((yy + xx) % 2 * 255)[..., None]
    Image.fromarray(img).save(tmp_path / "board.png")
    x, y, names = folder_data.load(str(tmp_path), "train")
    assert names == [tmp_path.name] and list(y) == [0]            # no sub-folders: one class
    assert x.shape == (1, 32, 32, 3)
    assert np.abs(x.astype(int) - 127.5).max() <= 1


def test_channels_1_and_image_size(tmp_path):
    make_tree(tmp_path)
    x, _, _ = folder_data.load(str(tmp_path), "train", image_size=16, channels=1)
    assert x.shape == (15, 16, 16, 1)
    loader = folder_data.DataLoader(str(tmp_path), "train", 4, return_labels=True, image_size=16)
    assert loader.get_num_labels() == 2 and loader.class_names == ["cats", "dogs"]
    assert loader.get_observation_size() == (16, 16, 3)
    assert [xb.shape for xb, _ in loader] == [(4, 16, 16, 3)] * 3


def test_cache_is_reused_and_refreshed_when_files_change(tmp_path, monkeypatch):
    make_tree(tmp_path)
    first, _, _ = folder_data.load(str(tmp_path), "train")
    assert (tmp_path / "pixelcnn_cache_32x32_rgb.npz").is_file()
    real_read = folder_data.read_image
    monkeypatch.setattr(folder_data, "read_image", lambda *a: pytest.fail("cache not used"))
    np.testing.assert_array_equal(folder_data.load(str(tmp_path), "train")[0], first)
    # A changed file invalidates the cache.
    monkeypatch.setattr(folder_data, "read_image", real_read)
    solid(50, 50, (1, 2, 3)).save(tmp_path / "cats" / "c00.png")
    os.utime(tmp_path / "cats" / "c00.png", ns=(1, 1))
    again, _, _ = folder_data.load(str(tmp_path), "train")
    np.testing.assert_array_equal(again[0], np.broadcast_to([1, 2, 3], (32, 32, 3)))
    np.testing.assert_array_equal(again[1:], first[1:])


def test_errors(tmp_path):
    with pytest.raises(DatasetNotFoundError, match="does not exist"):
        folder_data.load(str(tmp_path / "nowhere"), "train")
    (tmp_path / "empty" / "sub").mkdir(parents=True)
    with pytest.raises(DatasetNotFoundError, match="no images"):
        folder_data.load(str(tmp_path / "empty"), "train")
    bad = tmp_path / "bad"
    bad.mkdir()
    solid(8, 8, (0, 0, 0)).save(bad / "ok.png")
    (bad / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    with pytest.raises(CorruptDatasetError, match="broken.jpg"):
        folder_data.load(str(bad), "train")
    with pytest.raises(ValueError, match="channels"):
        folder_data.load(str(bad), "train", channels=4)
