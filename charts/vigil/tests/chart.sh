#!/usr/bin/env bash
# Tests of charts/vigil against a running cluster (KUBECONFIG; helm and kubectl on PATH):
# static checks, server-side dry runs of both RBAC modes, the RBAC proof (the operator binary
# run locally as the chart's ServiceAccount through impersonation, a playbook end to end, leader
# hand-over), then helm install / a Run / helm upgrade with a Run in flight / helm uninstall.
# One line per check, then "N passed, M failed"; exits non-zero when a check failed.
#
# Environment:
#   CHART_TEST_IMAGE   operator image on the cluster (vigil-operator:dev: the process node maps
#                      it to $CARGO_TARGET_DIR/debug/vigil-operator)
#   VIGIL_OPERATOR_BIN the binary for the RBAC proof ($CARGO_TARGET_DIR/debug/vigil-operator)
#   CHART_TEST_KEEP=1  keep the test namespaces and releases for debugging
#   CHART_TEST_ONLY    space-separated subset of: static dryrun rbac install
#
# The process node runs pods on the host network: the installed operator gets a free port
# (service.port) and one replica with the Recreate strategy; two replicas and leader hand-over
# are tested with two local operator processes in the RBAC proof instead.
set -uo pipefail

here=$(cd "$(dirname "$0")" && pwd)
chart=$(cd "$here/.." && pwd)
repo=$(cd "$chart/../.." && pwd)
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/vigil/target}
image=${CHART_TEST_IMAGE:-vigil-operator:dev}
operator_bin=${VIGIL_OPERATOR_BIN:-$CARGO_TARGET_DIR/debug/vigil-operator}
only=${CHART_TEST_ONLY:-static dryrun rbac install}
suffix=$(head -c4 /dev/urandom | od -An -tx1 | tr -d ' \n')
work=$(mktemp -d /tmp/vigil-chart-test.XXXXXX)
passed=0 failed=0
namespaces=() releases=() pids=()

pass() { passed=$((passed + 1)); printf 'PASS %s\n' "$*"; }
fail() { failed=$((failed + 1)); printf 'FAIL %s\n' "$*"; }
note() { printf '     %s\n' "$@"; }
wants() { [[ " $only " == *" $1 "* ]]; }

# check NAME COMMAND...: PASS when the command succeeds; its output goes to the log.
check() {
  local name=$1; shift
  if "$@" >"$work/last.log" 2>&1; then pass "$name"; else fail "$name"; tail -n 15 "$work/last.log" | sed 's/^/     | /'; fi
}

# waitfor SECONDS COMMAND...: retries the command every second until it succeeds.
waitfor() {
  local deadline=$((SECONDS + $1)); shift
  until "$@" >/dev/null 2>&1; do
    ((SECONDS < deadline)) || return 1
    sleep 1
  done
}

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("0.0.0.0",0)); print(s.getsockname()[1])'; }

cleanup() {
  local pid
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null; done
  [[ -n ${CHART_TEST_KEEP:-} ]] && { note "kept: ${namespaces[*]} (logs in $work)"; return; }
  for r in "${releases[@]}"; do helm uninstall "${r%%/*}" -n "${r##*/}" --wait --timeout 60s >/dev/null 2>&1; done
  for ns in "${namespaces[@]}"; do kubectl delete namespace "$ns" --wait=false >/dev/null 2>&1; done
  rm -rf "$work"
}
trap cleanup EXIT

new_namespace() {
  kubectl create namespace "$1" >/dev/null && namespaces+=("$1")
}

