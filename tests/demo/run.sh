#!/usr/bin/env bash
# `make demo`: from a fresh clone, bring vigil up and run the incident-response playbook on the
# sample IDS alert, end to end. Uses the current kube context when a cluster answers, otherwise
# starts the local control plane (make cluster-up).
set -euo pipefail

root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root"
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/vigil/target}
bin=$CARGO_TARGET_DIR/debug
ns_system=vigil-system
ns=soc
alert=playbooks/alerts/ids-alert-jdoe.json
webhook_secret=ids-dev-webhook-secret

bold=$(tput bold 2>/dev/null || true); plain=$(tput sgr0 2>/dev/null || true)
say() { printf '\n%s==> %s%s\n' "$bold" "$*" "$plain"; }
die() { printf 'demo: %s\n' "$*" >&2; exit 1; }

say "Building vigil (operator, vigil-step, CLI, mock services)"
cargo build -q -p vigil-operator -p vigil-step -p vigil-cli -p vigil-mock-services
export PATH=$bin:$PATH
if ! command -v kubectl >/dev/null || ! command -v helm >/dev/null; then
  say "Building kubectl and helm from the Go module proxy (cached after the first time)"
  PATH=$(tests/cluster/build.sh):$PATH
fi

local_cluster=false
started_cluster=false
if kubectl version --request-timeout=5s >/dev/null 2>&1; then
  say "Using the current kube context: $(kubectl config current-context)"
else
  say "No cluster answers: starting the local control plane"
  eval "$(make -s cluster-up | grep '^export ')"
  started_cluster=true
fi

# The local process node runs pods as host processes on the host network.
if kubectl get node vigil-node >/dev/null 2>&1; then
  local_cluster=true
fi

say "Installing the chart (CRDs, operator, RBAC, gateway, admission webhook)"
kubectl get namespace "$ns" >/dev/null 2>&1 || kubectl create namespace "$ns" >/dev/null
helm_args=(--namespace "$ns_system" --create-namespace --wait --timeout 180s
  --set "stepServiceAccount.namespaces={$ns}")
if $local_cluster; then
  # The local node runs pods as host processes sharing one network: one replica, and a
  # Recreate rollout so the new pod can bind the port the old one held.
  helm_args+=(--set image.repository=vigil-operator --set image.tag=dev
    --set replicaCount=1 --set updateStrategy.type=Recreate)
fi
# Slack goes to the mock's Slack Web API; its signing secret and the Slack user of the SOC lead
# are the mock's development values (mock-services/README.md).
values=$(mktemp)
cat > "$values" <<VALUES
operator:
  extraEnv:
    - {name: VIGIL_SLACK_API_URL, value: "http://vigil-mock-services.$ns_system.svc:9090/slack/api"}
    - {name: VIGIL_SLACK_SIGNING_SECRET, value: slack-dev-signing-secret}
VALUES
kubectl get namespace "$ns_system" >/dev/null 2>&1 || kubectl create namespace "$ns_system" >/dev/null
kubectl -n "$ns_system" create configmap vigil-slack-users --from-literal=U0SOCLEAD=soc-lead \
  --from-literal=U0SOCLEAD.groups=soc-leads --dry-run=client -o yaml | kubectl apply -f - >/dev/null
# CRDs first, with server-side apply, so a rerun upgrades them too (Helm only installs CRDs).
kubectl apply --server-side --force-conflicts -f crds/ >/dev/null
kubectl wait --for condition=established --timeout=60s \
  crd/playbooks.vigil.dev crd/runs.vigil.dev crd/approvals.vigil.dev >/dev/null
helm upgrade --install vigil charts/vigil "${helm_args[@]}" --skip-crds -f "$values" >/dev/null
rm -f "$values"
kubectl -n "$ns_system" rollout status deploy -l app.kubernetes.io/name=vigil --timeout=120s

say "Starting the mock SOC tools (SIEM, threat intel, IdP, EDR, ServiceNow, Slack, AI...)"
kubectl -n "$ns_system" apply -f mock-services/deploy/mock-services.yaml >/dev/null
kubectl -n "$ns_system" rollout status deploy/vigil-mock-services --timeout=120s

