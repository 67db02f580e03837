# Tally's one-word entry points. Only Python 3.11+ is needed on a fresh machine:
# the first target to run makes .venv and installs the project into it.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
INSTALLED := $(VENV)/.installed

.PHONY: run test check pytest lint security-scan install clean bench bench-smoke bench-path bench-c10k bench-grpc bench-protocols profile soak sqlmap schema proto ha-test

$(INSTALLED): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(INSTALLED)

install: $(INSTALLED)

## run: migrate the database (SQLite by default), print an API key, serve on :8000
run: $(INSTALLED)
	$(BIN)/tally migrate
	$(BIN)/python -m tally.cli.devkey
	$(BIN)/tally serve --no-migrate

## test: lint, type-check, scan, then every test (PostgreSQL tests need a reachable server)
test: lint security-scan pytest

## check: the inner loop (under 2 minutes): lint, types, layers, then the unit,
## architecture, service and in-process API tests on SQLite alone, but those marked slow.
## Three workers on two cores: these tests wait on timers and sockets about half the
## time, and a third worker fills it (about 85 s, against 100 with two)
check: lint
	TALLY_TEST_BACKENDS=sqlite $(BIN)/pytest -q -n 3 -m "not slow" tests/unit tests/architecture tests/integration tests/api

## schema: regenerate the published contracts from the code (docs/schema.graphql,
## docs/openapi.json); the tests fail while either differs from the live one
schema: $(INSTALLED)
	$(BIN)/python scripts/graphql_schema.py > docs/schema.graphql
	$(BIN)/python scripts/openapi.py > docs/openapi.json

## proto: regenerate the gRPC code in src/tally/grpc/v1 from proto/ (committed; a
## test fails while it differs from what protoc makes of the .proto files)
proto: $(INSTALLED)
	$(BIN)/python scripts/protos.py

lint: $(INSTALLED)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/lint-imports

## security-scan: bandit (no high-severity finding) and the dependencies' known
## vulnerabilities: pip-audit and PyPI's advisories, and plainly what each audited
security-scan: $(INSTALLED)
	$(BIN)/bandit -q -r src --severity-level high
	$(BIN)/python scripts/check_advisories.py

## pytest: every test in two runs. The in-process tests (each test one process, its
## apps called in it) on two pytest workers, one per core: about 3 minutes instead
## of 5 (--dist loadfile: a module's tests stay on one worker, in order, as the
## console's browser story needs). Then tests/e2e alone, one at a time: each starts tally serve processes and
## load of its own, and two at once would fight over the same two cores.
pytest: $(INSTALLED)
	$(BIN)/pytest -n 2 --dist loadfile --ignore=tests/e2e
	$(BIN)/pytest tests/e2e

## soak: the long versions of the reliability tests (TALLY_SOAK=1): the bank test's
## phases for minutes each and schemathesis with 500 examples (about 70 minutes),
## the model test and the fuzz tests at their soak sizes (about an hour more).
## docs/reliability.md. SOAK_ARGS narrows it, e.g. SOAK_ARGS=tests/e2e/test_bank.py
soak: $(INSTALLED)
	TALLY_SOAK=1 $(BIN)/pytest -s $(SOAK_ARGS)

## ha-test: a 3-node Patroni cluster (etcd, synchronous replication) on loopback ports;
## the primary SIGKILLed under load: no acknowledged transfer lost, 503 + Retry-After
## during the window, never a 500; once through a multi-host URL, once through HAProxy
## on Patroni's REST checks (about 2 minutes; needs Debian's patroni and etcd-server,
## installed here if missing; docs/deploy.md). Not part of make test.
ha-test: $(INSTALLED)
	@command -v patroni >/dev/null && command -v etcd >/dev/null || \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
	   apt-get install -y -qq --no-install-recommends patroni etcd-server)
	TALLY_HA_TEST=1 $(BIN)/pytest -s -p no:cacheprovider tests/ha

SECURITY_INSTALLED := $(VENV)/.installed-security

$(SECURITY_INSTALLED): $(INSTALLED)
	$(BIN)/python -m pip install --quiet -e '.[dev,security]'
	touch $(SECURITY_INSTALLED)

## sqlmap: sqlmap on a local tally, SQLite and PostgreSQL (about 25 minutes; not in CI)
sqlmap: $(SECURITY_INSTALLED)
	$(BIN)/python scripts/sqlmap.py $(SQLMAP_ARGS)

BENCH_INSTALLED := $(VENV)/.installed-bench

$(BENCH_INSTALLED): $(INSTALLED)
	$(BIN)/python -m pip install --quiet -e '.[dev,bench]'
	touch $(BENCH_INSTALLED)

## bench: pgbench, then Tally on PostgreSQL and SQLite under wrk, then the protocol
## table (about 6 minutes; needs wrk and h2load: apt-get install wrk nghttp2-client)
bench: $(BENCH_INSTALLED)
	$(BIN)/python bench/run.py $(BENCH_ARGS)

## bench-protocols: only the protocol table: h1 and h2 (h2load), h3 (aioquic), one
## transfer workload, throughput, p99 and Tally CPU per transfer (about a minute)
bench-protocols: $(BENCH_INSTALLED)
	$(BIN)/python bench/protocols.py $(PROTOCOLS_ARGS)

## bench-smoke: the short benchmark CI runs (under a minute)
bench-smoke: $(BENCH_INSTALLED)
	$(BIN)/python bench/run.py --smoke $(BENCH_ARGS)

## bench-c10k: 10,000 SSE streams, then 10,000 WebSockets, on one tally serve process:
## RSS per stream and fan-out times of a burst of transfers (about 3 minutes)
bench-c10k: $(INSTALLED)
	$(BIN)/python bench/c10k.py $(C10K_ARGS)

## bench-grpc: gRPC unary and client-streaming transfers on make bench's workload:
## throughput, p99 and Tally's CPU per transfer, PostgreSQL and SQLite (about 2 minutes)
bench-grpc: $(BENCH_INSTALLED)
	$(BIN)/python bench/grpc_bench.py $(BENCH_GRPC_ARGS)

## bench-path: the request path in process, no HTTP server: CPU µs per transfer (under a minute)
bench-path: $(BENCH_INSTALLED)
	$(BIN)/python bench/request_path.py $(BENCH_PATH_ARGS)

## profile: py-spy on tally serve under wrk (single transfers, 64 clients): a flame graph
## and the top functions in bench/results/profile-* (about a minute)
profile: $(BENCH_INSTALLED)
	$(BIN)/python bench/profile.py $(PROFILE_ARGS)

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
