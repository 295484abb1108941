#!/usr/bin/env bash
# Cluster tests of approvals: the admission webhooks (who may decide, playbook validation), the
# Slack callback with the mock Slack, and timeouts, including an operator restart.
#
# Uses the cluster of $KUBECONFIG (or $VIGIL_CLUSTER_DIR/admin.kubeconfig); starts and stops one
# when none answers. Starts its own operator (admission on, TLS with a throwaway CA) and mock
# services on free ports, in its own namespace; webhook configurations are registered for that
# namespace only. Prints one PASS/FAIL line per check and a final "N passed, M failed" line;
# exits non-zero when a check failed. VIGIL_SKIP_BUILD=1 skips `cargo build`.
set -uo pipefail

root=$(cd "$(dirname "$0")/../.." && pwd)
dir=${VIGIL_CLUSTER_DIR:-/tmp/vigil-cluster}
export KUBECONFIG=${KUBECONFIG:-$dir/admin.kubeconfig}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/vigil/target}
bin=$CARGO_TARGET_DIR/debug
tmp=$(mktemp -d)
ns=vigil-appr-$$
secret=appr-signing-$RANDOM$RANDOM
started_here=0
operator_pid=
mock_pid=

if command -v kubectl >/dev/null; then kubectl=kubectl; else kubectl=$dir/bin/kubectl; fi
kc() { "$kubectl" "$@"; }
kn() { "$kubectl" -n "$ns" "$@"; }

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
http_port=$(free_port)
admission_port=$(free_port)
mock_port=$(free_port)
operator_url=http://127.0.0.1:$http_port
mock_url=http://127.0.0.1:$mock_port

cleanup() {
  stop_operator
  [[ -n $mock_pid ]] && kill "$mock_pid" 2>/dev/null && wait "$mock_pid" 2>/dev/null
  kc delete validatingwebhookconfiguration "$ns" --ignore-not-found >/dev/null 2>&1
  kc delete mutatingwebhookconfiguration "$ns" --ignore-not-found >/dev/null 2>&1
  kc delete namespace "$ns" --wait=false >/dev/null 2>&1
  ((started_here)) && "$root/tests/cluster/down.sh" >/dev/null 2>&1
  if [[ -n ${VIGIL_KEEP_LOGS:-} ]]; then echo "logs in $tmp"; else rm -rf "$tmp"; fi
}
trap cleanup EXIT

passed=0
failed=0
# check NAME FUNCTION: runs FUNCTION, prints PASS or FAIL with the end of its output.
check() {
  local name=$1 started=$SECONDS
  if "$2" >"$tmp/out" 2>&1; then
    passed=$((passed + 1))
    printf 'PASS %s (%ss)\n' "$name" $((SECONDS - started))
  else
    failed=$((failed + 1))
    printf 'FAIL %s (%ss)\n' "$name" $((SECONDS - started))
    sed 's/^/    /' "$tmp/out" | tail -n 25
    return 1
  fi
}
finish() {
  echo "$passed passed, $failed failed"
  ((failed == 0))
  exit
}
# expect WHAT ACTUAL WANTED
expect() {
  [[ $2 == "$3" ]] && return 0
  printf '%s: got %q, want %q\n' "$1" "$2" "$3"
  return 1
}
# contains WHAT TEXT PART
contains() {
  [[ $2 == *"$3"* ]] && return 0
  printf '%s: %q does not contain %q\n' "$1" "$2" "$3"
  return 1
}
# until_true SECONDS COMMAND...: polls COMMAND every 0.5s.
until_true() {
  local deadline=$((SECONDS + $1))
  shift
  until "$@" >/dev/null 2>&1; do
    ((SECONDS >= deadline)) && return 1
    sleep 0.5
  done
}
jp() { kn get "$1" "$2" -o "jsonpath=$3" 2>/dev/null; }
approval_of() { kn get approvals -l "vigil.dev/run=$1" -o 'jsonpath={.items[0].metadata.name}' 2>/dev/null; }
has_approval() { [[ -n $(approval_of "$1") ]]; }
is_decided() { [[ -n $(jp approval "$1" '{.status.decision}') ]]; }
has_slack_ts() { [[ -n $(jp approval "$1" '{.status.slackTs}') ]]; }
step_phase() { jp run "$1" "{.status.steps.$2.phase}"; }
step_is() { [[ $(step_phase "$1" "$2") == "$3" ]]; }
run_ended() { [[ $(jp run "$1" '{.status.phase}') =~ ^(Succeeded|Failed|Cancelled)$ ]]; }
slack_messages() { curl -s -H 'Authorization: Bearer xoxb-dev-token' "$mock_url/slack/messages?channel=%23security"; }
decisions() { jp approval "$1" '{range .spec.decisions[*]}{.decision}/{.by}/{.via};{end}'; }

