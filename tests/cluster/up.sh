#!/usr/bin/env bash
# Starts a local Kubernetes control plane on loopback: etcd, kube-apiserver,
# kube-controller-manager and the vigil process node (pods run as host processes).
# State lives in $VIGIL_CLUSTER_DIR (default /tmp/vigil-cluster). Safe to run twice.
#
# Environment:
#   VIGIL_CLUSTER_DIR     state directory                        (/tmp/vigil-cluster)
#   VIGIL_ETCD_PORT       etcd client port                       (12379)
#   VIGIL_ETCD_PEER_PORT  etcd peer port                         (12380)
#   VIGIL_APISERVER_PORT  kube-apiserver port                    (16443)
#   VIGIL_SERVICE_CIDR    service cluster IP range               (10.96.0.0/16)
#   VIGIL_CLUSTER_BIN     prebuilt etcd/kube-*/kubectl/helm dir  (built by build.sh)
#   VIGIL_NODE_BIN        prebuilt vigil-node binary             (cargo build -p vigil-test-node)
#   VIGIL_NODE_IMAGE_BIN  executables of vigil-* images          ($CARGO_TARGET_DIR/debug)
#   VIGIL_NODE_IP         address pods report                    (first global IPv4 of the host)
#   VIGIL_NODE_PORT       process node's log endpoint port       (11250, a free one if taken)
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
dir=${VIGIL_CLUSTER_DIR:-/tmp/vigil-cluster}
etcd_port=${VIGIL_ETCD_PORT:-12379}
etcd_peer_port=${VIGIL_ETCD_PEER_PORT:-12380}
api_port=${VIGIL_APISERVER_PORT:-16443}
service_cidr=${VIGIL_SERVICE_CIDR:-10.96.0.0/16}
node_port=${VIGIL_NODE_PORT:-11250}
node_name=vigil-node
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/vigil/target}
components=(etcd kube-apiserver kube-controller-manager vigil-node)

