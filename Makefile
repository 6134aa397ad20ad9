# Two commands for a fresh machine with Python 3.11+: `make run` and `make test`.
# Each creates (or refreshes) its own virtual environment in .venv first, from the hashed locks:
# requirements.lock (the bot) and requirements-dev.lock (the bot plus test tools), both compiled from
# pyproject.toml by `make lock`. The interpreter's own pip installs them (no upgrade first: Python 3.11's
# bundled pip 23.2 must work, as it does on a fresh machine), so every install gets the same versions.
PY ?= $(shell command -v python3.11 || command -v python3)
VENV ?= .venv
BIN := $(VENV)/bin
LOCK_ARGS := --universal --python-version 3.11 --generate-hashes --quiet --no-header

.PHONY: run test lint lint-docker lock lock-check bench install

$(BIN)/python:
	$(PY) -c 'import sys; assert sys.version_info >= (3, 11), "agentbot needs Python 3.11 or newer"'
	$(PY) -m venv $(VENV)

$(BIN)/.installed-app: requirements.lock pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q --disable-pip-version-check --no-deps --require-hashes -r requirements.lock
	$(BIN)/pip install -q --disable-pip-version-check --no-deps -e .
	touch $@

$(BIN)/.installed-dev: requirements-dev.lock pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q --disable-pip-version-check --no-deps --require-hashes -r requirements-dev.lock
	$(BIN)/pip install -q --disable-pip-version-check --no-deps -e .
	touch $@ $(BIN)/.installed-app

install: $(BIN)/.installed-app

run: $(BIN)/.installed-app
	$(BIN)/agentbot run

# The locks must be what pyproject.toml resolves to (the installed versions preferred, so a new release
# on PyPI alone does not fail CI; a changed or added dependency does).
lock-check: $(BIN)/.installed-dev
	@tmp=$$(mktemp -d) && cp requirements.lock requirements-dev.lock $$tmp/ && \
	$(BIN)/uv pip compile pyproject.toml $(LOCK_ARGS) -o $$tmp/requirements.lock && \
	$(BIN)/uv pip compile pyproject.toml --extra dev $(LOCK_ARGS) -o $$tmp/requirements-dev.lock && \
	if diff -q requirements.lock $$tmp/requirements.lock >/dev/null && \
	   diff -q requirements-dev.lock $$tmp/requirements-dev.lock >/dev/null; then \
		echo "locks match pyproject.toml"; rm -rf $$tmp; \
	else \
		diff -u requirements.lock $$tmp/requirements.lock | head -40; \
		diff -u requirements-dev.lock $$tmp/requirements-dev.lock | head -40; \
		echo "requirements*.lock do not match pyproject.toml: run 'make lock' and commit both files"; \
		rm -rf $$tmp; exit 1; \
	fi

lock: $(BIN)/.installed-dev
	$(BIN)/uv pip compile pyproject.toml $(LOCK_ARGS) -o requirements.lock
	$(BIN)/uv pip compile pyproject.toml --extra dev $(LOCK_ARGS) -o requirements-dev.lock

lint-docker: $(BIN)/.installed-dev
	$(BIN)/hadolint Dockerfile

lint: $(BIN)/.installed-dev
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports

# Ten workers on two cores: the end-to-end tests mostly wait on Discord's real-time write pacing (5 per 5 s),
# not on the CPU. Measured on this 2-core machine: -n 2 took 3:07 wall (2:02 CPU), -n 4 took 2:07; with
# 1,286 tests (2026-12-05) -n 4 took 3:00-3:04 and -n 6 2:49-2:55; with 1,413 tests (quiet, 2026-12-05
# 16:20) -n 6 2:55 and -n 8 2:47, the CPU busy ~65% of the wall time (per-process sampling of /proc);
# with 1,499 tests (quiet, 2026-12-05 19:10, file order re-measured) -n 8 2:49 and -n 10 2:40; with 1,634
# tests (quiet, the figures README quotes) -n 8 2:54, -n 10 2:52 and -n 14 3:01.
# Files go to the workers slowest first (tests/file_order.py), so the run does not end on one worker.
# Bytecode is cached even where PYTHONDONTWRITEBYTECODE is set (it is on these machines): the suite starts
# ~190 agentbot processes, and each compiled agent/ and bot/ afresh (0.2 s of CPU per start), and each
# worker re-rewrote every test file's asserts (~4 s). __pycache__ is git-ignored.
test: lock-check lint lint-docker
	env -u PYTHONDONTWRITEBYTECODE $(BIN)/pytest -n 10 --dist loadfile

# Every benchmark in turn; bench/fake_embeddings.py is a server bot_load.py starts, not a benchmark (it never exits).
bench: $(BIN)/.installed-dev
	for f in $(filter-out bench/fake_embeddings.py,$(sort $(wildcard bench/*.py))); do $(BIN)/python $$f || exit 1; done
