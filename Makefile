# The two commands of this project (README):
#   make run    the main job (sets up .venv first)
#   make test   the tests   (sets up .venv first)
# Against the ROS 2 Jazzy wheels: make test VENV=.venv-jazzy ROS_WHEELS=jazzy
SHELL := /bin/bash
VENV ?= .venv
ROS_WHEELS ?= kilted
PY := $(VENV)/bin/python

.PHONY: setup run test bench clean-data

setup:
	@ROS_WHEELS=$(ROS_WHEELS) scripts/setup_env.sh $(VENV)

run: setup
	@scripts/main_job.sh $(VENV) $(RUN_ARGS)

test: setup
	@$(PY) -m pytest $(PYTEST_ARGS)

bench: setup
	@for b in benchmarks/bench_*.py; do echo "== $$b"; $(PY) $$b || exit 1; done

clean-data:
	rm -rf output
