# The README's two commands: `make run` (main job) and `make test` (lint + tests).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
export NUMBA_CACHE_DIR ?= $(CURDIR)/.numba-cache
DATA ?= ../shared/data/machine-audio
# System binaries the tests run (COMMAND[=DEBIAN_PACKAGE]: Prometheus for tests/observability,
# Postgres server binaries for the database-outage test, Debian's Chromium for tests/ui (never
# a browser download)); `make test` installs the missing ones (as root or through sudo) with
# scripts/install-test-deps.sh, as .ci/run does.
TEST_DEPS ?= prometheus promtool=prometheus pg_ctlcluster=postgresql chromium

.PHONY: install run test test-deps lint format evaluate bench dashboards

$(BIN)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --upgrade --quiet pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

install: $(BIN)/.installed

# The demo plant: serves the API on 127.0.0.1:8000 (SQLite) and streams simulated machines.
run: install
	$(BIN)/humwatch demo

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: install
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

test: lint
	scripts/install-test-deps.sh $(TEST_DEPS)
	$(BIN)/pytest

test-deps:
	@echo $(TEST_DEPS)

evaluate: install
	$(BIN)/humwatch evaluate clips $(DATA)/manifest.csv --root $(DATA) --preset default --preset per-dimension \
		--preset previous --preset reference --condition domain --json out/evaluation.json \
		--plots out/plots --markdown docs/evaluation.md
	$(BIN)/humwatch evaluate simulated --preset default --preset per-dimension --preset previous \
		--seed 0 --seed 1 --seed 2 --json out/evaluation-simulated.json --markdown docs/evaluation.md

bench: install
	$(BIN)/python benchmarks/end_to_end.py
	$(BIN)/python benchmarks/knn.py

# Regenerate the Grafana dashboards, then check and unit-test the Prometheus rules.
dashboards: install
	$(BIN)/python dashboards/build.py
	promtool check rules dashboards/prometheus/rules/*.yml
	promtool test rules dashboards/prometheus/tests/*.yml
