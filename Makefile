# Two entry points, each installs what it needs into .venv on first use:
#   make test    the whole test suite (CPU, tiny tensors and models)
# TORCH is the torch requirement installed first, so that no later step pulls another build:
# the default is the CPU wheel this project is developed with; on a GPU machine pass e.g.
# `make test TORCH="torch==2.13.0 --index-url https://download.pytorch.org/whl/cu128"`.

PYTHON ?= python3
TORCH ?= torch==2.13.0
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: install test test-fast clean

install: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q $(TORCH)
	$(PY) -m pip install -q -e ".[test]"
	touch $(STAMP)

# pytest exits 5 when it collected no tests: that is a failure, never a pass.
test: $(STAMP)
	$(PY) -m pytest -q; rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "error: pytest collected no tests" >&2; fi; exit $$rc

test-fast: $(STAMP)
	$(PY) -m pytest -q -m "not slow"

clean:
	rm -rf $(VENV) .pytest_cache build *.egg-info
