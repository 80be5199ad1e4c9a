"""A small VQ-VAE (van den Oord et al. 2017) for the demo photographs, and the codes data set
a PixelCNN++ prior is trained on (README.md beside this file has the whole recipe).

    python examples/vqvae_prior/vqvae.py train --out runs/vqvae          # ~minutes on 2 cores
    python examples/vqvae_prior/vqvae.py decode --out runs/vqvae \\
        --codes runs/vqvae_samples.npz --png runs/vqvae_samples_decoded.png

``train`` fits the VQ-VAE on the demo set's 32x32 training images (8x8 maps of ``--num_codes``
codes), then writes ``OUT/vqvae.weights.h5``, ``OUT/codes.npz`` (the codes data set:
train/test codes, num_categories, the demo's labels, and each image's coarse colours, a 4x4x3
map in [-1, 1], as ``*_spatial`` maps to condition on), ``OUT/reconstructions.png`` (test
images above their reconstructions) and ``OUT/vqvae.json`` (the settings and the test
reconstruction error). ``decode`` turns code maps (an .npz with ``codes``, as sample.py
writes) into images with the trained decoder.
"""

import argparse
import json
import os
import sys

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, ROOT)   # run from a checkout without installing

COARSE = 4   # the spatial condition: COARSE x COARSE mean colours of each image


def build(num_codes, code_dim, filters=64):
    """(encoder, quantizer, decoder): 32x32x3 in [-1, 1] -> 8x8xD -> 8x8 codes -> 32x32x3."""
    import keras
    from keras import layers

    def res_block(x):
        h = layers.Conv2D(filters, 3, padding="same", activation="relu")(x)
        return layers.Add()([x, layers.Conv2D(filters, 1)(h)])

    inp = keras.Input((32, 32, 3))
    h = layers.Conv2D(filters, 4, strides=2, padding="same", activation="relu")(inp)
    h = layers.Conv2D(filters, 4, strides=2, padding="same", activation="relu")(h)
    h = res_block(res_block(h))
    encoder = keras.Model(inp, layers.Conv2D(code_dim, 1)(layers.ReLU()(h)), name="encoder")
    z = keras.Input((8, 8, code_dim))
    h = layers.Conv2D(filters, 3, padding="same")(z)
    h = layers.ReLU()(res_block(res_block(h)))
    h = layers.Conv2DTranspose(filters, 4, strides=2, padding="same", activation="relu")(h)
    out = layers.Conv2DTranspose(3, 4, strides=2, padding="same")(h)
    decoder = keras.Model(z, out, name="decoder")
    return encoder, Quantizer(num_codes, code_dim), decoder


def Quantizer(num_codes, code_dim):
    import keras
    import tensorflow as tf

    class _Quantizer(keras.layers.Layer):
        """Nearest-codebook-vector quantisation with the straight-through gradient."""

        def build(self, input_shape):
            self.codebook = self.add_weight(shape=(num_codes, code_dim), name="codebook",
                                            initializer="random_uniform")

        def codes(self, z):
            """(B, H, W, D) -> (B, H, W) int32 indices of the nearest codebook vectors."""
            flat = tf.reshape(z, [-1, code_dim])
            d = (tf.reduce_sum(flat ** 2, 1, keepdims=True) - 2 * flat @ tf.transpose(
                self.codebook) + tf.reduce_sum(self.codebook ** 2, 1)[None])
            return tf.reshape(tf.cast(tf.argmin(d, 1), tf.int32), tf.shape(z)[:-1])

        def lookup(self, codes):
            return tf.gather(self.codebook, codes)

        def call(self, z):
            q = self.lookup(self.codes(z))
            # codebook loss + 0.25 x commitment loss, as in the paper
            loss = (tf.reduce_mean((q - tf.stop_gradient(z)) ** 2)
                    + 0.25 * tf.reduce_mean((tf.stop_gradient(q) - z) ** 2))
            return z + tf.stop_gradient(q - z), loss

    return _Quantizer(name="quantizer")


