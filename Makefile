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
	$(BIN)/atss-bench report --table 2 --profile mini

test: setup
	$(PY) -m pytest -q

# Re-render the committed CPU-scale reproduction (results/mini) from its run records; no training.
MINI_TABLES := 1 2 3 4 7
mini-report: setup
	for t in $(MINI_TABLES); do \
	  $(BIN)/atss-bench report --table $$t --profile mini --results results/mini \
	    --out results/mini/table$$t.md || exit 1; done
	$(BIN)/atss-bench report --claims --profile mini --results results/mini \
	  --out results/mini/claims.md

bench: setup
	for f in benchmarks/bench_*.py; do $(PY) $$f || exit 1; done

clean:
	rm -rf $(VENV) .pytest_cache
