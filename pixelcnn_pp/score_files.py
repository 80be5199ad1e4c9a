"""What score.py does: score a data set (and an out-of-distribution set) under a trained model,
write one CSV row per image and, when asked, heatmaps; the AUROCs of the two sets
(docs/SCORING.md). ``score_to_files(ScoreRequest(...))``; score.py fills the request from its
flags."""

import csv
import dataclasses
import math
import os
from typing import Optional

import imageio.v3 as iio
import numpy as np

from pixelcnn_pp import checkpoint as ckpt_lib
from pixelcnn_pp import plotting, scoring
from pixelcnn_pp.cli import ProgressBar, RunError, UsageError
from pixelcnn_pp.config import ModelConfig

__all__ = ["ScoreRequest", "score_to_files"]


@dataclasses.dataclass
class ScoreRequest:
    """score.py's flags (docs/SCORING.md): the model (``save_dir``, or ``tf1_checkpoint`` with
    ``tf1_model``, ModelConfig arguments), the sets and what to write."""
    save_dir: Optional[str] = None
    tf1_checkpoint: Optional[str] = None
    tf1_model: dict = dataclasses.field(default_factory=dict)
    use_averages: bool = True
    data_set: Optional[str] = None
    data_dir: Optional[str] = None
    subset: str = "test"
    out: str = "scores.csv"
    overwrite: bool = False
    batch_size: int = 16
    max_images: Optional[int] = None
    background_save_dir: Optional[str] = None
    input_complexity: bool = False
    ood_data_set: Optional[str] = None
    ood_data_dir: Optional[str] = None
    ood_subset: str = "test"
    heatmaps: Optional[str] = None
    num_heatmaps: int = 16


def _refuse_existing(r, paths):
    """FileExistsError naming the files of ``paths`` that exist (unless --overwrite)."""
    there = [p for p in paths if os.path.exists(p)]
    if there and not r.overwrite:
        more = f" and {len(there) - 3} more" if len(there) > 3 else ""
        raise FileExistsError(f"{', '.join(there[:3])}{more} exist(s) already: choose another "
                              "--out / --heatmaps, or pass --overwrite to replace them")


def _heatmap_paths(r, n_in, n_out):
    k = r.num_heatmaps
    return ([os.path.join(r.heatmaps, f"heatmap_{i:05d}.png") for i in range(min(k, n_in))]
            + [os.path.join(r.heatmaps, f"heatmap_out_{i:05d}.png")
               for i in range(min(k, n_out))])


def _load_set(r, data_set, data_dir, subset, what):
    """{"images", "labels" (or None), "files" (or None), "name"} of one split, loaded once."""
    from pixelcnn_pp.data import make_loader
    loader = make_loader(data_set, data_dir, subset, 1)
    images = loader.data
    labels = getattr(loader, "labels", None)
    files = getattr(loader, "files", None)
    if r.max_images is not None:
        images = images[:r.max_images]
        labels = None if labels is None else labels[:r.max_images]
        files = None if files is None else list(files[:r.max_images])
    if len(images) == 0:
        raise RunError(f"{what} {data_set!r} ({subset}) holds no images")
    return {"images": images, "labels": labels, "files": files,
            "name": f"{data_set!r} ({subset} split{', ' + data_dir if data_dir else ''})"}


def _check_shape(config, s, what):
    shape = tuple(s["images"].shape[1:])
    if shape != tuple(config.image_shape):
        H, W, C = config.image_shape
        raise UsageError(f"the {what} takes {H}x{W}x{C} images but {s['name']} has "
                         f"{'x'.join(map(str, shape))} images: score data of the model's "
                         "size and channels")


