"""The start-up latency benchmark's smoke mode: every phase of sample (traced, and with the
traces kept by a run before) and score is timed in a fresh process, positive and finite, and
the process outlasts its phases."""

import json
import math
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PHASES = ("import", "build", "checkpoint_read", "first_call", "second_call", "process_total")
IN_PROCESS = PHASES[:-1]


def test_latency_benchmark_smoke():
    p = subprocess.run([sys.executable, os.path.join(ROOT, "benchmarks", "latency.py"),
                        "--smoke", "--commands", "sample,sample_kept,score", "--noend_to_end"],
                       cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-3000:]
    lines = p.stdout.strip().splitlines()
    assert lines[0].split()[:len(PHASES) + 1] == ["command", *PHASES]     # the table
    assert [line.split()[0] for line in lines[1:4]] == ["sample", "sample_kept", "score"]
    r = json.loads(lines[-1])
    assert set(r["commands"]) == {"sample", "sample_kept", "score"}
    for command, result in r["commands"].items():
        phases = result["phases"]
        for name in PHASES:
            v = phases[name]
            assert isinstance(v, float) and math.isfinite(v) and v > 0, (command, name, v)
        assert phases["process_total"] >= sum(phases[n] for n in IN_PROCESS), (command, phases)
        assert len(result["rounds"]) == 1 and result["end_to_end"] is None
    # The first sample run traces and keeps; the later one loads what it kept.
    first, later = r["commands"]["sample"]["phases"], r["commands"]["sample_kept"]["phases"]
    assert first["traces_loaded"] == 0 and first["traces_written"] == 1
    assert later["traces_loaded"] == 1 and later["traces_written"] == 0
    s = r["settings"]
    assert (s["nr_resnet"], s["nr_filters"], s["nr_logistic_mix"]) == (1, 8, 2)
    assert s["tensorflow"] and s["cpu_count"] >= 1
    assert r["make_save_dir_seconds"] > 0
