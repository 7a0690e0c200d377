# The two quick-start commands: `make serve` runs the archive, `make test` runs the whole suite.
# Both set themselves up (virtual environment, packages, Debian tools when run as root).

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
DEBIAN_TOOLS := dcmtk dicom3tools libturbojpeg0
PYTEST_ARGS ?=

.PHONY: serve test lint typecheck setup setup-test debian-tools bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip setuptools wheel

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e . --config-settings editable_mode=compat
	touch $@

$(VENV)/.installed-test: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[test]' --config-settings editable_mode=compat
	touch $(VENV)/.installed $@

setup: $(VENV)/.installed

setup-test: $(VENV)/.installed-test debian-tools

# Installs the DICOM peers and validator the tests drive, when root and when missing.
debian-tools:
	@missing=""; for p in $(DEBIAN_TOOLS); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = "0" ]; then \
	    echo "installing Debian packages:$$missing"; \
	    DEBIAN_FRONTEND=noninteractive apt-get install -y -q $$missing >/dev/null 2>&1 || \
	    { apt-get update -q >/dev/null 2>&1 && DEBIAN_FRONTEND=noninteractive apt-get install -y -q $$missing >/dev/null; }; \
	  else echo "warning: missing Debian packages (run as root to install):$$missing"; fi; \
	fi

serve: setup
	$(BIN)/vna serve

lint: setup-test
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: setup-test
	$(BIN)/mypy

test: setup-test
	$(BIN)/ruff check .
	$(BIN)/mypy
	$(BIN)/python -m pytest -n 2 --dist loadgroup $(PYTEST_ARGS)

bench: setup-test
	$(BIN)/python bench/ingest.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
