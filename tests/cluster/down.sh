#!/usr/bin/env bash
# Stops every process tests/cluster/up.sh started (by the pids it wrote) and
# the containers they ran, then removes their state, cgroups, bridge and
# mounts. Safe to run twice, or when nothing is up.
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=tests/cluster/lib.sh
. "$here/lib.sh"

stop() { # NAME: SIGTERM, then SIGKILL after 10 s
  local pid i
  pid=$(running_pid "$1") || { rm -f "$PIDS/$1.pid"; return 0; }
  kill "$pid" 2>/dev/null
  for ((i = 0; i < 50; i++)); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.2
  done
  kill -9 "$pid" 2>/dev/null
  rm -f "$PIDS/$1.pid"
  echo "down.sh: stopped $1 (pid $pid)" >&2
}

# The kubelet first, so nothing restarts what goes next.
stop kubelet

# Every container process, then the shims of this containerd (they outlive
# it on purpose, so containerd's end alone would leave them running).
kubepods=$(find /sys/fs/cgroup -maxdepth 2 -type d -name kubepods 2>/dev/null)
for d in $kubepods; do
  find "$d" -name cgroup.procs -exec cat {} + 2>/dev/null | xargs -r kill -9 2>/dev/null
done
for p in $(pgrep -f "containerd-shim-runc-v2 .*-address $CTR_SOCK" 2>/dev/null); do kill -9 "$p" 2>/dev/null; done
stop containerd
for c in kube-scheduler kube-controller-manager kube-apiserver etcd; do stop "$c"; done

# Mounts: pod volumes, overlay snapshots, shm and network namespaces.
grep -oE " ($STATE|/run/netns/cni-)[^ ]*" /proc/self/mounts | sort -r | while read -r m; do
  umount -l "$m" 2>/dev/null
done
rm -f /run/netns/cni-* 2>/dev/null

# The pods' cgroups, deepest first (a cgroup goes only once it is empty).
for d in $kubepods; do
  for _ in 1 2 3 4 5; do
    find "$d" -depth -type d -exec rmdir {} + 2>/dev/null
    [ -d "$d" ] || break
    sleep 0.2
  done
  [ -d "$d" ] && echo "down.sh: $d is not empty; left" >&2
done

ip link delete mapguard0 2>/dev/null
rm -rf /var/lib/cni/networks/mapguard "$STATE"
echo "down.sh: done" >&2
exit 0
