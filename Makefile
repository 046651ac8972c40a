# Two commands on a fresh machine: `make demo` and `make test`.
VENV ?= .venv
PY := $(VENV)/bin/python
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: setup demo test bench mini-report clean test-lowest dist-check

setup: $(STAMP)

# Re-install only when the dependency list changes. setuptools' notice about editable installs
# of a flat layout is advice, not a problem here: it is filtered.
$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.14.1 torchvision==0.29.1
	PYTHONWARNINGS="ignore:Editable installation" $(PY) -m pip install -q -e '.[dev,fast-eval,tensorboard]'
	touch $(STAMP)

demo: setup
	$(BIN)/atss-bench run recipes/table2.yaml --profile mini --jobs 2
	$(BIN)/atss-bench report --table 2 --profile mini --reference results/mini

test: setup
	$(PY) -m pytest -q

# Re-render a committed CPU-scale reproduction (results/<profile>) from its run records; no
# training. `make mini-report REPRO=mini-shape` for the shape-only one. Each recipe listed has
# three seeds of every row committed (tests/report/test_committed_mini.py checks the files).
REPRO ?= mini
MINI_RECIPES := table1 table2 table3 table4 table5 table6 table7 table9 scales_explained \
  center_sampling_explained
REPRO_RECIPES ?= $(if $(filter mini,$(REPRO)),$(MINI_RECIPES),table1 table2 table3 table4 table7)
mini-report: setup
	for r in $(REPRO_RECIPES); do \
	  $(BIN)/atss-bench report recipes/$$r.yaml --profile $(REPRO) --results results/$(REPRO) \
	    --out results/$(REPRO)/$$r.md || exit 1; done
	$(BIN)/atss-bench report --claims --profile $(REPRO) --results results/$(REPRO) \
	  --out results/$(REPRO)/claims.md

# The lowest torch/torchvision pair that pyproject.toml declares, read from its `>=` floors, in
# a venv of its own (.venv-lowest, several GB: PyPI's CUDA builds), then the tests that exercise
# torch and torchvision directly. Not in CI (the download alone takes minutes); its last result is
# in the README.
LOWEST_VENV ?= .venv-lowest
LOWEST_PAIR = $(shell python3 -c "import re, tomllib; \
deps = tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']; \
print(*[f'{m[1]}=={m[2]}' for d in deps if (m := re.fullmatch(r'(torch|torchvision)>=([0-9.]+),.*', d))])")
test-lowest:
	test -x $(LOWEST_VENV)/bin/python || python3 -m venv $(LOWEST_VENV)
	$(LOWEST_VENV)/bin/python -m pip install -q --upgrade pip
	$(LOWEST_VENV)/bin/python -m pip install -q $(LOWEST_PAIR)
	$(LOWEST_VENV)/bin/python -m pip install -q -e '.[dev]' $(LOWEST_PAIR)
	$(LOWEST_VENV)/bin/python -c "import torch, torchvision; print('torch', torch.__version__, 'torchvision', torchvision.__version__)"
	$(LOWEST_VENV)/bin/python -m pytest -q -p no:cacheprovider tests/assign tests/model -m "not slow"

# Packaging as a user installs it: `python -m build` gives a wheel and an sdist (into dist/),
# checked to carry the recipes and profiles; the wheel goes into a fresh venv, which borrows the
# dependencies already in $(VENV) through a .pth file (no second multi-GB torch) after pip has
# installed the wheel alone, then `pip check` and a few commands run from outside the checkout.
# DIST_FRESH=1 installs the wheel with all its dependencies instead (torch from this disk).
DIST_VENV ?= build/dist-check
DIST_TMP := $(DIST_VENV)/tmp
DIST_FRESH ?=
dist-check: setup
	rm -rf dist $(DIST_VENV)
	python3 -m venv $(DIST_VENV)
	$(DIST_VENV)/bin/python -m pip install -q --upgrade pip build setuptools
	$(DIST_VENV)/bin/python -m build --outdir dist .
	tar tzf dist/atss_bench-*.tar.gz | grep '/recipes/profiles/full.yaml$$' > /dev/null
	tar tzf dist/atss_bench-*.tar.gz | grep '/recipes/claims/paper.yaml$$' > /dev/null
	$(DIST_VENV)/bin/python -m zipfile -l dist/atss_bench-*.whl | grep 'atss_bench/_recipes/profiles/mini.yaml' > /dev/null
	$(if $(DIST_FRESH),$(DIST_VENV)/bin/python -m pip install -q torch==2.14.1 torchvision==0.29.1 dist/atss_bench-*.whl,\
	  $(DIST_VENV)/bin/python -m pip install -q --no-deps dist/atss_bench-*.whl && \
	  $(PY) -c "import sysconfig; print(sysconfig.get_paths()['purelib'])" \
	    > "$$($(DIST_VENV)/bin/python -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")/_atss_dist_check_deps.pth")
	$(DIST_VENV)/bin/python -m pip check
	mkdir -p $(DIST_TMP) && cp recipes/table2.yaml $(DIST_TMP)/
	cd $(DIST_TMP) && ../bin/atss-bench --help > /dev/null
	cd $(DIST_TMP) && ../bin/python -c "import atss_bench, sys; \
	  sys.exit(0 if '/site-packages/' in atss_bench.__file__ else 'atss_bench imported from ' + atss_bench.__file__)"
	cd $(DIST_TMP) && ../bin/atss-bench recipes | grep table8 > /dev/null
	cd $(DIST_TMP) && ../bin/atss-bench show table2.yaml --profile mini --row iou_box > /dev/null
	cd $(DIST_TMP) && ../bin/atss-bench submit table2.yaml --profile mini --cluster slurm --dry-run \
	  --results results | grep '#SBATCH --job-name=atss-table2-mini' > /dev/null
	cd $(DIST_TMP) && _ATSS_BENCH_COMPLETE=complete_bash COMP_WORDS="atss-bench subm" COMP_CWORD=1 \
	  ../bin/atss-bench | grep -x submit > /dev/null
	@echo "dist-check: built $$(ls dist | tr '\n' ' ')- the wheel installs and runs in a fresh venv"

bench: setup
	for f in benchmarks/bench_*.py; do $(PY) $$f || exit 1; done

clean:
	rm -rf $(VENV) $(LOWEST_VENV) .pytest_cache
