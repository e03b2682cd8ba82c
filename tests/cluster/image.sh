#!/usr/bin/env bash
# Makes an OCI image named REF that holds the given static executables, each at
# /NAME (the first is the entrypoint), and imports it into the test node's
# containerd. No registry is involved: pods that use it say
# `imagePullPolicy: IfNotPresent` (or use a tag that is not `latest`).
#
#   bash tests/cluster/image.sh REF FILE...
#
# With MAPGUARD_IMAGE_ROOTFS=DIR, DIR's whole tree becomes the image (as is),
# and the first FILE names the entrypoint inside it: that is how up.sh builds
# the agent image, whose binary links libelf and zlib dynamically.
set -euo pipefail
# shellcheck source=tests/cluster/lib.sh
. "$(dirname "$0")/lib.sh"

[ $# -ge 2 ] || die "usage: image.sh REF FILE..."
ref=$1
shift
[ -S "$CTR_SOCK" ] || die "containerd is not running ($CTR_SOCK): run tests/cluster/up.sh first"

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/rootfs" "$work/oci/blobs/sha256"
if [ -n "${MAPGUARD_IMAGE_ROOTFS:-}" ]; then
  cp -a "$MAPGUARD_IMAGE_ROOTFS/." "$work/rootfs/"
  entry=$1
else
  for f in "$@"; do
    [ -f "$f" ] && [ -x "$f" ] || die "$f: not an executable file"
    if readelf -l "$f" 2>/dev/null | grep 'program interpreter' >/dev/null; then
      die "$f: dynamically linked; image.sh takes static executables (CGO_ENABLED=0 for Go)"
    fi
    install -m 0755 "$f" "$work/rootfs/$(basename "$f")"
  done
  entry="/$(basename "$1")"
  # A writable /tmp, as every base image has.
  mkdir -m 1777 "$work/rootfs/tmp"
fi

blob() { # FILE MEDIATYPE -> a descriptor JSON; moves FILE into the blob store
  local digest size
  digest=$(sha256sum "$1" | cut -d' ' -f1)
  size=$(stat -c %s "$1")
  mv "$1" "$work/oci/blobs/sha256/$digest"
  printf '{"mediaType":"%s","digest":"sha256:%s","size":%s}' "$2" "$digest" "$size"
}

# The same bytes for the same files: sorted, owned by root, dated 1970.
tar --sort=name --mtime=@0 --owner=0 --group=0 --numeric-owner -C "$work/rootfs" -cf "$work/layer.tar" .
diff_id=$(sha256sum "$work/layer.tar" | cut -d' ' -f1)
layer=$(blob "$work/layer.tar" application/vnd.oci.image.layer.v1.tar)
printf '{"architecture":"amd64","os":"linux","config":{"Entrypoint":["%s"],"Env":["PATH=/usr/local/bin:/usr/bin:/bin"]},"rootfs":{"type":"layers","diff_ids":["sha256:%s"]}}' \
  "$entry" "$diff_id" >"$work/config.json"
config=$(blob "$work/config.json" application/vnd.oci.image.config.v1+json)
printf '{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":%s,"layers":[%s]}' \
  "$config" "$layer" >"$work/manifest.json"
manifest=$(blob "$work/manifest.json" application/vnd.oci.image.manifest.v1+json)
printf '{"schemaVersion":2,"manifests":[%s]}' \
  "${manifest%\}},\"platform\":{\"architecture\":\"amd64\",\"os\":\"linux\"},\"annotations\":{\"io.containerd.image.name\":\"$ref\",\"org.opencontainers.image.ref.name\":\"$ref\"}}" \
  >"$work/oci/index.json"
echo '{"imageLayoutVersion":"1.0.0"}' >"$work/oci/oci-layout"
tar -C "$work/oci" -cf "$work/image.tar" .
ctr_ images import "$work/image.tar" >/dev/null
has_image "$ref" || die "$ref: imported, but containerd does not list it"
echo "image.sh: $ref imported" >&2
