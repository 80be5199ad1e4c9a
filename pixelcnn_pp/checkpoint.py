"""What a run leaves in ``save_dir`` and how to read it back.

    save_dir/config.json      {"model": ModelConfig, "training": {flag: value}}
    save_dir/ckpt/            ckpt-N.index / .data-*, and the `checkpoint` state file that
                              tf.train.latest_checkpoint reads (N: the optimiser step)

A training checkpoint holds ``model``, ``averages`` (PolyakAverage), ``optimizer``, the step
and epoch counters, the dropout RNG and the data loader's position (see train.py). For
inference only the model and its averages are read.

Saving (``save_checkpoint``) writes to a temporary name, reads every tensor back (TensorFlow's
bundle format keeps a CRC32C per tensor, which reading verifies), only then gives the files
their real name, updates the state file and deletes checkpoints beyond ``max_to_keep``.
Loading (``find_intact_checkpoint``, ``load_for_inference``) verifies the
newest checkpoint the same way, every tensor it will read (inference: the averages, or the
raw weights, only); a damaged one is renamed ``ckpt-N.damaged.index`` / ``.damaged.data-*``
(kept, never deleted), said so, and the newest intact one used.
"""

import json
import os
import re
import shutil
import sys
import tempfile

import tensorflow as tf

from pixelcnn_pp.config import ModelConfig
from pixelcnn_pp.errors import UsageError, UserError

__all__ = ["CONFIG_FILE", "CKPT_SUBDIR", "write_json_atomic", "write_config", "read_config",
           "data_source", "latest_checkpoint", "build_model", "load_for_inference",
           "restore_weights", "INFERENCE_TENSORS",
           "list_checkpoints", "verify_checkpoint", "find_intact_checkpoint", "save_checkpoint",
           "CheckpointError", "NoCheckpointError", "CheckpointSaveError"]


class CheckpointError(UserError, OSError):
    """A checkpoint is damaged or missing and no intact one can stand in; the message names
    the files."""


class NoCheckpointError(CheckpointError, FileNotFoundError):
    """There is no checkpoint at all where one was asked for."""


class CheckpointSaveError(CheckpointError):
    """Writing a checkpoint failed (full disk, no permission, ...): the message names the
    cause, the folder and the intact checkpoint to resume from."""

CONFIG_FILE = "config.json"
CKPT_SUBDIR = "ckpt"


def write_json_atomic(path, obj):
    """Write JSON to a temporary file and rename it over ``path``: never a half-written file."""
    d = os.path.dirname(os.path.abspath(path))
    os.makedirs(d, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=d, prefix=".tmp-", suffix=".json")
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(obj, f, indent=2, sort_keys=True)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def write_config(save_dir, model_config, training=None):
    write_json_atomic(os.path.join(save_dir, CONFIG_FILE),
                      {"model": model_config.to_dict(), "training": dict(training or {})})


def read_config(save_dir):
    """(ModelConfig, training dict) from ``save_dir/config.json``."""
    path = os.path.join(save_dir, CONFIG_FILE)
    if not os.path.exists(path):
        raise FileNotFoundError(
            f"{path} not found: {save_dir!r} is not a save_dir written by train.py (for an "
            "original TF1 checkpoint use --tf1_checkpoint with the model flags)")
    with open(path) as f:
        d = json.load(f)
    return ModelConfig.from_dict(d["model"]), d.get("training", {})


def _check_save_dir(save_dir):
    if not os.path.isdir(save_dir):
        raise NoCheckpointError(f"save_dir {save_dir!r} does not exist: give the --save_dir of "
                                "a train.py run (or --tf1_checkpoint for an original one)")


def data_source(save_dir=None, data_set=None, data_dir=None):
    """(data_set, data_dir) to evaluate or score a model on: the ones given, else those the
    save_dir was trained on (its config.json), else the original's (cifar in data_files)."""
    training = {}
    if save_dir is not None and not (data_set and data_dir):
        _check_save_dir(save_dir)
        training = read_config(save_dir)[1]
    return (data_set or training.get("data_set", "cifar"),
            data_dir or training.get("data_dir", "data_files"))


def latest_checkpoint(save_dir):
    """Path prefix of the newest checkpoint in ``save_dir/ckpt`` by its state file, or None
    (not verified: ``find_intact_checkpoint`` reads it back)."""
    return tf.train.latest_checkpoint(os.path.join(save_dir, CKPT_SUBDIR))


_CKPT_FILE = re.compile(r"^ckpt-(\d+)(\.index|\.data-\d+-of-\d+)$")


