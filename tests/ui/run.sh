#!/usr/bin/env bash
# Real-browser tests of the dashboard against the cluster of $KUBECONFIG: makes its own
# namespace, ServiceAccounts, Roles and playbooks, starts its own vigil-operator on a free port,
# drives system Chromium with Playwright, prints one line per check and `N passed, M failed`.
#
# Environment:
#   KUBECONFIG          the cluster (required; CRDs are applied when missing)
#   VIGIL_OPERATOR_BIN  a prebuilt vigil-operator (default: cargo build -p vigil-operator -p vigil-step)
#   VIGIL_UI_KEEP=1     keep the namespace and the operator log for a look afterwards
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/vigil/target}
log() { printf 'ui-test: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

[[ -n ${KUBECONFIG:-} ]] || die "KUBECONFIG must name the cluster to test against"
kubectl version >/dev/null 2>&1 || die "no cluster answers at KUBECONFIG=$KUBECONFIG"

# --- tools -------------------------------------------------------------------------------
if [[ ! -x /usr/bin/chromium ]]; then
  log "installing chromium (Debian package)"
  apt-get install -y chromium >/dev/null 2>&1 || { apt-get update >/dev/null && apt-get install -y chromium >/dev/null; }
fi
(cd "$here" && if [[ -f package-lock.json ]]; then npm ci --no-audit --no-fund --silent; else npm install --no-audit --no-fund --silent; fi) \
  || die "npm could not install playwright-core"

if [[ -n ${VIGIL_OPERATOR_BIN:-} ]]; then
  operator=$VIGIL_OPERATOR_BIN
else
  log "building vigil-operator and vigil-step"
  (cd "$repo" && cargo build -q -p vigil-operator -p vigil-step) || die "cargo build failed"
  operator=$CARGO_TARGET_DIR/debug/vigil-operator
fi

# --- cluster objects ---------------------------------------------------------------------
if ! kubectl get crd runs.vigil.dev >/dev/null 2>&1; then
  kubectl apply --server-side -f "$repo/crds/" >/dev/null
  kubectl wait --for condition=established crd --all --timeout=60s >/dev/null
fi
ns=vigil-ui-$(date +%s)-$RANDOM
tmp=$(mktemp -d)
operator_pid=
cleanup() {
  [[ -n $operator_pid ]] && kill "$operator_pid" 2>/dev/null && wait "$operator_pid" 2>/dev/null
  if [[ -z ${VIGIL_UI_KEEP:-} ]]; then
    kubectl delete ns "$ns" --wait=false >/dev/null 2>&1 || true
    rm -rf "$tmp"
  else
    log "kept namespace $ns and $tmp/operator.log"
  fi
}
trap cleanup EXIT

kubectl create ns "$ns" >/dev/null
sed "s/__NS__/$ns/g" "$here/fixtures.yaml" | kubectl -n "$ns" apply -f - >/dev/null

# --- operator ----------------------------------------------------------------------------
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
KUBECONFIG=$KUBECONFIG VIGIL_LEADER_ELECTION=false VIGIL_WATCH_NAMESPACE=$ns VIGIL_GATEWAY=false \
  VIGIL_LISTEN=127.0.0.1:$port VIGIL_OUTPUTS_URL=http://127.0.0.1:$port/internal/v1/outputs \
  RUST_LOG=${RUST_LOG:-info} "$operator" >"$tmp/operator.log" 2>&1 &
operator_pid=$!
for _ in $(seq 1 100); do
  curl -sf "http://127.0.0.1:$port/readyz" >/dev/null 2>&1 && break
  kill -0 "$operator_pid" 2>/dev/null || { cat "$tmp/operator.log" >&2; die "the operator exited"; }
  sleep 0.3
done
curl -sf "http://127.0.0.1:$port/ui/" >/dev/null || { tail -n 20 "$tmp/operator.log" >&2; die "the operator serves no /ui"; }
log "operator on 127.0.0.1:$port, namespace $ns"

# --- browser tests -----------------------------------------------------------------------
export VIGIL_UI_URL=http://127.0.0.1:$port VIGIL_UI_NS=$ns
VIGIL_UI_TOKEN_LEAD=$(kubectl -n "$ns" create token ui-lead)
VIGIL_UI_TOKEN_VIEWER=$(kubectl -n "$ns" create token ui-viewer)
export VIGIL_UI_TOKEN_LEAD VIGIL_UI_TOKEN_VIEWER

rc=0
(cd "$here" && node --test --test-concurrency=1 \
  --test-reporter=spec --test-reporter-destination=stdout \
  --test-reporter=tap --test-reporter-destination="$tmp/tap" ui.test.mjs) || rc=$?
passed=$(awk '/^# pass /{print $3}' "$tmp/tap")
failed=$(awk '/^# fail /{print $3}' "$tmp/tap")
if [[ $rc -ne 0 ]]; then
  log "operator log (last 30 lines):"
  tail -n 30 "$tmp/operator.log" >&2
fi
echo "${passed:-0} passed, ${failed:-0} failed"
[[ $rc -eq 0 && ${failed:-1} -eq 0 ]]