start_operator() {
  env KUBECONFIG="$KUBECONFIG" RUST_LOG=info,kube=warn \
    VIGIL_LEADER_ELECTION=false VIGIL_WATCH_NAMESPACE="$ns" POD_NAMESPACE="$ns" \
    VIGIL_LISTEN=127.0.0.1:$http_port VIGIL_OUTPUTS_URL=$operator_url/internal/v1/outputs \
    VIGIL_ADMISSION=true VIGIL_ADMISSION_LISTEN=127.0.0.1:$admission_port \
    VIGIL_TLS_CERT_FILE="$tmp/tls.crt" VIGIL_TLS_KEY_FILE="$tmp/tls.key" \
    VIGIL_SLACK_API_URL=$mock_url/slack/api VIGIL_SLACK_SIGNING_SECRET="$secret" \
    "$bin/vigil-operator" >>"$tmp/operator.log" 2>&1 &
  operator_pid=$!
  until_true 60 curl -sf "$operator_url/readyz" &&
    until_true 30 curl -sf --cacert "$tmp/ca.crt" "https://127.0.0.1:$admission_port/healthz"
}
stop_operator() {
  [[ -z $operator_pid ]] && return 0
  kill "$operator_pid" 2>/dev/null
  wait "$operator_pid" 2>/dev/null
  operator_pid=
}

# === setup ===

if ! kc get --raw /readyz >/dev/null 2>&1; then
  echo "approvals: no cluster answers at $KUBECONFIG; starting one in $dir"
  "$root/tests/cluster/up.sh" >/dev/null || { echo "FAIL cluster-up"; echo "0 passed, 1 failed"; exit 1; }
  export KUBECONFIG=$dir/admin.kubeconfig
  [[ -x $kubectl ]] || kubectl=$dir/bin/kubectl
  started_here=1
fi

setup_build() {
  [[ -n ${VIGIL_SKIP_BUILD:-} ]] && return 0
  (cd "$root" && cargo build -q -p vigil-operator -p vigil-step -p vigil-mock-services)
}

setup_certs() {
  cd "$tmp" || return 1
  openssl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.crt -days 1 -subj /CN=vigil-approvals-test-ca &&
    openssl req -newkey rsa:2048 -nodes -keyout tls.key -out tls.csr -subj /CN=127.0.0.1 &&
    printf 'subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n' >ext &&
    openssl x509 -req -in tls.csr -CA ca.crt -CAkey ca.key -CAcreateserial -out tls.crt -days 1 -extfile ext
}

setup_cluster() {
  kc apply --server-side --force-conflicts -f "$root/crds/" >/dev/null &&
    kc wait --for condition=established crd --all --timeout=60s >/dev/null &&
    kc create namespace "$ns" >/dev/null || return 1
  kn create secret generic slack-token --from-literal=token=xoxb-dev-token >/dev/null
  kn create configmap vigil-slack-users --from-literal=U111=alice --from-literal=U111.groups=soc-leads \
    --from-literal=U222=bob --from-literal=U333=carol >/dev/null
  # Impersonated users get the rights an approver would: read and patch Approvals (and try status).
  kn apply -f - >/dev/null <<EOF
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: {name: approvers}
rules:
  - apiGroups: [vigil.dev]
    resources: [approvals, approvals/status, playbooks]
    verbs: [get, list, watch, patch, update, create]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {name: approvers}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: Role, name: approvers}
subjects: [{apiGroup: rbac.authorization.k8s.io, kind: Group, name: system:authenticated}]
EOF
}

