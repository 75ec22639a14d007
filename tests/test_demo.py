"""The demo's tiny preset end to end, interrupted at random points and resumed.

A Ctrl-C (SIGINT) or a crash (SIGKILL) at any moment leaves every finished model intact (each
folder's ``metrics.json`` is written last, every file atomically); the same command then skips
the finished steps and completes the run.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from minidistill.cli import demo_plan

STEPS = [name for name, *_ in demo_plan("tiny", "numba", "x")]


def _start(out: Path):
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen([sys.executable, "-m", "minidistill.cli", "demo", "--tiny", "--output-dir", str(out)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)


def _finished(out: Path) -> list:
    return [s for s in STEPS if (out / s / "metrics.json").is_file()]


def _interrupt_after(out: Path, n_done: int, sig, rng) -> tuple[int, str]:
    proc = _start(out)
    deadline = time.time() + 600
    while len(_finished(out)) < n_done and proc.poll() is None and time.time() < deadline:
        time.sleep(0.2)
    time.sleep(rng.uniform(0.0, 2.0))  # somewhere inside the next step
    if proc.poll() is None:
        proc.send_signal(sig)
    output, _ = proc.communicate(timeout=300)
    return proc.returncode, output


@pytest.mark.slow
def test_tiny_demo_survives_interrupts_and_resumes(tmp_path):
    rng = random.Random(7)
    out = tmp_path / "demo"
    rc, text = _interrupt_after(out, 1, signal.SIGINT, rng)
    if rc != 0:  # the usual case: stopped inside a step
        assert rc == 130 and "run the same command to continue" in text, text[-2000:]
    first = {s: (out / s / "metrics.json").stat().st_mtime_ns for s in _finished(out)}
    assert "teacher" in first
    rc, _ = _interrupt_after(out, len(first) + 2, signal.SIGKILL, rng)  # a crash, not a polite stop
    done = {s: (out / s / "metrics.json").stat().st_mtime_ns for s in _finished(out)}
    assert all(done[s] == t for s, t in first.items()), "a finished step was redone or damaged"
    proc = _start(out)
    text, _ = proc.communicate(timeout=900)
    assert proc.returncode == 0, text[-3000:]
    for s, t in done.items():  # finished before: reused, not retrained
        assert (out / s / "metrics.json").stat().st_mtime_ns == t
        assert "reusing" in text
    assert _finished(out) == STEPS
    for s in STEPS:
        assert (out / s / "model.safetensors").is_file() and (out / s / "tokenizer.json").is_file()
        assert json.loads((out / s / "metrics.json").read_text())["config"]["output_dir"] == str(out / s)
    report = json.loads((out / "report.json").read_text())
    names = [r["name"] for r in report["rows"]]
    assert names[:len(STEPS)] == STEPS
    deployed = names[len(STEPS):]  # the best BERT student in int8, and that exported to ONNX
    assert len(deployed) == 2 and deployed[0].endswith("-int8") and deployed[1] == deployed[0] + "-onnx"
    base = deployed[0][:-len("-int8")]
    assert base in STEPS
    rows = {r["name"]: r for r in report["rows"]}
    assert rows[deployed[0]]["variant_of"] == base and rows[deployed[1]]["variant_of"] == deployed[0]
    assert json.loads((out / deployed[0] / "config.json").read_text())["quantization"]["linear"]
    assert (out / deployed[1] / "model.onnx").is_file() and rows[deployed[1]]["disk_mb"] > 0
    assert (out / "report.svg").read_text().startswith("<svg")
    assert not list(out.rglob("*.tmp*")), "a temporary file was left behind"
