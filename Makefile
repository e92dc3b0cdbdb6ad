# Minisource Log. Variables given on the command line or in the environment always win:
#   SERVER_PORT=15002 POSTGRES_DB=other make run   # a second, independent instance
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

.PHONY: install run migrate restore test lint format bench bench-ingest bench-query bench-tail bench-alerts bench-retention bench-protocols bench-tracing bench-loki dev-up docker-build clean

# The C extension (services/gateway/wire/) is built in place by the editable install.
$(STAMP): pyproject.toml clients/python/pyproject.toml services/gateway/wire/_protowire.c
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	$(BIN)/pip install --quiet -e ./clients/python  # the Python client, for its tests
	touch $(STAMP)

install: $(STAMP)

## run: the whole service (gateway, writers, evaluator, janitor) on local PostgreSQL + Redis
run: $(STAMP)
	$(BIN)/python -m services

## migrate: create role/database if absent and apply sql/ migrations
migrate: $(STAMP)
	$(BIN)/python -m shared.migrate

## restore: re-ingest an archived tenant-day (README, "Archive"); ARCHIVE_PATH defaults to
## the tenant's policy's, ARCHIVE_ROOT to the environment's
restore: $(STAMP)
	$(BIN)/python -m services.janitor restore --tenant $(TENANT) --day $(DAY) \
		$(if $(ARCHIVE_PATH),--archive-path $(ARCHIVE_PATH))

## test: lint, type-check, then the test suite against real PostgreSQL and Redis, in
## TEST_WORKERS processes (each test has its own database and key prefix; 0: one process)
TEST_WORKERS ?= 2
test: lint
	$(BIN)/pytest -q -n $(TEST_WORKERS)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

format: $(STAMP)
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

## bench: every benchmark; figures are printed beside baselines measured in the same run
bench: bench-ingest bench-query bench-tail bench-alerts bench-retention bench-protocols bench-tracing

bench-ingest: $(STAMP)
	$(BIN)/python -m bench.ingest

bench-query: $(STAMP)
	$(BIN)/python -m bench.query

bench-tail: $(STAMP)
	$(BIN)/python -m bench.tail

bench-alerts: $(STAMP)
	$(BIN)/python -m bench.alerts

bench-retention: $(STAMP)
	$(BIN)/python -m bench.retention

## bench-loki: Grafana's Loki calls through /loki/api/v1 beside the same REST questions
bench-loki: $(STAMP)
	$(BIN)/python -m bench.loki

## bench-protocols: OTLP (and the other ingest protocols) against /api/v1/logs/batch
bench-protocols: $(STAMP)
	$(BIN)/python -m bench.protocols

## bench-tracing: the ingest benchmark with tracing off and on (OTLP to a local sink)
bench-tracing: $(STAMP)
	$(BIN)/python -m bench.tracing

## dev-up: make sure the local PostgreSQL and Redis are running
dev-up:
	./scripts/dev-up.sh

## docker-build: the one image (docker/Dockerfile) both compose files run; README, "Deploy"
docker-build:
	docker build -f docker/Dockerfile -t minisource-log:latest .

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
