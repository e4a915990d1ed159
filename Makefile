# saline: `make demo` runs the lab demo, `make test` runs lint, types and the whole suite.
# Both do every set-up step themselves on a fresh Debian machine (root, no venv yet).

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
DEMO_DIR ?= /tmp/saline-demo
CHEF_DEMO_DIR ?= /tmp/saline-chef-demo

.PHONY: setup system lint typecheck unit test demo bench man clean

# Debian packages the tests run for real: PostgreSQL 15 (replication checks, the PostgreSQL
# store), etcd (health checks, leadership), man and groff (the man page renders cleanly).
PG_BIN := /usr/lib/postgresql/15/bin
system:
	@missing=""; \
	$(PYTHON) -c 'import venv, ensurepip' 2>/dev/null || missing="$$missing python3-venv"; \
	[ -x $(PG_BIN)/initdb ] || missing="$$missing postgresql"; \
	command -v etcd >/dev/null || missing="$$missing etcd-server"; \
	command -v man >/dev/null || missing="$$missing man-db"; \
	command -v groff >/dev/null || missing="$$missing groff-base"; \
	if [ -n "$$missing" ]; then \
	  echo "installing:$$missing"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; \
	fi

$(STAMP): pyproject.toml | system
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q -e '.[dev]'
	touch $(STAMP)

setup: system $(STAMP)

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: setup
	$(BIN)/mypy

test: lint typecheck
	$(BIN)/pytest
	@echo '--- the integration tier again, every lab master on a PostgreSQL store'
	SALINE_TEST_STORE=postgresql $(BIN)/pytest tests/integration

demo: setup
	@$(BIN)/saline lab down --dir $(DEMO_DIR) >/dev/null 2>&1 || true
	@rm -rf $(DEMO_DIR)
	$(BIN)/saline lab up --minions 6 --dir $(DEMO_DIR)
	@trap '$(BIN)/saline lab down --dir $(DEMO_DIR)' EXIT; set -e; \
	  export SALINE_CONFIG=$(DEMO_DIR)/master.yaml; \
	  echo '$$ saline run "*" test.ping'; $(BIN)/saline run '*' test.ping; \
	  echo '$$ saline run -T grain role:backend cmd.run "uname -sr"'; \
	  $(BIN)/saline run -T grain role:backend cmd.run 'uname -sr'; \
	  echo '$$ saline run -T compound "G@role:frontend or be1" grains.get role --out json'; \
	  $(BIN)/saline run -T compound 'G@role:frontend or be1' grains.get role --out json; \
	  echo '$$ saline run "*" service.start demo --batch 2'; \
	  $(BIN)/saline run '*' service.start demo --batch 2 --out json >/dev/null; \
	  $(BIN)/saline run '*' service.status demo --out json | \
	    $(BIN)/python -c 'import json,sys; r=json.load(sys.stdin)["returns"]; print({k: v["return"]["running"] for k, v in sorted(r.items())})'; \
	  echo '$$ saline jobs list'; $(BIN)/saline jobs list -n 5
	@echo '$$ saline lab demo   # the Chef HA lab: real PostgreSQL and etcd, faults healed'
	@$(BIN)/saline lab down --dir $(CHEF_DEMO_DIR) >/dev/null 2>&1 || true
	@rm -rf $(CHEF_DEMO_DIR)
	$(BIN)/saline lab demo --dir $(CHEF_DEMO_DIR)

bench: setup
	$(BIN)/python tests/bench/fanout.py --minions 1000 --runs 100 --json bench-fanout-1000.json
	$(BIN)/python tests/bench/fanout.py --minions 5000 --runs 5 --json bench-fanout-5000.json
	$(BIN)/python tests/bench/minion_rss.py --json bench-minion-rss.json
	$(BIN)/python tests/bench/cli.py --json bench-cli.json
	$(BIN)/python tests/bench/highstate.py --json bench-highstate.json
	$(BIN)/python tests/bench/reactor.py --json bench-reactor.json
	$(BIN)/python tests/bench/retention.py --json bench-retention.json
	$(BIN)/python tests/bench/returner.py --json bench-returner.json
	$(BIN)/python tests/bench/failover.py --runs 10 --json bench-failover.json
	$(BIN)/python tests/bench/hello_flood.py --keys 10000 --json bench-hello-flood.json
	$(BIN)/python tests/bench/fuzz.py --frames 100000 --json bench-fuzz.json
	$(BIN)/python tests/bench/soak.py --minutes 15 --json bench-soak.json

# saline(1) from the CLI's own help: `man -l build/man/saline.1`
man: setup
	$(BIN)/python -m saline.cli.manpage -o build/man/saline.1

clean:
	rm -rf $(VENV) .mypy_cache .pytest_cache .ruff_cache build/man
