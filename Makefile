# Two commands on a fresh machine: `make run` (the main job) and `make test` (the suite).
# Both create and fill .venv on first use (a few minutes: torch, IREE, transformers).
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
IREE_DEFAULT := 3.9.0
# `make test-iree IREE=x.y.z`: the IREE-facing tests in a second environment holding that IREE.
IREE ?= 3.13.0
IREE_VENV := .venv-iree-$(IREE)
IREE_TESTS := tests/test_compat.py tests/test_pass.py tests/test_iree_cpu.py tests/test_real_width.py \
	tests/test_inplace.py tests/test_machine.py tests/test_costmodel.py \
	"tests/test_zoo.py::test_every_family_exports_and_matches_eager[llama]" \
	"tests/test_zoo.py::test_every_family_exports_and_matches_eager[qwen2-moe]" \
	"tests/test_zoo.py::test_every_family_exports_and_matches_eager[bert]" \
	"tests/test_zoo.py::test_every_family_exports_and_matches_eager[vit]" \
	tests/test_decode.py::test_the_module_keeps_its_cache_between_calls

.PHONY: install run test test-iree clean

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
	$(BIN)/pip install --quiet -e '.[hf,dev]' iree-base-compiler==$(IREE_DEFAULT) iree-base-runtime==$(IREE_DEFAULT)
	touch $(STAMP)

$(IREE_VENV)/.installed: pyproject.toml
	test -x $(IREE_VENV)/bin/python || $(PY) -m venv $(IREE_VENV)
	$(IREE_VENV)/bin/pip install --quiet --upgrade pip
	$(IREE_VENV)/bin/pip install --quiet torch==2.13.0
	$(IREE_VENV)/bin/pip install --quiet -e '.[hf,dev]' iree-base-compiler==$(IREE) iree-base-runtime==$(IREE)
	touch $@

run: $(STAMP)
	$(BIN)/fxsoftmax demo

test: $(STAMP)
	$(BIN)/python -m pytest -q -n 2 --dist worksteal

test-iree: $(IREE_VENV)/.installed
	$(IREE_VENV)/bin/python -m pytest -q -n 2 --dist worksteal -p no:cacheprovider $(IREE_TESTS)

clean:
	rm -rf $(VENV) .venv-iree-* build .pytest_cache .hypothesis
