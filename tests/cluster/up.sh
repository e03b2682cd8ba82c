#!/usr/bin/env bash
# Starts a real single-node Kubernetes on this machine, for the real-cluster
# tests and for trying the plugin by hand: etcd, kube-apiserver (RBAC + Node
# authorizers, Pod Security admission, an audit log), controller-manager,
# scheduler, containerd and a kubelet with a bridge CNI. Idempotent: what runs
# already is left running. Waits until the node is Ready and the agent image
# (built from target/release/kubectl-mapguard) is imported, then prints, as its
# last lines:
#   KUBECONFIG=<admin kubeconfig>
#   KUBECTL=<the built kubectl>
#   AGENT_IMAGE=<ref>
# Everything lives under $MAPGUARD_CLUSTER_DIR (default /var/lib/mapguard-cluster);
# tests/cluster/down.sh stops it and removes it.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
# shellcheck source=tests/cluster/lib.sh
. "$here/lib.sh"

[ "$(id -u)" = 0 ] || die "run as root (it starts containerd and a kubelet)"
for c in containerd containerd-shim-runc-v2 runc ctr openssl; do
  command -v "$c" >/dev/null || die "$c not found: run .ci/setup (Debian packages containerd, runc, containernetworking-plugins)"
done
[ -x /usr/lib/cni/bridge ] || die "/usr/lib/cni/bridge not found: run .ci/setup (Debian package containernetworking-plugins)"

BIN=$(bash "$here/build.sh")
KUBECTL="$BIN/kubectl"
mkdir -p "$STATE" "$PIDS" "$LOGS"
PKI="$STATE/pki"
ADMIN="$STATE/admin.kubeconfig"
host_ip=$(ip -4 route get 1.1.1.1 2>/dev/null | sed -n 's/.* src \([0-9.]*\).*/\1/p')
# The kubelet refuses a loopback node IP, and the apiserver reaches the kubelet there.
[ -n "$host_ip" ] || die "no IPv4 address with a route: the node needs one for its InternalIP"

start() { # NAME CMD... : started once, in its own session, with its log and pid file
  local name=$1
  shift
  running_pid "$name" >/dev/null && return 0
  echo "up.sh: starting $name" >&2
  setsid "$@" </dev/null >>"$LOGS/$name.log" 2>&1 &
  echo $! >"$PIDS/$name.pid"
}

wait_for() { # WHAT SECONDS CMD... : polls CMD until it succeeds
  local what=$1 secs=$2 i
  shift 2
  for ((i = 0; i < secs * 5; i++)); do
    "$@" >/dev/null 2>&1 && return 0
    sleep 0.2
  done
  echo "up.sh: $what not ready after ${secs}s; the last log lines:" >&2
  tail -n 20 "$LOGS/${what%% *}.log" >&2 2>/dev/null || true
  exit 2
}

# --- certificates: one CA, a serving cert, one client cert per identity ---
cert() { # NAME SUBJECT [SANS]
  local name=$1 subj=$2 sans=${3:-}
  [ -f "$PKI/$name.crt" ] && return 0
  openssl req -new -newkey rsa:2048 -nodes -keyout "$PKI/$name.key" -subj "$subj" -out "$PKI/$name.csr" 2>/dev/null
  local ext="$PKI/$name.ext"
  if [ -n "$sans" ]; then
    printf 'subjectAltName=%s\nextendedKeyUsage=serverAuth,clientAuth\n' "$sans" >"$ext"
  else
    printf 'extendedKeyUsage=clientAuth\n' >"$ext"
  fi
  openssl x509 -req -in "$PKI/$name.csr" -CA "$PKI/ca.crt" -CAkey "$PKI/ca.key" -CAcreateserial \
    -days 3650 -extfile "$ext" -out "$PKI/$name.crt" 2>/dev/null
}
mkdir -p "$PKI"
if [ ! -f "$PKI/ca.crt" ]; then
  openssl req -x509 -new -newkey rsa:2048 -nodes -keyout "$PKI/ca.key" -subj "/CN=mapguard-test-ca" \
    -days 3650 -out "$PKI/ca.crt" 2>/dev/null
fi
[ -f "$PKI/sa.key" ] || { openssl genrsa -out "$PKI/sa.key" 2048 2>/dev/null && openssl rsa -in "$PKI/sa.key" -pubout -out "$PKI/sa.pub" 2>/dev/null; }
cert apiserver "/CN=kube-apiserver" "DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,IP:127.0.0.1,IP:10.96.0.1,IP:$host_ip"
cert admin "/O=system:masters/CN=mapguard-admin"
cert apiserver-kubelet-client "/O=system:masters/CN=kube-apiserver-kubelet-client"
cert controller-manager "/CN=system:kube-controller-manager"
cert scheduler "/CN=system:kube-scheduler"
# The Node authorizer and NodeRestriction know the kubelet by this name.
cert kubelet "/O=system:nodes/CN=system:node:$NODE"

