"""The distribution: ``pip install .`` installs one top-level package, ``pixelcnn_pp`` (the data
loaders and the demo set inside it), and the console commands, which run."""

import os
import subprocess
import sys
import zipfile

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
COMMANDS = ("pixelcnn-train", "pixelcnn-sample", "pixelcnn-eval", "pixelcnn-score")


@pytest.fixture(scope="module")
def wheel(tmp_path_factory):
    out = tmp_path_factory.mktemp("wheel")
    src = tmp_path_factory.mktemp("src") / "repo"
    # Built from a copy: the build writes build/ and *.egg-info/ next to the sources.
    subprocess.run(["git", "clone", "-q", "--no-hardlinks", ROOT, str(src)], check=True)
    for path in subprocess.run(["git", "ls-files", "-m", "-o", "--exclude-standard"],
                               cwd=ROOT, capture_output=True, text=True).stdout.split():
        dest = src / path       # the working tree's changes, not only the last commit
        if os.path.isfile(os.path.join(ROOT, path)):
            dest.parent.mkdir(parents=True, exist_ok=True)
            dest.write_bytes(open(os.path.join(ROOT, path), "rb").read())
    p = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps",
                        "--no-build-isolation", "-w", str(out), str(src)],
                       capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stderr[-3000:]
    (path,) = [out / f for f in os.listdir(out) if f.endswith(".whl")]
    return path


def test_the_wheel_installs_one_top_level_package_with_its_data(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    top = {n.split("/")[0] for n in names}
    assert top == {"pixelcnn_pp", next(t for t in top if t.endswith(".dist-info"))}
    assert "pixelcnn_pp/data/demo/demo_32x32.npz" in names
    assert "pixelcnn_pp/data/cifar10_data.py" in names
    assert not any(n.startswith(("data/", "train", "eval", "sample", "score")) for n in names)
    entry_points = next(zipfile.ZipFile(wheel).read(n).decode() for n in names
                        if n.endswith("entry_points.txt"))
    for command in COMMANDS:
        assert f"{command} = pixelcnn_pp.cli." in entry_points


def test_the_wheel_keeps_ml_dtypes_below_0_7(wheel):
    # ml_dtypes 0.7.0 adds ~1 s to every command's start (docs/PERFORMANCE.md)
    z = zipfile.ZipFile(wheel)
    metadata = z.read(next(n for n in z.namelist() if n.endswith(".dist-info/METADATA")))
    requires = [l for l in metadata.decode().splitlines() if l.startswith("Requires-Dist:")]
    assert "Requires-Dist: ml-dtypes<0.7" in requires, requires   # the name normalised


def test_the_installed_commands_run(wheel, tmp_path):
    target = tmp_path / "site"
    p = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps",
                        "--target", str(target), str(wheel)], capture_output=True, text=True,
                       timeout=600)
    assert p.returncode == 0, p.stderr[-3000:]
    env = dict(os.environ, PYTHONPATH=str(target))
    for command in COMMANDS:
        p = subprocess.run([str(target / "bin" / command), "--help"], cwd=str(tmp_path),
                           env=env, capture_output=True, text=True, timeout=300)
        assert p.returncode == 0, (command, p.stderr[-2000:])
        assert "--save_dir" in p.stdout + p.stderr
        assert str(target) in p.stdout + p.stderr   # the installed copy, not the repository's
    # The installed package finds its demo set (a user's first run, outside the repository).
    p = subprocess.run([sys.executable, "-c",
                        "import pixelcnn_pp.data.demo_data as d, os; "
                        "print(d.__file__); print(os.listdir(os.path.dirname(d.__file__) + "
                        "'/demo'))"], cwd=str(tmp_path), env=env, capture_output=True,
                       text=True, timeout=120)
    assert p.returncode == 0 and str(target) in p.stdout and "demo_32x32.npz" in p.stdout
