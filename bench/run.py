"""Run every benchmark script in this folder and gather their JSON into one report.

Each ``bench_*.py`` prints one JSON document on stdout. The combined report goes to
``bench/results/all.json`` and to stdout. Benchmarks measure; they never assert timings.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"


def main() -> int:
    RESULTS.mkdir(exist_ok=True)
    selected = set(sys.argv[1:])
    report: dict[str, object] = {"started_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    failed = []
    for script in sorted(HERE.glob("bench_*.py")):
        name = script.stem.removeprefix("bench_")
        if selected and name not in selected:
            continue
        print(f"bench: running {script.name}", file=sys.stderr, flush=True)
        started = time.perf_counter()
        proc = subprocess.run(
            [sys.executable, str(script)], capture_output=True, text=True, cwd=HERE.parent
        )
        elapsed = round(time.perf_counter() - started, 1)
        if proc.returncode != 0:
            failed.append(name)
            report[name] = {"error": proc.stderr.strip().splitlines()[-5:], "seconds": elapsed}
            continue
        try:
            result = json.loads(proc.stdout.strip().splitlines()[-1]) if proc.stdout.strip() else {}
        except json.JSONDecodeError:
            result = json.loads(proc.stdout)
        report[name] = result
        (RESULTS / f"{name}.json").write_text(json.dumps(result, indent=2))
        print(f"bench: {script.name} done in {elapsed}s", file=sys.stderr, flush=True)
    (RESULTS / "all.json").write_text(json.dumps(report, indent=2))
    print(json.dumps(report, indent=2))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
