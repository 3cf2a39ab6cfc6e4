# `make demo` and `make test` set everything up themselves: .venv is created when missing.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
# torch/torchvision pinned to the builds these machines resolve from local disk (CUDA build, runs on CPU too).
TORCH_SPEC ?= torch==2.14.1 torchvision==0.29.1

.PHONY: install demo test test-other-kernels bench ablation clean

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

# The tests marked `numerics` once more on other CPU kernels than this machine picks by itself: on an AVX-512
# or AMX CPU, AVX2's; on an AVX2-only CPU, the generic ones (SSE4.2, faiss without SIMD). torch reads
# ATEN_CPU_CAPABILITY, its oneDNN ONEDNN_MAX_CPU_ISA, MKL MKL_ENABLE_INSTRUCTIONS, faiss-cpu >= 1.12 (one
# library, dispatched at run time) FAISS_SIMD_LEVEL and older faiss-cpu wheels FAISS_OPT_LEVEL.
# `.ci/run` runs it after `make test`.
test-other-kernels: install
	if grep -qE 'avx512f|amx_tile' /proc/cpuinfo; then \
	  kernels="ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2 MKL_ENABLE_INSTRUCTIONS=AVX2 FAISS_SIMD_LEVEL=AVX2 FAISS_OPT_LEVEL=avx2"; \
	else \
	  kernels="ATEN_CPU_CAPABILITY=default ONEDNN_MAX_CPU_ISA=SSE41 MKL_ENABLE_INSTRUCTIONS=SSE4_2 FAISS_SIMD_LEVEL=NONE FAISS_OPT_LEVEL=generic"; \
	fi; \
	echo "numerics tests on other kernels: $$kernels"; \
	env $$kernels $(PY) -m pytest -m numerics

# Speed and memory tables, each against a reference measured in the same run (see docs/benchmarks.md). Beside the
# peers: cython builds fast-reid's ranker; opencv and gdown are `import torchreid`'s, tabulate and scikit-learn
# those of fast-reid's data and evaluation packages (benchmarks/peers.py trains with both peers' own engines).
bench: install
	$(PY) -m pip install --quiet --disable-pip-version-check --no-cache-dir cython opencv-python-headless gdown tabulate scikit-learn
	$(PY) -m pip install --quiet --disable-pip-version-check --no-cache-dir --no-deps torchreid==0.2.5 fastreid==1.4.0
	$(PY) benchmarks/bench_synth.py
	$(PY) benchmarks/bench_train.py --config configs/demo.yaml
	$(PY) benchmarks/bench_eval.py
	$(PY) benchmarks/bench_rerank.py --market --msmt
	$(PY) benchmarks/bench_search.py
	$(PY) benchmarks/bench_gallery.py --gallery 1000000 --nlist 1024 --hnsw-m 16 --backends faiss-ivf faiss-hnsw  # ~10 min idle; Milvus Lite: --gallery 200000
	$(PY) benchmarks/bench_export.py
	$(PY) benchmarks/peers.py

# Every recipe of configs/recipes/ on the synthetic set, same budget, seeds 0 and 1 (hours on 2 CPU cores;
# resumable: finished runs are skipped). Writes runs/ablation/{results.json,table.md,ablation.png}.
ablation: install
	$(PY) benchmarks/ablation.py --seeds 0 1 --out runs/ablation $(ABLATION_ARGS)

clean:
	rm -rf runs/demo data/synthetic
