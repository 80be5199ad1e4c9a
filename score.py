"""Score every image of a data set under a trained model: NLL, bits/dim and, when asked, the
likelihood ratio against a background model and the input-complexity score; optionally an
out-of-distribution set too, with AUROCs (docs/SCORING.md).

    python score.py --save_dir runs/demo --out scores.csv
    python score.py --save_dir runs/demo --data_set folder --data_dir photos --out photos.csv
    python score.py --save_dir runs/demo --background_save_dir runs/demo_bg --input_complexity \\
        --ood_data_set folder --ood_data_dir other --out ood.csv --heatmaps heatmaps

The model is loaded with its Polyak-averaged weights (``--raw``: the trained ones), as
evaluation does. One CSV row per image; with --ood_* the rows of both sets, a ``set`` column
telling them apart (in / out), and a last line of JSON with the AUROCs.
"""

import os

os.environ.setdefault("PIXELCNN_QUIET_TF", "1")  # TensorFlow's start-up log lines off: cli.py

import csv  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402

from absl import flags  # noqa: E402

from pixelcnn_pp import cli  # noqa: E402

F = flags.FLAGS
flags.DEFINE_string("save_dir", None, "A save_dir written by train.py")
flags.DEFINE_string("tf1_checkpoint", None, "An original TF1 checkpoint prefix instead (give "
                    "the model flags)")
flags.DEFINE_boolean("raw", False, "Use the raw trained weights instead of the averages")
flags.DEFINE_string("data_set", None, "Data set to score (default: the save_dir's; cifar for "
                    "a TF1 checkpoint): demo|cifar|imagenet|imagenet64|mnist|folder or "
                    "package.module[:Class]")
flags.DEFINE_string("data_dir", None, "Location of the data set (default: the save_dir's)")
flags.DEFINE_enum("subset", "test", ["test", "train"], "Which split to score")
flags.DEFINE_string("out", "scores.csv", "CSV to write, one row per image")
flags.DEFINE_boolean("overwrite", False, "Replace --out and heatmap files that exist already")
flags.DEFINE_integer("batch_size", 16, "Images per network pass")
flags.DEFINE_integer("max_images", None, "Score only the first N images of each set")
flags.DEFINE_string("background_save_dir", None, "A background model's save_dir (trained with "
                    "--input_mutation_rate): adds the likelihood ratio column llr")
flags.DEFINE_boolean("input_complexity", False, "Add the PNG input complexity and ic_score = "
                     "bits_per_dim - input_complexity")
flags.DEFINE_string("ood_data_set", None, "A second (out-of-distribution) data set to score")
flags.DEFINE_string("ood_data_dir", None, "Location of --ood_data_set")
flags.DEFINE_enum("ood_subset", "test", ["test", "train"], "Which split of --ood_data_set")
flags.DEFINE_string("heatmaps", None, "Folder for PNGs of the first --num_heatmaps images of "
                    "each set beside their per-pixel NLL maps in bits")
flags.DEFINE_integer("num_heatmaps", 16, "How many heatmaps per set")
flags.DEFINE_integer("nr_resnet", 5, "TF1 checkpoint: residual blocks per stage")
flags.DEFINE_integer("nr_filters", 160, "TF1 checkpoint: filters")
flags.DEFINE_integer("nr_logistic_mix", 10, "TF1 checkpoint: logistic components")
flags.DEFINE_enum("resnet_nonlinearity", "concat_elu", ["concat_elu", "elu", "relu"],
                  "TF1 checkpoint: nonlinearity")
flags.DEFINE_integer("num_classes", 0, "TF1 checkpoint: classes of a class-conditional model "
                     "(0: unconditional)")

_MODEL_FLAGS = ("nr_resnet", "nr_filters", "nr_logistic_mix", "resnet_nonlinearity",
                "num_classes")


def _check_flags():
    if not F.save_dir and not F.tf1_checkpoint:
        raise cli.UsageError("give --save_dir (a run of train.py) or --tf1_checkpoint")
    if F.save_dir and F.tf1_checkpoint:
        raise cli.UsageError("give --save_dir or --tf1_checkpoint, not both")
    given = [f"--{n}" for n in _MODEL_FLAGS if F[n].present]
    if F.save_dir and given:
        raise cli.UsageError(f"{', '.join(given)}: the model flags are for --tf1_checkpoint; a "
                             "save_dir has its own config.json")
    for name, low in (("batch_size", 1), ("max_images", 1), ("num_heatmaps", 0)):
        v = F[name].value
        if v is not None and v < low:
            raise cli.UsageError(f"--{name} must be an integer >= {low}; got {v}")
    if (F.ood_data_dir or F["ood_subset"].present) and not F.ood_data_set:
        raise cli.UsageError("--ood_data_dir / --ood_subset need --ood_data_set")
    if F["num_heatmaps"].present and not F.heatmaps:
        raise cli.UsageError("--num_heatmaps is for --heatmaps DIR")
    if not F.out:
        raise cli.UsageError("--out must name a CSV file")


