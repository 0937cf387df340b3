"""Numeric bounds every edge (CLI options, settings, HTTP bodies, messages) enforces.

Kept free of imports so that the CLI's option declarations can use them without slowing
``--help`` down.
"""

from __future__ import annotations

#: largest count a read-model integer column (PostgreSQL ``integer``) holds: budgets,
#: comparison counts, versions
MAX_COUNT = 2**31 - 1

#: a pairing seed is a signed 64-bit integer: enough for any schedule of seeds, and an
#: event never carries an integer thousands of digits long
MIN_SEED = -(2**63)
MAX_SEED = 2**63 - 1
