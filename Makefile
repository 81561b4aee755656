# icepipe: the two commands a newcomer needs are `make demo` and `make test`.
# Everything else (venv, install, sample data) is set up on demand by those targets.

SHELL := /bin/bash
PYTHON ?= python3.12
VENV := .venv
PY := $(VENV)/bin/python
DATA := data
STAMP := $(VENV)/.icepipe-installed
# Playwright drives Debian's Chromium (`make browser`): it never downloads a browser of its own.
export PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD := 1

.PHONY: demo test lint unit data venv bench conformance clean clean-repos browser screenshots

venv: $(STAMP)

$(STAMP): pyproject.toml
	@command -v $(PYTHON) >/dev/null || { echo "need $(PYTHON) (Python >= 3.12): install it, or run 'make PYTHON=/path/to/python3.12 ...'"; exit 1; }
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev,web]'
	touch $(STAMP)

data: $(DATA)/.complete

$(DATA)/.complete: scripts/fetch_data.sh scripts/derive_samples.py scripts/make_kerchunk_refs.py | venv
	PYTHON=$(PY) bash scripts/fetch_data.sh $(DATA)
	touch $@

# The main job on the embedded default: every pipeline in pipelines/ on a LocalCluster, into
# Icechunk repositories under repos/, then a read-back check and a summary.
demo: venv data
	$(PY) scripts/demo.py pipelines/*.yaml

lint: venv
	$(VENV)/bin/ruff check src tests benchmarks scripts
	$(VENV)/bin/ruff format --check src tests benchmarks scripts
	$(VENV)/bin/mypy

unit: venv data browser
	$(VENV)/bin/pytest -q

test: lint unit

# Debian's Chromium for the browser tests (tests/web/browser) and the screenshots: apt-get install
# as root, else the packages unpacked into .cache/chromium (scripts/browser.sh; docs/web.md).
# When it cannot, `make unit` goes on: the browser tests then fail, saying how to install it.
browser:
	@bash scripts/browser.sh >/dev/null || { echo "make browser: no Chromium (see above)" >&2; \
	  case "$(MAKECMDGOALS)" in *screenshots*|browser) exit 1;; esac; }

# The pictures of docs/web.md (docs/img/web-*.png): `icepipe web` on the demo's repositories.
screenshots: venv browser
	$(PY) scripts/screenshots.py

bench: venv data
	$(PY) benchmarks/run.py
	$(PY) benchmarks/netcdf3.py
	$(PY) benchmarks/native.py
	$(PY) benchmarks/grib.py
	$(PY) benchmarks/grib_scan.py
	$(PY) benchmarks/rectilinear.py
	$(PY) benchmarks/calendar_chunks.py
	$(PY) benchmarks/nightly.py
	$(PY) benchmarks/startup.py

# The full conformance matrix over every real series of `make data` (docs/conformance.md and
# docs/conformance.json; 7-12 min on 2 cores). `make test` runs a representative subset.
conformance: venv data
	$(PY) scripts/conformance.py

clean-repos:
	rm -rf repos .repos.* repos/.*.icepipe.lock

clean: clean-repos
	rm -rf $(VENV) $(DATA) .cache/chromium .pytest_cache .mypy_cache .ruff_cache
