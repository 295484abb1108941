#!/usr/bin/env bash
# Stops the local control plane started by up.sh, with the pods the process node runs, and
# removes its runtime state (etcd data, pod directories). Keeps pki/ and logs/ for post-mortems.
# Safe to run when nothing is up.
set -uo pipefail

dir=${VIGIL_CLUSTER_DIR:-/tmp/vigil-cluster}
log() { printf 'cluster-down: %s\n' "$*" >&2; }
[[ $dir == /* && $dir != / ]] || { log "error: VIGIL_CLUSTER_DIR must be an absolute path other than /"; exit 1; }

# stop NAME: SIGTERM to the component's process group, SIGKILL after 10 s.
stopped=0
stop() {
  local name=$1 pidfile=$dir/run/$1.pid pid
  pid=$(cat "$pidfile" 2>/dev/null) || return 0
  rm -f "$pidfile"
  [[ $pid =~ ^[0-9]+$ ]] && kill -0 "$pid" 2>/dev/null || return 0
  # Only a process this cluster started: its command line names the component.
  grep -qa -- "$name" "/proc/$pid/cmdline" 2>/dev/null || return 0
  kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null
  for _ in $(seq 50); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.2
  done
  kill -KILL -- "-$pid" 2>/dev/null || true
  stopped=$((stopped + 1))
}

# The node first: on SIGTERM it stops its pods.
for name in vigil-node kube-controller-manager kube-apiserver etcd; do
  stop "$name"
done

# Container processes left behind (each runs in its own process group).
shopt -s nullglob
for pidfile in "$dir"/pods/*/pids/*; do
  pgid=$(cat "$pidfile" 2>/dev/null)
  [[ $pgid =~ ^[0-9]+$ ]] && ((pgid > 1)) && kill -KILL -- "-$pgid" 2>/dev/null && stopped=$((stopped + 1))
done

rm -rf "$dir/run" "$dir/etcd" "$dir/pods" "$dir/images" "$dir/pvc"
if ((stopped > 0)); then
  log "stopped $stopped process group(s); logs kept in $dir/logs"
else
  log "nothing was running"
fi
exit 0
