# `make train` and `make test` each set up .venv on first use (pyproject + offline asset packages).
VENV ?= .venv
PY := $(VENV)/bin/python
READY := $(VENV)/.ready
# tensorflow-text (SavedModels that tokenize raw strings) declares a dependency on the `tensorflow`
# package; its ops load into the tensorflow-cpu of the same version, so it installs without it.
TF_TEXT := 2.21.1

.PHONY: train test
$(READY): pyproject.toml constraints.txt requirements-assets.txt Makefile
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q -c constraints.txt -e '.[test]'
	$(PY) -m pip install -q --no-deps -r requirements-assets.txt
	$(PY) -m pip install -q --no-deps tensorflow-text==$(TF_TEXT)
	touch $@

train: $(READY)
	$(VENV)/bin/flaxtrain train

# glibc keeps XLA's freed CPU buffers for reuse instead of unmapping them each step (flaxtrain/allocator.py).
ALLOCATOR_ENV := MALLOC_ARENA_MAX=1 MALLOC_MMAP_MAX_=0 MALLOC_TRIM_THRESHOLD_=1099511627776

test: $(READY)
	$(VENV)/bin/lint-imports
	env $(ALLOCATOR_ENV) $(PY) -m pytest -x -n 2 --dist loadfile --no-loadscope-reorder
