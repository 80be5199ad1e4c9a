"""Folder-of-images loader on PNG/JPEG files of odd sizes and modes that the test writes."""

import os

import numpy as np
import pytest
from PIL import Image

from pixelcnn_pp.data import folder_data
from pixelcnn_pp.data.loader import CorruptDatasetError, DatasetNotFoundError


@pytest.fixture(autouse=True)
def cache_in_tmp(tmp_path_factory, monkeypatch):
    """Every test caches in its own folder (never the user's ~/.cache)."""
    d = tmp_path_factory.mktemp("cache")
    monkeypatch.setenv("PIXELCNN_CACHE_DIR", str(d))
    return d


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


def test_cache_is_reused_and_refreshed_when_files_change(tmp_path, monkeypatch, cache_in_tmp):
    make_tree(tmp_path)
    first, _, _ = folder_data.load(str(tmp_path), "train")
    assert not [f for f in os.listdir(tmp_path) if f.endswith(".npz")]   # not beside the data
    caches = [f for f in os.listdir(cache_in_tmp) if f.endswith("_32x32_rgb.npz")]
    assert len(caches) == 1 and caches[0].startswith(f"folder_{tmp_path.name}_")
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
        folder_data.load(str(bad), "train", strict=True)
    (bad / "ok.png").unlink()
    with pytest.raises(CorruptDatasetError, match="none of the 1 image files.*broken.jpg"):
        folder_data.load(str(bad), "train")
    with pytest.raises(ValueError, match="channels"):
        folder_data.load(str(bad), "train", channels=4)


def png_by_hand(path, a, bitdepth, colortype):
    """A PNG written byte by byte (16-bit ones, which imageio and Pillow do not write for
    RGB): a (H, W[, C]) array; colortype 0 gray, 2 RGB."""
    import struct
    import zlib
    h = a.shape[0]
    raw = b"".join(b"\0" + a[y].astype(">u2" if bitdepth == 16 else "u1").tobytes()
                   for y in range(h))

    def chunk(t, d):
        return struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d))
    path.write_bytes(b"\x89PNG\r\n\x1a\n"
                     + chunk(b"IHDR", struct.pack(">IIBBBBB", a.shape[1], h, bitdepth,
                                                  colortype, 0, 0, 0))
                     + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))