log() { printf 'cluster-up: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }
started=$SECONDS

[[ $dir == /* && $dir != / ]] || die "VIGIL_CLUSTER_DIR must be an absolute path other than / (got '$dir')"
[[ $EUID -eq 0 ]] || die "run as root: the process node mounts volumes in private mount namespaces"
command -v openssl >/dev/null || die "openssl is missing (apt-get install -y openssl)"
command -v curl >/dev/null || die "curl is missing (apt-get install -y curl)"

# One cluster-up or cluster-down at a time per directory; the second waits, then finds the
# cluster up. Components get the descriptor closed (9>&-) so they do not hold the lock.
mkdir -p "$dir"
if [[ -z ${VIGIL_CLUSTER_LOCKED:-} ]]; then
  exec 9>"$dir/.lock"
  flock -w 600 9 || die "another cluster-up or cluster-down keeps $dir/.lock"
fi

pid_of() { cat "$dir/run/$1.pid" 2>/dev/null || true; }
alive() { local pid; pid=$(pid_of "$1"); [[ -n $pid ]] && kill -0 "$pid" 2>/dev/null; }
readyz() {
  curl -sf --max-time 2 --cacert "$dir/pki/ca.crt" --cert "$dir/pki/admin.crt" --key "$dir/pki/admin.key" \
    "https://127.0.0.1:$api_port/readyz" >/dev/null 2>&1
}

print_env() {
  cat <<EOF
# Local cluster is up ($dir). Logs: $dir/logs/<component>.log
export PATH=$dir/bin:\$PATH
export KUBECONFIG=$dir/admin.kubeconfig
EOF
}

# --- already up? -----------------------------------------------------------------------
up=0
for c in "${components[@]}"; do alive "$c" && up=$((up + 1)); done
if ((up == ${#components[@]})) && readyz; then
  log "already up"
  print_env
  exit 0
fi
if ((up > 0)) || [[ -d $dir/run ]]; then
  log "found a partly running or stale cluster in $dir; stopping it first"
  VIGIL_CLUSTER_LOCKED=1 "$here/down.sh" >&2
fi

# --- ports ------------------------------------------------------------------------------
# Pods share the host's network and report the node's address. The API server refuses
# loopback endpoints, so a Service only gets endpoints with a non-loopback address.
node_ip=${VIGIL_NODE_IP:-}
if [[ -z $node_ip ]]; then
  node_ip=$(ip -4 -o addr show scope global 2>/dev/null | awk '{split($4, a, "/"); print a[1]; exit}' || true)
fi
if [[ -z $node_ip ]]; then
  node_ip=$(hostname -I 2>/dev/null | tr ' ' '\n' | grep -E '^[0-9.]+$' | grep -v '^127\.' | head -1 || true)
fi
if [[ -z $node_ip ]]; then
  node_ip=127.0.0.1
  log "warning: the host has no non-loopback IPv4 address; Services will have no endpoints"
fi

# The node's log port needs no check: when it is taken the node picks a free one.
for hostport in "127.0.0.1:$etcd_port" "127.0.0.1:$etcd_peer_port" "127.0.0.1:$api_port"; do
  if (exec 3<>"/dev/tcp/${hostport%:*}/${hostport##*:}") 2>/dev/null; then
    who=$(ss -ltnpH "sport = :${hostport##*:}" 2>/dev/null | awk '{print $NF}' | head -1 || true)
    die "port $hostport is already in use${who:+ by $who}; free it or set VIGIL_ETCD_PORT, VIGIL_ETCD_PEER_PORT or VIGIL_APISERVER_PORT"
  fi
done

# --- binaries ---------------------------------------------------------------------------
if [[ -n ${VIGIL_CLUSTER_BIN:-} ]]; then
  bin=$VIGIL_CLUSTER_BIN
else
  bin=$("$here/build.sh") || die "building the control plane binaries failed (see output above)"
fi
for b in etcd kube-apiserver kube-controller-manager kubectl helm; do
  [[ -x $bin/$b ]] || die "binary $b is missing in $bin (run tests/cluster/build.sh or set VIGIL_CLUSTER_BIN)"
done

if [[ -n ${VIGIL_NODE_BIN:-} ]]; then
  node_bin=$VIGIL_NODE_BIN
else
  log "building the process node (cargo build -p vigil-test-node; waits while another build holds the target dir)"
  node_bin=$CARGO_TARGET_DIR/debug/vigil-node
  if ! (cd "$repo" && cargo build -q -p vigil-test-node); then
    [[ -x $node_bin ]] || die "building vigil-test-node failed"
    log "warning: building vigil-test-node failed (see above); using the existing $node_bin"
  fi
fi
[[ -x $node_bin ]] || die "process node binary $node_bin is missing (set VIGIL_NODE_BIN)"
built=$SECONDS

# --- state directory and certificates ----------------------------------------------------
mkdir -p "$dir"/{pki,logs,run,pods}
chmod 0755 "$dir" "$dir/pods"
chmod 0700 "$dir/pki"
rm -rf "$dir/etcd"
ln -sfn "$bin" "$dir/bin"
pki=$dir/pki

keygen() { [[ -f $1 ]] || openssl ecparam -name prime256v1 -genkey -noout -out "$1" 2>/dev/null; }
# sign NAME SUBJECT EXTENSIONS: a certificate for NAME.key signed by the cluster CA.
sign() {
  local name=$1 subject=$2 ext=$3
  [[ -f $pki/$name.crt ]] && return 0
  keygen "$pki/$name.key"
  openssl req -new -key "$pki/$name.key" -subj "$subject" -out "$pki/$name.csr" 2>/dev/null
  openssl x509 -req -in "$pki/$name.csr" -CA "$pki/ca.crt" -CAkey "$pki/ca.key" -CAcreateserial \
    -days 3650 -sha256 -extfile <(printf '%b' "$ext") -out "$pki/$name.crt" 2>/dev/null
  rm -f "$pki/$name.csr"
}
if [[ ! -f $pki/ca.crt ]]; then
  rm -f "$pki"/*.crt "$pki"/*.key
  keygen "$pki/ca.key"
  openssl req -x509 -new -key "$pki/ca.key" -subj "/CN=vigil-local-ca" -days 3650 -sha256 \
    -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign,digitalSignature" \
    -out "$pki/ca.crt" 2>/dev/null
fi
client="basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage=clientAuth"
svc_ip=$(echo "$service_cidr" | awk -F'[./]' '{print $1"."$2"."$3"."$4+1}')
sign apiserver "/CN=kube-apiserver" "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\nsubjectAltName=IP:127.0.0.1,IP:$svc_ip,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local"
sign admin "/O=system:masters/CN=vigil-admin" "$client"
sign controller-manager "/CN=system:kube-controller-manager" "$client"
sign apiserver-kubelet-client "/O=system:masters/CN=kube-apiserver-kubelet-client" "$client"
# The node's serving certificate names the node address, which may change: made every time.
rm -f "$pki/node.crt" "$pki/node.key"
sign node "/CN=system:node:$node_name/O=system:nodes" "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\nsubjectAltName=IP:$node_ip,IP:127.0.0.1,DNS:$node_name"
openssl pkcs8 -topk8 -nocrypt -in "$pki/node.key" -out "$pki/node.pk8" 2>/dev/null && mv "$pki/node.pk8" "$pki/node.key"
if [[ ! -f $pki/sa.key ]]; then
  keygen "$pki/sa.key"
  openssl ec -in "$pki/sa.key" -pubout -out "$pki/sa.pub" 2>/dev/null
fi

kubeconfig() {
  local file=$1 user=$2
  cat >"$file" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: vigil-local
  cluster:
    server: https://127.0.0.1:$api_port
    certificate-authority-data: $(base64 -w0 <"$pki/ca.crt")
users:
- name: $user
  user:
    client-certificate-data: $(base64 -w0 <"$pki/$user.crt")
    client-key-data: $(base64 -w0 <"$pki/$user.key")
contexts:
- name: vigil-local
  context: {cluster: vigil-local, user: $user, namespace: default}
current-context: vigil-local
EOF
  chmod 0600 "$file"
}
kubeconfig "$dir/admin.kubeconfig" admin
kubeconfig "$dir/controller-manager.kubeconfig" controller-manager

# --- start ------------------------------------------------------------------------------
# Each component runs in its own session, so down.sh can signal its whole process group.
start() {
  local name=$1
  shift
  setsid "$@" >"$dir/logs/$name.log" 2>&1 </dev/null 9>&- &
  echo $! >"$dir/run/$name.pid"
}
fail() {
  log "error: $1; last lines of $dir/logs/$2.log:"
  tail -n 20 "$dir/logs/$2.log" >&2 || true
  VIGIL_CLUSTER_LOCKED=1 "$here/down.sh" >&2 || true
  exit 1
}
# wait_for SECONDS COMPONENT WHAT COMMAND...: polls COMMAND every 0.2 s.
wait_for() {
  local timeout=$1 component=$2 what=$3
  shift 3
  local deadline=$((SECONDS + timeout))
  until "$@" >/dev/null 2>&1; do
    alive "$component" || fail "$component exited while waiting for $what" "$component"
    ((SECONDS < deadline)) || fail "timed out after ${timeout}s waiting for $what" "$component"
    sleep 0.2
  done
}

mkdir -m 0700 "$dir/etcd"
start etcd "$bin/etcd" --name vigil --data-dir "$dir/etcd" \
  --listen-client-urls "http://127.0.0.1:$etcd_port" --advertise-client-urls "http://127.0.0.1:$etcd_port" \
  --listen-peer-urls "http://127.0.0.1:$etcd_peer_port" --initial-advertise-peer-urls "http://127.0.0.1:$etcd_peer_port" \
  --initial-cluster "vigil=http://127.0.0.1:$etcd_peer_port" --unsafe-no-fsync --log-level warn
wait_for 30 etcd "etcd health" curl -sf --max-time 1 "http://127.0.0.1:$etcd_port/health"

start kube-apiserver "$bin/kube-apiserver" \
  --etcd-servers "http://127.0.0.1:$etcd_port" \
  --bind-address 127.0.0.1 --advertise-address 127.0.0.1 --secure-port "$api_port" \
  --tls-cert-file "$pki/apiserver.crt" --tls-private-key-file "$pki/apiserver.key" \
  --client-ca-file "$pki/ca.crt" \
  --authorization-mode Node,RBAC \
  --enable-admission-plugins NamespaceLifecycle,LimitRanger,ServiceAccount,DefaultStorageClass,DefaultTolerationSeconds,NodeRestriction,ResourceQuota,PodSecurity,MutatingAdmissionPolicy,MutatingAdmissionWebhook,ValidatingAdmissionPolicy,ValidatingAdmissionWebhook \
  --service-account-issuer https://kubernetes.default.svc.cluster.local \
  --service-account-key-file "$pki/sa.pub" --service-account-signing-key-file "$pki/sa.key" \
  --service-cluster-ip-range "$service_cidr" \
  --enable-aggregator-routing --endpoint-reconciler-type none \
  --kubelet-client-certificate "$pki/apiserver-kubelet-client.crt" --kubelet-client-key "$pki/apiserver-kubelet-client.key" \
  --kubelet-preferred-address-types InternalIP \
  --allow-privileged --profiling=false --event-ttl 1h
wait_for 60 kube-apiserver "kube-apiserver /readyz" readyz

start kube-controller-manager "$bin/kube-controller-manager" \
  --kubeconfig "$dir/controller-manager.kubeconfig" \
  --authentication-kubeconfig "$dir/controller-manager.kubeconfig" \
  --authorization-kubeconfig "$dir/controller-manager.kubeconfig" \
  --bind-address 127.0.0.1 --secure-port 0 \
  --leader-elect=false --use-service-account-credentials \
  --service-account-private-key-file "$pki/sa.key" --root-ca-file "$pki/ca.crt" \
  --cluster-signing-cert-file "$pki/ca.crt" --cluster-signing-key-file "$pki/ca.key" \
  --service-cluster-ip-range "$service_cidr" \
  --controllers '*,-node-ipam-controller,-node-lifecycle-controller,-taint-eviction-controller,-device-taint-eviction-controller,-persistentvolume-attach-detach-controller'

start vigil-node env KUBECONFIG="$dir/admin.kubeconfig" VIGIL_CLUSTER_DIR="$dir" \
  VIGIL_NODE_IP="$node_ip" VIGIL_NODE_PORT="$node_port" \
  VIGIL_NODE_TLS_CERT="$pki/node.crt" VIGIL_NODE_TLS_KEY="$pki/node.key" VIGIL_NODE_CLIENT_CA="$pki/ca.crt" \
  VIGIL_NODE_IMAGE_BIN="${VIGIL_NODE_IMAGE_BIN:-$CARGO_TARGET_DIR/debug}" \
  RUST_LOG="${VIGIL_NODE_LOG:-info,kube_runtime=warn}" "$node_bin"

kc() { "$bin/kubectl" --kubeconfig "$dir/admin.kubeconfig" "$@"; }
node_ready() {
  [[ $(kc get node "$node_name" -o 'jsonpath={.status.conditions[?(@.type=="Ready")].status}') == True ]]
}
wait_for 60 kube-controller-manager "the default ServiceAccount" kc get serviceaccount default -n default
wait_for 30 vigil-node "node $node_name to be Ready" node_ready

log "ready in $((SECONDS - built))s (binaries took $((built - started))s)"
print_env
