#!/usr/bin/env bash
# Builds the container image pubsub:dev from deploy/Dockerfile on a machine that cannot
# pull images (no registry): the binaries are built here, on the host, and the
# Dockerfile's `prebuilt` target copies them onto its base image. With a registry,
# `docker build -f deploy/Dockerfile -t pubsub:dev .` builds everything inside instead.
#
#   deploy/image.sh base                   # debian:bookworm-slim from debootstrap, if missing
#   deploy/image.sh build [release|debug]  # cargo build, then the image (default: release)
#
# The host must be Debian 12 (bookworm) or as old a glibc, so that the binaries run on
# the image's libraries. TAG (default pubsub:dev) names the image.
set -euo pipefail
cd "$(dirname "$0")/.."
TAG=${TAG:-pubsub:dev}
BASE=debian:bookworm-slim

# A minimal Debian bookworm (debootstrap's minbase, without apt's cache, docs and
# locales), imported under the name the Dockerfile's runtime stage starts from.
base() {
    if docker image inspect "$BASE" >/dev/null 2>&1; then
        echo "$BASE is present"
        return
    fi
    command -v debootstrap >/dev/null || { apt-get update -qq && apt-get install -y -qq debootstrap >/dev/null; }
    local root
    root=$(mktemp -d)
    trap 'rm -rf "$root"' RETURN
    debootstrap --variant=minbase bookworm "$root" http://deb.debian.org/debian >/dev/null
    rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/* \
        "$root"/usr/share/doc "$root"/usr/share/man "$root"/usr/share/locale
    tar -C "$root" -c . | docker import - "$BASE" >/dev/null
    echo "imported $BASE"
}

build() {
    local profile=${1:-release}
    local flag=()
    [ "$profile" = release ] && flag=(--release)
    [ -n "${SKIP_BUILD:-}" ] || cargo build "${flag[@]}" --locked --bins -q
    local context
    context=$(mktemp -d)
    trap 'rm -rf "$context"' RETURN
    for bin in pubsubd pubsub; do
        cp "target/$profile/$bin" "$context/"
        strip "$context/$bin"
    done
    docker build -q -f deploy/Dockerfile --target prebuilt -t "$TAG" "$context" >/dev/null
    echo "built $TAG ($profile binaries)"
}

case ${1:-} in
    base) base ;;
    build) build "${2:-release}" ;;
    *) echo "usage: deploy/image.sh base | build [release|debug]" >&2; exit 2 ;;
esac
