# lockgate: `make demo` runs the whole journey, `make test` runs the full suite.
# Both create .venv from scratch when it is missing.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-$(shell cat pyproject.toml constraints.txt | cksum | cut -d' ' -f1)

export ORT_DISABLE_TELEMETRY := 1

.PHONY: demo test lint typecheck bench browser clean

$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -c constraints.txt -e ".[all,dev]"
	rm -f $(VENV)/.installed-*
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/lockgate demo

test: $(STAMP)
	$(PY) -m ruff check src tests benchmarks
	$(PY) -m mypy
	$(VENV)/bin/lint-imports
	$(PY) -m pytest

lint: $(STAMP)
	$(PY) -m ruff check src tests benchmarks
	$(PY) -m mypy
	$(VENV)/bin/lint-imports

bench: $(STAMP)
	$(PY) benchmarks/serve_overhead.py
	$(PY) benchmarks/register_overhead.py
	$(PY) benchmarks/capture_cost.py

# Debian's Chromium (and its driver) for the report's and the console's browser tests
# (skipped without it, except in CI). Playwright drives /usr/bin/chromium; no browser download.
browser:
	{ command -v chromium && command -v chromedriver; } >/dev/null || \
	  { apt-get install -y -qq chromium chromium-driver >/dev/null || \
	    { apt-get update -qq && apt-get install -y -qq chromium chromium-driver >/dev/null; }; }

clean:
	rm -rf $(VENV) .lockgate .pytest_cache .mypy_cache .ruff_cache
