#!/usr/bin/env bash
# Smoke tests of the local control plane and the process node, with kubectl only.
# Uses the cluster of $VIGIL_CLUSTER_DIR when it answers; otherwise starts one and stops it at
# the end. Prints one PASS/FAIL line per check and a final "N passed, M failed" line; exits
# non-zero when a check failed.
set -uo pipefail

here=$(cd "$(dirname "$0")" && pwd)
dir=${VIGIL_CLUSTER_DIR:-/tmp/vigil-cluster}
export KUBECONFIG=$dir/admin.kubeconfig
started_here=0
tmp=$(mktemp -d)
# Unique per run: several runs may share a cluster, and every pod shares the host's network.
ns=vigil-smoke-$$
group=run$$.smoke.vigil.dev
port=$((20000 + RANDOM % 20000))

kc() { "$dir/bin/kubectl" "$@"; }
cleanup() {
  if [[ -x $dir/bin/kubectl ]]; then
    kc delete namespace "$ns" --wait=false >/dev/null 2>&1
    kc delete crd widgets.$group --wait=false >/dev/null 2>&1
  fi
  ((started_here)) && "$here/down.sh" >/dev/null 2>&1
  rm -rf "$tmp"
}
trap cleanup EXIT

if ! { [[ -x $dir/bin/kubectl ]] && kc get --raw /readyz >/dev/null 2>&1; }; then
  echo "smoke: no cluster answers in $dir; starting one"
  "$here/up.sh" >/dev/null || { echo "FAIL cluster-up"; echo "0 passed, 1 failed"; exit 1; }
  started_here=1
fi
kc create namespace "$ns" >/dev/null
for _ in $(seq 100); do kc get serviceaccount default -n "$ns" >/dev/null 2>&1 && break; sleep 0.2; done

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
  fi
}
# expect WHAT ACTUAL WANTED
expect() {
  [[ $2 == "$3" ]] && return 0
  printf '%s: got %q, want %q\n' "$1" "$2" "$3"
  return 1
}
apply() { kc apply -n "$ns" -f - >/dev/null; }
pod_of() { kc get pods -n "$ns" -l "job-name=$1" -o 'jsonpath={.items[0].metadata.name}'; }

server_is_v1_37_2() {
  local version
  version=$(kc version -o json | python3 -c 'import json,sys; print(json.load(sys.stdin)["serverVersion"]["gitVersion"])')
  expect "server version" "$version" v1.37.2
}

rbac_and_impersonation_work() {
  local sa admin
  sa=$(kc auth can-i create pods -n default --as=system:serviceaccount:default:default 2>&1)
  admin=$(kc auth can-i create pods -n default 2>&1)
  expect "default service account may create pods" "$sa" no && expect "admin may create pods" "$admin" yes
}

job_reads_configmap_and_returns_its_termination_message() {
  apply <<'EOF'
apiVersion: v1
kind: ConfigMap
metadata: {name: step-input}
data:
  input.json: '{"username": "alice", "ip": "10.1.2.3"}'
---
apiVersion: batch/v1
kind: Job
metadata: {name: enrich}
spec:
  backoffLimit: 0
  template:
    spec:
      restartPolicy: Never
      containers:
      - name: step
        image: python:3.12-slim
        command: [python3, -c]
        args:
        - |
          import json
          data = json.load(open("/vigil/input/input.json"))
          out = {"user": data["username"], "risk": 42}
          open("/dev/termination-log", "w").write(json.dumps(out, sort_keys=True))
        volumeMounts: [{name: input, mountPath: /vigil/input, readOnly: true}]
      volumes:
      - name: input
        configMap: {name: step-input}
EOF
  kc wait -n "$ns" --for=condition=complete job/enrich --timeout=60s || return 1
  local message
  message=$(kc get pod -n "$ns" "$(pod_of enrich)" -o jsonpath='{.status.containerStatuses[0].state.terminated.message}')
  expect "termination message" "$message" '{"risk": 42, "user": "alice"}'
}

failing_container_fails_its_job_with_exit_code_3() {
  apply <<'EOF'
apiVersion: batch/v1
kind: Job
metadata: {name: broken}
spec:
  backoffLimit: 0
  template:
    spec:
      restartPolicy: Never
      containers:
      - {name: step, image: bash:5, command: [bash, -c, "echo failing >&2; exit 3"]}
EOF
  kc wait -n "$ns" --for=condition=failed job/broken --timeout=60s || return 1
  local code
  code=$(kc get pod -n "$ns" "$(pod_of broken)" -o jsonpath='{.status.containerStatuses[0].state.terminated.exitCode}')
  expect "exit code" "$code" 3
}

