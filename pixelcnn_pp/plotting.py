"""Image grids of samples, as the original's ``plotting.py`` (``img_tile``) draws them.

    save_tile("samples.png", images)        # images: (N, H, W, C) floats in [-1, 1] or uint8

The original stretched each batch to [0, 1] by its own min and max and plotted the grid with
matplotlib; here the images are mapped to 8 bits as data are (``images_to_uint8``) and the
grid is written as a PNG directly, so a tile shows the values the .npz holds.
"""

import os

import imageio.v2 as imageio
import numpy as np
from pixelcnn_pp.errors import InvalidInputError

__all__ = ["images_to_uint8", "img_tile", "save_tile"]


def images_to_uint8(x):
    """[-1, 1] floats (any shape) -> uint8 by rint((x + 1) * 127.5), clipped to [0, 255].

    The inverse of the data scaling (v - 127.5) / 127.5 for every 8-bit value v.
    """
    x = np.asarray(x, dtype=np.float64)
    return np.clip(np.rint((x + 1.0) * 127.5), 0, 255).astype(np.uint8)


def img_tile(imgs, aspect_ratio=1.0, tile_shape=None, border=1, border_color=0):
    """Tile images (N, H, W[, C]) in a grid separated by ``border``-pixel lines.

    As the original: without ``tile_shape`` the grid is about square (times ``aspect_ratio``,
    scaled by the images' own aspect ratio) and filled row by row; with ``tile_shape`` =
    (rows, cols) only that many images are drawn. Returns (rows·(H+border) - border,
    cols·(W+border) - border[, C]) of the input's dtype.
    """
    imgs = np.asarray(imgs)
    if imgs.ndim not in (3, 4):
        raise InvalidInputError(f"img_tile takes images (N, H, W) or (N, H, W, C); got shape "
                         f"{imgs.shape}")
    n = imgs.shape[0]
    img_shape = np.array(imgs.shape[1:3])
    if tile_shape is None:
        aspect_ratio *= img_shape[1] / float(img_shape[0])
        grid = np.array((int(np.ceil(np.sqrt(n * aspect_ratio))),
                         int(np.ceil(np.sqrt(n / aspect_ratio)))))
    else:
        if len(tile_shape) != 2:
            raise InvalidInputError(f"tile_shape must be (rows, cols), got {tile_shape}")
        grid = np.array(tile_shape)
    out_shape = np.array(imgs.shape[1:])
    out_shape[:2] = (img_shape + border) * grid - border
    tile = np.empty(out_shape, dtype=imgs.dtype)
    tile[:] = border_color
    for i in range(grid[0]):
        for j in range(grid[1]):
            k = j + i * grid[1]
            if k >= n:
                break
            y, x = (img_shape[0] + border) * i, (img_shape[1] + border) * j
            tile[y:y + img_shape[0], x:x + img_shape[1], ...] = imgs[k]
    return tile


def save_tile(path, images, border=1, border_color=255, max_images=None):
    """Write images as one PNG grid with thin borders (white by default, as the original's).

    images: (N, H, W, C) with C = 1 or 3, either floats in [-1, 1] or uint8.
    max_images: draw only the first so many (the original tiles the first 100).
    """
    images = np.asarray(images)
    if images.ndim != 4 or images.shape[-1] not in (1, 3):
        raise InvalidInputError(f"save_tile takes images (N, H, W, 1 or 3); got shape {images.shape}")
    if images.dtype != np.uint8:
        images = images_to_uint8(images)
    if max_images is not None:
        images = images[:max_images]
    tile = img_tile(images, border=border, border_color=border_color)
    if tile.shape[-1] == 1:
        tile = tile[..., 0]
    d = os.path.dirname(os.path.abspath(path))
    os.makedirs(d, exist_ok=True)
    imageio.imwrite(path, tile)
    return tile
