import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# The suite runs as two processes (-n 2) on two cores, and each starts the commands it tests
# in processes of their own: one thread each for TensorFlow's op pools (its default, a thread
# per core in every process, oversubscribes the cores). Subprocesses inherit it. Measured on a
# 2-core AMD EPYC: test_training.py 224 -> 196 s, test_prior_sampling.py with
# test_user_errors.py 210 -> 188 s.
os.environ.setdefault("TF_NUM_INTRAOP_THREADS", "1")
os.environ.setdefault("TF_NUM_INTEROP_THREADS", "1")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
