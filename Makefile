# Two commands for a fresh machine: `make demo` and `make test`.
# Both create the virtualenv in $(VENV) when it is missing.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: demo test bench clean-demo

$(VENV)/.installed: requirements.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt
	touch $@

# The whole pipeline, end to end, on the bundled example data.
demo: $(VENV)/.installed
	PATH="$(abspath $(VENV))/bin:$$PATH" bash run_demo.sh

# The test suite (CPU, tiny configs).
test: $(VENV)/.installed
	$(PY) -m pytest -q tests

clean-demo:
	rm -rf demo_output
