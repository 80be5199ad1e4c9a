"""The fast sampler's traced functions, kept on disk for the next process.

Tracing the fast sampler's group of rows (its row-level parts and pixel loops, thousands of
ops) takes Python seconds at every process start (docs/PERFORMANCE.md). The traced
function depends only on the model's layout and the sampling shapes, not on the weights (the
sampler passes them in as arguments), so it can be written once, as TensorFlow's own
description of its graph, and loaded by later processes instead of traced again:

    sampling.keep_traces(model, "runs/cifar/traces")
    sampling.sample(model, 1, (32, 32, 3))    # first process: traces, then writes the traces
                                               # later processes: load them, trace nothing

``sample.py --save_dir`` keeps them in the save_dir's ``traces/``. A kept function is found by
a key over everything that shapes the trace: the sampler's settings and layout, the structure
and shapes of its inputs, the TensorFlow version and the source of this package (any edit of
it starts afresh). A kept function that does not load (damaged, from another TensorFlow) is
traced again and written anew; a directory that cannot be written to keeps nothing.

A kept function is a TensorFlow graph that runs when loaded functions are called: keep traces
only in folders you trust, as you would a program. Each is a few MB (1.6 MB for the full
model); old ones are not removed (delete the folder to start afresh).
"""

import hashlib
import os
import re
import shutil
import tempfile
import time
import weakref

import tensorflow as tf
from tensorflow.core.framework import function_pb2
from tensorflow.python.eager import context

__all__ = ["TraceStore", "keep_traces", "store_for", "flat_inputs", "input_key"]

_PACKAGE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_source_digest = None
_STORES = weakref.WeakKeyDictionary()
# What a write names its temporary file (or, before, folder): "." + the key + "." + a suffix.
_TEMPORARY = re.compile(r"\.[0-9a-f]{24}\..+")


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
    """Remove the temporary files (or folders) of writes that were killed midway (hidden,
    over an hour old)."""
    now = time.time()
    for name in os.listdir(directory):
        path = os.path.join(directory, name)
        try:
            if _TEMPORARY.fullmatch(name) and now - os.stat(path).st_mtime > age_seconds:
                if os.path.isdir(path):
                    shutil.rmtree(path, ignore_errors=True)
                else:
                    os.remove(path)
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
    """Traced functions of flat tensor lists, kept as files ``directory/<key>.pb``: the
    sha256 of the rest, then the function's graph and every function it calls (a
    FunctionDefLibrary, the traced function last), renamed after the key. Loading one
    registers those functions with TensorFlow's runtime and calls the last by name: nothing
    is rebuilt in Python, which is what makes a SavedModel of the same function take seconds
    to load. ``loaded`` and ``written`` count
    this process's loads and writes."""

    def __init__(self, directory):
        self.directory = directory
        self.loaded = self.written = 0

    def path(self, key):
        return os.path.join(self.directory, key + ".pb")

    def load(self, key):
        """The kept function of ``key`` (called with the flat tensors, returns a flat list),
        or None when there is none or it does not load."""
        fn = self._load(self.path(key), _name(key))
        self.loaded += fn is not None
        return fn

    @staticmethod
    def _load(path, name):
        try:
            with open(path, "rb") as f:
                digest, data = f.read(32), f.read()
            if hashlib.sha256(data).digest() != digest:          # damaged or cut short
                return None
            library = function_pb2.FunctionDefLibrary.FromString(data)
            if not library.function or library.function[-1].signature.name != name:
                return None
            ctx = context.context()
            for fdef in library.function:
                if not ctx.has_function(fdef.signature.name):
                    ctx.add_function_def(fdef)
        except Exception:     # noqa: BLE001 (none, damaged, another version's: traced again)
            return None
        outputs = len(library.function[-1].signature.output_arg)

        def call(*tensors):      # as a traced function's own call does
            return context.context().call_function(name.encode(), list(tensors), outputs)

        return call

    def save(self, key, fn):
        """Write ``fn`` (a tf.function with an input_signature, capturing no tensors) under
        ``key``: into a temporary file, then renamed into place. A kept one that loads is left
        as it is (another process may have just written it); one that does not is replaced.
        Nothing is written if the directory cannot be written to: only speed is lost. Returns
        whether ``fn`` was written."""
        path, tmp = self.path(key), None
        try:
            data = _library(fn.get_concrete_function(), _name(key)).SerializeToString()
            if os.path.exists(path) and self._load(path, _name(key)) is not None:
                return False
            fd, tmp = tempfile.mkstemp(prefix=f".{key}.", dir=self.directory)
            try:
                f = os.fdopen(fd, "wb")
            except Exception:
                os.close(fd)
                raise
            with f:
                f.write(hashlib.sha256(data).digest() + data)
            os.chmod(tmp, 0o666 & ~_umask())   # as open() would make it (mkstemp's is 0600)
            os.replace(tmp, path)
            tmp = None
            self.written += 1
            return True
        except Exception:     # noqa: BLE001 (full disk, read-only, captured tensors)
            return False
        finally:
            if tmp is not None:
                try:
                    os.remove(tmp)
                except OSError:
                    pass


def _umask():
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _name(key):
    return f"__kept_trace_{key}"


def _library(concrete, name):
    """The FunctionDefLibrary of a concrete function: the functions it calls, then itself,
    every one renamed ``name`` (itself) or ``name_<i>`` (so that no name can meet one this
    process traces)."""
    if concrete.captured_inputs:
        raise ValueError("a kept function must take all its tensors as inputs")
    library = function_pb2.FunctionDefLibrary()
    library.function.extend(concrete.graph.as_graph_def().library.function)
    library.function.append(concrete.function_def)
    names = {f.signature.name: f"{name}_{i}" for i, f in enumerate(library.function)}
    names[concrete.function_def.signature.name] = name
    for fdef in library.function:
        fdef.signature.name = names[fdef.signature.name]
        for node in fdef.node_def:
            node.op = names.get(node.op, node.op)
            for value in node.attr.values():
                _rename_functions(value, names)
    return library


def _rename_functions(value, names):
    """Rename the functions an AttrValue refers to (func, list(func), and theirs)."""
    funcs = ([value.func] if value.HasField("func") else []) + list(value.list.func)
    for func in funcs:
        func.name = names.get(func.name, func.name)
        for inner in func.attr.values():
            _rename_functions(inner, names)
