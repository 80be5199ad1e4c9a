"""Pictures: grids of samples, as the original's ``plotting.py`` (``img_tile``) draws them,
and score.py's heatmaps of per-pixel NLL.

    save_tile("samples.png", images)        # images: (N, H, W, C) floats in [-1, 1] or uint8
    heatmap_image(image, nll_bits, bpd)     # uint8 RGB: the image, its NLL map, a colour bar

The original stretched each batch to [0, 1] by its own min and max and plotted the grid with
matplotlib; here the images are mapped to 8 bits as data are (``images_to_uint8``) and the
grid is written as a PNG directly, so a tile shows the values the .npz holds. The heatmaps
are drawn with NumPy alone too: a viridis ramp and a 5x7 bitmap font for their labels.
"""

import os

import imageio.v2 as imageio
import numpy as np

from pixelcnn_pp.errors import InvalidInputError

__all__ = ["images_to_uint8", "img_tile", "save_tile", "heatmap_image", "colour_map",
           "draw_text"]


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


def code_colours(num_categories):
    """(K, 3) uint8: a distinct, fixed colour per code (hues a golden angle apart, in three
    brightness bands), so that the same code has the same colour in every picture."""
    k = np.arange(num_categories)
    hue = (k * 0.6180339887) % 1.0
    sat = 0.55 + 0.35 * ((k // 3) % 2)
    val = 0.95 - 0.3 * (k % 3) / 2
    i = np.floor(hue * 6).astype(int) % 6
    f = hue * 6 - np.floor(hue * 6)
    p, q, t = val * (1 - sat), val * (1 - sat * f), val * (1 - sat * (1 - f))
    table = [(val, t, p), (q, val, p), (p, val, t), (p, q, val), (t, p, val), (val, p, q)]
    rgb = np.stack([np.choose(i, [c[ch] for c in table]) for ch in range(3)], -1)
    return np.round(rgb * 255).astype(np.uint8)


def codes_to_rgb(codes, num_categories, scale=4):
    """Code maps (N, H, W) ints -> (N, scale*H, scale*W, 3) uint8 pictures: each code a
    ``scale`` x ``scale`` square of its colour (``code_colours``)."""
    codes = np.asarray(codes)
    if codes.ndim != 3:
        raise InvalidInputError(f"codes_to_rgb takes code maps (N, H, W); got {codes.shape}")
    rgb = code_colours(num_categories)[np.clip(codes, 0, num_categories - 1)]
    return np.repeat(np.repeat(rgb, scale, axis=1), scale, axis=2)


def save_tile(path, images, border=1, border_color=255, max_images=None):
    """Write images as one PNG grid with thin borders (white by default, as the original's).

    images: (N, H, W, C) with C = 1 or 3, either floats in [-1, 1] or uint8.
    max_images: draw only the first so many (the original tiles the first 100).
    """
    images = np.asarray(images)
    if images.ndim != 4 or images.shape[-1] not in (1, 3):
        raise InvalidInputError(f"save_tile takes images (N, H, W, 1 or 3); got shape "
                                f"{images.shape}")
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


# --------------------------------------------------------------------------- heatmaps
# A 5x7 bitmap font: the characters the heatmaps write.
_GLYPHS = {
    "0": "01110 10001 10011 10101 11001 10001 01110",
    "1": "00100 01100 00100 00100 00100 00100 01110",
    "2": "01110 10001 00001 00010 00100 01000 11111",
    "3": "11110 00001 00001 01110 00001 00001 11110",
    "4": "00010 00110 01010 10010 11111 00010 00010",
    "5": "11111 10000 11110 00001 00001 10001 01110",
    "6": "00110 01000 10000 11110 10001 10001 01110",
    "7": "11111 00001 00010 00100 01000 01000 01000",
    "8": "01110 10001 10001 01110 10001 10001 01110",
    "9": "01110 10001 10001 01111 00001 00010 01100",
    ".": "00000 00000 00000 00000 00000 01100 01100",
    "-": "00000 00000 00000 11111 00000 00000 00000",
    "+": "00000 00100 00100 11111 00100 00100 00000",
    "/": "00001 00010 00010 00100 01000 01000 10000",
    ":": "00000 01100 01100 00000 01100 01100 00000",
    " ": "00000 00000 00000 00000 00000 00000 00000",
    "A": "01110 10001 10001 11111 10001 10001 10001",
    "B": "11110 10001 10001 11110 10001 10001 11110",
    "C": "01110 10001 10000 10000 10000 10001 01110",
    "D": "11110 10001 10001 10001 10001 10001 11110",
    "E": "11111 10000 10000 11110 10000 10000 11111",
    "G": "01110 10001 10000 10111 10001 10001 01111",
    "I": "01110 00100 00100 00100 00100 00100 01110",
    "L": "10000 10000 10000 10000 10000 10000 11111",
    "M": "10001 11011 10101 10101 10001 10001 10001",
    "N": "10001 11001 10101 10011 10001 10001 10001",
    "O": "01110 10001 10001 10001 10001 10001 01110",
    "P": "11110 10001 10001 11110 10000 10000 10000",
    "R": "11110 10001 10001 11110 10100 10010 10001",
    "S": "01111 10000 10000 01110 00001 00001 11110",
    "T": "11111 00100 00100 00100 00100 00100 00100",
    "X": "10001 10001 01010 00100 01010 10001 10001",
}


def draw_text(canvas, text, top, left, scale=2, colour=(0, 0, 0)):
    """Write ``text`` (digits, . - + / : and the capitals of _GLYPHS) into an RGB uint8 canvas
    in place, each font pixel a scale x scale square; returns the width drawn."""
    x = left
    for ch in str(text).upper():
        glyph = _GLYPHS.get(ch)
        if glyph is None:
            raise InvalidInputError(f"the heatmap font has no glyph for {ch!r}")
        for r, row in enumerate(glyph.split()):
            for c, bit in enumerate(row):
                if bit == "1":
                    canvas[top + r * scale:top + (r + 1) * scale,
                           x + c * scale:x + (c + 1) * scale] = colour
        x += 6 * scale
    return x - left


def _text_width(text, scale):
    return 6 * scale * len(text)


# viridis at 9 evenly spaced points
_VIRIDIS = np.array([[68, 1, 84], [71, 44, 122], [59, 81, 139], [44, 113, 142], [33, 144, 141],
                     [39, 173, 129], [92, 200, 99], [170, 220, 50], [253, 231, 37]],
                    np.float64)


def colour_map(t):
    """Values t in [0, 1] (any shape) -> uint8 RGB (..., 3) on the viridis scale."""
    t = np.clip(np.asarray(t, np.float64), 0.0, 1.0) * (len(_VIRIDIS) - 1)
    i = np.minimum(np.floor(t).astype(int), len(_VIRIDIS) - 2)
    f = (t - i)[..., None]
    return np.rint(_VIRIDIS[i] * (1 - f) + _VIRIDIS[i + 1] * f).astype(np.uint8)


def _fmt(v):
    return f"{v:.2f}" if abs(v) < 100 else f"{v:.0f}"


def heatmap_image(image, nll_bits, bits_per_dim=None, scale=None, codes=False):
    """An RGB uint8 picture of one image beside its per-pixel NLL map in bits, with a colour
    bar labelled by the map's range (and the image's bits/dim when given).

    image: uint8 (H, W, C); nll_bits: (H, W), e.g. -subpixel_log_prob summed over channels /
    ln 2. Both panels are upscaled by ``scale`` (default: about 192 pixels on the long side).
    codes: the image is a code map in colours (``codes_to_rgb`` at scale 1) and the map its
    NLL per code: the captions say so.
    """
    image = np.asarray(image)
    nll_bits = np.asarray(nll_bits, np.float64)
    H, W = nll_bits.shape
    if image.shape[:2] != (H, W):
        raise InvalidInputError(f"image {image.shape} and map {nll_bits.shape} differ in size")
    s = scale or max(1, 192 // max(H, W))
    ts = 2                                          # text scale: 10 x 14 pixel characters
    line = 7 * ts + 6
    lo, hi = float(nll_bits.min()), float(nll_bits.max())
    labels = [_fmt(hi), _fmt((lo + hi) / 2), _fmt(lo)]
    label_w = max([_text_width("000.00", ts)] + [_text_width(t, ts) for t in labels])
    margin, gap, bar_w = 10, 10, 16
    ph, pw = H * s, W * s
    unit = "CODE" if codes else "PIXEL"
    captions = [f"NLL PER {unit} IN BITS: " + f"{_fmt(lo)} TO {_fmt(hi)}"]
    if bits_per_dim is not None:
        captions.append(f"MEAN {_fmt(float(bits_per_dim))} BITS/{'CODE' if codes else 'DIM'}")
    width = margin + pw + gap + pw + gap + bar_w + 6 + label_w + margin
    width = max(width, 2 * margin + max(_text_width(c, ts) for c in captions))
    top = margin + line                             # panel titles above
    height = top + ph + 8 + line * len(captions) + margin
    canvas = np.full((height, width, 3), 255, np.uint8)

    rgb = image if image.shape[-1] == 3 else np.repeat(image[..., :1], 3, axis=-1)
    left1, left2 = margin, margin + pw + gap
    canvas[top:top + ph, left1:left1 + pw] = np.kron(rgb, np.ones((s, s, 1), np.uint8))
    t = (nll_bits - lo) / (hi - lo) if hi > lo else np.zeros_like(nll_bits)
    canvas[top:top + ph, left2:left2 + pw] = np.kron(colour_map(t), np.ones((s, s, 1),
                                                                             np.uint8))
    draw_text(canvas, "CODES" if codes else "IMAGE", margin, left1, ts)
    draw_text(canvas, "NLL BITS", margin, left2, ts)

    bar_left = left2 + pw + gap                     # the colour bar: hi at the top
    ramp = colour_map(np.linspace(1.0, 0.0, ph))[:, None, :]
    canvas[top:top + ph, bar_left:bar_left + bar_w] = ramp
    text_left = bar_left + bar_w + 6
    for text, y in zip(labels, (top, top + ph // 2 - 7 * ts // 2, top + ph - 7 * ts)):
        draw_text(canvas, text, y, text_left, ts)
    y = top + ph + 8
    for c in captions:
        draw_text(canvas, c, y, margin, ts)
        y += line
    return canvas