setup_webhooks() {
  local ca rules hooks
  ca=$(base64 -w0 <"$tmp/ca.crt")
  common="admissionReviewVersions: [v1]
    sideEffects: None
    failurePolicy: Fail
    timeoutSeconds: 5
    namespaceSelector: {matchLabels: {kubernetes.io/metadata.name: $ns}}"
  kc apply -f - >/dev/null <<EOF
apiVersion: admissionregistration.k8s.io/v1
kind: ValidatingWebhookConfiguration
metadata: {name: $ns}
webhooks:
  - name: approvals.validate.vigil.dev
    clientConfig: {url: "https://127.0.0.1:$admission_port/validate/approvals", caBundle: "$ca"}
    rules: [{apiGroups: [vigil.dev], apiVersions: [v1alpha1], operations: [CREATE, UPDATE], resources: [approvals, approvals/status], scope: Namespaced}]
    $common
  - name: playbooks.validate.vigil.dev
    clientConfig: {url: "https://127.0.0.1:$admission_port/validate/playbooks", caBundle: "$ca"}
    rules: [{apiGroups: [vigil.dev], apiVersions: [v1alpha1], operations: [CREATE, UPDATE], resources: [playbooks], scope: Namespaced}]
    $common
---
apiVersion: admissionregistration.k8s.io/v1
kind: MutatingWebhookConfiguration
metadata: {name: $ns}
webhooks:
  - name: approvals.mutate.vigil.dev
    clientConfig: {url: "https://127.0.0.1:$admission_port/mutate/approvals", caBundle: "$ca"}
    rules: [{apiGroups: [vigil.dev], apiVersions: [v1alpha1], operations: [CREATE, UPDATE], resources: [approvals], scope: Namespaced}]
    $common
EOF
}

setup_services() {
  env MOCK_LISTEN=127.0.0.1:$mock_port MOCK_SLACK_SIGNING_SECRET="$secret" \
    MOCK_SLACK_INTERACTIVITY_URL=$operator_url/approvals/slack \
    "$bin/mock-services" >"$tmp/mock.log" 2>&1 &
  mock_pid=$!
  until_true 30 curl -sf -o /dev/null "$mock_url/slack/messages?channel=x" || return 1
  start_operator
}

# A playbook whose approval gate waits $2, denies at the deadline, and asks in Slack.
playbook() {
  kn apply -f - >/dev/null <<EOF
apiVersion: vigil.dev/v1alpha1
kind: Playbook
metadata: {name: $1}
spec:
  inputs: {host: {type: string}}
  steps:
    - name: ask
      approval:
        message: "Quarantine {{ inputs.host }}?"
        approvers: {users: [carol], groups: [soc-leads]}
        forbidSelfApproval: true
        timeout: $2
        onTimeout: deny
        notify: {slack: {channel: "#security", secretRef: {name: slack-token, key: token}}}
    - name: act
      dependsOn: [ask]
      image: busybox
      command: [sh, -c, "echo quarantined"]
EOF
}
run() {
  kn apply -f - >/dev/null <<EOF
apiVersion: vigil.dev/v1alpha1
kind: Run
metadata: {name: $1}
spec:
  playbookRef: {name: $2}
  inputs: {host: ws-15}
  trigger: {kind: manual, user: mallory}
EOF
}
# decide_as APPROVAL PATCH-VALUE KUBECTL-ARGS...: appends a decision as an impersonated user.
decide_as() {
  local name=$1 value=$2 patch
  shift 2
  if [[ -z $(jp approval "$name" '{.spec.decisions}') ]]; then
    patch="[{\"op\":\"add\",\"path\":\"/spec/decisions\",\"value\":[$value]}]"
  else
    patch="[{\"op\":\"add\",\"path\":\"/spec/decisions/-\",\"value\":$value}]"
  fi
  kn patch approval "$name" --type=json -p "$patch" "$@" 2>&1
}
# signed_post BODY TIMESTAMP [SECRET]: POSTs BODY to the callback signed as Slack would.
signed_post() {
  local body=$1 ts=$2 key=${3:-$secret} sig
  sig=$(printf 'v0:%s:%s' "$ts" "$body" | openssl dgst -sha256 -hmac "$key" -hex | sed 's/^.* //')
  curl -s -o "$tmp/answer" -w '%{http_code}' "$operator_url/approvals/slack" \
    -H 'Content-Type: application/x-www-form-urlencoded' \
    -H "X-Slack-Request-Timestamp: $ts" -H "X-Slack-Signature: v0=$sig" --data-raw "$body"
}
click_body() {
  python3 -c 'import json,sys,urllib.parse
p={"type":"block_actions","user":{"id":sys.argv[1],"username":"u"},
   "actions":[{"type":"button","action_id":sys.argv[2],"value":sys.argv[3]}]}
print("payload="+urllib.parse.quote(json.dumps(p)),end="")' "$@"
}

check "setup: build operator, step and mock" setup_build || finish
check "setup: throwaway CA and serving certificate" setup_certs || finish
check "setup: CRDs, namespace, token Secret, Slack user mapping, RBAC" setup_cluster || finish
check "setup: mock Slack and the operator with admission on" setup_services || finish
check "setup: webhook configurations for the test namespace" setup_webhooks || finish

