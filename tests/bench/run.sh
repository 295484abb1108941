#!/usr/bin/env bash
# make bench: builds release binaries, starts a local cluster of its own (stopped again on exit),
# applies the CRDs and runs vigil-bench, which prints its tables and writes docs/benchmarks.md
# and docs/benchmarks.json.
#
# Arguments go to vigil-bench (see `vigil-bench --help`), as does $VIGIL_BENCH_ARGS, e.g.
#   VIGIL_BENCH_ARGS="--active 1000 --finished 10000" make bench
#   tests/bench/run.sh --only floor,gateway
#
# Environment:
#   VIGIL_BENCH_CLUSTER_DIR  the bench cluster's directory     (/tmp/vigil-bench-cluster)
#   VIGIL_BENCH_PORT_BASE    etcd BASE, BASE+1; API server BASE+64; node BASE+2 (7300)
#   VIGIL_BENCH_KEEP_CLUSTER leave the cluster up at the end   (unset)
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
cd "$repo"

export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/vigil/target}
base=${VIGIL_BENCH_PORT_BASE:-7300}
export VIGIL_CLUSTER_DIR=${VIGIL_BENCH_CLUSTER_DIR:-/tmp/vigil-bench-cluster}
export VIGIL_ETCD_PORT=$base VIGIL_ETCD_PEER_PORT=$((base + 1)) VIGIL_NODE_PORT=$((base + 2))
export VIGIL_APISERVER_PORT=$((base + 64))
# Step pods run the operator image's vigil-step from the release build.
export VIGIL_NODE_IMAGE_BIN=$CARGO_TARGET_DIR/release
log() { printf 'bench: %s\n' "$*" >&2; }

log "building release binaries (vigil-operator, vigil-step, vigil-bench)"
cargo build --release -q -p vigil-operator -p vigil-step -p vigil-bench

down() {
  if [[ -z ${VIGIL_BENCH_KEEP_CLUSTER:-} ]]; then
    tests/cluster/down.sh || true
  else
    log "cluster left up: export KUBECONFIG=$VIGIL_CLUSTER_DIR/admin.kubeconfig"
  fi
}
trap down EXIT
tests/cluster/up.sh >/dev/null

export KUBECONFIG=$VIGIL_CLUSTER_DIR/admin.kubeconfig
kubectl=$VIGIL_CLUSTER_DIR/bin/kubectl
"$kubectl" apply --server-side -f crds/ >/dev/null
"$kubectl" wait --for condition=established --timeout 60s crd --all >/dev/null

# shellcheck disable=SC2086 # VIGIL_BENCH_ARGS is a list of flags
"$CARGO_TARGET_DIR/release/vigil-bench" --operator "$CARGO_TARGET_DIR/release/vigil-operator" \
  ${VIGIL_BENCH_ARGS:-} "$@"
