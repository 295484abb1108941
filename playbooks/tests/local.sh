#!/usr/bin/env bash
# End-to-end checks of the reference playbooks, without a cluster: starts the mock SOC services
# on a free port, runs each scenario alert with `vigil run --local`, and asserts on the calls
# the playbooks made (the mock's GET /_calls) and on the Run's outputs.
#
#   playbooks/tests/local.sh            # builds vigil, vigil-step and the mock first
#   SKIP_BUILD=1 playbooks/tests/local.sh
#
# Prints one line per check and `N passed, M failed`; exits non-zero when a check failed.
# Needs bash, python3, node and curl (the steps run as local processes). `make test` calls it.
set -uo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
PB=$ROOT/playbooks
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}/debug
VIGIL=${VIGIL:-$TARGET/vigil}
MOCK=${MOCK:-$TARGET/mock-services}

if [[ -z ${SKIP_BUILD:-} ]]; then
  (cd "$ROOT" && cargo build -q -p vigil-cli -p vigil-step -p vigil-mock-services) || { echo "build failed"; exit 2; }
fi
for tool in "$VIGIL" "$MOCK"; do
  [[ -x $tool ]] || { echo "missing $tool (build it, or set VIGIL / MOCK)"; exit 2; }
done
for tool in python3 node curl; do
  command -v "$tool" >/dev/null || { echo "missing $tool on PATH"; exit 2; }
done

WORK=$(mktemp -d "${TMPDIR:-/tmp}/vigil-playbooks.XXXXXX")
MOCK_PID=
cleanup() {
  [[ -n $MOCK_PID ]] && kill "$MOCK_PID" 2>/dev/null && wait "$MOCK_PID" 2>/dev/null
  [[ -n ${KEEP:-} ]] && echo "kept $WORK" || rm -rf "$WORK"
}
trap cleanup EXIT

PORT=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
M=http://127.0.0.1:$PORT
"$MOCK" --listen "127.0.0.1:$PORT" >"$WORK/mock.log" 2>&1 &
MOCK_PID=$!
for _ in $(seq 100); do
  curl -fs "$M/_healthz" >/dev/null 2>&1 && break
  sleep 0.1
done
curl -fs "$M/_healthz" >/dev/null || { echo "the mock did not start:"; cat "$WORK/mock.log"; exit 2; }

# soc-config.yaml's ConfigMap and Secrets as one env file, pointed at this mock.
python3 - "$PB/soc-config.yaml" "$M" >"$WORK/soc.env" <<'EOF'
import re, sys
for line in open(sys.argv[1]):
    m = re.match(r"^  ([A-Z][A-Z0-9_]*): *(.*)$", line.rstrip("\n"))
    if not m:
        continue
    value = m.group(2)
    value = value[1:value.index('"', 1)] if value.startswith('"') else value.split(" #")[0].strip()
    print(f"{m.group(1)}={value.replace('http://127.0.0.1:9090', sys.argv[2])}")
EOF

# check.py RUN.json CALLS.json DESCRIPTION EXPRESSION: one PASS/FAIL line.
cat >"$WORK/check.py" <<'EOF'
import json, sys
run_file, calls_file, desc, expr = sys.argv[1:5]
try:
    run = json.load(open(run_file))
except Exception:
    run = {}
calls = json.load(open(calls_file))

def select(method=None, prefix="", suffix=""):
    return [c for c in calls if (method is None or c["method"] == method)
            and c["path"].startswith(prefix) and c["path"].endswith(suffix)]
def count(method=None, prefix="", suffix=""):
    return len(select(method, prefix, suffix))
def hosts_isolated():
    return sorted(c["path"].split("/")[3] for c in select("POST", "/edr/hosts/", "/isolate"))
def events(kind):
    return [c["body"] for c in select("POST", "/siem/events") if isinstance(c["body"], dict) and c["body"].get("type") == kind]
def phase(step):
    return run.get("steps", {}).get(step, {}).get("phase")
def out(step):
    return run.get("steps", {}).get(step, {}).get("outputs") or {}

try:
    ok = bool(eval(expr))
    detail = ""
except Exception as err:
    ok, detail = False, f" ({type(err).__name__}: {err})"
print(f"{'PASS' if ok else 'FAIL'}  {desc}{detail}")
sys.exit(0 if ok else 1)
EOF

PASSED=0
FAILED=0
CASE=
# scenario NAME PLAYBOOK ALERT [vigil flags...]: reset the mock, run, collect the calls.
scenario() {
  CASE=$1
  local playbook=$2 alert=$3
  shift 3
  curl -fs -X POST "$M/_reset" >/dev/null
  for fault in "${FAULTS[@]}"; do
    curl -fs "$M/_faults" -d "$fault" >/dev/null
  done
  FAULTS=()
  "$VIGIL" run --local -f "$PB/$playbook" --input "$PB/alerts/$alert" --env-file "$WORK/soc.env" -o json "$@" \
    >"$WORK/$CASE.json" 2>"$WORK/$CASE.log"
  RC=$?
  curl -fs "$M/_calls" >"$WORK/$CASE.calls.json"
}
check() {  # DESCRIPTION PYTHON-EXPRESSION (over run, calls and the helpers of check.py)
  if python3 "$WORK/check.py" "$WORK/$CASE.json" "$WORK/$CASE.calls.json" "$CASE: $1" "$2"; then
    PASSED=$((PASSED + 1))
  else
    FAILED=$((FAILED + 1))
    [[ -n ${VERBOSE:-} ]] && tail -20 "$WORK/$CASE.log"
  fi
}
common() {  # SEVERITY SCORE: what every incident-response run must do
  check "run exit code 0 (was $RC)" "$RC == 0"
  check "score $2, severity $1" "out('score').get('score') == $2 and out('score').get('severity') == '$1'"
  check "one ServiceNow incident" "count('POST', '/api/now/table/incident') == 1"
  check "one audit event with severity $1" "len(events('audit')) == 1 and events('audit')[0]['severity'] == '$1'"
}
FAULTS=()

