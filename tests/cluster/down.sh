#!/usr/bin/env bash
# Stops the local control plane started by up.sh, with the pods the process node runs, and
# removes its runtime state (etcd data, pod directories). Keeps pki/ and logs/ for post-mortems.
# Safe to run when nothing is up.
set -uo pipefail

dir=${VIGIL_CLUSTER_DIR:-/tmp/vigil-cluster}
log() { printf 'cluster-down: %s\n' "$*" >&2; }
[[ $dir == /* && $dir != / ]] || { log "error: VIGIL_CLUSTER_DIR must be an absolute path other than /"; exit 1; }
[[ -d $dir ]] || { log "nothing was running"; exit 0; }
if [[ -z ${VIGIL_CLUSTER_LOCKED:-} ]]; then
  exec 9>"$dir/.lock"
  flock -w 600 9 || { log "error: another cluster-up or cluster-down keeps $dir/.lock"; exit 1; }
fi

# A zombie counts as gone: up.sh's shell may not have reaped it yet.
gone() {
  local state
  state=$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null) || return 0
  [[ -z $state || $state == Z ]]
}
# wait_gone PID TENTHS: true once PID is gone, false after TENTHS tenths of a second.
wait_gone() {
  local i
  for ((i = 0; i < $2; i++)); do
    gone "$1" && return 0
    sleep 0.1
  done
  gone "$1"
}

# stop NAME GRACE: SIGTERM to the component's process group, SIGKILL after GRACE seconds.
stopped=0
stop() {
  local name=$1 grace=$2 pidfile=$dir/run/$1.pid pid
  pid=$(cat "$pidfile" 2>/dev/null) || return 0
  rm -f "$pidfile"
  [[ $pid =~ ^[0-9]+$ ]] && ! gone "$pid" || return 0
  # Only a process this cluster started: its command line names the component.
  grep -qa -- "$name" "/proc/$pid/cmdline" 2>/dev/null || return 0
  kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null
  if ! wait_gone "$pid" $((grace * 10)); then
    kill -KILL -- "-$pid" 2>/dev/null || kill -KILL "$pid" 2>/dev/null
    wait_gone "$pid" 100 || log "warning: $name (pid $pid) survived SIGKILL for 10 s"
  fi
  stopped=$((stopped + 1))
}

# The node first: on SIGTERM it stops its pods. The rest holds no state worth a slow exit.
stop vigil-node 10
for name in kube-controller-manager kube-apiserver etcd; do
  stop "$name" 3
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