kubeconfig() { # FILE CERTNAME
  [ -f "$1" ] && return 0
  cat >"$1" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: mapguard-test
  cluster:
    server: https://127.0.0.1:6443
    certificate-authority-data: $(base64 -w0 "$PKI/ca.crt")
users:
- name: $2
  user:
    client-certificate-data: $(base64 -w0 "$PKI/$2.crt")
    client-key-data: $(base64 -w0 "$PKI/$2.key")
contexts:
- name: mapguard-test
  context: {cluster: mapguard-test, user: $2}
current-context: mapguard-test
EOF
}
kubeconfig "$ADMIN" admin
kubeconfig "$STATE/controller-manager.kubeconfig" controller-manager
kubeconfig "$STATE/scheduler.kubeconfig" scheduler
kubeconfig "$STATE/kubelet.kubeconfig" kubelet

# --- etcd and the control plane ---
start etcd "$BIN/etcd" --name mapguard --data-dir "$STATE/etcd" \
  --listen-client-urls http://127.0.0.1:2379 --advertise-client-urls http://127.0.0.1:2379 \
  --listen-peer-urls http://127.0.0.1:2380 --initial-advertise-peer-urls http://127.0.0.1:2380 \
  --initial-cluster mapguard=http://127.0.0.1:2380
wait_for etcd 30 "$BIN/etcdctl" --endpoints http://127.0.0.1:2379 endpoint health

cat >"$STATE/audit-policy.yaml" <<'EOF'
apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: [RequestReceived]
rules:
  # Leases and events are the control plane's own chatter.
  - level: None
    resources: [{group: coordination.k8s.io}, {group: "", resources: [events]}]
  - level: Metadata
EOF
start kube-apiserver "$BIN/kube-apiserver" \
  --etcd-servers http://127.0.0.1:2379 \
  --bind-address 0.0.0.0 --secure-port 6443 --advertise-address "$host_ip" \
  --authorization-mode Node,RBAC \
  --enable-admission-plugins NodeRestriction,PodSecurity \
  --allow-privileged=true \
  --audit-log-path "$STATE/audit.log" --audit-policy-file "$STATE/audit-policy.yaml" --audit-log-maxsize 200 \
  --client-ca-file "$PKI/ca.crt" \
  --tls-cert-file "$PKI/apiserver.crt" --tls-private-key-file "$PKI/apiserver.key" \
  --kubelet-client-certificate "$PKI/apiserver-kubelet-client.crt" \
  --kubelet-client-key "$PKI/apiserver-kubelet-client.key" \
  --kubelet-preferred-address-types InternalIP \
  --service-account-key-file "$PKI/sa.pub" --service-account-signing-key-file "$PKI/sa.key" \
  --service-account-issuer https://kubernetes.default.svc \
  --service-cluster-ip-range 10.96.0.0/16
wait_for kube-apiserver 90 "$KUBECTL" --kubeconfig "$ADMIN" get --raw /readyz

# Each controller under its own service account (system:controller:*), as
# kubeadm runs it: the bootstrap RBAC roles are written for those.
start kube-controller-manager "$BIN/kube-controller-manager" \
  --kubeconfig "$STATE/controller-manager.kubeconfig" \
  --authentication-kubeconfig "$STATE/controller-manager.kubeconfig" \
  --authorization-kubeconfig "$STATE/controller-manager.kubeconfig" \
  --bind-address 127.0.0.1 --leader-elect=false \
  --use-service-account-credentials \
  --service-account-private-key-file "$PKI/sa.key" --root-ca-file "$PKI/ca.crt" \
  --cluster-signing-cert-file "$PKI/ca.crt" --cluster-signing-key-file "$PKI/ca.key"
start kube-scheduler "$BIN/kube-scheduler" \
  --kubeconfig "$STATE/scheduler.kubeconfig" \
  --authentication-kubeconfig "$STATE/scheduler.kubeconfig" \
  --authorization-kubeconfig "$STATE/scheduler.kubeconfig" \
  --bind-address 127.0.0.1 --leader-elect=false

# --- containerd with the bridge CNI ---
mkdir -p "$STATE/containerd" "$STATE/cni"
cat >"$STATE/containerd/config.toml" <<EOF
version = 2
root = "$STATE/containerd/root"
state = "$STATE/containerd/state"
[grpc]
  address = "$CTR_SOCK"