# The test playbook: a small step, a step whose outputs exceed the termination message (uploaded
# to the operator's outputs endpoint with a projected token), an approval, a last step.
playbook() {
  local ns=$1
  cat <<EOF
apiVersion: vigil.dev/v1alpha1
kind: Playbook
metadata: {name: chart-test, namespace: $ns}
spec:
  inputs:
    who: {type: string, required: true}
  steps:
    - name: hello
      image: bash:5
      inputs: {who: inputs.who}
      script: |
        echo "{\"greeting\": \"hello \$INPUT_WHO\"}" > "\$VIGIL_OUTPUTS"
    - name: big
      image: python:3.12-slim
      script: |
        import json, os
        json.dump({"blob": "x" * 8000}, open(os.environ["VIGIL_OUTPUTS"], "w"))
    - name: approve
      dependsOn: [hello, big]
      approval:
        message: "Go on, {{ inputs.who }}?"
        approvers: {groups: ["system:masters"]}
        timeout: 10m
    - name: done
      dependsOn: [approve]
      image: bash:5
      inputs: {greeting: steps.hello.outputs.greeting, size: "size(steps.big.outputs.blob)"}
      script: |
        echo "{\"ok\": true}" > "\$VIGIL_OUTPUTS"
EOF
}

# A playbook whose one step sleeps: a Run of it stays in flight across an operator restart.
sleepy_playbook() {
  cat <<EOF
apiVersion: vigil.dev/v1alpha1
kind: Playbook
metadata: {name: chart-sleep, namespace: $1}
spec:
  inputs:
    who: {type: string}
  steps:
    - name: nap
      image: bash:5
      script: |
        sleep $2
        echo '{"slept": true}' > "\$VIGIL_OUTPUTS"
EOF
}

run_manifest() {
  cat <<EOF
apiVersion: vigil.dev/v1alpha1
kind: Run
metadata: {name: $2, namespace: $1}
spec:
  playbookRef: {name: ${3:-chart-test}}
  inputs: {who: chart}
EOF
}

phase() { kubectl get run "$2" -n "$1" -o jsonpath='{.status.phase}' 2>/dev/null; }
phase_is() { [[ $(phase "$1" "$2") == "$3" ]]; }
running_step() { [[ $(kubectl get run "$2" -n "$1" -o jsonpath="{.status.steps.$3.phase}" 2>/dev/null) == Running ]]; }
approval_for() {
  kubectl get approvals -n "$1" -o jsonpath="{.items[?(@.spec.runRef.name==\"$2\")].metadata.name}" 2>/dev/null
}
has_approval() { [[ -n $(approval_for "$1" "$2") ]]; }

# approve NS RUN: decides the Run's Approval (as the admin user, group system:masters).
# Without the admission webhook nobody fills `by` from the authenticated user: the test does.
approve() {
  local ns=$1 run=$2
  waitfor 90 has_approval "$ns" "$run" || return 1
  kubectl patch approval "$(approval_for "$ns" "$run")" -n "$ns" --type merge \
    -p '{"spec":{"decisions":[{"decision":"approved","by":"'"$(kubectl auth whoami -o jsonpath={.status.userInfo.username})"'","reason":"chart test","via":"kubectl"}]}}' >/dev/null
}

# run_to_end NS RUN [PLAYBOOK]: creates the Run, approves it when it asks, waits for Succeeded.
run_to_end() {
  local ns=$1 run=$2 pb=${3:-chart-test}
  run_manifest "$ns" "$run" "$pb" | kubectl apply -f - >/dev/null || return 1
  if [[ $pb == chart-test ]]; then approve "$ns" "$run" || { note "no Approval appeared"; return 1; }; fi
  waitfor 120 phase_is "$ns" "$run" Succeeded || {
    note "phase: $(phase "$ns" "$run")"
    kubectl get run "$run" -n "$ns" -o jsonpath='{.status.message}{"\n"}' 2>&1 | sed 's/^/     | /'
    return 1
  }
}

admission_supported() { [[ $("$operator_bin" --help 2>/dev/null) == *--admission-listen* ]]; }

# === static ===

