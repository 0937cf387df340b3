"""Every entry point runs numpy with one BLAS thread unless the operator says otherwise.

The domain solves small dense systems (one per Newton step of a Bradley-Terry fit); a
multi-threaded BLAS spins on them. ``infrastructure`` pins the pools before numpy loads.
"""

from __future__ import annotations

import os
import subprocess
import sys

PROBE = (
    "import infrastructure.cli.main, sys, os; "
    "import numpy; "
    "print(os.environ['OPENBLAS_NUM_THREADS'], os.environ['OMP_NUM_THREADS'])"
)


def run_probe(extra: dict[str, str]) -> str:
    env = {k: v for k, v in os.environ.items() if not k.endswith("_NUM_THREADS")}
    env.update(extra)
    done = subprocess.run(
        [sys.executable, "-c", PROBE], env=env, capture_output=True, text=True, check=True
    )
    return done.stdout.strip()


def test_the_cli_pins_blas_threads_to_one_before_numpy_loads() -> None:
    assert run_probe({}) == "1 1"


def test_an_operator_setting_is_kept() -> None:
    assert run_probe({"OPENBLAS_NUM_THREADS": "2"}) == "2 1"