def _labels_for(config, s):
    if not config.num_classes:
        return None
    if s["labels"] is None:
        raise UsageError(f"the model is class-conditional: it scores p(x | label), but "
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


def score_to_files(r):
    """Score ``r``'s data set (and out-of-distribution set), write the CSV (and heatmaps);
    returns (a summary line, the result dict score.py prints as JSON)."""
    _refuse_existing(r, [r.out])

    data_set, data_dir = r.data_set, r.data_dir
    if r.save_dir:
        if not os.path.isdir(r.save_dir):
            raise ckpt_lib.NoCheckpointError(f"save_dir {r.save_dir!r} does not exist: give "
                                             "the --save_dir of a train.py run")
        _, training = ckpt_lib.read_config(r.save_dir)
        data_set = data_set or training.get("data_set", "cifar")
        data_dir = data_dir or training.get("data_dir", "data_files")
    else:
        data_set, data_dir = data_set or "cifar", data_dir or "data_files"
    sets = {"in": _load_set(r, data_set, data_dir, r.subset, "--data_set")}
    if r.ood_data_set:
        sets["out"] = _load_set(r, r.ood_data_set, r.ood_data_dir or "data_files",
                                r.ood_subset, "--ood_data_set")
    if r.heatmaps:
        _refuse_existing(r, _heatmap_paths(r, len(sets["in"]["images"]),
                                           len(sets["out"]["images"]) if "out" in sets else 0))

    if r.save_dir:
        source = {"save_dir": r.save_dir}
    else:
        source = {"tf1_checkpoint": r.tf1_checkpoint, "model_config": ModelConfig(
            image_shape=tuple(sets["in"]["images"].shape[1:]), dropout_p=0.0, **r.tf1_model)}
    model, config = ckpt_lib.load_for_inference(**source, use_averages=r.use_averages)
    if config.energy_distance:
        raise UsageError("an energy-distance model has no likelihood to score images "
                         "with: score with a model trained on the likelihood")
    background, bg_config = None, None
    if r.background_save_dir:
        background, bg_config = ckpt_lib.load_model(r.background_save_dir, use_averages=True)
        if bg_config.energy_distance:
            raise UsageError("the background model is an energy-distance model: it has no "
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
    if r.input_complexity:
        columns += ["input_complexity", "ic_score"]

    rows, scores = [], {}
    for key, s in sets.items():
        labels = _labels_for(config, s)
        bg_labels = _labels_for(bg_config, s) if bg_config is not None else None
        bar = ProgressBar(f"scoring {key}", tty_only=True)
        sc = scoring.score_images(model, s["images"], labels=labels, batch_size=r.batch_size,
                                  progress=bar)
        if background is not None:
            bar = ProgressBar(f"background {key}", tty_only=True)
            bg = scoring.score_images(background, s["images"], labels=bg_labels,
                                      batch_size=r.batch_size, progress=bar)
            sc["llr"] = bg["bits_per_dim"] - sc["bits_per_dim"]
        if r.input_complexity:
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
        if r.heatmaps and r.num_heatmaps:
            _write_heatmaps(r, model, config, s, sc, labels, key)
    _write_csv(r.out, rows, columns)

    n_in = len(sets["in"]["images"])
    summary = (f"wrote {r.out}: {len(rows)} rows; mean bits/dim {data_set!r} "
               f"{float(np.mean(scores['in']['bits_per_dim'])):.4f}"
               + (f", {r.ood_data_set!r} {float(np.mean(scores['out']['bits_per_dim'])):.4f}"
                  if "out" in scores else ""))
    if "out" not in scores:
        return summary, {"images": n_in,
                         "bits_per_dim": float(np.mean(scores["in"]["bits_per_dim"]))}
    # Higher = more likely out: bits/dim and ic_score as they are; the likelihood ratio is
    # high for in-distribution images, so its negative.
    sign = {"bits_per_dim": 1.0, "llr": -1.0, "ic_score": 1.0}
    result = {name: scoring.auroc(sign[name] * scores["in"][name],
                                  sign[name] * scores["out"][name])
              for name in sign if name in scores["in"]}
    return summary, {"auroc": result, "in": n_in, "out": len(sets["out"]["images"])}


def _write_heatmaps(r, model, config, s, sc, labels, key):
    k = min(r.num_heatmaps, len(s["images"]))
    lab = None if labels is None else labels[:k]
    nll = scoring.subpixel_nll(model, s["images"][:k], labels=lab, batch_size=r.batch_size)
    bits = nll.sum(axis=-1) / math.log(2.0)                    # (k, H, W) bits per pixel
    os.makedirs(r.heatmaps, exist_ok=True)
    prefix = "heatmap_" if key == "in" else "heatmap_out_"
    for i in range(k):
        img = plotting.heatmap_image(s["images"][i], bits[i], sc["bits_per_dim"][i])
        iio.imwrite(os.path.join(r.heatmaps, f"{prefix}{i:05d}.png"), img)