def coarse_colours(images):
    """(N, 32, 32, 3) uint8 -> (N, COARSE, COARSE, 3) float32 mean colours in [-1, 1]."""
    n, s = len(images), 32 // COARSE
    x = images.reshape(n, COARSE, s, COARSE, s, 3).astype(np.float32).mean((2, 4))
    return (x - 127.5) / 127.5


def _refuse_existing(a, path):
    if os.path.exists(path) and not a.overwrite:
        sys.exit(f"vqvae.py: error: {path} exists already: choose another --out / --png, or "
                 "pass --overwrite to replace it")


def train(a):
    _refuse_existing(a, os.path.join(a.out, "vqvae.json"))
    import keras
    import tensorflow as tf

    from pixelcnn_pp.data import make_loader
    import imageio.v2 as imageio

    from pixelcnn_pp.plotting import img_tile
    keras.utils.set_random_seed(a.seed)
    splits = {s: make_loader("demo", "", s, 1, return_labels=True) for s in ("train", "test")}
    x_train = splits["train"].data.astype(np.float32) / 127.5 - 1
    encoder, quantizer, decoder = build(a.num_codes, a.code_dim)
    quantizer.build(None)
    # Codebook from encoder outputs of random images: every code starts in use.
    z0 = encoder(x_train[np.random.RandomState(a.seed).choice(len(x_train), 256)]).numpy()
    quantizer.codebook.assign(z0.reshape(-1, a.code_dim)[:a.num_codes])
    variables = (encoder.trainable_variables + quantizer.trainable_variables
                 + decoder.trainable_variables)
    optimizer = keras.optimizers.Adam(a.learning_rate)

    @tf.function
    def step(x):
        with tf.GradientTape() as tape:
            q, vq_loss = quantizer(encoder(x))
            mse = tf.reduce_mean((decoder(q) - x) ** 2)
            loss = mse + vq_loss
        optimizer.apply_gradients(zip(tape.gradient(loss, variables), variables))
        return mse

    rng = np.random.RandomState(a.seed)
    for i in range(1, a.steps + 1):
        mse = float(step(x_train[rng.randint(0, len(x_train), a.batch_size)]))
        if i % 200 == 0 or i == a.steps:
            print(f"step {i}: reconstruction mse {mse:.4f} (images in [-1, 1])", flush=True)

    def encode(images):
        x = images.astype(np.float32) / 127.5 - 1
        return np.concatenate([quantizer.codes(encoder(x[i:i + 500])).numpy()
                               for i in range(0, len(x), 500)])

    codes = {s: encode(splits[s].data) for s in splits}
    test = splits["test"].data
    recon = decode_codes(quantizer, decoder, codes["test"])
    mse = float(np.mean(((recon.astype(np.float32) - test) / 255.0) ** 2))
    os.makedirs(a.out, exist_ok=True)
    encoder.save_weights(os.path.join(a.out, "encoder.weights.h5"))
    decoder.save_weights(os.path.join(a.out, "decoder.weights.h5"))
    np.save(os.path.join(a.out, "codebook.npy"), quantizer.codebook.numpy())
    np.savez(os.path.join(a.out, "codes.npz"), num_categories=np.int64(a.num_codes),
             train_codes=codes["train"], test_codes=codes["test"],
             train_labels=splits["train"].labels, test_labels=splits["test"].labels,
             train_spatial=coarse_colours(splits["train"].data),
             test_spatial=coarse_colours(test))
    pick = np.arange(0, len(test), len(test) // 10)[:10]      # one row of originals above
    pairs = np.concatenate([test[pick], recon[pick]])         # one of reconstructions
    imageio.imwrite(os.path.join(a.out, "reconstructions.png"),
                    img_tile(pairs, tile_shape=(2, 10), border_color=255))
    used = len(np.unique(codes["train"]))
    report = {"steps": a.steps, "num_codes": a.num_codes, "code_dim": a.code_dim,
              "codes_used": used, "test_mse": mse,
              "test_psnr_db": float(10 * np.log10(1.0 / mse))}
    with open(os.path.join(a.out, "vqvae.json"), "w") as f:
        json.dump(report, f, indent=2)
    print(json.dumps(report))


def decode_codes(quantizer, decoder, codes):
    """(N, 8, 8) codes -> (N, 32, 32, 3) uint8 images."""
    out = np.concatenate([decoder(quantizer.lookup(codes[i:i + 500])).numpy()
                          for i in range(0, len(codes), 500)])
    return np.clip(np.round((out + 1) * 127.5), 0, 255).astype(np.uint8)


def decode(a):
    """Decode the code maps of --codes into a PNG tile. When the .npz also holds the spatial
    maps the codes were drawn under (sample.py writes them), each row of decoded images has
    the row of its conditions (the coarse colours, enlarged) above it."""
    _refuse_existing(a, a.png)
    import imageio.v2 as imageio

    from pixelcnn_pp.plotting import img_tile
    with open(os.path.join(a.out, "vqvae.json")) as f:
        report = json.load(f)
    _, quantizer, decoder = build(report["num_codes"], report["code_dim"])
    quantizer.build(None)
    quantizer.codebook.assign(np.load(os.path.join(a.out, "codebook.npy")))
    decoder.load_weights(os.path.join(a.out, "decoder.weights.h5"))
    with np.load(a.codes) as f:
        codes = f["codes"]
        spatial = f["spatial"] if "spatial" in f else None
    images = decode_codes(quantizer, decoder, codes)[:a.max_images]
    cols = min(len(images), a.columns)
    rows = -(-len(images) // cols)
    if spatial is not None:       # a row of conditions above each row of samples
        s = 32 // spatial.shape[1]
        maps = np.clip(np.round((spatial[:len(images)] + 1) * 127.5), 0, 255).astype(np.uint8)
        maps = np.repeat(np.repeat(maps, s, axis=1), s, axis=2)
        pad = rows * cols - len(images)
        blank = np.full((pad, 32, 32, 3), 255, np.uint8)
        images = np.concatenate([np.concatenate([maps, blank]).reshape(rows, cols, 32, 32, 3),
                                 np.concatenate([images, blank]).reshape(rows, cols, 32, 32, 3)],
                                axis=1).reshape(-1, 32, 32, 3)
        rows *= 2
    if a.scale > 1:
        images = np.repeat(np.repeat(images, a.scale, axis=1), a.scale, axis=2)
    imageio.imwrite(a.png, img_tile(images, tile_shape=(rows, cols), border_color=255))
    print(f"wrote {a.png}: {len(codes)} code maps of {a.codes} decoded"
          + (", each row below the row of its spatial conditions" if spatial is not None
             else ""))


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("command", choices=["train", "decode"])
    p.add_argument("--out", default="runs/vqvae", help="the VQ-VAE's folder")
    p.add_argument("--steps", type=int, default=3000)
    p.add_argument("--batch_size", type=int, default=64)
    p.add_argument("--num_codes", type=int, default=64)
    p.add_argument("--code_dim", type=int, default=16)
    p.add_argument("--learning_rate", type=float, default=1e-3)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--codes", help="decode: an .npz with 'codes' (N, 8, 8)")
    p.add_argument("--png", help="decode: the PNG tile to write")
    p.add_argument("--columns", type=int, default=8, help="decode: images per row")
    p.add_argument("--max_images", type=int, default=64, help="decode: images shown")
    p.add_argument("--scale", type=int, default=2, help="decode: enlarge each image so much")
    p.add_argument("--overwrite", action="store_true",
                   help="replace the VQ-VAE (train) or the PNG (decode) if it exists")
    a = p.parse_args()
    if a.command == "decode" and not (a.codes and a.png):
        p.error("decode needs --codes and --png")
    (train if a.command == "train" else decode)(a)


if __name__ == "__main__":
    main()
