# pyloxi — every target is idempotent and installs what it needs.
PY      := .venv/bin/python
CLANG   ?= clang
ARCH    := $(shell uname -m | sed 's/x86_64/x86/;s/aarch64/arm64/')
BPF_OBJ := build/lb.bpf.o
# the same object as package data: what an installed (or editable) pyloxi loads
PKG_OBJ := src/pyloxi/bpf/lb.bpf.o
BPF_SRC := $(wildcard bpf/*.bpf.c) $(wildcard bpf/include/pyloxi/*.h)
BPF_CFLAGS := -O2 -g -target bpf -mcpu=v3 -D__TARGET_ARCH_$(ARCH) -Wall -Werror \
              -I bpf/include -I /usr/include/$(shell uname -m)-linux-gnu

.PHONY: deps build datapath-object demo test test-unit test-datapath test-integration bench lint \
        clean

deps: .venv/.deps-ok
.venv/.deps-ok: pyproject.toml scripts/install-deps
	bash scripts/install-deps
	touch $@

build: deps datapath-object
# no venv needed: setup.py runs this while pip builds the package
datapath-object: $(BPF_OBJ) $(PKG_OBJ)
$(BPF_OBJ): $(BPF_SRC)
	@mkdir -p build
	$(CLANG) $(BPF_CFLAGS) -c bpf/lb.bpf.c -o $@
$(PKG_OBJ): $(BPF_OBJ)
	cp $< $@

demo: build
	$(PY) -m pyloxi.testing.demo

test: build
	$(PY) -m pytest -q -p no:cacheprovider tests

test-unit: deps
	$(PY) -m pytest -q tests/unit

test-datapath: build
	$(PY) -m pytest -q tests/datapath

test-integration: build
	$(PY) -m pytest -q tests/integration

bench: build
	$(PY) -m bench.run

lint: deps
	.venv/bin/ruff check src tests bench
	.venv/bin/lint-imports
	.venv/bin/mypy

clean:
	rm -rf build $(PKG_OBJ)
