"""The fast sampler's traced functions, kept on disk for the next process.

Tracing the fast sampler's group of rows (its row-level parts and pixel loops, thousands of
ops) takes Python seconds at every process start (about 4 s for the full model). The traced
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
"""

import hashlib
import os
import shutil
import tempfile
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
    _STORES[model] = TraceStore(directory)
    return directory


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
    a list back into args' structure)."""
    flat = tf.nest.flatten(args)
    where = [k for k, t in enumerate(flat) if t is not None]

    def pack(tensors):
        full = [None] * len(flat)
        for k, t in zip(where, tensors):
            full[k] = t
        return tf.nest.pack_sequence_as(args, full)

    return [flat[k] for k in where], pack


def input_key(settings, args):
    """The key of a traced function: settings (a repr-able description of what the Python
    code branches on) and the structure, shapes and dtypes of its inputs args."""
    specs = tf.nest.map_structure(
        lambda t: None if t is None else (tuple(t.shape), t.dtype.name), args)
    text = repr((settings, specs, tf.__version__, _package_digest()))
    return hashlib.sha256(text.encode()).hexdigest()[:24]


class TraceStore:
    """Traced functions of flat tensor lists, saved as SavedModels under ``directory/<key>``."""

    def __init__(self, directory):
        self.directory = directory

    def load(self, key):
        """The kept function of ``key`` (called with the flat tensors, returns a flat list),
        or None when there is none or it does not load."""
        path = os.path.join(self.directory, key)
        if not os.path.isdir(path):
            return None
        try:
            return tf.saved_model.load(path).fn
        except Exception:              # damaged or from another version: trace it again
            return None

    def save(self, key, fn):
        """Write ``fn`` (a tf.function with an input_signature, traced) under ``key``,
        replacing a kept one that did not load. Nothing is written if the directory cannot
        be written to (only speed is lost)."""
        path = os.path.join(self.directory, key)
        module = tf.Module()
        module.fn = fn
        try:
            tmp = tempfile.mkdtemp(prefix=f".{key}.", dir=self.directory)
        except OSError:
            return False
        try:
            tf.saved_model.save(module, tmp)
            if os.path.isdir(path):           # one that failed to load: ours to replace
                shutil.rmtree(path, ignore_errors=True)
            os.rename(tmp, path)
            return True
        except Exception:     # full disk, read-only, another process won: only speed is lost
            return False
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
