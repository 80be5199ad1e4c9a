import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


import pytest  # noqa: E402


@pytest.fixture(autouse=True)
def _fast_ops_switch_off():
    """Every test starts with the library's default, the fast_ops switch off (a script run in
    process, or a failed test, may leave it on)."""
    from pixelcnn_pp import fast_ops
    fast_ops.enable(False)
    yield
    fast_ops.enable(False)