deleting_a_job_garbage_collects_its_pods() {
  apply <<'EOF'
apiVersion: batch/v1
kind: Job
metadata: {name: long}
spec:
  template:
    spec:
      restartPolicy: Never
      terminationGracePeriodSeconds: 5
      containers:
      - {name: step, image: busybox, command: [sleep, "600"]}
EOF
  kc wait -n "$ns" --for=jsonpath='{.status.ready}'=1 job/long --timeout=60s || return 1
  local pod pid
  pod=$(pod_of long)
  pid=$(cat "$dir"/pods/"${ns}_${pod}"_*/pids/step)
  kc delete job long -n "$ns" --cascade=background >/dev/null || return 1
  kc wait -n "$ns" --for=delete "pod/$pod" --timeout=60s || return 1
  if kill -0 "$pid" 2>/dev/null; then
    echo "process $pid of the deleted pod still runs"
    return 1
  fi
}

crd_is_served_and_validates_its_schema() {
  kc apply -f - >/dev/null <<EOF || return 1
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata: {name: widgets.$group}
spec:
  group: $group
  scope: Namespaced
  names: {plural: widgets, singular: widget, kind: Widget}
  versions:
  - name: v1
    served: true
    storage: true
    schema:
      openAPIV3Schema:
        type: object
        properties:
          spec:
            type: object
            required: [size]
            properties:
              size: {type: integer, minimum: 1}
EOF
  kc wait --for=condition=established crd/widgets.$group --timeout=30s >/dev/null || return 1
  printf 'apiVersion: %s/v1\nkind: Widget\nmetadata: {name: good}\nspec: {size: 3}\n' "$group" | apply || return 1
  kc get widget good -n "$ns" >/dev/null || return 1
  if printf 'apiVersion: %s/v1\nkind: Widget\nmetadata: {name: bad}\nspec: {size: "big"}\n' "$group" | kc apply -n "$ns" -f - >"$tmp/bad" 2>&1; then
    echo "an object breaking the schema was accepted"
    return 1
  fi
  grep -q 'Invalid value' "$tmp/bad" || { cat "$tmp/bad"; return 1; }
}

pod_reaches_the_api_with_its_service_account_token() {
  apply <<'EOF'
apiVersion: v1
kind: Pod
metadata: {name: in-cluster}
spec:
  restartPolicy: Never
  containers:
  - name: main
    image: python:3.12-slim
    command: [python3, -c]
    args:
    - |
      import json, os, ssl, urllib.request, urllib.error
      sa = "/var/run/secrets/kubernetes.io/serviceaccount"
      ns = open(f"{sa}/namespace").read()
      url = f"https://{os.environ['KUBERNETES_SERVICE_HOST']}:{os.environ['KUBERNETES_SERVICE_PORT']}/api/v1/namespaces/{ns}/secrets"
      req = urllib.request.Request(url, headers={"Authorization": "Bearer " + open(f"{sa}/token").read()})
      try:
          urllib.request.urlopen(req, context=ssl.create_default_context(cafile=f"{sa}/ca.crt"))
      except urllib.error.HTTPError as e:
          print(e.code, json.load(e)["message"])
EOF
  kc wait -n "$ns" --for=jsonpath='{.status.phase}'=Succeeded pod/in-cluster --timeout=60s || return 1
  local out
  out=$(kc logs -n "$ns" in-cluster)
  expect "API answer" "$out" "403 secrets is forbidden: User \"system:serviceaccount:$ns:default\" cannot list resource \"secrets\" in API group \"\" in the namespace \"$ns\""
}

non_root_pod_writes_its_empty_dir_and_sees_env() {
  apply <<'EOF'
apiVersion: v1
kind: Secret
metadata: {name: creds}
stringData: {API_TOKEN: s3cret}
---
apiVersion: v1
kind: Pod
metadata: {name: non-root, labels: {team: soc}}
spec:
  restartPolicy: Never
  securityContext: {runAsUser: 1000, runAsGroup: 3000, fsGroup: 2000}
  initContainers:
  - name: prepare
    image: busybox
    command: [sh, -c, "echo prepared > /work/ready"]
    volumeMounts: [{name: work, mountPath: /work}]
  containers:
  - name: main
    image: bash:5
    command: [bash, -c]
    args: ['echo "$(id -u):$(cat /work/ready):$POD_NAME:$SMOKE_API_TOKEN:$(cat /podinfo/team)"; touch /work/out']
    env:
    - name: POD_NAME
      valueFrom: {fieldRef: {fieldPath: metadata.name}}
    envFrom: [{prefix: SMOKE_, secretRef: {name: creds}}]
    volumeMounts:
    - {name: work, mountPath: /work}
    - {name: podinfo, mountPath: /podinfo}
  volumes:
  - {name: work, emptyDir: {}}
  - name: podinfo
    downwardAPI: {items: [{path: team, fieldRef: {fieldPath: "metadata.labels['team']"}}]}
EOF
  kc wait -n "$ns" --for=jsonpath='{.status.phase}'=Succeeded pod/non-root --timeout=60s || return 1
  expect "output" "$(kc logs -n "$ns" non-root)" "1000:prepared:non-root:s3cret:soc"
}