say "Applying the playbooks in namespace $ns"
kubectl -n "$ns" apply -f playbooks/soc-config.yaml >/dev/null
for pb in playbooks/*.yaml; do
  [[ $pb == */soc-config.yaml ]] || kubectl -n "$ns" apply -f "$pb"
done
kubectl -n "$ns" wait --for=condition=Ready playbook --all --timeout=60s >/dev/null
kubectl -n "$ns" get playbooks

gateway=http://127.0.0.1:8080
forward_pid=
if ! $local_cluster; then
  kubectl -n "$ns_system" port-forward svc/vigil 18080:8080 >/dev/null 2>&1 &
  forward_pid=$!
  trap '[[ -n $forward_pid ]] && kill $forward_pid 2>/dev/null' EXIT
  gateway=http://127.0.0.1:18080
  sleep 2
fi
mock=http://127.0.0.1:9090

say "Sending the sample IDS alert (jdoe, 192.168.1.100, workstation-015) to the gateway"
body=$(python3 -c 'import json,sys,uuid; a=json.load(open(sys.argv[1])); a["alert_id"]="demo-"+uuid.uuid4().hex[:8]; print(json.dumps(a))' "$alert")
sig=$(printf '%s' "$body" | openssl dgst -sha256 -hmac "$webhook_secret" | sed 's/^.* //')
echo "curl -X POST $gateway/hooks/$ns/incident-response -H 'X-Hub-Signature-256: sha256=…'"
answer=$(curl -sS --retry 5 --retry-connrefused -X POST "$gateway/hooks/$ns/incident-response" \
  -H 'Content-Type: application/json' -H "X-Hub-Signature-256: sha256=$sig" -d "$body")
echo "$answer"
run=$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["run"])' "$answer") || die "the gateway did not create a Run"

# jdoe scores high: the playbook asks soc-leads for approval before quarantining. Play the SOC
# lead: approve in the mock Slack when the message is there, else with kubectl as that user.
(
  for _ in $(seq 1 120); do
    approval=$(kubectl -n "$ns" get approvals -l "vigil.dev/run=$run" -o name 2>/dev/null | head -1)
    [[ -n $approval ]] && break
    sleep 1
  done
  [[ -n ${approval:-} ]] || exit 0
  sleep 3
  ts=$(kubectl -n "$ns" get "$approval" -o jsonpath='{.status.slackTs}' 2>/dev/null || true)
  if [[ -n $ts ]] && curl -sf -X POST "$mock/_slack/click" -H 'Content-Type: application/json' \
      -d "{\"ts\":\"$ts\",\"action_id\":\"approve\",\"user\":{\"id\":\"U0SOCLEAD\",\"name\":\"soc-lead\"}}" >/dev/null; then
    printf '\n   [soc-lead clicked Approve in Slack on %s]\n' "${approval#*/}"
  else
    kubectl -n "$ns" patch "$approval" --as=soc-lead --as-group=soc-leads --type=json \
      -p '[{"op":"add","path":"/spec/decisions","value":[{"decision":"approved","reason":"demo: confirmed with the user"}]}]' >/dev/null
    printf '\n   [soc-lead approved %s with kubectl]\n' "${approval#*/}"
  fi
) &
approver=$!

say "Watching Run $run"
vigil watch "$run" -n "$ns" || true
wait "$approver" 2>/dev/null || true

say "The Run, step by step"
vigil describe run "$run" -n "$ns"

say "What the playbook did in the SOC tools (recorded by the mock services)"
curl -s "$mock/_calls" | python3 -c '
import json, sys
for c in json.load(sys.stdin):
    if c["method"] != "GET":
        print("  %-6s %-45s %s" % (c["method"], c["path"], c.get("status", "")))'

say "Where to look next"
cat <<NEXT
  kubectl get vigil -n $ns                     # playbooks, runs and approvals
  kubectl get run $run -n $ns -o yaml          # the full status
  vigil describe run $run -n $ns               # the step tree
  vigil logs $run -n $ns score                 # a step's output
  kubectl get events -n $ns --field-selector involvedObject.name=$run
  curl -s $gateway/metrics | grep '^vigil_'    # Prometheus metrics
NEXT
cat <<UI

  The investigation dashboard: $gateway/ui/
  (it asks for a Kubernetes bearer token, for example: kubectl create token default -n $ns)
UI
if $started_cluster; then
  echo "  make cluster-down                            # stop the local cluster"
fi
