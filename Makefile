# EdgeKD: `make demo` runs the main job end to end; `make test` runs the tests.
# Both install what is missing first (a .venv in the repository).
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
ARGS ?=

.PHONY: install tools web demo test test-fast lint format clean

install: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	@command -v $(PYTHON) >/dev/null 2>&1 || { echo "error: $(PYTHON) not found (EdgeKD needs Python 3.11)"; exit 1; }
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -c constraints.txt -e '.[export,dev]'
	touch $(STAMP)

# kotlinc (npm's kotlin-compiler) for the Android demo's pure-Kotlin tests; skipped if no npm/JDK.
tools:
	@bash scripts/kotlin.sh >/dev/null || echo "note: kotlinc unavailable; Kotlin tests will skip"

# LiteRT.js for the web demo (web_demo/node_modules from its package-lock.json); skipped if no npm.
WEB_DEPS := web_demo/node_modules/.package-lock.json
web: $(WEB_DEPS)

$(WEB_DEPS): web_demo/package-lock.json
	@command -v npm >/dev/null 2>&1 && (cd web_demo && npm ci --no-audit --no-fund --silent) \
		|| echo "note: npm unavailable or npm ci failed; the web demo's tests will skip"

demo: install
	$(PY) -m benchmarks.pipeline $(ARGS)

test: install tools web
	$(PY) -m pytest -q $(ARGS)

test-fast: install
	$(PY) -m pytest -q -m "not slow" $(ARGS)

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy kd_core exporters runtimes benchmarks

format: install
	$(VENV)/bin/ruff format kd_core exporters runtimes benchmarks tests
	$(VENV)/bin/ruff check --fix kd_core exporters runtimes benchmarks tests

clean:
	rm -rf runs artifacts build .pytest_cache .mypy_cache .ruff_cache
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