# --- incident-response: one scenario user per severity branch ------------------------------
scenario ir-alice-low incident-response.yaml ids-alert-alice.json --approve
common low 0
check "logged to the SIEM by log-low" "len(events('triage')) == 1"
check "no EDR isolate" "count('POST', '/edr/hosts/', '/isolate') == 0"
check "no IdP disable" "count('POST', '/idp/', '/disable') == 0"

scenario ir-bob-medium incident-response.yaml ids-alert-bob.json --approve
common medium 45
check "one Slack message" "count('POST', '/slack/api/chat.postMessage') == 1"
check "ticket patched with a monitoring note" "count('PATCH', '/api/now/table/incident/') == 1"
check "no EDR isolate" "count('POST', '/edr/hosts/', '/isolate') == 0"
check "no IdP disable" "count('POST', '/idp/', '/disable') == 0"

scenario ir-jdoe-high-approved incident-response.yaml ids-alert-jdoe.json --approve
common high 70
check "exactly one isolate, of workstation-015" "hosts_isolated() == ['workstation-015']"
check "no IdP disable" "count('POST', '/idp/', '/disable') == 0"
check "audit records the approval" "events('audit')[0]['decisions']['approve-quarantine']['decision'] == 'approved'"

scenario ir-jdoe-high-denied incident-response.yaml ids-alert-jdoe.json --deny
common high 70
check "denied: no isolate" "count('POST', '/edr/hosts/', '/isolate') == 0 and phase('quarantine-high') == 'Skipped'"
check "audit records the denial" "events('audit')[0]['decisions']['approve-quarantine']['decision'] == 'denied'"

scenario ir-mallory-critical incident-response.yaml ids-alert-mallory.json --approve
common critical 160
check "exactly one IdP disable, of mallory" "[c['path'] for c in select('POST', '/idp/', '/disable')] == ['/idp/users/mallory/disable']"
check "sessions revoked once" "count('POST', '/idp/users/mallory/revoke-sessions') == 1"
check "one isolate per device of mallory (3)" "hosts_isolated() == ['laptop-mallory-01', 'srv-build-03', 'ws-mallory-02']"
check "one emergency Slack message" "count('POST', '/slack/api/chat.postMessage') == 1"
check "no approval asked" "phase('approve-quarantine') == 'Skipped'"

FAULTS=('{"path_prefix": "/ti/", "status": 503}')
scenario ir-jdoe-ti-down incident-response.yaml ids-alert-jdoe.json --approve
common low 30
check "threat-intel failed after 3 attempts, the Run went on" "phase('threat-intel') == 'Failed' and count('GET', '/ti/') == 3"
check "missing lists threat-intel" "out('score').get('missing') == ['threat-intel']"
check "summary confidence lowered" "out('summary').get('confidence') == 'medium'"

# --- the other playbooks --------------------------------------------------------------------
scenario phishing-approved phishing-triage.yaml phishing-report.json --approve
check "run exit code 0 (was $RC)" "$RC == 0"
check "verdict malicious" "out('score').get('verdict') == 'malicious'"
check "purged by sender: 4 copies" "[c['body'] for c in select('POST', '/mail/purge')] == [{'sender': 'it-support@login-micros0ft.example'}] and out('purge').get('purged') == 4"
check "domain blocked" "[c['body']['indicator'] for c in select('POST', '/firewall/blocks')] == ['login-micros0ft.example']"
check "one ticket" "count('POST', '/api/now/table/incident') == 1"

scenario phishing-denied phishing-triage.yaml phishing-report.json --deny
check "run exit code 0 (was $RC)" "$RC == 0"
check "no purge, no block" "count('POST', '/mail/purge') == 0 and count('POST', '/firewall/blocks') == 0"
check "one ticket" "count('POST', '/api/now/table/incident') == 1"

scenario malware malware-containment.yaml malware-alert.json
check "run exit code 0 (was $RC)" "$RC == 0"
check "both affected hosts isolated" "hosts_isolated() == ['srv-build-03', 'ws-mallory-02']"
check "hash blocked" "[c['body']['type'] for c in select('POST', '/firewall/blocks')] == ['hash']"
check "one ticket" "count('POST', '/api/now/table/incident') == 1"

scenario offboarding-approved user-offboarding.yaml offboarding-request.json --approve
check "run exit code 0 (was $RC)" "$RC == 0"
check "bob disabled and signed out" "count('POST', '/idp/users/bob/disable') == 1 and count('POST', '/idp/users/bob/revoke-sessions') == 1"
check "ownership to the manager, dave" "[c['body'] for c in select('POST', '/idp/users/bob/transfer-ownership')] == [{'to': 'dave'}]"
check "dave told on Slack" "[c['body']['channel'] for c in select('POST', '/slack/api/chat.postMessage')] == ['@dave']"

scenario offboarding-denied user-offboarding.yaml offboarding-request.json --deny
check "run exit code 0 (was $RC)" "$RC == 0"
check "denied: no IdP action at all" "count('POST', '/idp/') == 0"

echo "$PASSED passed, $FAILED failed"
[[ $FAILED -eq 0 ]]
