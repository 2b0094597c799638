# Two commands do all set-up: `make test` and `make book`. Both create .venv when absent.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
NBDIR := _build/nbval
GRID ?= mnist-paper
DEVICE ?= auto
JOBS ?= 1
# local: batched groups on this machine | slurm: one submitit job per group | papermill: each run's page
EXECUTOR ?= local
# book/pages.py (the model table) and book/verdicts.py are imported by name: pages executed by
# jupyter-book and papermill run in book/; for everything else (pytest's notebook kernels, tools,
# benchmarks) this is the one place that puts book/ on the path.
export PYTHONPATH := $(CURDIR)/book

.PHONY: setup test book notebooks reproduce benchmark clean pairs browser-check paper gpu-check pdf

setup: $(STAMP)

$(STAMP): pyproject.toml tools/setup_env.sh tools/build_minepy.sh tools/fetch_fid_weights.py
	bash tools/setup_env.sh
	touch $@

# Every notebook in _toc.yml, converted from MyST, executed at smoke scale by nbval; results of
# these smoke runs go to a scratch folder, never into results/.
notebooks: $(STAMP)
	rm -rf $(NBDIR) _build/smoke-results _build/smoke-figures && $(PY) tools/toc_notebooks.py --out $(NBDIR)

test: notebooks
	HEBAE_SMOKE=1 HEBAE_RESULTS_DIR=$(CURDIR)/_build/smoke-results HEBAE_FIGURES_DIR=$(CURDIR)/_build/smoke-figures \
	  $(PY) -m pytest tests $(NBDIR) --nbval-lax -p no:cacheprovider

# The scale runs are made at (paper | reduced | smoke): the book renders the reduced-profile
# runs stored in results/ until paper-scale runs are stored; `make reproduce` makes paper scale.
book: PROFILE ?= reduced
reproduce: PROFILE ?= paper

book: $(STAMP)
	HEBAE_PROFILE=$(PROFILE) $(VENV)/bin/jupyter-book build . -W --keep-going
	$(PY) tools/sync_readme.py
	@test -f _build/html/index.html && echo "book: _build/html/index.html"

# The book as one PDF (_build/pdf/book.pdf), without TeX: the single-page HTML build printed by
# the Chromium the browser check uses, then opened and checked (pages, none blank).
pdf: PROFILE ?= reduced
pdf: $(STAMP)
	HEBAE_PROFILE=$(PROFILE) $(VENV)/bin/jupyter-book build . --builder singlehtml -W --keep-going
	$(PY) tools/make_pdf.py _build/singlehtml _build/pdf/book.pdf

# The paired .ipynb of every model page (pages.TABLE), for papermill, Colab and Binder: run after
# adding a model page or editing one (tests/test_pairs.py fails while a pair is stale).
pairs: $(STAMP)
	$(PY) tools/pair_notebooks.py

# Every page of _build/html in headless Chromium, offline (make test runs it after building the book).
browser-check: book
	$(PY) tools/browser_check.py _build/html

# One or more grids of runs (mnist-paper, mnist-cpu, mnist-ablations, celeba, landscape-mnist,
# landscape-fashion, landscape2-mnist, landscape2-fashion, flexae-ladder, amortisation, amortisation-fashion,
# amortisation-gaussian, latent-synthetic8, latent-synthetic16, latent-mnist;
# GRID="a b" for several); stored runs are skipped, killed ones resume.
# EXECUTOR=slurm hands them to a cluster.
reproduce: $(STAMP)
	$(PY) tools/reproduce.py --grid $(GRID) --profile $(PROFILE) --device $(DEVICE) --jobs $(JOBS) --executor $(EXECUTOR)

# Every paper-scale run the book uses, in one resumable command: stored runs are skipped, each run
# is stored as it finishes, and a measured warm-up first prints the predicted wall time.
# On a GPU: make paper DEVICE=cuda (JOBS groups in flight at once; TF32=1 for TF32 arithmetic).
PAPER_GRIDS := mnist-paper mnist-ablations celeba landscape-mnist landscape-fashion landscape2-mnist landscape2-fashion \
	flexae-ladder amortisation amortisation-fashion amortisation-gaussian latent-synthetic8 latent-synthetic16 latent-mnist
paper: JOBS = 4
paper: $(STAMP)
	$(PY) tools/reproduce.py --grid $(PAPER_GRIDS) --profile paper --device $(DEVICE) --jobs $(JOBS) --forecast $(if $(filter 1,$(TF32)),--tf32,)

# The GPU checks of the training path (skipped without CUDA): the mixed grid that once crashed,
# with the allocator's free memory poisoned with NaN, and one short training of every model page.
gpu-check: $(STAMP)
	$(PY) tools/gpu_check.py

benchmark: $(STAMP)
	$(PY) benchmarks/epoch_time.py --device $(DEVICE)
	$(PY) benchmarks/celeba_throughput.py --device $(DEVICE)

clean:
	rm -rf _build