def _ckpt_dir(path):
    """save_dir or its ckpt/ folder -> the ckpt/ folder."""
    sub = os.path.join(path, CKPT_SUBDIR)
    return sub if os.path.isdir(sub) or not os.path.isdir(path) or \
        os.path.basename(os.path.normpath(path)) != CKPT_SUBDIR else path


def list_checkpoints(path):
    """[(step, prefix)] of every checkpoint with a file (.index or .data-*) in ``path`` (a
    save_dir or its ckpt/ folder), newest first; damaged or not (``verify_checkpoint``)."""
    d = _ckpt_dir(path)
    if not os.path.isdir(d):
        return []
    steps = {int(m.group(1)) for m in map(_CKPT_FILE.match, os.listdir(d)) if m}
    return [(n, os.path.join(d, f"ckpt-{n}")) for n in sorted(steps, reverse=True)]


def _files_of(prefix):
    d, base = os.path.split(prefix)
    return sorted(os.path.join(d, f) for f in os.listdir(d)
                  if f == base + ".index" or re.fullmatch(re.escape(base) + r"\.data-\d+-of-\d+",
                                                          f))


def verify_checkpoint(prefix, only=None):
    """None if the checkpoint at ``prefix`` reads back whole, else why not (one line).

    Every tensor is read (``only``: every tensor whose name starts with it, e.g. "averages/"
    for inference, which reads nothing else; there must be one): TensorFlow checks each one's
    CRC32C, so cut-short and overwritten data files are found, as is a missing .index or data
    shard."""
    if not os.path.isfile(prefix + ".index"):
        return "its .index file is missing"
    try:
        reader = tf.train.load_checkpoint(prefix)
        names = [n for n in reader.get_variable_to_dtype_map()
                 if only is None or n.startswith(only)]
        if not names:
            return f"it holds no {only.rstrip('/')} tensors"
        for name in names:
            reader.get_tensor(name)
    except Exception as e:   # noqa: BLE001 (a damaged bundle fails in many ways)
        msg = getattr(e, "message", None) or str(e) or type(e).__name__
        return " ".join(msg.split())[:300]
    return None


def _set_aside(prefix):
    """Rename a damaged checkpoint's files ckpt-N.damaged.index / .damaged.data-*; returns the
    new names (or the old ones, and why, if the folder is read-only)."""
    d, base = os.path.split(prefix)
    tag = ".damaged"
    k = 1
    while any(f.startswith(base + tag + ".") for f in os.listdir(d)):
        k += 1
        tag = f".damaged{k}"
    moved = []
    try:
        for f in _files_of(prefix):
            new = prefix + tag + f[len(prefix):]
            os.rename(f, new)
            moved.append(new)
    except OSError as e:
        return moved + _files_of(prefix), f"could not rename them ({e.strerror or e})"
    return moved, None


def _write_state(d, prefixes):
    """The `checkpoint` state file listing ``prefixes`` (oldest first; the last is the
    latest), by relative names so the folder can move; without prefixes, the file goes."""
    state = os.path.join(d, "checkpoint")
    names = [os.path.basename(p) for p in prefixes]
    if not names:
        if os.path.exists(state):
            os.replace(state, state + ".damaged")   # names only damaged ones: kept aside
        return
    # TensorFlow's CheckpointState text format, as CheckpointManager writes it; atomically.
    text = f'model_checkpoint_path: "{names[-1]}"\n' + "".join(
        f'all_model_checkpoint_paths: "{n}"\n' for n in names)
    tmp = state + ".tmp"
    with open(tmp, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, state)


def _default_warn(msg):
    sys.stderr.write(f"warning: {msg}\n")
    sys.stderr.flush()


