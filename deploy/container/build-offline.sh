#!/bin/sh
# Build Tally's image where no image registry is reachable, only Debian's package
# mirror and PyPI (as on the machines Tally is developed on): debootstrap a
# Debian bookworm with its Python 3.11, import it as the base, then build the
# Containerfile on it with buildah. RUN steps use chroot isolation, which needs
# no cgroups (crun refuses here: "cgroups in hybrid mode not supported").
#
#   sh deploy/container/build-offline.sh [TAG]      (as root; default localhost/tally:dev)
#
# Needs: debootstrap, buildah. A TLS-inspecting proxy's CA bundle, if the
# machine has one at /etc/ssl/certs/ca-certificates.crt, is passed to pip as a
# build secret (never stored in a layer).
set -eu
tag=${1:-localhost/tally:dev}
base=localhost/tally-base:bookworm
root=$(cd "$(dirname "$0")/../.." && pwd)
mirror=${DEBIAN_MIRROR:-http://deb.debian.org/debian}

if ! buildah inspect --type image "$base" >/dev/null 2>&1; then
  work=$(mktemp -d)
  trap 'rm -rf "$work"' EXIT
  debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates \
    bookworm "$work/rootfs" "$mirror"
  tar -C "$work/rootfs" -cf "$work/rootfs.tar" .
  printf 'FROM scratch\nADD rootfs.tar /\nCMD ["/bin/bash"]\n' > "$work/Containerfile"
  buildah build --isolation chroot -t "$base" "$work"
fi

set -- --isolation chroot --format docker --build-arg "PYTHON_IMAGE=$base"
if [ -s /etc/ssl/certs/ca-certificates.crt ]; then
  set -- "$@" --secret id=ca_bundle,src=/etc/ssl/certs/ca-certificates.crt
fi
buildah build "$@" -f "$root/deploy/container/Containerfile" -t "$tag" "$root"
