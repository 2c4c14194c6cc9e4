# Two set-up commands: `make demo` and `make test`. Both create .venv on first use.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test check browser axe caniemail bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/newsletter demo

# Debian's chromium for the real-browser tests (Playwright cannot download its own here).
browser:
	@test -x /usr/bin/chromium || (command -v apt-get >/dev/null && \
	  (apt-get update -qq || true) && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) || \
	  echo "chromium not installed: the browser tests will be skipped"

# axe-core (npm) for the accessibility checks in the browser tests (tests/axe.py); npm from Debian if missing.
axe:
	@test -f .npm/node_modules/axe-core/axe.min.js || ( \
	  (command -v npm >/dev/null || (command -v apt-get >/dev/null && (apt-get update -qq || true) && \
	    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq npm >/dev/null)) ; \
	  npm install --silent --no-audit --no-fund --prefix .npm axe-core >/dev/null ) || \
	  echo "axe-core not installed: the accessibility checks will be skipped"

# caniemail's client data (the doiuse-email npm package) for tests/mail/test_caniemail.py, in its own folder.
caniemail:
	@test -f .npm/caniemail/node_modules/doiuse-email/bin/cli.js || ( \
	  (command -v npm >/dev/null || (command -v apt-get >/dev/null && (apt-get update -qq || true) && \
	    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq npm >/dev/null)) ; \
	  npm install --silent --no-audit --no-fund --prefix .npm/caniemail doiuse-email >/dev/null ) || \
	  echo "doiuse-email not installed: the caniemail checks will be skipped"

# Layers and cycles (import-linter), types (mypy), format, lint and line length (ruff), configured in
# pyproject.toml; complexity (radon: every block graded C or better).
check: $(STAMP)
	$(BIN)/lint-imports --no-cache
	$(BIN)/mypy
	$(BIN)/ruff format --check newsletter tests
	$(BIN)/ruff check newsletter tests
	@blocks="$$($(BIN)/radon cc --min D --show-complexity newsletter)"; \
	  if [ -n "$$blocks" ]; then echo "radon: blocks graded D or worse (split them):"; echo "$$blocks"; exit 1; fi

# Two processes, each taking whole test modules (a module shares one private Postfix or browser);
# the few tests that restart a shared server run alone afterwards.
test: $(STAMP) browser axe caniemail check
	$(BIN)/python -m pytest -q --durations=15 -n 2 --dist loadfile -m "not serial"
	$(BIN)/python -m pytest -q -m serial

bench: $(STAMP)
	$(BIN)/python tests/bench/bench_send.py

clean:
	rm -rf $(VENV) demo-output test-output
