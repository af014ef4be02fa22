# Two commands on a fresh machine: `make run` (the main job) and `make test` (the suite).
# Both create and fill .venv on first use (a few minutes: torch, IREE, transformers).
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install run test clean

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
	$(BIN)/pip install --quiet -e '.[hf,dev]'
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/fxsoftmax demo

test: $(STAMP)
	$(BIN)/python -m pytest -q -n 2 --dist worksteal

clean:
	rm -rf $(VENV) build .pytest_cache .hypothesis