[plugins."io.containerd.internal.v1.opt"]
  path = "$STATE/containerd/opt"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "$PAUSE_IMAGE"
  # This VM's containerd runs with an oom_score_adj that a container may not
  # go below; without this, runc fails to start every container.
  restrict_oom_score_adj = true
  # Root's bounding set here lacks CAP_SYS_RESOURCE. Nothing to set for it:
  # containerd gives privileged containers the capabilities it holds itself,
  # and a pod that asks for SYS_RESOURCE fails with StartError ("unable to
  # apply caps"), as it would on any runtime without it.
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        # PID 1 is not systemd here: cgroupfs, as the kubelet's cgroupDriver.
        SystemdCgroup = false
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "$STATE/cni"
EOF
# bridge + host-local: each pod gets an address on mapguard0. No masquerade
# (no iptables needed): the tests' pods talk to nothing outside the node.
# Nothing is loaded with modprobe: this VM has no loadable modules, and the
# bridge (and br_netfilter) are built into its kernel.
cat >"$STATE/cni/10-mapguard.conflist" <<'EOF'
{
  "cniVersion": "1.0.0",
  "name": "mapguard",
  "plugins": [
    {"type": "bridge", "bridge": "mapguard0", "isGateway": true, "ipMasq": false,
     "ipam": {"type": "host-local", "ranges": [[{"subnet": "10.244.0.0/24"}]], "routes": [{"dst": "0.0.0.0/0"}]}}
  ]
}
EOF
start containerd containerd --config "$STATE/containerd/config.toml"
wait_for containerd 30 ctr_ version

if ! has_image "$PAUSE_IMAGE"; then
  (cd "$here/pause" && CGO_ENABLED=0 GOTOOLCHAIN=local GOFLAGS=-mod=mod GOCACHE="$STATE/gocache" \
    "$(go_bin)" build -trimpath -ldflags "-s -w" -o "$STATE/pause" main.go)
  bash "$here/image.sh" "$PAUSE_IMAGE" "$STATE/pause"
fi

# --- the kubelet ---
mkdir -p "$STATE/kubelet" "$STATE/pod-logs"
cat >"$STATE/kubelet-config.yaml" <<EOF
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
containerRuntimeEndpoint: unix://$CTR_SOCK
# PID 1 is not systemd here.
cgroupDriver: cgroupfs
# This VM mounts cgroup v1 controllers (hybrid, with cgroup2 only at
# /sys/fs/cgroup/unified); kubelet v1.35 refuses v1 unless told otherwise.
failCgroupV1: false
# The open-file hard limit here is 20000; the kubelet's default 1000000 fails.
maxOpenFiles: 20000
failSwapOn: false
podLogsDir: $STATE/pod-logs
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: true}
  x509: {clientCAFile: $PKI/ca.crt}
authorization: {mode: Webhook}
# Images here come from image.sh and cannot be pulled again: never collect them.
imageGCHighThresholdPercent: 100
# A nearly full CI disk must not evict the test pods.
evictionHard: {memory.available: 100Mi, nodefs.available: 1%, imagefs.available: 1%, nodefs.inodesFree: 1%}
EOF
start kubelet "$BIN/kubelet" --config "$STATE/kubelet-config.yaml" \
  --kubeconfig "$STATE/kubelet.kubeconfig" --hostname-override "$NODE" --node-ip "$host_ip" \
  --root-dir "$STATE/kubelet" --cert-dir "$STATE/kubelet/pki"

node_ready() {
  [ "$("$KUBECTL" --kubeconfig "$ADMIN" get node "$NODE" \
    -o 'jsonpath={.status.conditions[?(@.type=="Ready")].status}{.spec.taints}')" = True ]
}
wait_for "kubelet (node $NODE Ready, untainted)" 120 node_ready

# --- the agent image, from target/release/kubectl-mapguard ---
mg="${MAPGUARD_BIN:-$repo/target/release/kubectl-mapguard}"
if [ ! -x "$mg" ]; then
  echo "up.sh: building $mg" >&2
  (cd "$repo" && cargo build --release --bin kubectl-mapguard >&2)
fi
AGENT_IMAGE="mapguard.local/kubectl-mapguard:$(sha256sum "$mg" | cut -c1-12)"
if ! has_image "$AGENT_IMAGE"; then
  # What manifests/Containerfile gives: the binary at /usr/local/bin and the
  # Debian libraries it links (libelf, zlib, libc), taken from this machine.
  rootfs=$(mktemp -d)
  install -D -m 0755 "$mg" "$rootfs/usr/local/bin/kubectl-mapguard"
  for lib in $(ldd "$mg" | grep -o '/[^ ]*'); do
    install -D -m 0644 "$(readlink -f "$lib")" "$rootfs$lib"
  done
  chmod 0755 "$rootfs"/lib*/ld-linux* 2>/dev/null || true
  MAPGUARD_IMAGE_ROOTFS="$rootfs" bash "$here/image.sh" "$AGENT_IMAGE" /usr/local/bin/kubectl-mapguard
  rm -rf "$rootfs"
fi

echo "KUBECONFIG=$ADMIN"
echo "KUBECTL=$KUBECTL"
echo "AGENT_IMAGE=$AGENT_IMAGE"
