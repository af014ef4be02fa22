# Two commands on a fresh machine: `make run` (the main job) and `make test` (the suite).
# Both create and fill .venv on first use (a few minutes: torch, IREE, transformers).
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
IREE_DEFAULT := 3.9.0
# What this repository's environments hold, exactly (the package's own metadata gives ranges).
PINS := torch==2.13.0 iree-turbine==3.9.0 transformers==5.23.0
# `make test-iree IREE=x.y.z`: the IREE-facing tests (marked `iree`) in a second environment holding that IREE.
IREE ?= 3.13.0
IREE_VENV := .venv-iree-$(IREE)

WHEEL_VENV := build/wheel-venv

.PHONY: install run test test-iree test-every-preset test-wheel lint clean

install: $(STAMP)

$(STAMP): pyproject.toml
	@# Best effort: Mesa's software Vulkan device (llvmpipe) lets the Vulkan runtime tests execute here.
	@if [ ! -e /usr/share/vulkan/icd.d/lvp_icd.x86_64.json ] && command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ]; then \
		apt-get install -y -q --no-install-recommends mesa-vulkan-drivers libvulkan1 >/dev/null 2>&1 || \
		(apt-get update -q >/dev/null 2>&1 && apt-get install -y -q --no-install-recommends mesa-vulkan-drivers libvulkan1 >/dev/null 2>&1) || \
		echo "note: no software Vulkan (mesa-vulkan-drivers); Vulkan runtime tests will skip"; fi
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	# torch first and exactly pinned: the CPU build (a looser spec pulls a multi-GB CUDA build).
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e '.[hf,dev]' $(PINS) iree-base-compiler==$(IREE_DEFAULT) iree-base-runtime==$(IREE_DEFAULT)
	touch $(STAMP)

$(IREE_VENV)/.installed: pyproject.toml
	test -x $(IREE_VENV)/bin/python || $(PY) -m venv $(IREE_VENV)
	$(IREE_VENV)/bin/pip install --quiet --upgrade pip
	$(IREE_VENV)/bin/pip install --quiet torch==2.13.0
	$(IREE_VENV)/bin/pip install --quiet -e '.[hf,dev]' $(PINS) iree-base-compiler==$(IREE) iree-base-runtime==$(IREE)
	touch $@

run: $(STAMP)
	$(BIN)/fxsoftmax demo

# Tests that time the machine run alone, after the others.
test: $(STAMP)
	$(BIN)/python -m pytest -q -n 2 --dist worksteal -m "not serial"
	$(BIN)/python -m pytest -q -m serial

test-iree: $(IREE_VENV)/.installed
	$(IREE_VENV)/bin/python -m pytest -q -n 2 --dist worksteal -p no:cacheprovider -m "iree and not serial"
	$(IREE_VENV)/bin/python -m pytest -q -p no:cacheprovider -m "iree and serial"

# The Hugging Face model tests with every preset in every test (`make test` runs `fused` and one other preset in each).
test-every-preset: $(STAMP)
	$(BIN)/python -m pytest -q -n 2 --dist worksteal tests/models/test_hf_models.py --every-preset

# The package as a user installs it: a wheel, into a fresh environment that already holds torch, run from
# outside the checkout (pip picks the IREE the metadata allows).
test-wheel: $(STAMP)
	rm -rf build/wheel $(WHEEL_VENV)
	$(BIN)/pip wheel --quiet --no-deps -w build/wheel .
	$(PY) -m venv $(WHEEL_VENV)
	$(WHEEL_VENV)/bin/pip install --quiet --upgrade pip
	$(WHEEL_VENV)/bin/pip install --quiet torch==2.13.0
	$(WHEEL_VENV)/bin/pip install --quiet build/wheel/fxsoftmax-*.whl
	smoke=$$(mktemp -d) && cp tests/wheel_smoke.py $$smoke/ && cd $$smoke && $(CURDIR)/$(WHEEL_VENV)/bin/python wheel_smoke.py

lint: $(STAMP)
	$(BIN)/ruff check fxsoftmax tests examples scripts

clean:
	rm -rf $(VENV) .venv-iree-* build .pytest_cache .hypothesis
