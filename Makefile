# Two commands from a fresh clone: `make up`, then `make test`.
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
ENV ?= local
VENV := .venv
PY := $(VENV)/bin/python
PYINFRA := $(VENV)/bin/pyinfra
INVENTORY := inventory/$(ENV).py
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)

.PHONY: help venv deps artifacts up down status bootstrap health test test-unit test-topology \
        ports validate secrets team plan apply ssh-config release rollback demo-image restore restore-drill \
        bench drills

help:
	@echo "make up            bring up the local topology and apply the deploy to it"
	@echo "make test          unit tests, then the topology: cold converge, testinfra, no-op converge"
	@echo "make down          remove the local topology"
	@echo "make test-unit     no hosts needed"
	@echo "make artifacts     build the pinned binaries Debian does not package (before any apply)"
	@echo "make ports         port manifest from the registry"
	@echo "make secrets ENV=  create or extend an environment's secrets"
	@echo "make plan ENV=     dry run with diffs against an environment"
	@echo "make apply ENV=    apply deploy.py to an environment"
	@echo "make release APP= ENV= IMAGE= [ON=local]  zero-downtime release of one app instance"
	@echo "make rollback APP= ENV= [ON=local]         back to the previous slot and image"
	@echo "make restore ENV= TARGET_TIME= [YES=1]     point-in-time restore of the database cluster"
	@echo "make restore-drill ENV=                    restore the latest backup to a scratch cluster on the backup host"
	@echo "make bench [ONLY='realtime http'] [COLD=0]  measure the local topology, write docs/BENCHMARKS.md"
	@echo "make drills [ONLY='apply-kill reboot']      fault drills on the local topology, write docs/DRILLS.md"

$(VENV)/.installed: requirements.txt
	python3 -m venv $(VENV)
	$(VENV)/bin/pip install -q --disable-pip-version-check -r requirements.txt
	touch $@

venv: $(VENV)/.installed

# Control-node packages: the topology harness and the real validators the unit tests call.
deps:
	@lab/deps

validate: venv
	$(PY) -m tools.cli validate

ports: venv
	@$(PY) -m tools.cli ports

team: venv
	@$(PY) -m tools.cli team

secrets: venv
	$(PY) -m tools.cli secrets $(ENV)

# Every pinned binary, built before pyinfra starts (the deploy only looks them up):
# one line per artifact with its version, whether it was built or cached, and the time.
artifacts: venv
	$(PY) -m codeb.artifacts build $(ENV)

up: venv deps artifacts
	$(PY) -m tools.cli secrets local
	$(PY) -m lab.topology up
	$(PY) -m demo.build
	lab/converge

down: venv
	$(PY) -m lab.topology down

status: venv
	$(PY) -m lab.topology status

# Exit 0: nothing would change; 2: drift (changes shown as diffs); 1: error.
plan: venv artifacts
	$(PY) -m tools.run plan $(ENV)

apply: venv artifacts
	@if [ -z "$${CI:-}" ] && [ "$(ENV)" != local ]; then read -r -p "Apply deploy.py to $(ENV)? [y/N] " a; [ "$$a" = y ]; fi
	$(PY) -m tools.run apply $(ENV)

# From freshly installed Debian 13 hosts reachable as root with a key: the deploy
# account, hardened SSH, missing secrets, the whole deploy, then the checks.
bootstrap: venv artifacts
	$(PY) -m tools.cli secrets $(ENV)
	@if [ "$(ENV)" = local ]; then $(MAKE) --no-print-directory deps && $(PY) -m lab.topology up && $(PY) -m demo.build; fi
	$(PY) -m tools.run bootstrap $(ENV)
	$(PY) -m tools.health $(ENV)
	@if [ "$(ENV)" = local ]; then $(PY) -m pytest -q tests/topology; else $(PY) -m tools.run plan $(ENV); fi

health: venv
	$(PY) -m tools.health $(ENV)

test-unit: venv deps artifacts
	$(VENV)/bin/ruff check .
	$(PY) -m pytest -q tests/unit services

test-topology: venv deps artifacts
	molecule test

test: test-unit test-topology

# Releases of one app instance (ENV is the app environment here: production, staging,
# preview); ON names the inventory (default local).
ON ?= local
release: venv
	@[ -n "$(APP)" ] && [ -n "$(IMAGE)" ] || { echo "usage: make release APP=<project> ENV=<app env> IMAGE=<ref> [ON=<inventory>]"; exit 2; }
	$(PY) -m tools.release --inventory inventory/$(ON).py release $(APP) $(ENV) $(IMAGE)

rollback: venv
	@[ -n "$(APP)" ] || { echo "usage: make rollback APP=<project> ENV=<app env> [ON=<inventory>]"; exit 2; }
	$(PY) -m tools.release --inventory inventory/$(ON).py rollback $(APP) $(ENV)

# The demo app image (demo/), built from the harness's trixie base and pushed to the
# topology's registry; skipped when the registry already has this build.
demo-image: venv
	$(PY) -m demo.build

# Point-in-time restore of the storage host's PostgreSQL cluster (asks first unless YES=1),
# and the restore drill on the backup host (roles/backup/restore.py).
restore: venv
	@[ -n "$(TARGET_TIME)" ] || { echo "usage: make restore ENV=<env> TARGET_TIME='<timestamp with zone>' [YES=1]"; exit 2; }
	$(PY) -m tools.restore $(ENV) pitr "$(TARGET_TIME)" $(if $(filter 1 yes true,$(YES)),--yes)

restore-drill: venv
	$(PY) -m tools.restore $(ENV) drill

# Benchmarks and fault drills on the local topology (bench/). `make bench` starts with a
# cold converge (it removes and recreates the guests; COLD=0 skips that); ONLY= picks
# sections (converge realtime http backups) or drills (apply-kill reboot stop-storage
# backup-disk-full). BENCH_SUBSCRIBERS=N sets the WebSocket subscribers (default 2000).
COLD ?= 1
bench: venv artifacts
	$(PY) -m bench $(ONLY) $(if $(filter 0 no false,$(COLD)),--no-cold)

drills: venv artifacts
	$(PY) -m bench.drills $(ONLY)
