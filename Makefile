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

.PHONY: demo test install install-test lint bench clean-venv

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
	$(VENV)/bin/wikifaces demo

# pytest exits 5 when it collected no tests: that is a failure here, said plainly.
test: $(STAMP_TEST)
	@$(PY) -m pytest $(PYTEST_ARGS); rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "make test: pytest collected no tests (exit 5): nothing was tested" >&2; exit 1; fi; \
	exit $$rc

lint: $(STAMP_TEST)
	$(VENV)/bin/ruff check .

clean-venv:
	rm -rf $(VENV)
