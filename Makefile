# Two entry points on a fresh machine: `make demo` and `make test`.
# Each creates .venv and installs what it needs (torch pinned to the CPU wheel).
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
PYTEST_ARGS ?=

.PHONY: install demo test lint format bench bench-ett bench-serve bench-stream clean

$(STAMP): pyproject.toml
	python3 -m venv $(VENV)
	$(BIN)/pip install -qq --disable-pip-version-check torch==2.13.0
	$(BIN)/pip install -qq --disable-pip-version-check -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/tsloom demo

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

test: lint
	$(BIN)/pytest -q $(PYTEST_ARGS)

format: $(STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

bench: $(STAMP)
	$(BIN)/python benchmarks/ingest_csv.py
	$(BIN)/python benchmarks/clean_pipeline.py
	$(BIN)/python benchmarks/ett.py --quick
	$(BIN)/python benchmarks/amml_flow.py

# REST serving vs TorchServe (in its own venv under benchmarks/.work) and plain FastAPI
bench-serve: $(STAMP)
	test -x benchmarks/.work/torchserve-venv/bin/torchserve || \
		$(BIN)/python benchmarks/serve_load.py --setup-torchserve
	$(BIN)/python benchmarks/serve_load.py --passes 3

# tsloom stream: 10 000 sensors, 100 models, in-process and through Mosquitto
bench-stream: $(STAMP)
	$(BIN)/python benchmarks/stream_rate.py

bench-ett: $(STAMP)
	$(BIN)/python benchmarks/ett.py --threads 1

clean:
	rm -rf $(VENV) .tsloom .pytest_cache .ruff_cache
