# The README's set-up commands. Each creates .venv when missing; torch is pinned to the local CPU build
# (an unpinned torch would pull a CUDA build of several GB). GPU users: see README "Installation".
PYTHON ?= python3
VENV ?= .venv
TORCH_VERSION ?= 2.13.0
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: setup test test-app app-screenshot browser demo lint clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "torch==$(TORCH_VERSION)"
	$(PY) -m pip install -q -e ".[test]"
	touch $(STAMP)

setup: $(STAMP)

test: $(STAMP)
	$(VENV)/bin/ruff check src tests benchmarks
	$(PY) -m pytest -q

# The web app's browser test needs Debian's chromium + chromium-driver (never a downloaded browser build);
# `make browser` installs them (root, apt-get), `make test-app` runs the app tests with them.
browser:
	command -v chromium >/dev/null && command -v chromedriver >/dev/null || \
		(apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium chromium-driver)

test-app: $(STAMP) browser
	$(PY) -m pytest -q tests/test_app.py

app-screenshot: $(STAMP) browser
	$(PY) -m pytest -q tests/test_app.py -k browser --app-screenshot docs/app.png

demo: $(STAMP)
	$(VENV)/bin/madis-stereo demo --out demo_output

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests benchmarks

clean:
	rm -rf $(VENV) demo_output .pytest_cache
