# One-command set-up: each target creates .venv from requirements.txt (and installs this
# project into it, editable, so every script and module imports without path tricks) when missing.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
ARGS   ?=

.PHONY: study insects test browser lint benchmark clean-cache

$(VENV)/.installed: requirements.txt pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install -r requirements.txt
	$(PY) -m pip install --quiet --no-deps --editable .
	touch $@

study: $(VENV)/.installed          ## the study on the default data (bundled digits); ARGS="--data DIR ..." for more
	$(PY) experiments/run_all.py $(ARGS)

insects: $(VENV)/.installed        ## the study at the published settings on ../shared/datasets/insects
	$(PY) experiments/run_all.py --data ../shared/datasets/insects --config experiments/configs/insects.yaml $(ARGS)

test: $(VENV)/.installed browser   ## the test suite
	$(PY) -m pytest $(ARGS)

browser:                           ## Chromium for the report's browser test: Debian's, installed when missing (root or sudo)
	@bash .ci/chromium

lint: $(VENV)/.installed           ## ruff: the linter and the formatter's check
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

benchmark: $(VENV)/.installed      ## where the time goes, on the insects data (long: see benchmarks/BENCHMARKS.md)
	$(PY) -m benchmarks.benchmark $(ARGS)

clean-cache: $(VENV)/.installed   ## forget decoded images and cached features (the user cache folder, or $$STUDY_CACHE_DIR)
	$(PY) -c "import shutil; from common.data.decode import default_cache_dir as d; print('removing', d()); shutil.rmtree(d(), ignore_errors=True)"
	rm -rf .cache
