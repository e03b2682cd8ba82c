# Shared by up.sh, image.sh and down.sh: where the test cluster lives.
# shellcheck shell=bash

STATE="${MAPGUARD_CLUSTER_DIR:-/var/lib/mapguard-cluster}"
NODE="${MAPGUARD_NODE_NAME:-mapguard-node}"
CTR_SOCK="$STATE/containerd/containerd.sock"
PIDS="$STATE/pids"
LOGS="$STATE/logs"
# Images that pods run come from image.sh, never from a registry.
PAUSE_IMAGE="mapguard.local/pause:3.10"

die() {
  echo "$(basename "$0"): $*" >&2
  exit 2
}

# The pid a component was started with, if that process still runs.
running_pid() {
  local f="$PIDS/$1.pid" pid
  [ -f "$f" ] || return 1
  pid=$(cat "$f")
  [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null && echo "$pid"
}

ctr_() { ctr --address "$CTR_SOCK" --namespace k8s.io "$@"; }

# Whether the node's containerd has image REF. (Not `grep -q`: under
# pipefail, grep leaving early kills ctr with SIGPIPE and fails the test.)
has_image() { ctr_ images ls -q | grep -xF "$1" >/dev/null; }

# A Go of 1.25 or newer: the machine's own, else the newest that .ci/setup installed.
go_bin() {
  local g
  for g in "${MAPGUARD_BUILD_GO:-}" "$(command -v go 2>/dev/null)" /opt/mapguard-go/1.26.6/go/bin/go /opt/mapguard-go/1.25.5/go/bin/go; do
    [ -n "$g" ] && [ -x "$g" ] && "$g" version 2>/dev/null | grep -E 'go1\.(2[5-9]|[3-9][0-9])' >/dev/null && { echo "$g"; return 0; }
  done
  die "no Go 1.25 or newer found: install one, or run .ci/setup"
}
