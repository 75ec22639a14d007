"""``minidistill course grade``: run each task's tests against a student copy and score them.

Each task runs in its own ``pytest -m taskN_K --strict-markers`` process with the copy first
on ``sys.path`` and a wall-clock limit, so a hanging kernel costs that task only. A task
scores ``points × passed / collected``; a task with no collected test scores zero and says so.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from pathlib import Path

from .tasks import MODULES, CourseError


def _tasks_in(copy: Path):
    present = {m.number for m in MODULES if (copy / m.test_file).exists()}
    return [t for m in MODULES if m.number in present for t in m.tasks]


def _env(copy: Path) -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(copy) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env.setdefault("PYTHONDONTWRITEBYTECODE", "1")
    return env


def check_copy_imports(copy: Path) -> str:
    """The copy's ``minidistill`` must be the one imported; returns its path."""
    res = subprocess.run([sys.executable, "-c", "import minidistill, sys; sys.stdout.write(minidistill.__file__)"],
                         cwd=copy, env=_env(copy), capture_output=True, text=True, timeout=120)
    if res.returncode != 0:
        raise CourseError(f"the student copy does not import: {res.stderr.strip().splitlines()[-1:]}")
    where = Path(res.stdout).resolve()
    if copy.resolve() not in where.parents:
        raise CourseError(f"importing from {copy} picks up {where}, not the copy's package")
    return str(where)


def _run_task(copy: Path, marker: str, timeout: float) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        xml = Path(tmp) / "junit.xml"
        cmd = [sys.executable, "-m", "pytest", "-q", "-m", marker, "--strict-markers", "-p", "no:cacheprovider",
               f"--junitxml={xml}", "tests/course"]
        start = time.perf_counter()
        proc = subprocess.Popen(cmd, cwd=copy, env=_env(copy), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                text=True, start_new_session=True)
        try:
            output, _ = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
            return {"status": "timeout", "passed": 0, "collected": 0, "seconds": round(time.perf_counter() - start, 1),
                    "detail": f"cut off after {timeout:g} s"}
        seconds = round(time.perf_counter() - start, 1)
        if not xml.exists():
            return {"status": "error", "passed": 0, "collected": 0, "seconds": seconds,
                    "detail": output.strip().splitlines()[-1] if output.strip() else "pytest wrote no report"}
        root = ET.parse(xml).getroot()
        cases = root.iter("testcase")
        collected = passed = 0
        first_failure = ""
        for case in cases:
            if case.find("skipped") is not None:
                continue
            collected += 1
            bad = case.find("failure") if case.find("failure") is not None else case.find("error")
            if bad is None:
                passed += 1
            elif not first_failure:
                first_failure = ((bad.get("message") or "").strip().splitlines() or ["failed"])[0][:160]
        status = "passed" if collected and passed == collected else "no tests" if not collected else "failed"
        return {"status": status, "passed": passed, "collected": collected, "seconds": seconds,
                "detail": first_failure}


def grade(copy, timeout: float = 120.0, tasks=None) -> dict:
    """Score every task whose module's tests are in the student copy ``copy``.

    Args:
        copy: the student copy (made by ``course build``).
        timeout: seconds allowed to each task's tests.
        tasks: only these task ids (default: all present).

    Returns:
        ``{"copy", "package", "tasks": [{"task", "title", "points", "score", "status", …}],
        "score", "total"}``.
    """
    copy = Path(copy)
    if not (copy / "tests" / "course").is_dir():
        raise CourseError(f"{copy} is not a student copy (no tests/course folder)")
    package = check_copy_imports(copy)
    chosen = _tasks_in(copy)
    if tasks:
        unknown = set(tasks) - {t.id for t in chosen}
        if unknown:
            raise CourseError(f"tasks {sorted(unknown)} are not in this copy")
        chosen = [t for t in chosen if t.id in set(tasks)]
    rows = []
    for t in chosen:
        r = _run_task(copy, t.marker, timeout)
        score = t.points * r["passed"] / r["collected"] if r["collected"] else 0.0
        rows.append({"task": t.id, "title": t.title, "points": t.points, "score": round(score, 2), **r})
    return {"copy": str(copy), "package": package, "tasks": rows,
            "score": round(sum(r["score"] for r in rows), 2), "total": sum(r["points"] for r in rows)}


def format_table(result: dict) -> str:
    """The grade as a text table, one row a task."""
    head = f"{'task':<6} {'score':>6} {'of':>4}  {'tests':>7}  {'status':<9} title"
    lines = [head, "-" * len(head)]
    for r in result["tasks"]:
        tests = f"{r['passed']}/{r['collected']}"
        lines.append(f"{r['task']:<6} {r['score']:>6g} {r['points']:>4}  {tests:>7}  {r['status']:<9} {r['title']}")
    lines.append("-" * len(head))
    lines.append(f"{'total':<6} {result['score']:>6g} {result['total']:>4}")
    return "\n".join(lines)


def write_json(result: dict, path) -> None:
    """Write the grade as JSON (atomically) for a learning platform."""
    from ..fileio import write_json as _atomic

    _atomic(path, result)


def dumps(result: dict) -> str:
    """The grade as a JSON string."""
    return json.dumps(result, indent=2)
