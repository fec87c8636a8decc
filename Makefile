# ssdaq developer entry points. `make demo` and `make test` are the README's two commands.
PYTHON  ?= /usr/bin/python3
VENV    ?= .venv
VPY     := $(VENV)/bin/python
PYTEST_ARGS ?=

.PHONY: all demo test test-unit test-e2e bench deb protos configs lint clean

all: test

$(VENV)/.installed: pyproject.toml scripts/system-deps
	scripts/system-deps
	$(PYTHON) -m venv $(VENV)
	$(VPY) -m pip install -q --upgrade pip
	$(VPY) -m pip install -q -e '.[test,tools,mysql,web,fast]'
	touch $@

venv: $(VENV)/.installed

## demo: all receivers on loopback fed by the bundled simulators, live summary, HDF5 + camera PNG
demo: $(VENV)/.installed
	$(VPY) -m ssdaq.tools.demo

## test: every test, the end-to-end run under a real systemd included (it skips, saying why, without root)
test: lint
	$(VPY) -m pytest $(PYTEST_ARGS)

test-unit: $(VENV)/.installed
	$(VPY) -m pytest -m 'not e2e' $(PYTEST_ARGS)

test-e2e: $(VENV)/.installed
	$(VPY) -m pytest -m e2e $(PYTEST_ARGS)

## bench: performance figures, each beside a baseline measured in the same run
bench: $(VENV)/.installed
	$(VPY) -m bench

## deb: build the Debian package from a clean copy of the tree into dist/
deb:
	scripts/build-deb

## protos: regenerate ssdaq/data/protos/*_pb2.py with Debian 12's protoc (committed)
protos:
	protoc -I. --python_out=. ssdaq/data/protos/*.proto

## configs: regenerate etc/ssdaq/*.toml from the receivers', writers' and ssdaq-web's declared settings
configs: $(VENV)/.installed
	$(VPY) -m ssdaq.core.main --write-default-configs etc/ssdaq
	$(VPY) -m ssdaq.tools.writer --write-default-configs etc/ssdaq
	$(VPY) -m ssdaq.web.server --write-default-configs etc/ssdaq

## lint: ruff, then mypy: the whole package at mypy's default strictness, the framework (core), the
## pure data layer (data) and the settings schema strictly (make test runs it first)
lint: $(VENV)/.installed
	$(VENV)/bin/ruff check ssdaq tests bench
	$(VENV)/bin/mypy ssdaq
	$(VENV)/bin/mypy --strict ssdaq/core ssdaq/data ssdaq/schema.py

clean:
	rm -rf $(VENV) dist build .pytest_cache .hypothesis *.egg-info
