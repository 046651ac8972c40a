# Two commands on a fresh machine: `make demo` and `make test`.
VENV ?= .venv
PY := $(VENV)/bin/python
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: setup demo test bench mini-report clean

setup: $(STAMP)

# Re-install only when the dependency list changes.
$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.14.1 torchvision==0.29.1
	$(PY) -m pip install -q -e '.[dev,fast-eval]'
	touch $(STAMP)

demo: setup
	$(BIN)/atss-bench run recipes/table2.yaml --profile mini --jobs 2
	$(BIN)/atss-bench report --table 2 --profile mini --reference results/mini

test: setup
	$(PY) -m pytest -q

# Re-render a committed CPU-scale reproduction (results/<profile>) from its run records; no
# training. `make mini-report REPRO=mini-shape` for the shape-only one.
# The mini reproduction has Tables 2, 3 and 7 so far; mini-shape has Tables 1, 2, 3, 4 and 7.
REPRO ?= mini
REPRO_TABLES ?= $(if $(filter mini,$(REPRO)),2 3 7,1 2 3 4 7)
mini-report: setup
	for t in $(REPRO_TABLES); do \
	  $(BIN)/atss-bench report --table $$t --profile $(REPRO) --results results/$(REPRO) \
	    --out results/$(REPRO)/table$$t.md || exit 1; done
	$(BIN)/atss-bench report --claims --profile $(REPRO) --results results/$(REPRO) \
	  --out results/$(REPRO)/claims.md

bench: setup
	for f in benchmarks/bench_*.py; do $(PY) $$f || exit 1; done

clean:
	rm -rf $(VENV) .pytest_cache