# === admission: playbooks ===

refuses_invalid_playbook() {
  local out
  out=$(kn apply -f - 2>&1 <<EOF
apiVersion: vigil.dev/v1alpha1
kind: Playbook
metadata: {name: broken}
spec:
  steps:
    - {name: a, image: busybox, command: ["true"], dependsOn: [b]}
    - {name: b, image: busybox, command: ["true"], dependsOn: [a], when: "steps.(("}
EOF
  )
  contains "answer" "$out" "playbook broken is invalid" &&
    contains "answer" "$out" "dependency cycle" &&
    contains "answer" "$out" "step b: when:" &&
    ! kn get playbook broken >/dev/null 2>&1
}
check "webhook refuses a playbook with a cycle and bad CEL, naming each issue" refuses_invalid_playbook

accepts_valid_playbooks() {
  playbook gate 10m && playbook quick 3s && playbook slow 15s
}
check "webhook accepts valid playbooks" accepts_valid_playbooks

# === admission: who may decide ===

appr=
approval_posted_to_slack() {
  run r-kubectl gate || return 1
  until_true 60 has_approval r-kubectl || { echo "no Approval for r-kubectl"; return 1; }
  appr=$(approval_of r-kubectl)
  until_true 30 has_slack_ts "$appr" || { echo "no slackTs"; return 1; }
  local ts messages
  ts=$(jp approval "$appr" '{.status.slackTs}')
  messages=$(slack_messages)
  contains "posted message" "$messages" "\"ts\":\"$ts\"" && contains "button value" "$messages" "$ns/$appr"
}
check "an approval with notify.slack is posted with buttons and status.slackTs" approval_posted_to_slack

refuses_non_approver() {
  local out
  out=$(decide_as "$appr" '{"decision":"approved","reason":"ok"}' --as=bob)
  contains "answer" "$out" "approval $appr: user \"bob\" is not an approver (approvers: users [carol] groups [soc-leads])" &&
    expect "decisions" "$(decisions "$appr")" ""
}
check "bob (not an approver) is refused with the approver list" refuses_non_approver

refuses_self_approval() {
  local out
  out=$(decide_as "$appr" '{"decision":"approved"}' --as=mallory --as-group=soc-leads)
  contains "answer" "$out" "triggered the Run" && expect "decisions" "$(decisions "$appr")" ""
}
check "mallory (the requester, in soc-leads) cannot approve her own Run" refuses_self_approval

refuses_forged_by_without_mutation() {
  # Straight to the validating path, as if the mutating webhook were not installed.
  local review answer
  review=$(kn get approval "$appr" -o json | python3 -c 'import json,sys
old=json.load(sys.stdin); new=json.loads(json.dumps(old))
new["spec"]["decisions"]=[{"decision":"approved","by":"alice"}]
print(json.dumps({"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{
 "uid":"u1","kind":{"group":"vigil.dev","version":"v1alpha1","kind":"Approval"},
 "resource":{"group":"vigil.dev","version":"v1alpha1","resource":"approvals"},
 "name":old["metadata"]["name"],"namespace":old["metadata"]["namespace"],"operation":"UPDATE",
 "userInfo":{"username":"bob","groups":["soc-leads"]},"object":new,"oldObject":old}}))')
  answer=$(curl -s --cacert "$tmp/ca.crt" "https://127.0.0.1:$admission_port/validate/approvals" \
    -H 'Content-Type: application/json' -d "$review")
  contains "answer" "$answer" '"allowed":false' && contains "answer" "$answer" 'but the request comes from \"bob\"'
}
check "a forged by is refused by the validating path alone" refuses_forged_by_without_mutation

approves_as_alice() {
  local out
  out=$(decide_as "$appr" '{"decision":"approved","reason":"ok","by":"mallory","via":"ui"}' --as=alice --as-group=soc-leads)
  contains "answer" "$out" "patched" || return 1
  until_true 20 is_decided "$appr" || { echo "not decided"; return 1; }
  expect "decisions" "$(decisions "$appr")" "approved/alice/ui;" &&
    expect "decision" "$(jp approval "$appr" '{.status.decision}')" "approved" &&
    expect "decidedBy" "$(jp approval "$appr" '{.status.decidedBy}')" "alice" &&
    [[ -n $(jp approval "$appr" '{.spec.decisions[0].at}') ]]
}
check "alice (group soc-leads) approves with kubectl patch; by is rewritten to alice" approves_as_alice

