# Quick start: `make run` (the main search on the embedded digits data) and `make test`.
# Both create ./.venv and install the project into it on first use.
PY ?= python3
VENV := .venv
STAMP := $(VENV)/.installed-stamp

$(STAMP): setup.cfg requirements.txt pyproject.toml
	$(PY) -m venv $(VENV)
	$(VENV)/bin/python -m pip install -q --upgrade pip
	$(VENV)/bin/python -m pip install -q -r requirements.txt -e '.[test]'
	$(VENV)/bin/python -m nas_jax.kernels.build  # C++ CPU kernels, cached per machine; optional
	touch $(STAMP)

.PHONY: install run test
install: $(STAMP)

run: $(STAMP)
	$(VENV)/bin/python experiments/run.py --strategy nao

test: $(STAMP)
	$(VENV)/bin/python -m pytest -n 2 -q
