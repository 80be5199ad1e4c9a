"""Many images through a model in batches of one fixed size: which items each batch holds, the
seed of each batch, the progress reports, and the class label of every image to draw.

    out = run_in_batches(lambda idx, b, report: f(x[idx], seed=batch_seed(seed, b)),
                         n=len(x), batch_size=16, progress=bar)      # (n, ...) numpy

Sampling, completion and scoring all go through ``run_in_batches``. Every batch has exactly
``batch_size`` items, the last one filled up with its own items again and the extra outputs
dropped, so a traced function sees one shape. NumPy only: no TensorFlow at import.
"""

import numpy as np

from pixelcnn_pp.errors import InvalidInputError

__all__ = ["run_in_batches", "batch_seed", "sample_labels"]


def run_in_batches(run, n, batch_size, progress=None, steps_per_batch=None):
    """``run(idx, b, report)`` over n items in batches; its outputs concatenated, cut to n.

    idx: (batch_size,) int, the items of batch b, b·batch_size onwards; the last batch is
    filled up by cycling its own items (items 8, 9 of a batch of 4 give [8, 9, 8, 9]).
    run returns an array (batch_size, ...). progress(done, total), when given, is called:
    without steps_per_batch, after each batch with the items done and n; with
    steps_per_batch S, by run through ``report(s, S)`` after step s of batch b (an image row
    of a sampler), as progress(b·S + s, batches·S). ``report`` is None otherwise.
    """
    assert n >= 1 and batch_size >= 1, (n, batch_size)
    batches = -(-n // batch_size)
    chunks = []
    for b in range(batches):
        start = b * batch_size
        idx = np.resize(np.arange(start, min(start + batch_size, n)), batch_size)
        report = None
        if progress is not None and steps_per_batch is not None:
            report = lambda s, _, b=b: progress(b * steps_per_batch + s,
                                                batches * steps_per_batch)
        chunks.append(np.asarray(run(idx, b, report)))
        if progress is not None and steps_per_batch is None:
            progress(min(start + batch_size, n), n)
    return np.concatenate(chunks)[:n]


def batch_seed(seed, b):
    """The seed of batch b of a run: ``seed`` itself for the first batch (so one batch equals
    sample(..., seed=seed)), then seeds derived from (seed, b)."""
    if b == 0:
        return int(seed)
    return int(np.random.SeedSequence([int(seed) % 2**63, b]).generate_state(2, np.uint32)
               .astype(np.uint64).dot([1, 2**32]) % 2**63)


def sample_labels(labels, num_samples, num_classes):
    """The class of every image: (num_samples,) int, or None for an unconditional model.

    labels: None or "cycle" (image n gets class n mod K, as the original), or a list of class
    indices, repeated to num_samples (one label gives every image that class).
    """
    if not num_classes:
        if labels is not None and labels != "cycle":
            raise InvalidInputError("this model is unconditional: it takes no --labels")
        return None
    if labels is None or labels == "cycle":
        return np.arange(num_samples) % num_classes
    labels = np.asarray([int(l) for l in labels])
    if labels.size == 0:
        raise InvalidInputError("--labels is empty: give class indices, or 'cycle'")
    bad = labels[(labels < 0) | (labels >= num_classes)]
    if bad.size:
        raise InvalidInputError(f"labels {sorted(set(bad.tolist()))} out of range: this model "
                                f"has {num_classes} classes (0 .. {num_classes - 1})")
    return np.resize(labels, num_samples)
