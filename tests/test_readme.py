"""The README's quick-start training command runs end to end (cut short with --max_steps)."""

import os
import re
import shlex
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def readme_commands():
    text = open(os.path.join(ROOT, "README.md"), encoding="utf-8").read()
    block = re.search(r"```bash\n(.*?)```", text, re.S).group(1)
    return [l for l in block.splitlines() if l and not l.startswith("#")]


def test_readme_starts_with_the_two_commands():
    train_cmd, test_cmd = readme_commands()[:2]
    assert train_cmd.startswith("pip install -e . && python train.py")
    assert test_cmd == 'pip install -e ".[test]" && python -m pytest -q -n 2 tests'


def test_quick_start_trains_and_writes_its_outputs(tmp_path):
    train_cmd = readme_commands()[0].split("&&", 1)[1]
    args = shlex.split(train_cmd)[2:]  # after "python train.py"
    save_dir = tmp_path / "demo"
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    p = subprocess.run([sys.executable, os.path.join(ROOT, "train.py"), *args,
                        "--max_steps", "3", "--save_dir", str(save_dir)],
                       cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert p.returncode == 0, p.stderr[-3000:]
    assert "Iteration 0" in p.stdout
    files = set(os.listdir(save_dir))
    assert {"config.json", "metrics.jsonl", "test_bpd_demo.npz", "demo_sample0.png",
            "demo_sample0.npz", "ckpt"} <= files
