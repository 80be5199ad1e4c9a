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
from pixelcnn_pp.cli.progress import ProgressBar
from pixelcnn_pp.config import ModelConfig
from pixelcnn_pp.errors import UsageError

__all__ = ["ScoreRequest", "score_to_files"]

# The CSV's score columns, in order, and the sign that makes each an out-score for AUROCs
# (higher = more likely out): the likelihood ratio is high for in-distribution images.
_SCORES = {"nll_nats": None, "bits_per_dim": 1.0, "bits_per_code": 1.0, "llr": -1.0,
           "input_complexity": None, "ic_score": 1.0}


@dataclasses.dataclass
class ScoreRequest:
    """score.py's flags (docs/SCORING.md): the model (``save_dir``, or ``tf1_checkpoint`` with
    ``tf1_model``, ModelConfig arguments), the sets and what to write. A subset is "train",
    "test" or "all" (both splits, each image once: ``_load_set``)."""
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
    ood_subset: str = "all"
    heatmaps: Optional[str] = None
    num_heatmaps: int = 16
    fast_ops: bool = False


def _refuse_existing(r, paths):
    """FileExistsError naming the files of ``paths`` that exist (unless --overwrite)."""
    there = [p for p in paths if os.path.exists(p)]
    if there and not r.overwrite:
        more = f" and {len(there) - 3} more" if len(there) > 3 else ""
        raise FileExistsError(f"{', '.join(there[:3])}{more} exist(s) already: choose another "
                              "--out / --heatmaps, or pass --overwrite to replace them")


def _heatmap_path(r, key, i):
    return os.path.join(r.heatmaps, f"heatmap_{'' if key == 'in' else 'out_'}{i:05d}.png")


def _load_set(r, data_set, data_dir, subset):
    """{"images", "labels", "spatial", "files" (each or None), "name"} of a subset, loaded
    once ("images" are code maps for a codes data set).

    "all" is the train split then the test split; a loader that serves the same images for
    both (tools/ood_sets.py's) gives them once."""
    from pixelcnn_pp.data import make_loader
    from pixelcnn_pp.data.loader import EmptySplitError
    if subset != "all":
        splits = [make_loader(data_set, data_dir, subset, 1)]
    else:
        splits = []
        for s in ("train", "test"):
            try:
                splits.append(make_loader(data_set, data_dir, s, 1))
            except EmptySplitError:   # e.g. a small folder's test split: the rest is all
                pass
        if not splits:
            raise EmptySplitError(f"{data_set!r} ({data_dir}) holds no images to score")
    if len(splits) == 2 and np.array_equal(splits[0].data, splits[1].data):
        splits = splits[:1]

    def joined(attr):               # None unless every split has it
        parts = [getattr(s, attr, None) for s in splits]
        return None if any(p is None for p in parts) else np.concatenate(parts)

    s = {key: joined(attr) for key, attr in (("images", "data"), ("labels", "labels"),
                                             ("spatial", "spatial"), ("files", "files"))}
    if r.max_images is not None:
        s = {key: None if v is None else v[:r.max_images] for key, v in s.items()}
    split = "train+test splits" if subset == "all" else f"{subset} split"
    return {**s, "name": f"{data_set!r} ({split}{', ' + data_dir if data_dir else ''})"}


def _check_set(config, s, what):
    """UsageError unless the model ``what`` can score the set: images or code maps of its
    shape, its labels, its spatial maps."""
    shape = tuple(s["images"].shape[1:])
    kind = "code maps" if config.num_categories else "images"
    if (s["images"].ndim == 3) != bool(config.num_categories):
        have = "code maps" if s["images"].ndim == 3 else "images"
        raise UsageError(f"the {what} scores {kind} but {s['name']} holds {have}: score a data "
                         f"set of {kind}")
    if shape != tuple(config.image_shape):
        raise UsageError(f"the {what} takes {'x'.join(map(str, config.image_shape))} {kind} but "
                         f"{s['name']} has {'x'.join(map(str, shape))} {kind}: score data of "
                         "the model's size" + ("" if config.num_categories else " and channels"))
    if config.num_classes and s["labels"] is None:
        raise UsageError(f"the {what} is class-conditional: it scores p(x | label), but "
                         f"{s['name']} has no labels")
    if config.spatial_channels and s["spatial"] is None:
        raise UsageError(f"the {what} is conditioned on spatial maps: it scores p(x | map), "
                         f"but {s['name']} has no spatial maps")


