# `make demo` and `make test` set everything up themselves: .venv is created when missing.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
# torch/torchvision pinned to the builds these machines resolve from local disk (CUDA build, runs on CPU too).
TORCH_SPEC ?= torch==2.14.1 torchvision==0.29.1

.PHONY: install demo test bench clean

$(VENV)/.installed: pyproject.toml Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check $(TORCH_SPEC)
	$(PY) -m pip install --quiet --disable-pip-version-check -e '.[dev]'
	touch $@

install: $(VENV)/.installed

demo: install
	rm -rf runs/demo
	$(VENV)/bin/reidkit train --config configs/demo.yaml --out runs/demo

test: install
	$(PY) -m pytest

bench: install
	$(PY) benchmarks/bench_synth.py

clean:
	rm -rf runs/demo data/synthetic