active_deadline_fails_the_pod() {
  apply <<'EOF'
apiVersion: v1
kind: Pod
metadata: {name: slow}
spec:
  restartPolicy: Never
  activeDeadlineSeconds: 2
  terminationGracePeriodSeconds: 1
  containers:
  - {name: main, image: busybox, command: [sleep, "600"]}
EOF
  kc wait -n "$ns" --for=jsonpath='{.status.phase}'=Failed pod/slow --timeout=60s || return 1
  expect "reason" "$(kc get pod -n "$ns" slow -o jsonpath='{.status.reason}')" DeadlineExceeded
}

on_failure_restarts_the_container_until_it_succeeds() {
  apply <<'EOF'
apiVersion: v1
kind: Pod
metadata: {name: flaky}
spec:
  restartPolicy: OnFailure
  containers:
  - name: main
    image: busybox
    command: [sh, -c, "if [ -f /state/tried ]; then exit 0; fi; touch /state/tried; exit 1"]
    volumeMounts: [{name: state, mountPath: /state}]
  volumes: [{name: state, emptyDir: {}}]
EOF
  kc wait -n "$ns" --for=jsonpath='{.status.phase}'=Succeeded pod/flaky --timeout=60s || return 1
  expect "restarts" "$(kc get pod -n "$ns" flaky -o jsonpath='{.status.containerStatuses[0].restartCount}')" 1
}

deployment_serves_through_its_service() {
  apply <<EOF
apiVersion: apps/v1
kind: Deployment
metadata: {name: echo}
spec:
  replicas: 1
  selector: {matchLabels: {app: echo}}
  template:
    metadata: {labels: {app: echo}}
    spec:
      containers:
      - name: web
        image: python:3.12-slim
        command: [python3, -m, http.server, "$port"]
        ports: [{containerPort: $port}]
---
apiVersion: v1
kind: Service
metadata: {name: echo}
spec:
  selector: {app: echo}
  ports: [{port: $port}]
---
apiVersion: v1
kind: Pod
metadata: {name: caller}
spec:
  restartPolicy: OnFailure
  containers:
  - name: main
    image: python:3.12-slim
    command: [python3, -c, "import urllib.request as u, sys; print(u.urlopen('http://echo:$port/', timeout=2).status)"]
EOF
  kc rollout status -n "$ns" deployment/echo --timeout=60s >/dev/null || return 1
  kc wait -n "$ns" --for=jsonpath='{.status.phase}'=Succeeded pod/caller --timeout=60s || return 1
  local endpoints
  endpoints=$(kc get endpointslices -n "$ns" -l kubernetes.io/service-name=echo -o 'jsonpath={.items[0].endpoints[0].addresses[0]}')
  [[ -n $endpoints ]] || { echo "service echo has no endpoints"; return 1; }
  expect "status through the service name" "$(kc logs -n "$ns" caller | tail -1)" 200
}

check "kubectl version shows server v1.37.2" server_is_v1_37_2
check "RBAC and impersonation: default SA may not create pods" rbac_and_impersonation_work
check "Job reads its ConfigMap and returns JSON as termination message" job_reads_configmap_and_returns_its_termination_message
check "failing container (exit 3) fails its Job" failing_container_fails_its_job_with_exit_code_3
check "deleting a Job (Background) removes its pods and processes" deleting_a_job_garbage_collects_its_pods
check "CRD is served and refuses objects that break its schema" crd_is_served_and_validates_its_schema
check "pod calls the API with its projected service account token" pod_reaches_the_api_with_its_service_account_token
check "non-root pod: init container, emptyDir, env, envFrom, downwardAPI" non_root_pod_writes_its_empty_dir_and_sees_env
check "activeDeadlineSeconds fails the pod with DeadlineExceeded" active_deadline_fails_the_pod
check "restartPolicy OnFailure restarts until success" on_failure_restarts_the_container_until_it_succeeds
check "Deployment is reachable through its Service name" deployment_serves_through_its_service

echo "$passed passed, $failed failed"
((failed == 0))
