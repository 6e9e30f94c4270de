# The two commands of this project (README):
#   make run    the main job (sets up .venv first)
#   make test   the tests   (sets up .venv first)
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: setup run test bench clean-data

setup:
	@scripts/setup_env.sh $(VENV)

run: setup
	@scripts/main_job.sh $(VENV) $(RUN_ARGS)

test: setup
	@$(PY) -m pytest $(PYTEST_ARGS)

bench: setup
	@for b in benchmarks/bench_*.py; do echo "== $$b"; $(PY) $$b || exit 1; done

clean-data:
	rm -rf output
