# minireformer: `make notebooks` (the main job) and `make test` do everything on a fresh clone.
# A local virtual environment .venv is created when missing and the package installed in it.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
NOTEBOOK_SOURCES := $(sort $(wildcard notebooks/[0-9]*.py))

.PHONY: install notebooks test lint lab bench bench-quick benchmarks bench-compare \
	bench-throughput bench-sampling gpu-check reproduce exercises site clean clean-runs

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[notebooks,test]"
	$(BIN)/python -m ipykernel install --sys-prefix --name python3 >/dev/null
	touch $(STAMP)

install: $(STAMP)

# Build each jupytext source into an executed .ipynb (outputs kept) and regenerate figures/.
notebooks: $(STAMP)
	@for src in $(NOTEBOOK_SOURCES); do \
		echo "executing $$src"; \
		$(BIN)/jupytext --to ipynb --execute --set-kernel python3 $$src || exit 1; \
	done

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

# The whole suite: lint, library tests, then every notebook re-executed and validated by nbval.
# The re-executed notebooks save their figures in a temporary folder, so that testing leaves the
# committed figures/ (made by `make notebooks`) as they are.
test: lint
	$(BIN)/python -m pytest tests
	MINIREFORMER_FIGURES="$$(mktemp -d)" \
		$(BIN)/python -m pytest --nbval-lax --nbval-current-env -p no:randomly notebooks

# Every benchmark (about 25 minutes here): JSON in benchmarks/results/, figures in figures/bench_*.png.
# `make bench QUICK=1` (or `make bench-quick`) runs them at toy sizes in under a minute, writing
# into benchmarks/results/quick/ instead. One BLAS thread, as the README's numbers were measured:
# steadier timings on a shared CPU.
BENCH_SCRIPTS := $(sort $(basename $(notdir $(wildcard benchmarks/bench_*.py))))
bench: $(STAMP)
	@for b in $(BENCH_SCRIPTS); do \
		echo "running benchmarks/$$b.py"; \
		OPENBLAS_NUM_THREADS=1 $(BIN)/python -m benchmarks.$$b $(if $(QUICK),--quick) || exit 1; \
	done

bench-quick:
	$(MAKE) bench QUICK=1

benchmarks: bench

# Retrain every shipped model and rewrite results/*.json (over an hour on 2 cores). Resumable:
# each run checkpoints under runs/, and a stopped `make reproduce` continues where it was. The
# Shakespeare models train with two worker threads, each with a one-thread BLAS.
reproduce: $(STAMP)
	OPENBLAS_NUM_THREADS=1 $(BIN)/minireformer reproduce

# Side by side with Hugging Face's PyTorch Reformer: a separate .venv-compare with the
# `compare` extra (CPU torch, transformers 4.57.6), never part of `make test`. Each measurement runs
# in a fresh process; results in benchmarks/results/compare_hf.json, figures/bench_compare_hf.png.
# The full run (L = 4,096, 16,384, 65,536) takes hours on 2 cores; stopped, it continues with
# `make bench-compare COMPARE_ARGS=--resume`; `COMPARE_ARGS="--quick"` is a smoke run.
COMPARE_VENV := .venv-compare
COMPARE_ARGS ?=

$(COMPARE_VENV)/.installed-stamp: pyproject.toml
	test -x $(COMPARE_VENV)/bin/python || $(PYTHON) -m venv $(COMPARE_VENV)
	$(COMPARE_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(COMPARE_VENV)/bin/python -m pip install --quiet -e ".[compare]"
	touch $@

bench-compare: $(COMPARE_VENV)/.installed-stamp
	$(COMPARE_VENV)/bin/python -m benchmarks.compare_hf $(COMPARE_ARGS)

# Training throughput (tokens/s of a whole optimizer step) of the shipped shapes beside a plain
# PyTorch GPT and Hugging Face's Reformer, 2 threads each, interleaved (a few minutes):
# benchmarks/results/throughput.json. Run it on an otherwise idle machine.
bench-throughput: $(COMPARE_VENV)/.installed-stamp
	$(COMPARE_VENV)/bin/python -m benchmarks.compare_throughput $(THROUGHPUT_ARGS)

# Sampling speed at a full context, with and without the decoding cache, beside Hugging Face's
# cached generate (about a minute): benchmarks/results/sampling.json.
bench-sampling: $(COMPARE_VENV)/.installed-stamp
	$(COMPARE_VENV)/bin/python -m benchmarks.compare_sampling $(SAMPLING_ARGS)

# The GPU check on a machine with an NVIDIA GPU and CuPy: the CuPy test cases, then LSH
# and full attention and a Reformer training step against length, into
# benchmarks/results/gpu_check.json and figures/gpu_check.png. It runs with the Python it is given
# and the package from this folder (no venv, no install, no registry): make gpu-check
# PYTHON=python3. Without CuPy or a GPU it stops with exit status 2 and says why.
gpu-check:
	PYTHONPATH="$(CURDIR)$${PYTHONPATH:+:$$PYTHONPATH}" $(PYTHON) -m benchmarks.gpu_check

lab: $(STAMP)
	$(BIN)/jupyter lab notebooks

# `make clean` removes what a build made and keeps runs/ (the resumable checkpoints of
# `make reproduce`, hours of training); `make clean-runs` removes those too.
clean:
	rm -rf $(VENV) $(COMPARE_VENV) .pytest_cache .ruff_cache _site

clean-runs:
	rm -rf runs

# Build each exercises/NN_topic.py into a student notebook (exercises/student/, committed) and a
# solution notebook (exercises/solutions/, gitignored), unexecuted; the format: course/README.md.
exercises: $(STAMP)
	$(BIN)/python course/build_exercises.py

# A static HTML site of the executed notebooks, the student exercises, the README and the course
# documents in _site/ (gitignored), with internal links rewritten; no network needed.
site: $(STAMP)
	$(BIN)/python course/build_site.py
