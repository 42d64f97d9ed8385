# embedpipe: `make run` (whole pipeline on the embedded sample) and `make test`
# are all a fresh clone needs; each does the set-up it needs first.

PYTHON  ?= python3
VENV    ?= .venv
BIN     := $(VENV)/bin
EXTRAS  ?= dev
STAMP   := $(VENV)/.installed-$(subst $(comma),-,$(EXTRAS))
CONF    ?= conf/local.toml
OUT     ?= runs/sample
ARGS    ?=
PYTEST_ARGS ?=
comma   := ,
EP      := $(BIN)/embedpipe

.PHONY: setup run test test-all lint format bench bench-quick clean \
        vocab encode cooccur glove svd word2vec evaluate export help

help:
	@echo "make run        whole pipeline on the embedded sample (local Spark), ends with a report"
	@echo "make test       the default test suite (fast; no ../shared needed)"
	@echo "make test-all   every test, including slow, quality and cluster ones"
	@echo "make lint       ruff"
	@echo "make bench      benchmarks against peers (writes bench/RESULTS.md)"
	@echo "make vocab|encode|...  one stage (CONF=..., OUT=..., ARGS='--set key=value')"
	@echo "make clean      remove runs/, caches and the venv"

$(VENV)/bin/python:
	$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "embedpipe needs Python >= 3.11"'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

$(STAMP): pyproject.toml | $(VENV)/bin/python
	$(BIN)/python -m pip install -q -e '.[$(EXTRAS)]'
	scripts/ensure-java.sh $(BIN)/python
	@touch $@

setup: $(STAMP)

run: setup
	$(EP) run --conf $(CONF) --out $(OUT) $(ARGS)

vocab encode cooccur glove svd word2vec: setup
	$(EP) $@ --conf $(CONF) --out $(OUT) $(ARGS)

evaluate: setup
	$(EP) evaluate $(OUT) --conf $(CONF) $(ARGS)

test: setup
	$(BIN)/python -m pytest -q $(PYTEST_ARGS)

test-all: EXTRAS = dev,bench
test-all: setup
	$(BIN)/python -m pytest -q -m "" $(PYTEST_ARGS)

lint: setup
	$(BIN)/ruff check .

format: setup
	$(BIN)/ruff format embedpipe jobs tests bench

bench: EXTRAS = dev,bench
bench: setup
	$(BIN)/python bench/run_all.py

bench-quick: EXTRAS = dev,bench
bench-quick: setup
	$(BIN)/python bench/run_all.py --quick

clean:
	rm -rf runs bench/out .pytest_cache .ruff_cache spark-warehouse metastore_db derby.log
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
	rm -rf $(VENV)
