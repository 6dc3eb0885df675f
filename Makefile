# The two commands: `make run` (serve on https://127.0.0.1:6443) and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
SOURCES := $(shell find grafana_aggregator twisted -name '*.py') setup.cfg pyproject.toml

.PHONY: run run-example test typecheck pki bench clean

# Dependencies once, then the project itself as a real (non-editable) install, so that twistd finds
# the plugin exactly as it would from a wheel; reinstalled whenever a source file changes.
$(BIN)/.deps: setup.cfg pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip setuptools wheel
	$(BIN)/python -m pip install --quiet '.[test]'
	touch $@

$(BIN)/.installed: $(BIN)/.deps $(SOURCES)
	$(BIN)/python -m pip install --quiet --no-deps --force-reinstall --no-build-isolation .
	$(BIN)/python -c "from twisted.plugin import IPlugin, getPlugins; list(getPlugins(IPlugin))"
	rm -rf build
	touch $@

pki:
	hack/make-aggregator-pki.sh

run: $(BIN)/.installed pki
	$(BIN)/twistd --nodaemon --pidfile= grafana-aggregator --config conf/dev.ini

# The seed's step 5: the example.grafana.app backend on :7443, trusting the aggregator's proxy certificate.
run-example: $(BIN)/.installed pki
	$(BIN)/twistd --nodaemon --pidfile= grafana-example-apiserver \
	  --runtime-config=example.grafana.app/v0alpha1=true --secure-port 7443 \
	  --tls-cert-file $(CURDIR)/data/grafana-aggregator/server.crt \
	  --tls-private-key-file $(CURDIR)/data/grafana-aggregator/server.key \
	  --requestheader-client-ca-file=$(CURDIR)/data/grafana-aggregator/ca.crt \
	  --requestheader-extra-headers-prefix=X-Remote-Extra- \
	  --requestheader-group-headers=X-Remote-Group \
	  --requestheader-username-headers=X-Remote-User -v 10

test: $(BIN)/.installed
	$(BIN)/ruff check grafana_aggregator tests twisted bench
	$(BIN)/mypy
	$(BIN)/python -m twisted.trial tests

# Benchmarks (not part of `make test`): backend, aggregator and reference nginx on loopback, a few minutes,
# one table; `make bench BENCH_ARGS=--json` for machines.  wrk, nginx, etcd and etcdctl come from Debian's packages.
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
bench: $(BIN)/.installed
	@command -v wrk >/dev/null && command -v nginx >/dev/null && command -v curl >/dev/null && command -v etcd >/dev/null && command -v etcdctl >/dev/null || { \
	  $(SUDO) apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq wrk nginx-light curl etcd-server etcd-client; }
	$(BIN)/python bench/run.py $(BENCH_ARGS)

typecheck: $(BIN)/.installed
	$(BIN)/mypy

clean:
	rm -rf $(VENV) build *.egg-info _trial_temp