def find_intact_checkpoint(path, warn=None, what="using", only=None):
    """The newest checkpoint of ``path`` (a save_dir or its ckpt/ folder) that reads back
    whole (``only``: the tensors whose names start with it, as ``verify_checkpoint``), or
    None if there is no checkpoint at all.

    A damaged newer one is renamed ckpt-N.damaged.* (kept), reported through ``warn(msg)``
    (default: a ``warning:`` line on stderr) and the state file is rewritten so that
    tf.train.latest_checkpoint agrees. If every checkpoint is damaged, raises
    CheckpointError naming them all. ``what``: the verb of the message ("resuming from")."""
    warn = warn or _default_warn
    d = _ckpt_dir(path)
    found = list_checkpoints(d)
    damaged = []
    for i, (step, prefix) in enumerate(found):
        reason = verify_checkpoint(prefix, only)
        if reason is None:
            if damaged:
                notes = []
                for p, why, names, rename_err in damaged:
                    kept = ", ".join(os.path.basename(n) for n in names) or "no files"
                    notes.append(f"{os.path.basename(p)} is damaged ({why}); kept as {kept}"
                                 + (f" ({rename_err})" if rename_err else ""))
                try:
                    _write_state(d, [p for _, p in reversed(found[i:])])
                except (OSError, tf.errors.OpError) as e:
                    notes.append(f"could not update {os.path.join(d, 'checkpoint')} ({e})")
                warn(f"in {d}: " + "; ".join(notes) + f"; {what} {os.path.basename(prefix)} "
                     f"(step {step}), the newest intact checkpoint")
            return prefix
        damaged.append((prefix, reason, *_set_aside(prefix)))
    if not damaged:
        return None
    try:
        _write_state(d, [])
    except OSError:
        pass
    raise CheckpointError(
        f"no intact checkpoint in {d}: " + "; ".join(
            f"{os.path.basename(p)} is damaged ({why}), kept as "
            f"{', '.join(os.path.basename(n) for n in names) or 'no files'}"
            for p, why, names, _ in damaged)
        + ". Restore the folder from a backup, or train again in a new --save_dir")


def _remove_partial(d):
    """Remove what an interrupted or failed save left: *.partial.* files and TensorFlow's
    ckpt-N*_temp/ folders (never a complete checkpoint)."""
    if not os.path.isdir(d):
        return
    for f in os.listdir(d):
        full = os.path.join(d, f)
        if re.fullmatch(r"ckpt-\d+(\.partial)?_temp.*", f) and os.path.isdir(full):
            shutil.rmtree(full, ignore_errors=True)
        elif re.match(r"ckpt-\d+\.partial\.", f):
            try:
                os.remove(full)
            except OSError:
                pass


def _cause(e):
    if isinstance(e, tf.errors.OpError):
        msg = e.message
    elif isinstance(e, OSError) and e.strerror:
        msg = e.strerror
    else:
        msg = str(e) or type(e).__name__
    return " ".join(msg.split())[:300]


def save_checkpoint(checkpoint, directory, step, max_to_keep=3):
    """Write ``checkpoint`` (a tf.train.Checkpoint) as ``directory/ckpt-<step>``, verified.

    Written under a temporary name and read back whole before it gets its name; then the
    state file lists it and only then are checkpoints beyond ``max_to_keep`` deleted. A failed
    save (OSError or a TensorFlow error: full disk, no permission, ...) removes its partial
    files and raises CheckpointSaveError naming the cause, the folder and the newest intact
    checkpoint. Returns the new checkpoint's prefix."""
    name = f"ckpt-{int(step)}"
    final = os.path.join(directory, name)
    partial = final + ".partial"
    state = tf.train.get_checkpoint_state(directory) if os.path.isdir(directory) else None
    kept = [os.path.basename(p) for p in (state.all_model_checkpoint_paths if state else [])
            if os.path.isfile(p + ".index")]
    previous = [k for k in kept if k != name]
    try:
        os.makedirs(directory, exist_ok=True)
        _remove_partial(directory)
        counter = getattr(checkpoint, "save_counter", None)   # what Checkpoint.save keeps
        if counter is not None:
            counter.assign_add(1)
        checkpoint.write(partial)
        reason = verify_checkpoint(partial)
        if reason is not None:
            raise OSError(f"it does not read back whole: {reason}")
        for f in _files_of(partial):   # the data first: an .index only ever names whole data
            if not f.endswith(".index"):
                os.replace(f, final + f[len(partial):])
        os.replace(partial + ".index", final + ".index")
        kept = previous + [name]
        _write_state(directory, [os.path.join(directory, k) for k in kept[-max_to_keep:]])
    except (OSError, tf.errors.OpError) as e:
        _remove_partial(directory)
        if previous:
            tail = (f"the newest intact checkpoint, {os.path.join(directory, previous[-1])}, is "
                    "kept: fix the cause (disk space, permissions) and resume from it with "
                    "--load_params")
        else:
            tail = ("no checkpoint was saved before this one, so there is none to resume from: "
                    "fix the cause (disk space, permissions) and run again")
        raise CheckpointSaveError(f"could not save checkpoint {name} in {directory} "
                                  f"({_cause(e)}); {tail}") from e
    for old in kept[:-max_to_keep]:
        for f in _files_of(os.path.join(directory, old)):
            try:
                os.remove(f)
            except OSError:
                pass
    return final