def _refuse_existing(paths):
    """FileExistsError naming the files of ``paths`` that exist (unless --overwrite)."""
    there = [p for p in paths if os.path.exists(p)]
    if there and not F.overwrite:
        more = f" and {len(there) - 3} more" if len(there) > 3 else ""
        raise FileExistsError(f"{', '.join(there[:3])}{more} exist(s) already: choose another "
                              "--out / --heatmaps, or pass --overwrite to replace them")


def _heatmap_paths(n_in, n_out):
    k = F.num_heatmaps
    return ([os.path.join(F.heatmaps, f"heatmap_{i:05d}.png") for i in range(min(k, n_in))]
            + [os.path.join(F.heatmaps, f"heatmap_out_{i:05d}.png")
               for i in range(min(k, n_out))])


def _load_set(data_set, data_dir, subset, what):
    """{"images", "labels" (or None), "files" (or None), "name"} of one split, loaded once."""
    from pixelcnn_pp.training import make_loader
    loader = make_loader(data_set, data_dir, subset, 1)
    images = loader.data
    labels = getattr(loader, "labels", None)
    files = getattr(loader, "files", None)
    if F.max_images is not None:
        images = images[:F.max_images]
        labels = None if labels is None else labels[:F.max_images]
        files = None if files is None else list(files[:F.max_images])
    if len(images) == 0:
        raise cli.RunError(f"{what} {data_set!r} ({subset}) holds no images")
    return {"images": images, "labels": labels, "files": files,
            "name": f"{data_set!r} ({subset} split{', ' + data_dir if data_dir else ''})"}


def _check_shape(config, s, what):
    shape = tuple(s["images"].shape[1:])
    if shape != tuple(config.image_shape):
        H, W, C = config.image_shape
        raise cli.UsageError(f"the {what} takes {H}x{W}x{C} images but {s['name']} has "
                             f"{'x'.join(map(str, shape))} images: score data of the model's "
                             "size and channels")


def _labels_for(config, s):
    if not config.num_classes:
        return None
    if s["labels"] is None:
        raise cli.UsageError(f"the model is class-conditional: it scores p(x | label), but "
                             f"{s['name']} has no labels")
    return s["labels"]


def _write_csv(path, rows, columns):
    d = os.path.dirname(os.path.abspath(path))
    os.makedirs(d, exist_ok=True)
    tmp = os.path.join(d, f".{os.path.basename(path)}.tmp")
    with open(tmp, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=columns, extrasaction="ignore")
        w.writeheader()
        w.writerows(rows)
    os.replace(tmp, path)   # never a half-written CSV


