#!/usr/bin/env bash
# The webhook gateway against the real API server: realistic alerts from Suricata (EVE JSON),
# Splunk (webhook alert action) and Prometheus Alertmanager become Runs with the right inputs,
# bearer and timestamped-HMAC auth work end to end, and dedupe holds across two gateway
# processes. Uses the cluster of KUBECONFIG and a namespace of its own; starts two
# vigil-operator processes with only the gateway on. Prints one PASS/FAIL line per check and a
# final "N passed, M failed" line; exits non-zero when a check failed.
set -uo pipefail

root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root"
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/vigil/target}
bin=$CARGO_TARGET_DIR/debug
ns=gw-$RANDOM$RANDOM
tmp=$(mktemp -d)
passed=0 failed=0 pids=()
secret=gw-test-secret

kn() { kubectl -n "$ns" "$@"; }
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null; done
  kubectl delete namespace "$ns" --wait=false >/dev/null 2>&1
  rm -rf "$tmp"
}
trap cleanup EXIT

# check NAME FUNCTION: runs FUNCTION in this shell (it may set variables and start processes).
check() {
  local name=$1
  shift
  if "$@" >"$tmp/check.out" 2>&1; then
    passed=$((passed + 1)); echo "PASS $name"
  else
    failed=$((failed + 1)); echo "FAIL $name"; tail -5 "$tmp/check.out" | sed 's/^/     /'
  fi
}

# post PORT PLAYBOOK BODY [CURL-ARGS...]: signs BODY GitHub style unless told otherwise.
post() {
  local port=$1 pb=$2 body=$3 sig
  shift 3
  sig=$(printf '%s' "$body" | openssl dgst -sha256 -hmac "$secret" | sed 's/^.* //')
  curl -sS -o "$tmp/answer" -w '%{http_code}' -X POST "http://127.0.0.1:$port/hooks/$ns/$pb" \
    -H 'Content-Type: application/json' -H "X-Hub-Signature-256: sha256=$sig" "$@" -d "$body"
}
answer() { python3 -c 'import json,sys; print(json.load(open(sys.argv[1])).get(sys.argv[2], ""))' "$tmp/answer" "$1"; }
run_inputs() { kn get run "$1" -o jsonpath='{.spec.inputs}'; }
field() { python3 -c 'import json,sys; print(json.loads(sys.argv[1]).get(sys.argv[2], ""))' "$1" "$2"; }

start_gateway() {
  local port=$1
  KUBECONFIG=$KUBECONFIG VIGIL_RECONCILER=false VIGIL_GATEWAY=true VIGIL_DASHBOARD=false \
    VIGIL_WATCH_NAMESPACE=$ns VIGIL_LISTEN=127.0.0.1:$port RUST_LOG=warn \
    "$bin/vigil-operator" >"$tmp/gateway-$port.log" 2>&1 &
  pids+=($!)
  for _ in $(seq 1 60); do
    curl -sf "http://127.0.0.1:$port/readyz" >/dev/null && return 0
    sleep 0.5
  done
  echo "gateway on $port never became ready"; tail -5 "$tmp/gateway-$port.log"; return 1
}

setup() {
  [[ -n ${VIGIL_SKIP_BUILD:-} ]] || cargo build -q -p vigil-operator || return 1
  kubectl create namespace "$ns" >/dev/null || return 1
  kn create secret generic alerts --from-literal=secret=$secret --from-literal=token=tok-123 >/dev/null || return 1
  kn apply -f - >/dev/null <<EOF || return 1
apiVersion: vigil.dev/v1alpha1
kind: Playbook
metadata: {name: suricata}
spec:
  inputs:
    ip: {type: string, required: true}
    dest: {type: string}
    signature: {type: string, required: true}
    severity: {type: integer}
  triggers:
    webhook:
      auth: {hmacSha256: {secretRef: {name: alerts, key: secret}}}
      filter: "body.event_type == 'alert'"
      inputs: {ip: "body.src_ip", dest: "body.dest_ip", signature: "body.alert.signature", severity: "body.alert.severity"}
      dedupe: {key: "body.flow_id", window: 10m}
  steps: [{name: triage, image: busybox, command: ["true"]}]
---
apiVersion: vigil.dev/v1alpha1
kind: Playbook
metadata: {name: splunk}
spec:
  inputs:
    username: {type: string, required: true}
    search: {type: string}
  triggers:
    webhook:
      auth: {bearer: {secretRef: {name: alerts, key: token}}}
      inputs: {username: "body.result.user", search: "body.search_name"}
  steps: [{name: triage, image: busybox, command: ["true"]}]
---
apiVersion: vigil.dev/v1alpha1
kind: Playbook
metadata: {name: alertmanager}
spec:
  inputs:
    alertname: {type: string, required: true}
    instance: {type: string}
    firing: {type: integer}
  triggers:
    webhook:
      auth: {timestampedHmac: {secretRef: {name: alerts, key: secret}}}
      filter: "body.status == 'firing'"
      inputs: {alertname: "body.alerts[0].labels.alertname", instance: "body.alerts[0].labels.instance", firing: "size(body.alerts)"}
      dedupe: {key: "body.groupKey", window: 5m}
  steps: [{name: triage, image: busybox, command: ["true"]}]
EOF
  port_a=$(free_port) && start_gateway "$port_a" || return 1
  port_b=$(free_port) && start_gateway "$port_b"
}

