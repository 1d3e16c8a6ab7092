# Every target bootstraps what it needs into .venv; re-running is cheap once installed.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
ARGS ?=

.PHONY: install run test test-slow benchmark compare tensorboard lint clean

$(VENV)/bin/activate:
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip

# Stamps re-run pip only when setup.py changes.
$(VENV)/.installed: $(VENV)/bin/activate setup.py
	$(PY) -m pip install --quiet -e .
	touch $@

$(VENV)/.installed-test: $(VENV)/.installed
	$(PY) -m pip install --quiet -e ".[test]"
	touch $@

$(VENV)/.installed-lint: $(VENV)/.installed
	$(PY) -m pip install --quiet -e ".[lint]"
	touch $@

install: $(VENV)/.installed

# The default run: a VAE on the embedded digits (pass more flags with ARGS="--epochs=2 ...").
run: install
	$(PY) -m aigc_zoo.run --model=vae $(ARGS)

# One pytest worker per core; a test file stays on one worker, so its module fixtures (trained
# tiny models) are made once; files go out longest first (tests/conftest.py). TEST_WORKERS=0
# runs everything in this process.
# Tests marked `slow` (learning checks, runs of several processes, the quick benchmark, the
# harness for models whose family runs in it through a sibling, second checks of paths that
# `make test` walks; README.md, Tests) are left out of `make test`,
# whose budget is 8 minutes on a 2-core machine; `make test-slow` runs them; CI runs both.
TEST_WORKERS ?= auto
test: $(VENV)/.installed-test
	$(PY) -m pytest -q -n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder -m "not slow" \
		tests $(ARGS)

test-slow: $(VENV)/.installed-test
	$(PY) -m pytest -q -n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder -m slow \
		tests $(ARGS)

# Train-step speed, MFU, sampling and input-pipeline throughput; results in experiments/benchmarks/.
benchmark: install
	$(PY) -m aigc_zoo.benchmark $(ARGS)

# Each zoo model against the keras-io recipe of its family, same wall-clock budget, same FD;
# results in experiments/results/compare/ (e.g. ARGS="--families=dcgan,vae --budget_seconds=120").
compare: install
	$(PY) -m experiments.baselines.compare $(ARGS)

tensorboard: install
	$(VENV)/bin/tensorboard --logdir runs

lint: $(VENV)/.installed-lint
	$(VENV)/bin/ruff check --isolated --line-length 100 --select E,F,W,B --ignore B905 \
		aigc_zoo tests experiments

clean:
	rm -rf $(VENV) build dist *.egg-info .pytest_cache .ruff_cache
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
