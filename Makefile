# cjledger — every target installs what it needs first.
SHELL := /bin/bash
UV_PYTHON_DOWNLOADS := never
export UV_PYTHON_DOWNLOADS
# Resolved at each use, so a uv that `install` just added with pip is found.
UV = $(shell command -v uv 2>/dev/null || echo "python3 -m uv")
PYTEST_ARGS ?=

.PHONY: install demo test test-unit lint bench chaos services chromium clean

install:
	@command -v uv >/dev/null 2>&1 || python3 -m uv --version >/dev/null 2>&1 \
		|| python3 -m pip install --quiet uv
	@$(UV) sync --frozen --quiet

demo: install
	$(UV) run cjledger demo

services:
	@bash scripts/ensure_services.sh

chromium:
	@bash scripts/ensure_chromium.sh

# pytest exits 5 when it collected nothing: that is a broken suite, not a pass.
test: install services chromium
	@$(UV) run pytest $(PYTEST_ARGS); rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "make test: pytest collected no tests" >&2; exit 1; fi; \
	exit $$rc

test-unit: install
	@$(UV) run pytest tests/unit $(PYTEST_ARGS); rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "make test-unit: pytest collected no tests" >&2; exit 1; fi; \
	exit $$rc

lint: install
	$(UV) run ruff check .
	$(UV) run ruff format --check .
	$(UV) run mypy

# BENCH="scoring waves" selects entries (bench/bench_<name>.py); all of them by default.
bench: install services
	$(UV) run python -m bench.run $(BENCH)

# The fault suite (minutes, real servers; not part of `make test`): kill -9, duplicates,
# two serve processes, a malformed flood, a PostgreSQL restart, a silent broker.
chaos: install services
	$(UV) run python -m tests.chaos

clean:
	rm -rf .venv .pytest_cache .mypy_cache .ruff_cache .cjledger