suricata_alert_becomes_a_run() {
  local body code run inputs
  body='{"timestamp":"2024-01-15T14:30:00.000000+0000","flow_id":1234567890123,"event_type":"alert","src_ip":"192.168.1.100","src_port":51234,"dest_ip":"203.0.113.9","dest_port":443,"proto":"TCP","alert":{"action":"allowed","gid":1,"signature_id":2024897,"rev":3,"signature":"ET MALWARE Cobalt Strike Beacon","category":"A Network Trojan was detected","severity":1}}'
  code=$(post "$port_a" suricata "$body" -H 'X-Request-Id: eve-1')
  [[ $code == 202 ]] || { echo "status $code: $(cat "$tmp/answer")"; return 1; }
  run=$(answer run); inputs=$(run_inputs "$run")
  [[ $(field "$inputs" ip) == 192.168.1.100 && $(field "$inputs" signature) == "ET MALWARE Cobalt Strike Beacon" && $(field "$inputs" severity) == 1 ]] || { echo "inputs $inputs"; return 1; }
  [[ $(kn get run "$run" -o jsonpath='{.spec.trigger.deliveryId}') == eve-1 ]] || { echo "no delivery id"; return 1; }
  [[ $(kn get run "$run" -o jsonpath='{.spec.trigger.bodyDigest}') == sha256:* ]] || { echo "no body digest"; return 1; }
  echo "$run" > "$tmp/suricata-run"
}

splunk_alert_with_a_bearer_token_becomes_a_run() {
  local body code run inputs
  body='{"sid":"scheduler__admin__search__RMD5a1","search_name":"Excessive failed logins","app":"search","owner":"admin","results_link":"https://splunk.example/app/search?sid=x","result":{"user":"jdoe","src":"192.168.1.100","count":"7"}}'
  code=$(curl -sS -o "$tmp/answer" -w '%{http_code}' -X POST "http://127.0.0.1:$port_a/hooks/$ns/splunk" \
    -H 'Content-Type: application/json' -H 'Authorization: Bearer tok-123' -d "$body")
  [[ $code == 202 ]] || { echo "status $code: $(cat "$tmp/answer")"; return 1; }
  run=$(answer run); inputs=$(run_inputs "$run")
  [[ $(field "$inputs" username) == jdoe && $(field "$inputs" search) == "Excessive failed logins" ]] || { echo "inputs $inputs"; return 1; }
  code=$(curl -sS -o "$tmp/answer" -w '%{http_code}' -X POST "http://127.0.0.1:$port_a/hooks/$ns/splunk" \
    -H 'Content-Type: application/json' -H 'Authorization: Bearer wrong' -d "$body")
  [[ $code == 401 ]] || { echo "a wrong token got $code"; return 1; }
}

