# Two commands do all set-up: `make test` and `make book`. Both create .venv when absent.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
NBDIR := _build/nbval
# The scale the book's pages run at when a run is not stored yet (paper | reduced | smoke).
PROFILE ?= reduced
GRID ?= mnist-paper
DEVICE ?= auto
JOBS ?= 1

.PHONY: setup test book notebooks reproduce benchmark clean

setup: $(STAMP)

$(STAMP): pyproject.toml tools/setup_env.sh tools/build_minepy.sh
	bash tools/setup_env.sh
	touch $@

# Every notebook in _toc.yml, converted from MyST, executed at smoke scale by nbval; results of
# these smoke runs go to a scratch folder, never into results/.
notebooks: $(STAMP)
	rm -rf $(NBDIR) && $(PY) tools/toc_notebooks.py --out $(NBDIR)

test: notebooks
	HEBAE_SMOKE=1 HEBAE_RESULTS_DIR=$(CURDIR)/_build/smoke-results HEBAE_FIGURES_DIR=$(CURDIR)/_build/smoke-figures \
	  $(PY) -m pytest tests $(NBDIR) --nbval-lax -p no:cacheprovider

book: $(STAMP)
	HEBAE_PROFILE=$(PROFILE) $(VENV)/bin/jupyter-book build . -W --keep-going
	@test -f _build/html/index.html && echo "book: _build/html/index.html"

clean:
	rm -rf _build
