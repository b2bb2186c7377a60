# The README's commands. Each creates or reuses the virtual environment in .venv.
#   make demo   the main job on an embedded default (no download)
#   make test   lint + docs (warnings are errors) + the full test suite (what CI runs)
#   make test-cuda  the GPU suite (tests/cuda), where torch sees a CUDA device
#   make docs   the documentation site into site/
#   make bench  the op benchmark (see benchmarks/README.md)

VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(VENV)/bin/pip -q --disable-pip-version-check
# A CPU wheel that pip takes from this machine's disk; an unpinned torch resolves to a
# multi-GB CUDA build. GPU users install their own torch into .venv first (see README).
TORCH  ?= torch==2.13.0
EXTRAS ?= dev,pyg,dgl,ogb,docs
STAMP  := $(VENV)/.graphattn-installed

.PHONY: demo test test-cuda lint docs bench install clean

install: $(STAMP)

$(STAMP): pyproject.toml $(wildcard setup.py) $(wildcard cuda/*)
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -c "import torch" 2>/dev/null || $(PIP) install "$(TORCH)"
	$(PIP) install ninja numpy setuptools wheel
	$(PIP) install --no-build-isolation -e ".[$(EXTRAS)]"
	touch $@

demo: $(STAMP)
	$(PY) -m graphattn.demo

lint: $(STAMP)
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

docs: $(STAMP)
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict --quiet

test: lint docs
	$(PY) -m pytest -q

test-cuda: $(STAMP)
	$(PY) -m pytest -q -m cuda tests/cuda

bench: $(STAMP)
	$(PY) benchmarks/ops/bench_edge_attention.py

clean:
	rm -rf $(VENV) build graphattn/*.so *.egg-info
