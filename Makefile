# `make demo` and `make test` set everything up themselves: .venv is created when missing.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
# torch/torchvision pinned to the builds these machines resolve from local disk (CUDA build, runs on CPU too).
TORCH_SPEC ?= torch==2.14.1 torchvision==0.29.1

.PHONY: install demo test bench ablation clean

$(VENV)/.installed: pyproject.toml Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check --no-cache-dir $(TORCH_SPEC)
	$(PY) -m pip install --quiet --disable-pip-version-check --no-cache-dir -e '.[dev]'
	# Torchreid and fast-reid for tests/test_peers.py: without their pinned dependencies (fast-reid pins
	# torch 1.13; what they need at import for their models, yacs and termcolor, is in the dev extra).
	$(PY) -m pip install --quiet --disable-pip-version-check --no-cache-dir --no-deps torchreid==0.2.5 fastreid==1.4.0
	touch $@

install: $(VENV)/.installed

demo: install
	rm -rf runs/demo
	$(VENV)/bin/reidkit train --config configs/demo.yaml --out runs/demo

test: install
	$(PY) -m pytest

# Speed and memory tables, each against a reference measured in the same run (see docs/benchmarks.md).
bench: install
	$(PY) -m pip install --quiet --disable-pip-version-check --no-cache-dir cython
	$(PY) -m pip install --quiet --disable-pip-version-check --no-cache-dir --no-deps torchreid==0.2.5 fastreid==1.4.0
	$(PY) benchmarks/bench_synth.py
	$(PY) benchmarks/bench_train.py --config configs/demo.yaml
	$(PY) benchmarks/bench_eval.py
	$(PY) benchmarks/bench_rerank.py --market --msmt
	$(PY) benchmarks/bench_search.py
	$(PY) benchmarks/bench_export.py

# Every recipe of configs/recipes/ on the synthetic set, same budget, seeds 0 and 1 (hours on 2 CPU cores;
# resumable: finished runs are skipped). Writes runs/ablation/{results.json,table.md,ablation.png}.
ablation: install
	$(PY) benchmarks/ablation.py --seeds 0 1 --out runs/ablation $(ABLATION_ARGS)

clean:
	rm -rf runs/demo data/synthetic