alertmanager_alert_with_a_timestamped_signature_becomes_a_run() {
  local body code run inputs ts sig
  body='{"version":"4","groupKey":"{}:{alertname=\"HostCompromised\"}","status":"firing","receiver":"vigil","groupLabels":{"alertname":"HostCompromised"},"commonLabels":{"severity":"critical"},"externalURL":"http://alertmanager:9093","alerts":[{"status":"firing","labels":{"alertname":"HostCompromised","instance":"workstation-015","severity":"critical"},"annotations":{"summary":"EDR reports a beacon"},"startsAt":"2024-01-15T14:30:00Z","fingerprint":"a1b2c3"}]}'
  ts=$(date +%s)
  sig=$(printf 'v0:%s:%s' "$ts" "$body" | openssl dgst -sha256 -hmac "$secret" | sed 's/^.* //')
  code=$(curl -sS -o "$tmp/answer" -w '%{http_code}' -X POST "http://127.0.0.1:$port_a/hooks/$ns/alertmanager" \
    -H 'Content-Type: application/json' -H "X-Signature-Timestamp: $ts" -H "X-Signature: v0=$sig" -d "$body")
  [[ $code == 202 ]] || { echo "status $code: $(cat "$tmp/answer")"; return 1; }
  run=$(answer run); inputs=$(run_inputs "$run")
  [[ $(field "$inputs" alertname) == HostCompromised && $(field "$inputs" instance) == workstation-015 && $(field "$inputs" firing) == 1 ]] || { echo "inputs $inputs"; return 1; }
  ts=$((ts - 600))
  sig=$(printf 'v0:%s:%s' "$ts" "$body" | openssl dgst -sha256 -hmac "$secret" | sed 's/^.* //')
  code=$(curl -sS -o "$tmp/answer" -w '%{http_code}' -X POST "http://127.0.0.1:$port_a/hooks/$ns/alertmanager" \
    -H 'Content-Type: application/json' -H "X-Signature-Timestamp: $ts" -H "X-Signature: v0=$sig" -d "$body")
  [[ $code == 401 ]] || { echo "a 10-minute-old signature got $code"; return 1; }
}

dedupe_holds_across_two_gateway_processes() {
  local body code first second runs
  body='{"event_type":"alert","flow_id":777,"src_ip":"10.20.0.15","dest_ip":"203.0.113.9","alert":{"signature":"ET SCAN Nmap","severity":2}}'
  code=$(post "$port_a" suricata "$body")
  [[ $code == 202 ]] || { echo "first: $code $(cat "$tmp/answer")"; return 1; }
  first=$(answer run)
  code=$(post "$port_b" suricata "$body")
  [[ $code == 200 && $(answer duplicate) == True ]] || { echo "second: $code $(cat "$tmp/answer")"; return 1; }
  second=$(answer run)
  [[ $first == "$second" ]] || { echo "$first != $second"; return 1; }
  runs=$(kn get runs -o name | grep -c . )
  [[ $runs == 4 ]] || { echo "$runs Runs, want 4 (3 sources + 1 deduped)"; kn get runs; return 1; }
}

rejections_create_nothing() {
  local code before after
  before=$(kn get runs -o name | grep -c .)
  code=$(post "$port_a" suricata '{"event_type":"stats","flow_id":1}')
  [[ $code == 200 && $(answer filtered) == True ]] || { echo "filtered: $code $(cat "$tmp/answer")"; return 1; }
  code=$(post "$port_a" suricata '{"event_type":"alert","flow_id":2,"alert":{"signature":"x"}}')
  [[ $code == 422 ]] || { echo "missing src_ip: $code $(cat "$tmp/answer")"; return 1; }
  code=$(curl -sS -o "$tmp/answer" -w '%{http_code}' -X POST "http://127.0.0.1:$port_a/hooks/$ns/suricata" \
    -H 'Content-Type: application/json' -d '{"event_type":"alert"}')
  [[ $code == 401 ]] || { echo "unsigned: $code"; return 1; }
  code=$(post "$port_a" nosuch '{}')
  [[ $code == 404 ]] || { echo "unknown playbook: $code"; return 1; }
  after=$(kn get runs -o name | grep -c .)
  [[ $before == "$after" ]] || { echo "runs went from $before to $after"; return 1; }
}

check "setup: namespace, secrets, three playbooks, two gateway processes" setup || {
  echo "$passed passed, $((failed)) failed"; exit 1; }
check "a Suricata EVE alert becomes a Run with its inputs and provenance" suricata_alert_becomes_a_run
check "a Splunk webhook alert with a bearer token becomes a Run; a wrong token is refused" splunk_alert_with_a_bearer_token_becomes_a_run
check "an Alertmanager notification with a timestamped HMAC becomes a Run; a stale one is refused" alertmanager_alert_with_a_timestamped_signature_becomes_a_run
check "the same alert sent to two gateway processes makes one Run" dedupe_holds_across_two_gateway_processes
check "filtered, invalid, unsigned and unknown-playbook alerts create no Run" rejections_create_nothing
echo "$passed passed, $failed failed"
((failed == 0))
