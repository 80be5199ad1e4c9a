"""Learning parity: the original's small-model recipe for N steps, several seeds; test bits/dim.

    python benchmarks/learning_parity.py --data_dir parity_data --make_data --seeds 1,2,3
    python benchmarks/learning_parity.py --data_dir parity_data --steps 3000 --seeds 1 \
        --dropout_p 0                                  # one experiment of docs/LEARNING.md
    python benchmarks/learning_parity.py --smoke       # a minute: checks that it runs

The recipe is the one the original's train.py runs with ``--nr_resnet 1 --nr_filters 32
--nr_logistic_mix 5``: batch 16, data-dependent init on 16 images, dropout 0.5, Adam
(0.95, 0.9995), learning rate 1e-3 decayed by 0.999995 before every step, Polyak averages.
Each seed trains through ``training.train`` (as ``train.py`` does), then the first
``--test_images`` test images are scored with the raw trained weights and with the Polyak
averages. One JSON line per seed, then a last JSON line with the means.

``--make_data`` writes ``--data_dir`` first, in the CIFAR-10 python layout
(``cifar-10-python/cifar-10-batches-py/data_batch_1..5, test_batch``; 50,000 train and 10,000
test images, which the original's own loader also reads): 32x32 crops of the demo set's
photographs, drawn as the demo set's are (train crops from the left 70% of each photograph,
test crops from the right 30%), one class per photograph.
"""

import json
import os
import pickle
import sys
import tempfile
import time

from absl import app, flags

from model_flags import define_model_flags

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

F = flags.FLAGS
flags.DEFINE_string("data_dir", "parity_data", "CIFAR-layout folder (written by --make_data)")
flags.DEFINE_boolean("make_data", False, "Write --data_dir from the demo photographs first "
                     "(refuses to overwrite an existing one)")
flags.DEFINE_string("seeds", "1,2,3", "Comma-separated seeds, one training run each")
flags.DEFINE_integer("steps", 3000, "Training steps per seed")
flags.DEFINE_integer("test_images", 2000, "Score the first this many test images")
define_model_flags(nr_resnet=1, nr_filters=32, nr_logistic_mix=5, image_size=None,
                   batch_help="Batch size")   # the original's small recipe
flags.DEFINE_float("dropout_p", 0.5, "Dropout rate")
flags.DEFINE_float("polyak_decay", 0.9995, "Polyak decay")
flags.DEFINE_boolean("polyak_warmup", True, "The averages' warm-up (train.py's default); "
                     "--nopolyak_warmup: the original's constant decay")
flags.DEFINE_string("save_root", None, "Keep each seed's save_dir under this folder "
                    "(default: a temporary folder, deleted)")
flags.DEFINE_boolean("smoke", False, "Tiny data and 20 steps: checks that it runs")

DATA_SEED = 2017


