#!/usr/bin/env bash
# Every test the project has, in the order `make test` (and .ci/run) wants them:
#   1. unit       cargo test --workspace (no cluster: the e2e tests skip themselves)
#   2. build      the binaries the cluster suites run (operator, vigil-step, node, mocks, CLI)
#   3. cluster    tests/cluster/up.sh, stopped again on exit whatever happens
#   4. smoke      tests/cluster/smoke.sh
#   5. e2e        the CRDs, then VIGIL_E2E=1 cargo test -p vigil-e2e
#   6. the other suites that exist: playbooks/tests/*.sh, charts/*/tests/*.sh and tests/*/*.sh
#      (tests/cluster excluded), each an executable script whose header promises the
#      "N passed, M failed" line; helpers without it (impersonate-kubeconfig.sh) are not suites.
# One summary line per suite at the end; exits non-zero when any suite failed.
#
# Environment: CARGO_TARGET_DIR ($HOME/.cache/vigil/target), VIGIL_CLUSTER_DIR
# (/tmp/vigil-cluster) and the port variables of tests/cluster/up.sh; VIGIL_KEEP_CLUSTER=1
# leaves the cluster up at the end; E2E_THREADS (3) for the e2e tests.
set -uo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/vigil/target}
export VIGIL_CLUSTER_DIR=${VIGIL_CLUSTER_DIR:-/tmp/vigil-cluster}
export KUBECONFIG=$VIGIL_CLUSTER_DIR/admin.kubeconfig
export PATH=$VIGIL_CLUSTER_DIR/bin:$PATH
# The binaries are built once here; suites that build for themselves may skip it.
export SKIP_BUILD=1 VIGIL_SKIP_BUILD=1

started=$SECONDS
summary=()
failures=0

log() { printf '\nrun-all: %s\n' "$*"; }

# suite NAME COMMAND...: runs COMMAND, records PASS or FAIL and how long it took.
suite() {
  local name=$1 t0=$SECONDS status
  shift
  log "=== $name: $*"
  "$@"
  status=$?
  record "$name" "$status" $((SECONDS - t0))
  return "$status"
}

record() {
  local verdict=PASS
  if (($2 != 0)); then
    verdict="FAIL (exit $2)"
    failures=$((failures + 1))
  fi
  summary+=("$(printf '%-38s %-14s %4ss' "$1" "$verdict" "$3")")
}

skip() {
  summary+=("$(printf '%-38s %-14s' "$1" "SKIPPED: $2")")
  failures=$((failures + 1))
}

report() {
  local status=$?
  if [[ -z ${VIGIL_KEEP_CLUSTER:-} ]]; then
    log "stopping the cluster"
    tests/cluster/down.sh || true
  fi
  printf '\n=== run-all summary ===\n'
  printf 'run-all: %s\n' "${summary[@]}"
  printf 'run-all: %d suite(s), %d failed, %ss in all\n' "${#summary[@]}" "$failures" $((SECONDS - started))
  ((failures == 0 && status == 0)) || exit 1
}
trap report EXIT
trap 'exit 130' INT TERM

# Whether the script is a test suite: executable, and its header promises the summary line.
is_suite() {
  [[ -x $1 ]] && head -n 30 "$1" | grep -q 'passed'
}

suite "unit (cargo test)" cargo test --workspace --no-fail-fast

cluster_suites=("smoke" "e2e")
if ! suite "build" cargo build -p vigil-operator -p vigil-step -p vigil-test-node \
  -p vigil-mock-services -p vigil-cli; then
  for s in "${cluster_suites[@]}"; do skip "$s" "build failed"; done
  exit 1
fi

if ! suite "cluster up" tests/cluster/up.sh; then
  for s in "${cluster_suites[@]}"; do skip "$s" "no cluster"; done
  exit 1
fi

suite "smoke" tests/cluster/smoke.sh

apply_crds() {
  kubectl apply --server-side --force-conflicts -f crds/ &&
    kubectl wait --for condition=established --timeout=60s crd --all
}
# The e2e operators act as the chart's ServiceAccount (cluster scope) through impersonation, so
# a permission the chart does not grant fails an e2e test.
chart_identity() {
  local ns=vigil-e2e-rbac
  kubectl get namespace "$ns" >/dev/null 2>&1 || kubectl create namespace "$ns" >/dev/null
  helm upgrade --install e2e-rbac charts/vigil -n "$ns" --skip-crds --set replicaCount=0 \
    --set webhook.enabled=false --wait --timeout 60s >/dev/null &&
    charts/vigil/tests/impersonate-kubeconfig.sh "$ns" e2e-rbac-vigil "$VIGIL_CLUSTER_DIR/e2e-operator.kubeconfig"
}
if suite "crds" apply_crds && suite "chart RBAC for e2e" chart_identity; then
  suite "e2e (vigil-e2e, as the chart's ServiceAccount)" \
    env VIGIL_E2E=1 VIGIL_E2E_OPERATOR_KUBECONFIG="$VIGIL_CLUSTER_DIR/e2e-operator.kubeconfig" \
    cargo test -p vigil-e2e -- --test-threads="${E2E_THREADS:-3}"
else
  skip "e2e (vigil-e2e)" "CRDs not applied"
fi

shopt -s nullglob
for script in playbooks/tests/*.sh charts/*/tests/*.sh tests/*/*.sh; do
  [[ $script == tests/cluster/* ]] && continue
  is_suite "$script" || continue
  suite "$script" "$script"
done
