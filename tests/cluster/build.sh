#!/usr/bin/env bash
# Builds the control plane, kubelet, kubectl and etcd of the test cluster from
# their Go modules, pinned, into a versioned folder outside the checkout. A
# second run finds the binaries there and builds nothing.
#
#   bash tests/cluster/build.sh      # prints the bin folder on stdout
#
# Kubernetes v1.35 is the last release whose kubelet still accepts containerd
# 1.x (Debian 12 ships 1.6) and cgroup v1 with `failCgroupV1: false`; both are
# what this VM has.
set -euo pipefail

KUBE_VERSION="${MAPGUARD_KUBE_VERSION:-v1.35.4}"
ETCD_VERSION="${MAPGUARD_ETCD_VERSION:-v3.6.16}"
ROOT="${MAPGUARD_KUBE_DIR:-/opt/mapguard-kube}/kube-$KUBE_VERSION-etcd-$ETCD_VERSION"
BIN="$ROOT/bin"
KUBE_CMDS="kube-apiserver kube-controller-manager kube-scheduler kubelet kubectl"
ETCD_CMDS="etcd etcdctl"

have_all() {
  for c in $KUBE_CMDS $ETCD_CMDS; do [ -x "$BIN/$c" ] || return 1; done
}
if have_all; then
  echo "$BIN"
  exit 0
fi

# k8s.io/kubernetes v1.35 says `go 1.25.0`.
# shellcheck source=tests/cluster/lib.sh
. "$(dirname "$0")/lib.sh"
GO=$(go_bin)
export GOTOOLCHAIN=local GOFLAGS=-mod=mod CGO_ENABLED=0
export GOMODCACHE="$ROOT/gomod" GOCACHE="$ROOT/gocache" GOPATH="$ROOT/gopath"
mkdir -p "$BIN" "$ROOT/src"
start=$(date +%s)

# k8s.io/kubernetes replaces its k8s.io/* staging modules with ./staging
# paths, which a dependent module cannot follow. The wrapper requires each of
# them at the matching v0.N.x instead and replaces nothing.
kube_src="$ROOT/src/kube"
if [ ! -f "$kube_src/go.sum" ]; then
  rm -rf "$kube_src" && mkdir -p "$kube_src"
  mod=$(cd "$kube_src" && "$GO" mod download -json "k8s.io/kubernetes@$KUBE_VERSION" | sed -n 's/.*"GoMod": "\(.*\)",*/\1/p')
  staging=$(awk '$2 == "=>" && $3 ~ /^\.\/staging\// {print $1}' "$mod")
  [ -n "$staging" ] || { echo "build.sh: no staging replaces found in $mod" >&2; exit 2; }
  {
    echo "module mapguard.test/kube"
    echo
    echo "go 1.25.0"
    echo
    echo "godebug default=go1.25"
    echo
    echo "require k8s.io/kubernetes $KUBE_VERSION"
    for m in $staging; do echo "require $m v0.${KUBE_VERSION#v1.}"; done
  } >"$kube_src/go.mod"
  # One file that imports the commands makes `go mod tidy` keep every module they need.
  {
    echo "//go:build tools"
    echo "package tools"
    echo "import ("
    for c in $KUBE_CMDS; do echo "	_ \"k8s.io/kubernetes/cmd/$c\""; done
    echo ")"
  } >"$kube_src/tools.go"
  (cd "$kube_src" && "$GO" mod tidy -e >&2)
fi

minor="${KUBE_VERSION#v1.}"; minor="${minor%%.*}"
ver_pkg() { # the -X flags of one version package
  printf -- '-X %s.gitVersion=%s -X %s.gitMajor=1 -X %s.gitMinor=%s -X %s.gitTreeState=clean -X %s.buildDate=1970-01-01T00:00:00Z ' \
    "$1" "$KUBE_VERSION" "$1" "$1" "$minor" "$1" "$1"
}
ldflags="-s -w $(ver_pkg k8s.io/component-base/version) $(ver_pkg k8s.io/client-go/pkg/version)"
pkgs=""
for c in $KUBE_CMDS; do [ -x "$BIN/$c" ] || pkgs="$pkgs k8s.io/kubernetes/cmd/$c"; done
if [ -n "$pkgs" ]; then
  echo "build.sh: building$pkgs ($KUBE_VERSION)" >&2
  (cd "$kube_src" && "$GO" build -trimpath -ldflags "$ldflags" -o "$BIN/" $pkgs)
fi

# etcd's root module (the `etcd` main package) also replaces its own modules
# locally; its main is one call into etcdmain, so the wrapper makes that call.
etcd_src="$ROOT/src/etcd"
if [ ! -x "$BIN/etcd" ] || [ ! -x "$BIN/etcdctl" ]; then
  mkdir -p "$etcd_src/etcd"
  cat >"$etcd_src/go.mod" <<EOF
module mapguard.test/etcd

go 1.25.0

require (
	go.etcd.io/etcd/server/v3 $ETCD_VERSION
	go.etcd.io/etcd/etcdctl/v3 $ETCD_VERSION
)
EOF
  cat >"$etcd_src/etcd/main.go" <<'EOF'
// etcd as the upstream main.go runs it.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() { etcdmain.Main(os.Args) }
EOF
  cat >"$etcd_src/tools.go" <<'EOF'
//go:build tools

package tools

import _ "go.etcd.io/etcd/etcdctl/v3"
EOF
  echo "build.sh: building etcd and etcdctl ($ETCD_VERSION)" >&2
  (cd "$etcd_src" && "$GO" mod tidy -e >&2 &&
    "$GO" build -trimpath -ldflags "-s -w" -o "$BIN/etcd" ./etcd &&
    "$GO" build -trimpath -ldflags "-s -w" -o "$BIN/etcdctl" go.etcd.io/etcd/etcdctl/v3)
fi

have_all || { echo "build.sh: some binaries are missing from $BIN" >&2; exit 2; }
echo "build.sh: built in $(($(date +%s) - start)) s into $BIN" >&2
echo "$BIN"
