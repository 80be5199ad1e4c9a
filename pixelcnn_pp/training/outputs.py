"""The files a training run writes beside its checkpoints: metrics.jsonl, the test bits/dim
history (.npz), sample tiles; and what a resumed run does with rows written after the
checkpoint it resumes."""

import json
import os

import numpy as np
import tensorflow as tf

__all__ = ["resume_outputs", "append_metrics", "write_samples", "atomic_savez",
           "non_finite_message"]


def resume_outputs(run):
    """The test bits/dim history of a resumed run; rows of epochs after the restored step (a
    fallback past a damaged checkpoint, or a run that went on after its last save) and of the
    epoch being resumed go to side files, so that metrics.jsonl never holds an epoch twice."""
    if os.path.exists(run.npz_path):
        run.test_bpds = list(np.load(run.npz_path)["test_bpd"])
    if not run.chief:
        return
    kept = _set_aside_metrics(run.metrics_path, run.step_now(), run.epoch_now(), run.log)
    if kept is not None and len(run.test_bpds) > kept:
        atomic_savez(f"{run.npz_path[:-4]}.after-step-{run.step_now()}.npz",
                      test_bpd=np.asarray(run.test_bpds[kept:]))
        run.test_bpds = run.test_bpds[:kept]
        atomic_savez(run.npz_path, test_bpd=np.asarray(run.test_bpds))


def _set_aside_metrics(path, step, epoch, log):
    """Move the rows of metrics.jsonl with a step after ``step``, or of epoch ``epoch`` or later
    (the one a resumed run is about to finish), to ``path.after-step-<step>`` (appended).
    Returns how many rows stay (None when there is no file)."""
    if not os.path.exists(path):
        return None
    with open(path) as f:
        lines = [l for l in f.read().splitlines() if l.strip()]
    keep, aside = [], []
    for line in lines:
        try:
            row = json.loads(line)
            later = row.get("step", 0) > step or row.get("epoch", -1) >= epoch
        except (ValueError, AttributeError, TypeError):
            later = False   # not ours to judge: stays where it was
        (aside if later else keep).append(line)
    if aside:
        side = f"{path}.after-step-{step}"
        with open(side, "a") as f:
            f.write("".join(l + "\n" for l in aside))
            f.flush()
            os.fsync(f.fileno())
        tmp = path + ".tmp"
        with open(tmp, "w") as f:
            f.write("".join(l + "\n" for l in keep))
        os.replace(tmp, path)
        log(f"set aside {len(aside)} row(s) of {path} after step {step} (the restored "
            f"checkpoint's) in {side}")
    return len(keep)


def append_metrics(path, record):
    """One row of metrics.jsonl."""
    with open(path, "a") as f:
        f.write(json.dumps(record) + "\n")


def atomic_savez(path, **arrays):
    tmp = path + ".tmp.npz"
    np.savez(tmp, **arrays)
    os.replace(tmp, path)


def write_samples(run, ep):
    """num_samples batches of samples with the averaged weights: PNG tile + .npz (images;
    or codes, drawn as colours, conditioned on the test split's first spatial maps)."""
    from pixelcnn_pp import plotting
    cfg, config = run.cfg, run.model_config
    n, K = cfg.batch_size, config.num_classes
    spatial = None
    if run.spatial_shape is not None:
        spatial = run.test_data.spatial[np.arange(n) % len(run.test_data.spatial)]
    drawn = []
    for k in range(cfg.num_samples):
        # labels arange(n) mod K, as the original
        h = tf.one_hot(np.arange(n) % K, K) if K else None
        extra = {} if spatial is None else {"spatial": spatial}
        with run.averages.swap():
            x = run.model.sample_images(n, config.image_shape, h=h,
                                        seed=cfg.seed * 100003 + ep * 1009 + k,
                                        method=cfg.sample_method, **extra)
        drawn.append(np.asarray(x))
    drawn = np.concatenate(drawn)
    base = os.path.join(cfg.save_dir, f"{cfg.data_set.replace(':', '_')}_sample{ep}")
    if config.num_categories:
        atomic_savez(base + ".npz", codes=drawn.astype(np.int32))
        u8 = plotting.codes_to_rgb(drawn, config.num_categories)
    else:
        u8 = plotting.images_to_uint8(drawn)
        atomic_savez(base + ".npz", images=u8)
    plotting.save_tile(base + ".png", u8[:100])
    with run.writer.as_default(step=ep):
        tf.summary.image("samples", u8[:16].astype(np.float32) / 255.0, max_outputs=16)
    run.log(f"wrote {len(u8)} samples to {base}.png / .npz")


def non_finite_message(loss, at_step, ckpt_dir, learning_rate):
    """What a NaN/inf loss means for the user: which checkpoint is kept, if any, and what to
    change."""
    newest = tf.train.latest_checkpoint(ckpt_dir) if os.path.isdir(ckpt_dir) else None
    lower = f"a lower --learning_rate (now {learning_rate:g})"
    if newest is None:
        return (f"the training loss became {loss} at step {at_step}: stopping. No checkpoint "
                f"exists yet (the first is saved after epoch 0): run again with {lower}")
    return (f"the training loss became {loss} at step {at_step}: stopping; the last good "
            f"checkpoint, {newest}, is kept: resume from it with --load_params and {lower}")