def odd_folder(root):
    """One class of a good photo, odd images and broken files; returns the expected pixel of
    each readable image, by file name."""
    root.mkdir()
    solid(40, 40, (10, 20, 30)).save(root / "a_photo.png")
    solid(64, 48, 77, mode="L").save(root / "b_gray.png")
    solid(40, 40, (255, 0, 0, 0), mode="RGBA").save(root / "c_rgba_clear.png")     # onto white
    solid(40, 40, (0, 0, 255, 255), mode="RGBA").save(root / "d_rgba_opaque.png")  # alpha dropped
    pal = Image.new("P", (36, 36), 1)
    pal.putpalette([0, 0, 0, 0, 200, 100] + [0] * 762)
    pal.save(root / "e_palette.png")
    png_by_hand(root / "f_gray16.png", np.full((40, 40), 0x9A00, np.uint16), 16, 0)
    rgb16 = np.zeros((40, 40, 3), np.uint16)
    rgb16[...] = (0x1234, 0x8000, 0xFFFF)
    png_by_hand(root / "g_rgb16.png", rgb16, 16, 2)
    solid(3, 2, (50, 60, 70)).save(root / "h_tiny.png")                             # enlarged
    good = (root / "a_photo.png").read_bytes()
    (root / "x_truncated.png").write_bytes(good[:len(good) // 2])
    (root / "y_named_png.png").write_text("not an image at all")
    (root / "z_notes.txt").write_text("notes")
    return {"a_photo.png": (10, 20, 30), "b_gray.png": (77, 77, 77),
            "c_rgba_clear.png": (255, 255, 255), "d_rgba_opaque.png": (0, 0, 255),
            "e_palette.png": (0, 200, 100), "f_gray16.png": (0x9A, 0x9A, 0x9A),
            "g_rgb16.png": (0x12, 0x80, 0xFF), "h_tiny.png": (50, 60, 70)}


def test_odd_images_are_converted_and_broken_files_skipped_with_one_warning(tmp_path, capfd):
    want = odd_folder(tmp_path / "odd")
    folder_data._warned.clear()
    loader = folder_data.DataLoader(str(tmp_path / "odd"), "train", 2)
    names = [os.path.basename(f) for f in loader.files]
    assert names == sorted(want)                        # data order; broken ones left out
    for name, x in zip(names, loader.data):
        np.testing.assert_array_equal(x, np.broadcast_to(want[name], (32, 32, 3)), err_msg=name)
    err = capfd.readouterr().err.strip().splitlines()
    assert len(err) == 1, err                           # one warning naming them all
    assert "skipped 2 of 10 image files" in err[0]
    assert "x_truncated.png" in err[0] and "y_named_png.png" in err[0]
    assert "ignored 1 file(s)" in err[0] and "z_notes.txt" in err[0]
    # From the cache: the same images, and the test split does not warn again.
    # The split is over every listed image file: the 10th, y_named_png.png, is the test one.
    assert len(folder_data.load(str(tmp_path / "odd"), "test")[0]) == 0
    again = folder_data.DataLoader(str(tmp_path / "odd"), "train", 2)
    np.testing.assert_array_equal(again.data, loader.data)
    assert capfd.readouterr().err == ""
    # strict: one error listing every unusable file
    with pytest.raises(CorruptDatasetError) as e:
        folder_data.DataLoader(str(tmp_path / "odd"), "train", 2, strict=True)
    assert "2 of the 10 image files" in str(e.value)
    assert "x_truncated.png" in str(e.value) and "y_named_png.png" in str(e.value)


def test_many_broken_files_are_listed_in_a_file_the_warning_names(tmp_path, capfd):
    root = tmp_path / "many"
    root.mkdir()
    for i in range(3):
        solid(8, 8, (i, i, i)).save(root / f"good{i}.png")
    for i in range(folder_data.MAX_NAMES + 5):
        (root / f"bad{i:02d}.jpg").write_bytes(b"\xff\xd8 broken")
    folder_data._warned.clear()
    x, _, _ = folder_data.load(str(root), "train", image_size=8)
    assert len(x) == 3
    err = capfd.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"skipped {folder_data.MAX_NAMES + 5} of 18" in err[0]
    listed = err[0].split("the list is in ")[1].split(" (first")[0]
    lines = open(listed).read().splitlines()
    assert [os.path.basename(l.split("\t")[0]) for l in lines] == \
        [f"bad{i:02d}.jpg" for i in range(folder_data.MAX_NAMES + 5)]


def test_a_read_only_folder_works_and_nothing_is_written_into_it(tmp_path, cache_in_tmp):
    make_tree(tmp_path / "ro")
    root = tmp_path / "ro"
    before = sorted((p.relative_to(root), p.stat().st_mtime_ns) for p in root.rglob("*"))
    modes = {p: p.stat().st_mode for p in [root, *root.rglob("*")]}
    for p in [*root.rglob("*"), root]:
        p.chmod(0o555 if p.is_dir() else 0o444)
    try:
        x, _, _ = folder_data.load(str(root), "train")
        x2, _, _ = folder_data.load(str(root), "train")          # from the cache
        assert x.shape == (15, 32, 32, 3)
        np.testing.assert_array_equal(x, x2)
    finally:
        for p, m in modes.items():
            p.chmod(m)
    assert sorted((p.relative_to(root), p.stat().st_mtime_ns) for p in root.rglob("*")) == before
    assert any(f.endswith(".npz") for f in os.listdir(cache_in_tmp))


def test_files_follow_the_split(tmp_path):
    make_tree(tmp_path)
    train = folder_data.DataLoader(str(tmp_path), "train", 1)
    test = folder_data.DataLoader(str(tmp_path), "test", 1)
    assert test.files == [str(tmp_path / "cats" / "c09.png")]
    assert len(train.files) == len(train.data) == 15 and test.files[0] not in train.files
    assert train.files[11:] == [str(tmp_path / "dogs" / f) for f in
                                ("clear.png", "gray.png", "photo.jpeg", "tiny.PNG")]
