"""Adapters and entry points (CLI, services, HTTP, persistence, messaging).

Importing this package pins the BLAS thread pools to one thread unless the environment
says otherwise. It runs before any entry point imports numpy (which reads these variables
once, when it loads OpenBLAS). The matrices the domain solves are small (a Newton step of
a batch's Bradley-Terry fit is a dense solve of a few dozen to 300 rows), and a
multi-threaded BLAS on them only spins: on this project's 2-core machine one 48x48 solve
took ~12 ms with OpenBLAS's default threads against ~0.03 ms with one thread, so every wave
closing in ``serve`` paid for it many times over. The bench pins the same variables.
"""

import os

BLAS_THREAD_VARIABLES = (
    "OMP_NUM_THREADS",
    "OPENBLAS_NUM_THREADS",
    "MKL_NUM_THREADS",
    "BLIS_NUM_THREADS",
    "NUMEXPR_NUM_THREADS",
    "VECLIB_MAXIMUM_THREADS",
)
"""The thread-count variables of the BLAS builds numpy may load (read once, at import)."""

for _variable in BLAS_THREAD_VARIABLES:
    os.environ.setdefault(_variable, "1")
