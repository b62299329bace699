# subscriber-backfill: every target sets itself up (virtual environments, installs).
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
# Airflow 3 and its Google provider cannot share the project's pins, so the
# DAGs get their own environment; they launch the pipelines with $(PY).
AIRFLOW_VENV  := .venv-airflow
AIRFLOW_STAMP := $(AIRFLOW_VENV)/.installed

.PHONY: demo test lint bench bench-quick bench-all clean system-test system-demo bytecode

$(STAMP): setup.py constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -c constraints.txt -e '.[test]'
	# the developer tools (dev/) and benchmarks are not in the package: put the checkout on the path
	$(PY) -c 'import os, site; open(os.path.join(site.getsitepackages()[0], "subscriber_backfill_checkout.pth"), "w").write(os.getcwd() + "\n")'
	touch $(STAMP)

$(AIRFLOW_STAMP): requirements-airflow.txt constraints-airflow.txt
	$(PYTHON) -m venv $(AIRFLOW_VENV)
	$(AIRFLOW_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(AIRFLOW_VENV)/bin/python -m pip install --quiet -r requirements-airflow.txt -c constraints-airflow.txt
	touch $(AIRFLOW_STAMP)

# The project's modules compiled once (only what changed since): an editable install compiles nothing, and
# an interpreter that may not write byte-code (PYTHONDONTWRITEBYTECODE, a read-only checkout) would compile
# every module again in every process it starts (about 0.1 s a command; the tests start hundreds)
bytecode: $(STAMP)
	$(PY) -m compileall -q pipelines transforms schemas dags bench dev

system-test:
	bash dev/system-packages.sh test

system-demo:
	bash dev/system-packages.sh demo

demo: system-demo $(STAMP) bytecode
	$(VENV)/bin/backfill demo

lint: $(STAMP)
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

test: system-test $(STAMP) $(AIRFLOW_STAMP) bytecode lint
	$(PY) -m pytest -q -n 2 tests

# the four steps of issue 14 side by side, then bench-out/summary.md; bench-all adds stream, compact, scale, daily_beam
bench: $(STAMP) bytecode
	$(PY) -m bench.run scan notify merge report

bench-quick: $(STAMP) bytecode
	$(PY) -m bench.run --quick scan notify merge report

bench-all: $(STAMP) bytecode
	$(PY) -m bench.run

clean:
	rm -rf $(VENV) $(AIRFLOW_VENV) build *.egg-info demo-out bench-out
