# minireformer: `make notebooks` (the main job) and `make test` do everything on a fresh clone.
# A local virtual environment .venv is created when missing and the package installed in it.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
NOTEBOOK_SOURCES := $(sort $(wildcard notebooks/[0-9]*.py))

.PHONY: install notebooks test lint lab benchmarks reproduce clean

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

# One BLAS thread, as the README's numbers were measured: steadier timings on a shared CPU.
benchmarks: $(STAMP)
	@for b in $(sort $(wildcard benchmarks/bench_*.py)); do \
		OPENBLAS_NUM_THREADS=1 $(BIN)/python $$b || exit 1; \
	done

# Retrain every shipped model and rewrite results/*.json (over an hour on 2 cores). Resumable:
# each run checkpoints under runs/, and a stopped `make reproduce` continues where it was.
reproduce: $(STAMP)
	$(BIN)/minireformer reproduce

lab: $(STAMP)
	$(BIN)/jupyter lab notebooks

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache runs

# Build each exercises/NN_topic.py into a student notebook (exercises/student/, committed) and a
# solution notebook (exercises/solutions/, gitignored), unexecuted; the format: course/README.md.
.PHONY: exercises
exercises: $(STAMP)
	$(BIN)/python course/build_exercises.py

# A static HTML site of the executed notebooks, the student exercises, the README and the course
# documents in _site/ (gitignored), with internal links rewritten; no network needed.
.PHONY: site
site: $(STAMP)
	$(BIN)/python course/build_site.py