static_checks() {
  local f same=true
  for f in "$repo"/crds/*.yaml; do
    cmp -s "$f" "$chart/crds/$(basename "$f")" || { same=false; note "differs: crds/$(basename "$f")"; }
  done
  [[ $(ls "$repo/crds" | sort) == $(ls "$chart/crds" | sort) ]] || { same=false; note "file sets differ"; }
  if $same; then pass "charts/vigil/crds is byte-identical to crds/"; else fail "charts/vigil/crds is byte-identical to crds/ (copy them: cp crds/*.yaml charts/vigil/crds/)"; fi

  check "helm lint --strict" helm lint --strict "$chart"
  check "helm lint --strict (namespaced mode)" helm lint --strict "$chart" --set rbac.scope=namespaced --set 'watchNamespaces={soc}'
  check "values.schema.json rejects a misspelt top-level key" \
    bash -c "! helm template t '$chart' --set replicaCont=1"
  if [[ $(helm template t "$chart" --set rbac.scope=namespaced --set 'watchNamespaces={a,b}' 2>&1) == *'one release per namespace'* ]]; then
    pass "namespaced mode with two namespaces fails with a clear message"
  else fail "namespaced mode with two namespaces fails with a clear message"; fi
  check "the webhook Secret and caBundle come from the same generated CA" bash -c "
    helm template t '$chart' -n x | python3 -c '
import sys, yaml
docs = [d for d in yaml.safe_load_all(sys.stdin) if d]
ca = [d for d in docs if d[\"kind\"] == \"Secret\"][0][\"data\"][\"ca.crt\"]
hooks = [w for d in docs if d[\"kind\"].endswith(\"WebhookConfiguration\") for w in d[\"webhooks\"]]
assert len(hooks) == 3 and all(w[\"clientConfig\"][\"caBundle\"] == ca for w in hooks)
assert {w[\"clientConfig\"][\"service\"][\"path\"] for w in hooks} == {\"/validate/approvals\", \"/mutate/approvals\", \"/validate/playbooks\"}
'"
  check "cert-manager mode renders a Certificate and inject-ca-from, no generated Secret" bash -c "
    out=\$(helm template t '$chart' -n x --set webhook.certManager.enabled=true)
    grep -q 'kind: Certificate' <<<\"\$out\" && grep -q 'cert-manager.io/inject-ca-from: x/t-vigil-webhook' <<<\"\$out\" \
      && ! grep -q 'caBundle' <<<\"\$out\" && ! grep -q 'kind: Secret' <<<\"\$out\""
  check "ServiceMonitor and dashboard ConfigMap render when enabled" bash -c "
    out=\$(helm template t '$chart' --set metrics.serviceMonitor.enabled=true --set dashboards.enabled=true)
    grep -q 'kind: ServiceMonitor' <<<\"\$out\" && grep -q 'grafana_dashboard: \"1\"' <<<\"\$out\""
  check "the dashboard is valid JSON and uses only metrics the operator exports" python3 - "$chart/dashboards/vigil.json" <<'PY'
import json, re, sys
d = json.load(open(sys.argv[1]))
exprs = [t["expr"] for p in d["panels"] for t in p.get("targets", [])]
names = set(re.findall(r"\b(vigil_[a-z_]+)", " ".join(exprs)))
known = {"vigil_runs_total", "vigil_run_duration_seconds_bucket", "vigil_run_duration_seconds_count",
         "vigil_run_duration_seconds_sum", "vigil_step_duration_seconds_bucket",
         "vigil_reconcile_duration_seconds_bucket", "vigil_reconcile_errors_total", "vigil_runs_active",
         "vigil_runs_queued", "vigil_approvals_pending", "vigil_approval_oldest_pending_seconds",
         "vigil_webhook_requests_total", "vigil_webhook_request_duration_seconds_bucket",
         "vigil_webhook_rejections_total", "vigil_jobs_created_total", "vigil_leader"}
assert exprs and names <= known, names - known
PY
  check "rendered pods and containers are restricted (non-root, no privilege escalation, drop ALL, RuntimeDefault)" bash -c "
    helm template t '$chart' | python3 -c '
import sys, yaml
for d in yaml.safe_load_all(sys.stdin):
    if d and d[\"kind\"] == \"Deployment\":
        pod = d[\"spec\"][\"template\"][\"spec\"]
        assert pod[\"securityContext\"][\"runAsNonRoot\"] is True
        assert pod[\"securityContext\"][\"seccompProfile\"][\"type\"] == \"RuntimeDefault\"
        for c in pod[\"containers\"]:
            s = c[\"securityContext\"]
            assert s[\"allowPrivilegeEscalation\"] is False and s[\"readOnlyRootFilesystem\"] is True
            assert s[\"capabilities\"][\"drop\"] == [\"ALL\"]
'"
  if [[ -x $here/argocd-health.sh ]]; then
    if "$here/argocd-health.sh" >"$work/argocd.log" 2>&1; then pass "Argo CD health checks: $(tail -n1 "$work/argocd.log")"
    else fail "Argo CD health checks: $(tail -n1 "$work/argocd.log")"; grep '^FAIL' "$work/argocd.log" | sed 's/^/     | /'; fi
  fi
}

# === server-side dry runs ===

dryrun_checks() {
  local ns=vigil-chart-dry-$suffix
  new_namespace "$ns" || { fail "create namespace $ns"; return; }
  check "helm template (cluster scope) | kubectl apply --dry-run=server" bash -c \
    "helm template dry '$chart' -n '$ns' --include-crds | kubectl apply --dry-run=server -n '$ns' -f -"
  check "helm template (namespaced scope) | kubectl apply --dry-run=server" bash -c \
    "helm template dry '$chart' -n '$ns' --include-crds --set rbac.scope=namespaced --set 'watchNamespaces={$ns}' \
       --set ingress.enabled=true | kubectl apply --dry-run=server -n '$ns' -f -"
}

# === RBAC proof: the operator as the chart's ServiceAccount ===

# start_operator NAME PORT KUBECONFIG NAMESPACE [WATCH]: the binary in the background.
start_operator() {
  local name=$1 port=$2 kubeconfig=$3 ns=$4 watch=${5:-}
  (
    export KUBECONFIG=$kubeconfig POD_NAME=$name POD_NAMESPACE=$ns
    export VIGIL_LISTEN=0.0.0.0:$port VIGIL_OUTPUTS_URL=http://127.0.0.1:$port/internal/v1/outputs
    export VIGIL_STEP_IMAGE=$image VIGIL_STEP_SERVICE_ACCOUNT=vigil-step VIGIL_LEASE_DURATION=10s
    # Debug for the operator: a refused event or cache request is logged at debug level only.
    export RUST_LOG=info,kube=warn,vigil_operator=debug
    [[ -n $watch ]] && export VIGIL_WATCH_NAMESPACE=$watch
    exec "$operator_bin"
  ) >"$work/$name.log" 2>&1 &
  pids+=($!)
  echo $! >"$work/$name.pid"
}

lease_holder() { kubectl get lease vigil-operator -n "$1" -o jsonpath='{.spec.holderIdentity}' 2>/dev/null; }
holder_is() { [[ $(lease_holder "$1") == "$2" ]]; }

# rbac_proof SCOPE: installs the chart without operator pods, runs two local operators as the
# chart's ServiceAccount, and drives the test playbook to its end.
rbac_proof() {
  local scope=$1 ns=vigil-rbac-${1:0:2}-$suffix release=rbac-${1:0:2}-$suffix
  local sa=$release-vigil kubeconfig=$work/$release.kubeconfig a=$release-a b=$release-b
  local port_a port_b watch=""
  [[ -x $operator_bin ]] || { fail "[$scope] RBAC proof: $operator_bin missing (cargo build -p vigil-operator)"; return; }
  new_namespace "$ns" || { fail "[$scope] create namespace $ns"; return; }
  local args=(--set replicaCount=0 --set webhook.enabled=false --set rbac.scope="$scope")
  if [[ $scope == namespaced ]]; then args+=(--set "watchNamespaces={$ns}"); watch=$ns; fi
  if ! helm install "$release" "$chart" -n "$ns" "${args[@]}" --wait --timeout 60s >"$work/last.log" 2>&1; then
    fail "[$scope] helm install with replicaCount=0"; tail -n 5 "$work/last.log" | sed 's/^/     | /'; return
  fi
  releases+=("$release/$ns")
  pass "[$scope] helm install with replicaCount=0 (RBAC only)"

  "$here/impersonate-kubeconfig.sh" "$ns" "$sa" "$kubeconfig"
  check "[$scope] impersonation is in effect (the account may create Jobs, not Pods, nor delete Playbooks)" bash -c "
    [[ \$(KUBECONFIG='$kubeconfig' kubectl auth can-i create jobs.batch -n '$ns') == yes ]] &&
    [[ \$(KUBECONFIG='$kubeconfig' kubectl auth can-i create pods -n '$ns') == no ]] &&
    [[ \$(KUBECONFIG='$kubeconfig' kubectl auth can-i delete playbooks.vigil.dev -n '$ns') == no ]]"
  if [[ $scope == namespaced ]]; then
    check "[namespaced] the account cannot read Runs outside its namespace" bash -c "
      [[ \$(KUBECONFIG='$kubeconfig' kubectl auth can-i list runs.vigil.dev -n default) == no ]]"
  fi

  port_a=$(free_port) port_b=$(free_port)
  start_operator "$a" "$port_a" "$kubeconfig" "$ns" "$watch"
  if waitfor 60 curl -sf "http://127.0.0.1:$port_a/readyz" && waitfor 30 holder_is "$ns" "$a"; then
    pass "[$scope] operator as system:serviceaccount:$ns:$sa is ready and holds the Lease"
  else
    fail "[$scope] operator as system:serviceaccount:$ns:$sa is ready and holds the Lease"
    tail -n 20 "$work/$a.log" | sed 's/^/     | /'; return
  fi

  check "[$scope] kubectl apply the test Playbook" bash -c "$(declare -f playbook); playbook '$ns' | kubectl apply -f -"
  check "[$scope] the Playbook gets Ready=True (playbooks/status patch)" \
    kubectl wait --for=condition=Ready playbook/chart-test -n "$ns" --timeout=60s
  if run_to_end "$ns" rbac-run; then pass "[$scope] a Run reaches Succeeded (Jobs, ConfigMaps, Approval, status)"
  else fail "[$scope] a Run reaches Succeeded"; tail -n 20 "$work/$a.log" | sed 's/^/     | /'; fi
  check "[$scope] large outputs were uploaded and stored beside the Run (TokenReview, configmaps patch)" bash -c "
    kubectl get configmaps -n '$ns' -o json | python3 -c '
import json, sys
items = json.load(sys.stdin)[\"items\"]
assert any(\"x\" * 8000 in json.dumps(c.get(\"data\", {})) for c in items)'"
  check "[$scope] the Approval was decided by the operator (approvals/status patch)" bash -c "
    [[ \$(kubectl get approval $(approval_for "$ns" rbac-run) -n '$ns' -o jsonpath='{.status.decision}') == approved ]]"
  check "[$scope] the operator wrote events (events.k8s.io create)" bash -c "
    kubectl get events.events.k8s.io -n '$ns' -o jsonpath='{.items[*].reportingController}' | grep -q vigil-operator"

  start_operator "$b" "$port_b" "$kubeconfig" "$ns" "$watch"
  if waitfor 30 grep -q 'Waiting for leadership' "$work/$b.log" && sleep 3 && holder_is "$ns" "$a"; then
    pass "[$scope] a second replica waits while the first holds the Lease"
  else fail "[$scope] a second replica waits while the first holds the Lease"; fi
  kill -TERM "$(cat "$work/$a.pid")"
  if waitfor 30 holder_is "$ns" "$b" && waitfor 30 curl -sf "http://127.0.0.1:$port_b/readyz"; then
    pass "[$scope] the second replica takes over the Lease when the first stops (leases update, patch)"
  else fail "[$scope] the second replica takes over the Lease (holder: $(lease_holder "$ns"))"; tail -n 10 "$work/$b.log" | sed 's/^/     | /'; fi
  if run_to_end "$ns" rbac-run-2; then pass "[$scope] the new leader runs a second Run to Succeeded"
  else fail "[$scope] the new leader runs a second Run to Succeeded"; tail -n 20 "$work/$b.log" | sed 's/^/     | /'; fi
  kill -TERM "$(cat "$work/$b.pid")"
  sleep 1

  if grep -iE 'forbidden|403' "$work/$a.log" "$work/$b.log" >"$work/forbidden.log"; then
    fail "[$scope] no request of the operator was forbidden"; head -n 5 "$work/forbidden.log" | cut -c1-300 | sed 's/^/     | /'
  else pass "[$scope] no request of the operator was forbidden"; fi
}

# === install, upgrade, uninstall ===

# The documented leftovers of `helm uninstall`: the CRDs (not listed here: cluster-scoped),
# what users created (Playbooks, Runs and the Approvals, Jobs, Pods, ConfigMaps owned by Runs),
# the Lease the operator created at run time, events, and what every namespace has.
leftovers() {
  local ns=$1 release=$2 kinds
  kinds=$(kubectl api-resources --verbs=list --namespaced -o name | grep -vE '^(events|events.events.k8s.io)$' | paste -sd, -)
  kubectl get "$kinds" -n "$ns" -o json 2>/dev/null | python3 -c '
import json, sys
allowed_kinds = {"Playbook", "Run", "Approval", "Job", "Pod", "ConfigMap"}
for item in json.load(sys.stdin)["items"]:
    kind, meta = item["kind"], item["metadata"]
    name = meta["name"]
    owned_by_run = any(o["kind"] in ("Run", "Job") for o in meta.get("ownerReferences", []))
    if kind in ("Playbook", "Run") or (kind in allowed_kinds and owned_by_run):
        continue
    if (kind, name) in {("Lease", "vigil-operator"), ("ConfigMap", "kube-root-ca.crt"), ("ServiceAccount", "default")}:
        print(f"documented {kind}/{name}")
        continue
    print(f"ORPHAN {kind}/{name}")
'
  kubectl get clusterroles,clusterrolebindings,validatingwebhookconfigurations,mutatingwebhookconfigurations \
    -l "app.kubernetes.io/instance=$release" -o name | sed 's/^/ORPHAN /'
}

install_checks() {
  local ns=vigil-chart-$suffix release=chart-$suffix port webhook_port webhook=false
  port=$(free_port) webhook_port=$(free_port)
  if admission_supported; then webhook=true; else note "vigil-operator has no --admission yet: installing with webhook.enabled=false"; fi
  local values=$work/install-values.yaml
  cat >"$values" <<EOF
image: {repository: ${image%:*}, tag: "${image##*:}", pullPolicy: IfNotPresent}
replicaCount: 1
updateStrategy: {type: Recreate}
rbac: {scope: namespaced}
watchNamespaces: [$ns]
service: {port: $port, webhookPort: $webhook_port}
webhook: {enabled: $webhook}
operator: {logJson: false, leaseDuration: 10s}
resources: {requests: {cpu: 10m, memory: 32Mi}}
EOF
  new_namespace "$ns" || { fail "create namespace $ns"; return; }
  if helm install "$release" "$chart" -n "$ns" -f "$values" --wait --timeout 120s >"$work/last.log" 2>&1; then
    releases+=("$release/$ns")
    pass "helm install --wait (operator pod ready, port $port)"
  else
    releases+=("$release/$ns")
    fail "helm install --wait"; tail -n 5 "$work/last.log" | sed 's/^/     | /'
    kubectl get pods -n "$ns" -o wide 2>&1 | sed 's/^/     | /'
    kubectl logs -n "$ns" -l app.kubernetes.io/component=operator --tail 30 2>&1 | sed 's/^/     | /'
    return
  fi
  check "the operator answers /healthz and /readyz on port $port" bash -c "
    curl -sf http://127.0.0.1:$port/healthz && curl -sf http://127.0.0.1:$port/readyz"

  check "kubectl apply the test Playbook" bash -c "$(declare -f playbook); playbook '$ns' | kubectl apply -f -"
  check "the installed operator marks the Playbook Ready" kubectl wait --for=condition=Ready playbook/chart-test -n "$ns" --timeout=60s
  if run_to_end "$ns" install-run; then pass "a Run through the installed operator reaches Succeeded"
  else fail "a Run through the installed operator reaches Succeeded"
    kubectl logs -n "$ns" -l app.kubernetes.io/component=operator --tail 30 2>&1 | sed 's/^/     | /'; fi
  # A refused alert (no such playbook) puts the gateway's request metrics on the page.
  curl -s -o /dev/null -X POST -H 'Content-Type: application/json' -d '{}' "http://127.0.0.1:$port/hooks/$ns/no-such-playbook"
  curl -s "http://127.0.0.1:$port/metrics" >"$work/metrics.txt"
  check "the operator exports the metrics the dashboard uses" bash -c "
    for m in vigil_runs vigil_run_duration_seconds vigil_step_duration_seconds vigil_reconcile_duration_seconds \
             vigil_runs_active vigil_runs_queued vigil_approvals_pending \
             vigil_approval_oldest_pending_seconds vigil_webhook_requests vigil_webhook_request_duration_seconds; do
      # OpenMetrics names a counter family without its _total suffix. A labelled family shows
      # once it has a sample: vigil_reconcile_errors has none after a clean Run, so it is not here.
      grep -q \"^# TYPE \$m \" '$work/metrics.txt' || { echo missing \$m; exit 1; }
    done"

  # A Run whose only step sleeps 15 s is in flight while the operator pod is replaced.
  check "kubectl apply a Playbook whose step sleeps 15 s" bash -c "$(declare -f sleepy_playbook); sleepy_playbook '$ns' 15 | kubectl apply -f -"
  run_manifest "$ns" upgrade-run chart-sleep | kubectl apply -f - >/dev/null
  waitfor 60 running_step "$ns" upgrade-run nap || fail "the Run is in flight before the upgrade"
  local old_pod; old_pod=$(kubectl get pods -n "$ns" -l app.kubernetes.io/component=operator -o name)
  if helm upgrade "$release" "$chart" -n "$ns" -f "$values" --set-string podAnnotations.upgraded="$suffix" \
      --wait --timeout 120s >"$work/last.log" 2>&1 &&
     [[ $(kubectl get pods -n "$ns" -l app.kubernetes.io/component=operator -o name) != "$old_pod" ]]; then
    pass "helm upgrade --wait replaced the operator pod while a Run was in flight"
  else fail "helm upgrade --wait replaced the operator pod"; tail -n 5 "$work/last.log" | sed 's/^/     | /'; fi
  if running_step "$ns" upgrade-run nap; then note "the step was still running after the upgrade"; fi
  if waitfor 120 phase_is "$ns" upgrade-run Succeeded; then pass "the Run in flight during the upgrade finishes Succeeded"
  else fail "the Run in flight during the upgrade finishes Succeeded (phase: $(phase "$ns" upgrade-run))"; fi

  if helm uninstall "$release" -n "$ns" --wait --timeout 120s >"$work/last.log" 2>&1; then
    releases=("${releases[@]/$release\/$ns/}")
    pass "helm uninstall --wait"
  else fail "helm uninstall"; tail -n 5 "$work/last.log" | sed 's/^/     | /'; fi
  # Garbage collection of ReplicaSets and EndpointSlices may lag the uninstall by a moment.
  for _ in $(seq 30); do
    leftovers "$ns" "$release" >"$work/leftovers.txt" 2>&1
    grep -q ORPHAN "$work/leftovers.txt" || break
    sleep 1
  done
  sed 's/^/     /' "$work/leftovers.txt"
  if ! grep -q ORPHAN "$work/leftovers.txt" && kubectl get crd runs.vigil.dev >/dev/null 2>&1 &&
     [[ $(kubectl get runs -n "$ns" -o name | wc -l) -eq 2 ]]; then
    pass "helm uninstall leaves only the documented objects (CRDs, user Playbooks/Runs and what they own, the Lease)"
  else fail "helm uninstall leaves only the documented objects"; fi
}

for part in static dryrun rbac install; do
  wants "$part" || continue
  case $part in
    static) static_checks ;;
    dryrun) dryrun_checks ;;
    rbac) rbac_proof cluster; rbac_proof namespaced ;;
    install) install_checks ;;
  esac
done

printf '%d passed, %d failed\n' "$passed" "$failed"
((failed == 0))