def build_model(config, seed=None, fast_ops=False, restoring=False):
    """A model of ``config`` with its weights created (called once on zeros); ``fast_ops``:
    its speed choice (pixelcnn_pp/fast_ops.py). ``restoring``: a checkpoint's values replace
    the weights next, so PixelCNN++'s are made as zeros instead of random draws, and the
    call that creates them runs on a 1x1 input (the weights' shapes do not depend on the
    image's size)."""
    model = config.build(seed=seed, fast_ops=fast_ops)
    H, W = config.image_shape[:2]
    layers = model.weight_norm_layers() if restoring and config.model == "pixelcnn_pp" else []
    for layer in layers:
        layer.v_initializer = "zeros"
        layer.creating_only = True
    if layers:
        H = W = 1
    kw = {}
    if config.model == "pixelcnn_pp" and config.num_classes:
        kw["h"] = tf.zeros((1, config.num_classes))
    if config.spatial_channels:       # a 1x1 map: every H, W is a whole multiple of it
        kw["spatial"] = tf.zeros((1, 1, 1, config.spatial_channels))
    x = (tf.zeros((1, H, W), tf.int32) if config.num_categories
         else tf.zeros((1, H, W) + tuple(config.image_shape[2:])))
    try:
        model(x, **kw)
    finally:
        for layer in layers:
            layer.creating_only = False
    return model


def load_for_inference(save_dir=None, tf1_checkpoint=None, model_config=None,
                       use_averages=True, warn=None, fast_ops=False):
    """(model, ModelConfig) ready for evaluation or sampling: what eval.py and sample.py load.

    Either ``save_dir`` (a run of train.py: config.json and the newest intact checkpoint,
    falling back past damaged ones as ``find_intact_checkpoint``), or ``tf1_checkpoint`` (an
    original TF1 checkpoint prefix, e.g. dir/params_cifar.ckpt, or its directory) with the
    ``model_config`` it was trained with. use_averages: the Polyak averages (default, as the
    original evaluated and sampled) or the raw trained weights. fast_ops: the model's speed
    choice (pixelcnn_pp/fast_ops.py; the same formulas).
    """
    if (save_dir is None) == (tf1_checkpoint is None):
        raise UsageError("give exactly one of --save_dir (a run of train.py) or "
                         "--tf1_checkpoint (an original TF1 checkpoint, with the model flags)")
    if tf1_checkpoint is not None:
        from pixelcnn_pp import convert
        if model_config is None:
            raise UsageError("a TF1 checkpoint holds no configuration: give the model "
                             "flags (nr_resnet, nr_filters, nr_logistic_mix, ...) it was "
                             "trained with")
        model = build_model(model_config, fast_ops=fast_ops)
        convert.load_tf1_checkpoint(model, tf1_checkpoint, use_ema=use_averages)
        return model, model_config
    _check_save_dir(save_dir)
    config, _ = read_config(save_dir)
    path = find_intact_checkpoint(save_dir, warn=warn,
                                  only=INFERENCE_TENSORS[bool(use_averages)])
    if path is None:
        where = os.path.join(save_dir, CKPT_SUBDIR)
        raise NoCheckpointError(
            f"no checkpoint in {where if os.path.isdir(where) else save_dir}: the run saved "
            "none yet (train first, or point at the save_dir of a finished run)")
    model = build_model(config, fast_ops=fast_ops, restoring=True)
    restore_weights(model, path, use_averages)
    return model, config


# The checkpoint's names of the weights inference reads: the model's, or its Polyak averages.
INFERENCE_TENSORS = {False: "model/", True: "averages/averages/"}


def restore_weights(model, path, use_averages=True):
    """Read the training checkpoint at ``path`` into ``model``'s weights: its Polyak averages
    (``use_averages``) or its raw trained weights."""
    if not use_averages:
        tf.train.Checkpoint(model=model).restore(path).expect_partial()
        return
    # The averages are read straight into the model's variables: the PolyakAverage that wrote
    # them holds one per trainable variable, in the model's order, as its ``averages`` list.
    variables = model.trainable_variables
    reader = tf.train.load_checkpoint(path)
    shapes = {n: s for n, s in reader.get_variable_to_shape_map().items()
              if n.startswith(INFERENCE_TENSORS[True])}
    names = [f"{INFERENCE_TENSORS[True]}{i}/.ATTRIBUTES/VARIABLE_VALUE"
             for i in range(len(variables))]
    if len(shapes) != len(variables) or any(
            tuple(shapes.get(n, ())) != tuple(v.shape) for n, v in zip(names, variables)):
        raise CheckpointError(
            f"{path} holds {len(shapes)} averaged weights that do not fit the "
            f"{len(variables)} weights of the model its config.json describes: the checkpoint "
            "belongs to another run (restore that run's config.json)")
    for n, v in zip(names, variables):
        v.assign(reader.get_tensor(n))