def main(argv):
    if len(argv) > 1:
        raise cli.UsageError(f"unexpected arguments {' '.join(argv[1:])!r} (see score.py "
                             "--help)")
    _check_flags()
    _refuse_existing([F.out])
    import numpy as np

    from pixelcnn_pp import checkpoint as ckpt_lib
    from pixelcnn_pp import scoring
    from pixelcnn_pp.config import ModelConfig

    data_set, data_dir = F.data_set, F.data_dir
    if F.save_dir:
        if not os.path.isdir(F.save_dir):
            raise ckpt_lib.NoCheckpointError(f"save_dir {F.save_dir!r} does not exist: give "
                                             "the --save_dir of a train.py run")
        _, training = ckpt_lib.read_config(F.save_dir)
        data_set = data_set or training.get("data_set", "cifar")
        data_dir = data_dir or training.get("data_dir", "data_files")
    else:
        data_set, data_dir = data_set or "cifar", data_dir or "data_files"
    sets = {"in": _load_set(data_set, data_dir, F.subset, "--data_set")}
    if F.ood_data_set:
        sets["out"] = _load_set(F.ood_data_set, F.ood_data_dir or "data_files", F.ood_subset,
                                "--ood_data_set")
    if F.heatmaps:
        _refuse_existing(_heatmap_paths(len(sets["in"]["images"]),
                                        len(sets["out"]["images"]) if "out" in sets else 0))

    if F.save_dir:
        model, config = ckpt_lib.load_for_inference(save_dir=F.save_dir,
                                                    use_averages=not F.raw)
    else:
        config = ModelConfig(image_shape=tuple(sets["in"]["images"].shape[1:]), dropout_p=0.0,
                             nr_resnet=F.nr_resnet, nr_filters=F.nr_filters,
                             nr_logistic_mix=F.nr_logistic_mix,
                             resnet_nonlinearity=F.resnet_nonlinearity,
                             num_classes=F.num_classes or None)
        model, config = ckpt_lib.load_for_inference(tf1_checkpoint=F.tf1_checkpoint,
                                                    model_config=config,
                                                    use_averages=not F.raw)
    if config.energy_distance:
        raise cli.UsageError("an energy-distance model has no likelihood to score images "
                             "with: score with a model trained on the likelihood")
    background, bg_config = None, None
    if F.background_save_dir:
        background, bg_config = ckpt_lib.load_model(F.background_save_dir, use_averages=True)
        if bg_config.energy_distance:
            raise cli.UsageError("the background model is an energy-distance model: it has no "
                                 "likelihood")
    for key, s in sets.items():
        _check_shape(config, s, "model")
        if bg_config is not None:
            _check_shape(bg_config, s, "background model")

    columns = (["set"] if "out" in sets else []) + ["index"]
    if any(s["files"] is not None for s in sets.values()):
        columns.append("file")
    if any(s["labels"] is not None for s in sets.values()):
        columns.append("label")
    columns += ["nll_nats", "bits_per_dim"]
    if background is not None:
        columns.append("llr")
    if F.input_complexity:
        columns += ["input_complexity", "ic_score"]

    rows, scores = [], {}
    for key, s in sets.items():
        labels = _labels_for(config, s)
        bg_labels = _labels_for(bg_config, s) if bg_config is not None else None
        bar = scoring.ProgressBar(f"scoring {key}")
        sc = scoring.score_images(model, s["images"], labels=labels, batch_size=F.batch_size,
                                  progress=bar)
        if background is not None:
            bar = scoring.ProgressBar(f"background {key}")
            bg = scoring.score_images(background, s["images"], labels=bg_labels,
                                      batch_size=F.batch_size, progress=bar)
            sc["llr"] = bg["bits_per_dim"] - sc["bits_per_dim"]
        if F.input_complexity:
            sc["input_complexity"] = scoring.input_complexity(s["images"])
            sc["ic_score"] = sc["bits_per_dim"] - sc["input_complexity"]
        scores[key] = sc
        for i in range(len(s["images"])):
            row = {"set": key, "index": i}
            if s["files"] is not None:
                row["file"] = s["files"][i]
            if s["labels"] is not None:
                row["label"] = int(s["labels"][i])
            for name in ("nll_nats", "bits_per_dim", "llr", "input_complexity", "ic_score"):
                if name in sc:
                    row[name] = repr(float(sc[name][i]))
            rows.append(row)
        if F.heatmaps and F.num_heatmaps:
            _write_heatmaps(model, config, s, sc, labels, key)
    _write_csv(F.out, rows, columns)

    n_in = len(sets["in"]["images"])
    print(f"wrote {F.out}: {len(rows)} rows; mean bits/dim {data_set!r} "
          f"{float(np.mean(scores['in']['bits_per_dim'])):.4f}"
          + (f", {F.ood_data_set!r} {float(np.mean(scores['out']['bits_per_dim'])):.4f}"
             if "out" in scores else ""))
    if "out" not in scores:
        print(json.dumps({"images": n_in,
                          "bits_per_dim": float(np.mean(scores["in"]["bits_per_dim"]))}))
        return
    # Higher = more likely out: bits/dim and ic_score as they are; the likelihood ratio is
    # high for in-distribution images, so its negative.
    sign = {"bits_per_dim": 1.0, "llr": -1.0, "ic_score": 1.0}
    result = {name: scoring.auroc(sign[name] * scores["in"][name],
                                  sign[name] * scores["out"][name])
              for name in sign if name in scores["in"]}
    print(json.dumps({"auroc": result, "in": n_in, "out": len(sets["out"]["images"])}))


def _write_heatmaps(model, config, s, sc, labels, key):
    import imageio.v3 as iio

    from pixelcnn_pp import scoring
    k = min(F.num_heatmaps, len(s["images"]))
    lab = None if labels is None else labels[:k]
    nll = scoring.subpixel_nll(model, s["images"][:k], labels=lab, batch_size=F.batch_size)
    bits = nll.sum(axis=-1) / math.log(2.0)                    # (k, H, W) bits per pixel
    os.makedirs(F.heatmaps, exist_ok=True)
    prefix = "heatmap_" if key == "in" else "heatmap_out_"
    for i in range(k):
        img = scoring.heatmap_image(s["images"][i], bits[i], sc["bits_per_dim"][i])
        iio.imwrite(os.path.join(F.heatmaps, f"{prefix}{i:05d}.png"), img)


if __name__ == "__main__":
    cli.run("score.py", main)
