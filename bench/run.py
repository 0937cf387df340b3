"""``make bench``: run the benchmark entries, record the environment, print the targets.

Every ``bench/bench_<name>.py`` is an entry (see ``bench/harness.py`` for how to write
one). Each runs in a process of its own with BLAS threads pinned to one; its JSON goes to
``bench/results/<name>.json`` and everything, with the environment, to
``bench/results/all.json``. The table at the end lists each target with min/median/max,
the ratio median ÷ limit and whether it is met.

Select entries by name: ``make bench BENCH="scoring waves"`` or
``uv run python -m bench.run scoring waves``. ``--list`` names them.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from bench.harness import BLAS_THREAD_VARIABLES, POSTGRES_URL, REPEATS

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
RESULTS = HERE / "results"


def entries() -> list[str]:
    return sorted(path.stem.removeprefix("bench_") for path in HERE.glob("bench_*.py"))


def environment() -> dict[str, Any]:
    """What the figures depend on: CPU, cores, PostgreSQL and its commit setting, versions."""
    env: dict[str, Any] = {
        "cpu": _cpu_model(),
        "cores": os.cpu_count(),
        "load_average_1m_at_start": round(os.getloadavg()[0], 2),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "blas_threads": 1,
        "repeats": REPEATS,
        "git_commit": _git("rev-parse", "HEAD"),
        "git_dirty": bool(_git("status", "--porcelain")),
    }
    try:
        import numpy
        import scipy

        env["numpy"] = numpy.__version__
        env["scipy"] = scipy.__version__
    except ImportError:  # pragma: no cover - both are dependencies
        pass
    try:
        import psycopg

        with psycopg.connect(POSTGRES_URL, connect_timeout=5) as conn:
            env["postgresql"] = conn.execute("SHOW server_version").fetchone()[0]  # type: ignore[index]
            env["synchronous_commit"] = conn.execute("SHOW synchronous_commit").fetchone()[0]  # type: ignore[index]
            env["fsync"] = conn.execute("SHOW fsync").fetchone()[0]  # type: ignore[index]
    except Exception as error:  # an entry that needs PostgreSQL reports its own failure
        env["postgresql"] = f"unreachable: {error}"
    return env


def run_entry(name: str) -> tuple[dict[str, Any], float]:
    child_env = {**os.environ, **{variable: "1" for variable in BLAS_THREAD_VARIABLES}}
    child_env.setdefault("PYTHONHASHSEED", "0")
    started = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", f"bench.bench_{name}"],
        stdout=subprocess.PIPE,
        stderr=None,  # progress lines go straight to the terminal
        text=True,
        cwd=ROOT,
        env=child_env,
    )
    seconds = time.perf_counter() - started
    lines = proc.stdout.strip().splitlines()
    if proc.returncode != 0 or not lines:
        return {"entry": name, "error": f"exit code {proc.returncode}", "targets": []}, seconds
    try:
        result = json.loads(lines[-1])
    except json.JSONDecodeError:
        result = json.loads(proc.stdout)  # an older entry that printed indented JSON
    if not isinstance(result, dict):
        result = {"value": result}
    result.setdefault("entry", name)
    result.setdefault("targets", [])
    return result, seconds


def table(results: list[dict[str, Any]]) -> str:
    header = ("entry", "target", "limit", "min", "median", "max", "mean", "ratio", "met")
    rows: list[tuple[str, ...]] = [header]
    for result in results:
        if "error" in result:
            rows.append((result["entry"], "FAILED: " + str(result["error"]), *[""] * 7))
            continue
        for target in result["targets"]:
            unit = target["unit"]
            limit = "-" if target["limit"] is None else f"{_cmp(target)} {target['limit']:g} {unit}"
            met = {True: "yes", False: "NO", None: "-"}[target["met"]]
            rows.append(
                (
                    result["entry"],
                    target["name"],
                    limit,
                    f"{target['min']:g}",
                    f"{target['median']:g}",
                    f"{target['max']:g}",
                    f"{target['mean']:g}",
                    "-" if target["ratio"] is None else f"{target['ratio']:.3f}",
                    met,
                )
            )
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    lines = [
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True))
        for row in rows
    ]
    lines.insert(1, "  ".join("-" * width for width in widths))
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    if "--list" in argv:
        print("\n".join(entries()))
        return 0
    known = entries()
    selected = [name for name in argv if name] or known
    unknown = [name for name in selected if name not in known]
    if unknown:
        print(f"bench: unknown entries {unknown}; known: {known}", file=sys.stderr)
        return 2
    RESULTS.mkdir(exist_ok=True)
    report: dict[str, Any] = {
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "environment": environment(),
        "entries": {},
    }
    results = []
    for name in selected:
        print(f"bench: {name} ...", file=sys.stderr, flush=True)
        result, seconds = run_entry(name)
        result["seconds"] = round(seconds, 1)
        print(f"bench: {name} done in {seconds:.1f} s", file=sys.stderr, flush=True)
        (RESULTS / f"{name}.json").write_text(json.dumps(result, indent=2) + "\n")
        report["entries"][name] = result
        results.append(result)
    report["table"] = [
        {"entry": result["entry"], **target} for result in results for target in result["targets"]
    ]
    (RESULTS / "all.json").write_text(json.dumps(report, indent=2) + "\n")
    environment_line = ", ".join(f"{k}={v}" for k, v in report["environment"].items())
    print(f"environment: {environment_line}")
    print(table(results))
    print(f"results: {RESULTS.relative_to(ROOT)}/all.json")
    return 1 if any("error" in result for result in results) else 0


def _cmp(target: dict[str, Any]) -> str:
    return "<=" if target["better"] == "lower" else ">="


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _git(*args: str) -> str:
    try:
        return subprocess.run(
            ["git", *args], capture_output=True, text=True, cwd=ROOT, check=False
        ).stdout.strip()
    except OSError:
        return ""


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:] or os.environ.get("BENCH", "").split()))