branch_continues_after_kubectl() {
  until_true 90 step_is r-kubectl act Succeeded || { echo "act is $(step_phase r-kubectl act)"; return 1; }
}
check "the approved branch runs (act Succeeded)" branch_continues_after_kubectl

slack_message_updated() {
  until_true 20 bash -c "curl -s -H 'Authorization: Bearer xoxb-dev-token' \
      '$mock_url/slack/messages?channel=%23security' | grep -qF '*Approved* by alice'" || {
    slack_messages
    return 1
  }
}
check "the Slack message is updated with the outcome" slack_message_updated

decided_is_final() {
  local out out2 out3
  out=$(decide_as "$appr" '{"decision":"denied"}' --as=carol)
  out2=$(kn patch approval "$appr" --type=json -p '[{"op":"replace","path":"/spec/decisions/0/decision","value":"denied"}]' --as=alice --as-group=soc-leads 2>&1)
  out3=$(kn patch approval "$appr" --subresource=status --type=merge -p '{"status":{"slackTs":"1.2"}}' --as=carol 2>&1)
  contains "new decision" "$out" "is already decided (approved by alice)" &&
    contains "rewrite" "$out2" "cannot be changed" &&
    contains "status write" "$out3" "only the operator writes the status" &&
    expect "decisions" "$(decisions "$appr")" "approved/alice/ui;" &&
    expect "decidedBy" "$(jp approval "$appr" '{.status.decidedBy}')" "alice"
}
check "a decided Approval cannot get a new decision, a rewritten one or a status edit" decided_is_final

refuses_spec_edit() {
  local out
  out=$(kn patch approval "$appr" --type=merge -p '{"spec":{"quorum":5}}' --as=alice --as-group=soc-leads 2>&1)
  contains "answer" "$out" "spec.quorum cannot change"
}
check "an approver cannot change the quorum" refuses_spec_edit

# === Slack callback ===

sappr=
slack_click_decides() {
  run r-slack gate || return 1
  until_true 60 has_approval r-slack || return 1
  sappr=$(approval_of r-slack)
  until_true 30 has_slack_ts "$sappr" || return 1
  local ts answer
  ts=$(jp approval "$sappr" '{.status.slackTs}')
  answer=$(curl -s "$mock_url/_slack/click" -d "{\"ts\":\"$ts\",\"action_id\":\"approve\",\"user\":{\"id\":\"U111\",\"name\":\"alice\"}}")
  contains "click answer" "$answer" "Approved by alice" || return 1
  until_true 20 is_decided "$sappr" || return 1
  expect "decisions" "$(decisions "$sappr")" "approved/alice/slack;" &&
    expect "decidedBy" "$(jp approval "$sappr" '{.status.decidedBy}')" "alice"
}
check "a signed Slack click by a mapped approver records the decision via slack" slack_click_decides

slack_branch_continues() {
  until_true 90 step_is r-slack act Succeeded || { echo "act is $(step_phase r-slack act)"; return 1; }
}
check "the branch continues after the Slack decision" slack_branch_continues

rappr=
slack_refusals_change_nothing() {
  run r-refuse gate || return 1
  until_true 60 has_approval r-refuse || return 1
  rappr=$(approval_of r-refuse)
  local now body code
  now=$(date +%s)
  body=$(click_body U333 approve "$ns/$rappr")
  code=$(signed_post "$body" "$now" wrong-secret)
  expect "bad signature status" "$code" 401 && contains "bad signature body" "$(cat "$tmp/answer")" '"error":"unauthorized"' || return 1
  code=$(signed_post "$body" $((now - 600)))
  expect "stale status" "$code" 401 && contains "stale body" "$(cat "$tmp/answer")" "timestamp" || return 1
  code=$(curl -s -o "$tmp/answer" -w '%{http_code}' "$operator_url/approvals/slack" --data-raw "$body")
  expect "unsigned status" "$code" 401 || return 1
  body=$(click_body U999 approve "$ns/$rappr")
  code=$(signed_post "$body" "$now")
  expect "unmapped status" "$code" 200 && contains "unmapped answer" "$(cat "$tmp/answer")" "not mapped" || return 1
  body=$(click_body U222 approve "$ns/$rappr")
  code=$(signed_post "$body" "$now")
  expect "non-approver status" "$code" 200 && contains "non-approver answer" "$(cat "$tmp/answer")" "is not an approver" || return 1
  sleep 1
  expect "decisions" "$(decisions "$rappr")" "" && expect "decision" "$(jp approval "$rappr" '{.status.decision}')" ""
}
check "bad signature, stale, unsigned (401), unmapped and non-approver clicks change nothing" slack_refusals_change_nothing

