import atexit
import os
import shutil
import sys
import tempfile

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# The suite runs as two processes (-n 2) on two cores, and each starts the commands it tests
# in processes of their own: one thread each for TensorFlow's op pools (its default, a thread
# per core in every process, oversubscribes the cores). Subprocesses inherit it. Measured on a
# 2-core AMD EPYC: test_training.py 224 -> 196 s, test_prior_sampling.py with
# test_user_errors.py 210 -> 188 s.
os.environ.setdefault("TF_NUM_INTRAOP_THREADS", "1")
os.environ.setdefault("TF_NUM_INTEROP_THREADS", "1")
# XLA's compilations (the fused optimiser, average, weight-norm gradient and gate, and the
# XLA tests) are cached on disk for this run, shared by the test processes and every command
# they start: each fresh process would otherwise compile them again (about 2.4 s of a tiny
# train.py run). The first process sets it (pytest, or its controller under -n); the others
# inherit it; it is removed at the end.
if "TF_XLA_FLAGS" not in os.environ:
    _XLA_CACHE = tempfile.mkdtemp(prefix="pixelcnn-tests-xla-")
    os.environ["TF_XLA_FLAGS"] = f"--tf_xla_persistent_cache_directory={_XLA_CACHE}"
    atexit.register(shutil.rmtree, _XLA_CACHE, True)
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