def make_cifar_layout(out_dir, n_train=50000, n_test=10000, seed=DATA_SEED):
    """Write out_dir/cifar-10-python/cifar-10-batches-py/ from the demo photographs."""
    import numpy as np
    from data import demo_data

    folder = os.path.join(out_dir, "cifar-10-python", "cifar-10-batches-py")
    if os.path.exists(folder):
        raise FileExistsError(f"{folder} exists already: use it without --make_data, or give "
                              "another --data_dir")
    with np.load(demo_data.DEMO_FILE) as f:
        names = [str(c) for c in f["class_names"]]
        photos = [f[f"photo_{i}"] for i in range(len(names))]
    rng = np.random.RandomState(seed)

    def crops(n, test):
        rows = []
        for k in range(n):
            cls = k % len(photos)
            H, W = photos[cls].shape[:2]
            boundary = int(round(0.7 * W))          # as the demo set: test crops right of it
            side = int(round(np.exp(rng.uniform(np.log(32), np.log(96)))))
            top = rng.randint(0, H - side + 1)
            left = (rng.randint(boundary, W - side + 1) if test
                    else rng.randint(0, boundary - side + 1))
            rows.append((cls, top, left, side, rng.randint(2)))
        rows = np.array(rows, np.int64)
        return rows[rng.permutation(n)]

    os.makedirs(folder)
    for name, rows in [(f"data_batch_{i}", crops(n_train // 5, False)) for i in range(1, 6)] + \
            [("test_batch", crops(n_test, True))]:
        x = demo_data.render_crops(photos, rows)                       # (N, 32, 32, 3)
        flat = x.transpose(0, 3, 1, 2).reshape(len(x), -1)             # CIFAR's planes
        with open(os.path.join(folder, name), "wb") as fh:
            pickle.dump({"data": flat, "labels": [int(c) for c in rows[:, 0]]}, fh)
    with open(os.path.join(folder, "batches.meta"), "wb") as fh:
        pickle.dump({"label_names": names}, fh)
    return folder


def run_seed(seed, data_dir, data_set, save_dir, steps, test_images):
    """Train one seed as train.py does; {"seed", raw and averaged test bpd, seconds}."""
    from pixelcnn_pp import checkpoint as ckpt_lib
    from pixelcnn_pp.evaluation import test_bits_per_dim
    from pixelcnn_pp.data import make_loader
    from pixelcnn_pp.training import TrainConfig, train

    cfg = TrainConfig(data_dir=data_dir, data_set=data_set, save_dir=save_dir,
                      nr_resnet=F.nr_resnet, nr_filters=F.nr_filters,
                      nr_logistic_mix=F.nr_logistic_mix, batch_size=F.batch_size,
                      init_batch_size=F.batch_size, dropout_p=F.dropout_p,
                      polyak_decay=F.polyak_decay, polyak_warmup=F.polyak_warmup, nr_gpu=1,
                      seed=seed, max_steps=steps,
                      save_interval=10 ** 9, num_samples=0, quiet=True)
    t0 = time.time()
    records = train(cfg)
    out = {"seed": seed, "steps": steps, "polyak_warmup": F.polyak_warmup,
           "train_bpd_last_epoch": records[-1]["train_bpd"]}
    n_batches = max(1, test_images // F.batch_size)
    for key, averaged in (("test_bpd_raw", False), ("test_bpd_averaged", True)):
        model, config = ckpt_lib.load_for_inference(save_dir, use_averages=averaged)
        loader = make_loader(data_set, data_dir, "test", F.batch_size)
        out[key], out["test_images"] = test_bits_per_dim(model, config, loader, n_batches)
    out["seconds"] = round(time.time() - t0, 1)
    return out


def main(argv):
    del argv
    seeds = [int(s) for s in F.seeds.split(",") if s.strip()]
    data_set, data_dir, steps, test_images = "cifar", F.data_dir, F.steps, F.test_images
    tmp = tempfile.TemporaryDirectory()
    if F.smoke:
        data_set, data_dir, steps, test_images, seeds = "demo", None, 20, 64, seeds[:1]
    elif F.make_data:
        print("wrote", make_cifar_layout(data_dir), file=sys.stderr)
    root = F.save_root or tmp.name
    results = []
    for seed in seeds:
        save_dir = os.path.join(root, f"seed{seed}")
        r = run_seed(seed, data_dir, data_set, save_dir, steps, test_images)
        r.update(dropout_p=F.dropout_p, nr_resnet=F.nr_resnet, nr_filters=F.nr_filters,
                 nr_logistic_mix=F.nr_logistic_mix)
        print(json.dumps(r), flush=True)
        results.append(r)
    mean = lambda k: sum(r[k] for r in results) / len(results)  # noqa: E731
    print(json.dumps({"seeds": seeds, "steps": steps,
                      "mean_test_bpd_raw": mean("test_bpd_raw"),
                      "mean_test_bpd_averaged": mean("test_bpd_averaged")}))
    tmp.cleanup()


if __name__ == "__main__":
    app.run(main)