slack_replay_refused() {
  local now body code
  now=$(date +%s)
  body=$(click_body U333 deny "$ns/$rappr")
  code=$(signed_post "$body" "$now")
  expect "first status" "$code" 200 && contains "first answer" "$(cat "$tmp/answer")" "Denied by carol" || return 1
  code=$(signed_post "$body" "$now")
  expect "replay status" "$code" 401 && contains "replay answer" "$(cat "$tmp/answer")" "replay" || return 1
  until_true 20 is_decided "$rappr" || return 1
  expect "decisions" "$(decisions "$rappr")" "denied/carol/slack;" &&
    until_true 60 step_is r-refuse act Skipped
}
check "a replayed signed click is refused (401); the first one denied, act Skipped" slack_replay_refused

# === timeouts ===

times_out() {
  run r-timeout quick || return 1
  until_true 60 has_approval r-timeout || return 1
  local a
  a=$(approval_of r-timeout)
  until_true 30 is_decided "$a" || { echo "not decided"; return 1; }
  expect "decision" "$(jp approval "$a" '{.status.decision}')" "denied" &&
    expect "decidedBy" "$(jp approval "$a" '{.status.decidedBy}')" "timeout" &&
    until_true 60 step_is r-timeout act Skipped && until_true 60 run_ended r-timeout
}
check "a 3s approval timeout denies (decidedBy timeout); act Skipped and the Run ends" times_out

timeout_survives_restart() {
  run r-restart slow || return 1
  until_true 60 has_approval r-restart || return 1
  local a expires
  a=$(approval_of r-restart)
  until_true 30 bash -c "[[ -n \$('$kubectl' -n $ns get approval $a -o jsonpath='{.status.expiresAt}') ]]" || return 1
  expires=$(jp approval "$a" '{.status.expiresAt}')
  stop_operator
  # Past the deadline while no operator runs.
  until_true 30 bash -c "(( \$(date +%s) > \$(date -d $expires +%s) + 1 ))"
  expect "decision while stopped" "$(jp approval "$a" '{.status.decision}')" "" || return 1
  start_operator || { echo "operator did not restart"; return 1; }
  until_true 30 is_decided "$a" || { echo "not decided after restart"; return 1; }
  expect "decidedBy" "$(jp approval "$a" '{.status.decidedBy}')" "timeout" &&
    until_true 60 step_is r-restart act Skipped
}
check "a deadline passed while the operator was down applies after its restart" timeout_survives_restart

# === quorum ===

quorum_of_two() {
  kn apply -f - >/dev/null <<EOF || return 1
apiVersion: vigil.dev/v1alpha1
kind: Playbook
metadata: {name: two-keys}
spec:
  inputs: {host: {type: string}}
  steps:
    - name: ask
      approval:
        message: "Wipe {{ inputs.host }}?"
        approvers: {groups: [soc-leads]}
        quorum: 2
        timeout: 10m
    - name: act
      dependsOn: [ask]
      image: busybox
      command: [sh, -c, "echo wiped"]
EOF
  run r-quorum two-keys || return 1
  until_true 60 has_approval r-quorum || return 1
  local a out
  a=$(approval_of r-quorum)
  out=$(decide_as "$a" '{"decision":"approved","reason":"first key"}' --as=alice --as-group=soc-leads)
  sleep 2
  expect "decision after one approval" "$(jp approval "$a" '{.status.decision}')" "" &&
    expect "act waits" "$(step_phase r-quorum act)" "Pending" || return 1
  out=$(decide_as "$a" '{"decision":"approved","reason":"again"}' --as=alice --as-group=soc-leads)
  contains "second vote by alice" "$out" "has already decided" || return 1
  out=$(decide_as "$a" '{"decision":"approved","reason":"second key"}' --as=dave --as-group=soc-leads)
  until_true 30 is_decided "$a" || { echo "not decided after two approvers: $out"; return 1; }
  expect "decision" "$(jp approval "$a" '{.status.decision}')" "approved" &&
    contains "decidedBy" "$(jp approval "$a" '{.status.decidedBy}')" "alice" &&
    contains "decidedBy" "$(jp approval "$a" '{.status.decidedBy}')" "dave" &&
    until_true 60 step_is r-quorum act Succeeded
}
check "a quorum of 2 needs two distinct approvers; one user voting twice is refused" quorum_of_two

finish