def _load_models(r, in_shape):
    """(model, config, background or None, its config or None), likelihood models only."""
    tf1_config = ModelConfig.for_tf1(in_shape, **r.tf1_model) if r.tf1_checkpoint else None
    model, config = ckpt_lib.load_for_inference(r.save_dir, r.tf1_checkpoint, tf1_config,
                                                use_averages=r.use_averages,
                                                fast_ops=r.fast_ops)
    background, bg_config = None, None
    if r.background_save_dir:
        background, bg_config = ckpt_lib.load_for_inference(
            r.background_save_dir, use_averages=True, fast_ops=r.fast_ops)
    for what, c in (("model", config), ("background model", bg_config)):
        if c is not None and c.energy_distance:
            raise UsageError(f"the {what} is an energy-distance model: it has no likelihood "
                             "to score images with; use one trained on the likelihood")
    return model, config, background, bg_config


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
    returns (the summary lines, the result dict score.py prints as JSON)."""
    _refuse_existing(r, [r.out])
    data_set, data_dir = ckpt_lib.data_source(r.save_dir, r.data_set, r.data_dir)
    sets = {"in": _load_set(r, data_set, data_dir, r.subset)}
    if r.ood_data_set:
        sets["out"] = _load_set(r, r.ood_data_set, r.ood_data_dir or "data_files",
                                r.ood_subset)
    if r.heatmaps:
        _refuse_existing(r, [_heatmap_path(r, key, i) for key, s in sets.items()
                             for i in range(min(r.num_heatmaps, len(s["images"])))])
    model, config, background, bg_config = _load_models(r, sets["in"]["images"].shape[1:])
    for s in sets.values():
        _check_set(config, s, "model")
        if bg_config is not None:
            _check_set(bg_config, s, "background model")
    if r.input_complexity and config.num_categories:
        raise UsageError("--input_complexity measures images by their PNG encoding; this "
                         "model is a prior over code maps: leave --input_complexity out")
    key_bits = "bits_per_code" if config.num_categories else "bits_per_dim"

    rows, scores = [], {}
    for key, s in sets.items():
        sc = scoring.score_images(model, s["images"], labels=s["labels"],
                                  spatial=s["spatial"], batch_size=r.batch_size,
                                  background=background,
                                  progress=ProgressBar(f"scoring {key}", tty_only=True))
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
            rows.append({**row, **{name: repr(float(v[i])) for name, v in sc.items()}})
        if r.heatmaps and r.num_heatmaps:
            _write_heatmaps(r, model, s, sc, key)
    columns = ((["set"] if "out" in sets else []) + ["index"]
               + (["file"] if any(s["files"] is not None for s in sets.values()) else [])
               + (["label"] if any(s["labels"] is not None for s in sets.values()) else [])
               + [name for name in _SCORES if name in scores["in"]])
    _write_csv(r.out, rows, columns)

    n = {key: len(s["images"]) for key, s in sets.items()}
    means = ", ".join(f"{s['name']} {float(np.mean(scores[key][key_bits])):.4f}"
                      for key, s in sets.items())
    summary = (f"wrote {r.out}: {len(rows)} rows; mean "
               f"{'bits/code' if config.num_categories else 'bits/dim'} {means}")
    if "out" not in sets:
        return summary, {"images": n["in"], key_bits: float(np.mean(scores["in"][key_bits]))}
    auroc = {name: scoring.auroc(sign * scores["in"][name], sign * scores["out"][name])
             for name, sign in _SCORES.items() if sign is not None and name in scores["in"]}
    kind = "code maps" if config.num_categories else "images"
    summary += (f"\nAUROC, {n['in']} in-distribution against {n['out']} out-of-distribution "
                f"{kind}: " + ", ".join(f"{name} {v:.4f}" for name, v in auroc.items()))
    return summary, {"auroc": auroc, "in": n["in"], "out": n["out"]}


def _write_heatmaps(r, model, s, sc, key):
    k = min(r.num_heatmaps, len(s["images"]))
    first = {name: None if s[name] is None else s[name][:k] for name in ("labels", "spatial")}
    nll = scoring.subpixel_nll(model, s["images"][:k], batch_size=r.batch_size, **first)
    K = model.num_categories
    if K:     # (k, H, W) bits per code, beside the codes in their colours
        bits, pictures = nll / math.log(2.0), plotting.codes_to_rgb(s["images"][:k], K, 1)
    else:     # (k, H, W) bits per pixel, beside the images
        bits, pictures = nll.sum(axis=-1) / math.log(2.0), s["images"][:k]
    per = sc["bits_per_code" if K else "bits_per_dim"]
    os.makedirs(r.heatmaps, exist_ok=True)
    for i in range(k):
        iio.imwrite(_heatmap_path(r, key, i),
                    plotting.heatmap_image(pictures[i], bits[i], per[i], codes=bool(K)))
