# vigil developer entry points. See README.md.
SHELL := /bin/bash
export CARGO_TARGET_DIR ?= $(HOME)/.cache/vigil/target
export VIGIL_CLUSTER_DIR ?= /tmp/vigil-cluster

.PHONY: build cluster-up cluster-down test demo run crds bench

build:
	cargo build --workspace --bins

cluster-up:
	@tests/cluster/up.sh

cluster-down:
	@tests/cluster/down.sh

test:
	@tests/run-all.sh

crds:
	cargo run -q -p vigil-api --bin crdgen -- crds
	cp crds/*.yaml charts/vigil/crds/

demo:
	@tests/demo/run.sh

run:
	cargo build -p vigil-operator -p vigil-step
	kubectl apply --server-side -f crds/
	kubectl wait --for condition=established crd/playbooks.vigil.dev crd/runs.vigil.dev crd/approvals.vigil.dev
	VIGIL_LEADER_ELECTION=false $(CARGO_TARGET_DIR)/debug/vigil-operator

bench:
	@tests/bench/run.sh
