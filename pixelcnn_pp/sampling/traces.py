"""The fast sampler's traced functions, kept on disk for the next process.

Tracing the fast sampler's group of rows (its row-level parts and pixel loops, thousands of
ops) takes Python seconds at every process start (docs/PERFORMANCE.md). The traced
function depends only on the model's layout and the sampling shapes, not on the weights (the
sampler passes them in as arguments), so it can be written once as a SavedModel and loaded by
later processes instead of traced again:

    sampling.keep_traces(model, "runs/cifar/traces")
    sampling.sample(model, 1, (32, 32, 3))    # first process: traces, then writes the traces
                                               # later processes: load them, trace nothing

``sample.py --save_dir`` keeps them in the save_dir's ``traces/``. A kept function is found by
a key over everything that shapes the trace: the sampler's settings and layout, the structure
and shapes of its inputs, the TensorFlow version and the source of this package (any edit of
it starts afresh). A kept function that does not load (damaged, from another TensorFlow) is
traced again and written anew; a directory that cannot be written to keeps nothing.

A kept function is a TensorFlow graph that runs when loaded functions are called: keep traces
only in folders you trust, as you would a program. Each is a few MB (2.3 MB for the full
model); old ones are not removed (delete the folder to start afresh).
"""

import hashlib
import os
import shutil
import tempfile
import time
import weakref

import tensorflow as tf

__all__ = ["TraceStore", "keep_traces", "store_for", "flat_inputs", "input_key"]

_PACKAGE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_source_digest = None
_STORES = weakref.WeakKeyDictionary()


def keep_traces(model, directory):
    """Keep the fast sampler's traced functions for ``model`` in ``directory`` (created if
    needed): later processes that call this with the same directory load them instead of
    tracing. ``directory=None`` stops keeping them. Returns the directory."""
    if directory is None:
        _STORES.pop(model, None)
        return None
    directory = os.path.abspath(directory)
    os.makedirs(directory, exist_ok=True)
    _remove_stale_temporaries(directory)
    _STORES[model] = TraceStore(directory)
    return directory


def _remove_stale_temporaries(directory, age_seconds=3600):
    """Remove the temporary folders of writes that were killed midway (hidden, over an hour
    old)."""
    now = time.time()
    for name in os.listdir(directory):
        path = os.path.join(directory, name)
        try:
            if (name.startswith(".") and os.path.isdir(path)
                    and now - os.stat(path).st_mtime > age_seconds):
                shutil.rmtree(path, ignore_errors=True)
        except OSError:
            pass


def store_for(model):
    """The TraceStore ``keep_traces`` set for ``model``, or None."""
    return _STORES.get(model)


def _package_digest():
    """sha256 of every .py file of this package (the traced graphs are made by its code)."""
    global _source_digest
    if _source_digest is None:
        h = hashlib.sha256()
        for root, dirs, files in os.walk(_PACKAGE):
            dirs[:] = sorted(d for d in dirs if d != "__pycache__")
            for name in sorted(f for f in files if f.endswith(".py")):
                path = os.path.join(root, name)
                h.update(os.path.relpath(path, _PACKAGE).encode())
                with open(path, "rb") as f:
                    h.update(f.read())
        _source_digest = h.hexdigest()
    return _source_digest


def flat_inputs(args):
    """(the tensors of the nest ``args``, in order, Nones left out; a function putting such
    a list back into args' structure). The function holds args' structure only, not its
    tensors (a traced function keeps it as long as the sampler lives)."""
    flat = tf.nest.flatten(args)
    where = [k for k, t in enumerate(flat) if t is not None]
    skeleton = tf.nest.map_structure(lambda t: None, args)
    size = len(flat)

    def pack(tensors):
        full = [None] * size
        for k, t in zip(where, tensors):
            full[k] = t
        return tf.nest.pack_sequence_as(skeleton, full)

    return [flat[k] for k in where], pack


def input_key(settings, args):
    """The key of a traced function: settings (a repr-able description of what the Python
    code branches on) and the structure, shapes and dtypes of its inputs args."""
    specs = tf.nest.map_structure(
        lambda t: None if t is None else (tuple(t.shape), t.dtype.name), args)
    text = repr((settings, specs, tf.__version__, _package_digest()))
    return hashlib.sha256(text.encode()).hexdigest()[:24]


class TraceStore:
    """Traced functions of flat tensor lists, saved as SavedModels under ``directory/<key>``.
    ``loaded`` and ``written`` count this process's loads and writes."""

    def __init__(self, directory):
        self.directory = directory
        self.loaded = self.written = 0

    def load(self, key):
        """The kept function of ``key`` (called with the flat tensors, returns a flat list),
        or None when there is none or it does not load."""
        fn = self._load(os.path.join(self.directory, key))
        self.loaded += fn is not None
        return fn

    @staticmethod
    def _load(path):
        if not os.path.isdir(path):
            return None
        try:
            return tf.saved_model.load(path).fn
        except Exception:     # noqa: BLE001 (damaged, another version's: traced again)
            return None

    def save(self, key, fn):
        """Write ``fn`` (a tf.function with an input_signature) under ``key``: into a
        temporary folder, then renamed into place. A kept one that loads is left as it is
        (another process may have just written it); one that does not is set aside and
        removed. Nothing is written if the directory cannot be written to: only speed is
        lost. Returns whether ``fn`` was written."""
        path = os.path.join(self.directory, key)
        module = tf.Module()
        module.fn = fn
        tmp = None
        try:
            tmp = tempfile.mkdtemp(prefix=f".{key}.", dir=self.directory)
            tf.saved_model.save(module, tmp)
            if os.path.isdir(path):
                if self._load(path) is not None:
                    return False
                aside = tempfile.mkdtemp(prefix=f".{key}.", dir=self.directory)
                os.rename(path, os.path.join(aside, "damaged"))
                shutil.rmtree(aside, ignore_errors=True)
            os.rename(tmp, path)
            tmp = None
            self.written += 1
            return True
        except Exception:     # noqa: BLE001 (full disk, read-only, another process won)
            return False
        finally:
            if tmp is not None:
                shutil.rmtree(tmp, ignore_errors=True)
