#!/usr/bin/env bash
# Makes the Debian 12 base images the Dockerfiles start from (debian:12 and debian:12-slim) in a
# local buildah store, from Debian's own packages with debootstrap, for machines that reach
# Debian's archive but no container registry. Idempotent: images already in the store are kept,
# and the debootstrap tarball is kept beside the store, so later steps of one CI run reuse it.
#
#   scripts/image_base.sh            # store: $LIPSYNC_IMAGE_DIR (default /var/tmp/lipsync-image)
#   source <(scripts/image_base.sh --env)   # CONTAINERS_STORAGE_CONF for buildah in this shell
#
# Needs root, buildah and debootstrap (`scripts/setup.sh --image` installs them).
set -euo pipefail

DIR="${LIPSYNC_IMAGE_DIR:-/var/tmp/lipsync-image}"
CONF="$DIR/storage.conf"

log() { printf '[image-base] %s\n' "$*"; }

# vfs: works in any container or VM, no overlay or fuse needed (slower and larger than overlay).
write_storage_conf() {
  mkdir -p "$DIR/storage" "$DIR/run"
  cat >"$CONF" <<EOF
[storage]
driver = "vfs"
graphroot = "$DIR/storage"
runroot = "$DIR/run"
EOF
}

if [ "${1:-}" = "--env" ]; then
  write_storage_conf
  echo "export CONTAINERS_STORAGE_CONF=$CONF"
  exit 0
fi

[ "$(id -u)" -eq 0 ] || { echo "error: image_base.sh needs root (debootstrap, buildah)" >&2; exit 1; }
for tool in buildah debootstrap; do
  command -v "$tool" >/dev/null || {
    echo "error: $tool is not installed: run scripts/setup.sh --image" >&2
    exit 1
  }
done
write_storage_conf
export CONTAINERS_STORAGE_CONF="$CONF"

have_image() { buildah inspect --type image "$1" >/dev/null 2>&1; }

if have_image docker.io/library/debian:12 && have_image docker.io/library/debian:12-slim; then
  log "debian:12 and debian:12-slim: present in $DIR/storage"
  exit 0
fi

# The same mirror as setup.sh (the machine's own Debian sources).
MIRROR="$(grep -hoE '^(URIs:|deb) +[a-z]+://[^ ]+/debian/?( |$)' /etc/apt/sources.list \
  /etc/apt/sources.list.d/* 2>/dev/null | head -n1 | awk '{print $2}' || true)"
MIRROR="${MIRROR:-http://deb.debian.org/debian}"
MIRROR="${MIRROR%/}"
TARBALL="$DIR/debian12-minbase.tar"

if [ ! -f "$TARBALL" ]; then
  log "debootstrap --variant=minbase bookworm from $MIRROR"
  tmp="$DIR/rootfs.tmp"
  rm -rf "$tmp"
  debootstrap --variant=minbase bookworm "$tmp" "$MIRROR" >"$DIR/debootstrap.log" 2>&1 || {
    tail -n 20 "$DIR/debootstrap.log" >&2
    exit 1
  }
  # Updates and security fixes too, as Debian's published images have them.
  rm -f "$tmp/etc/apt/sources.list"
  cat >"$tmp/etc/apt/sources.list.d/debian.sources" <<EOF
Types: deb
URIs: $MIRROR
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: ${MIRROR%/debian}/debian-security
Suites: bookworm-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOF
  # As in Debian's published images: apt keeps no downloaded packages in the image's layers.
  cat >"$tmp/etc/apt/apt.conf.d/docker-clean" <<'EOF'
DPkg::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
APT::Keep-Downloaded-Packages "false";
EOF
  rm -rf "$tmp"/var/cache/apt/*.bin "$tmp"/var/cache/apt/archives/*.deb "$tmp"/var/lib/apt/lists/* \
    "$tmp"/var/log/*.log
  tar -C "$tmp" --numeric-owner -cf "$TARBALL.part" .
  mv "$TARBALL.part" "$TARBALL"
  rm -rf "$tmp"
fi

commit_base() {  # name, then commands run in it before the commit
  local name="$1" c
  shift
  c="$(buildah from scratch)"
  buildah add -q "$c" "$TARBALL" / >/dev/null
  buildah config --env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    --cmd bash "$c"
  if [ "$#" -gt 0 ]; then buildah run --isolation chroot "$c" -- sh -c "$*"; fi
  buildah commit -q --rm "$c" "$name" >/dev/null
  log "$name: $(buildah inspect --type image --format '{{.FromImageID}}' "$name" | cut -c1-12)"
}

have_image docker.io/library/debian:12 || commit_base docker.io/library/debian:12
# -slim as Debian's: no manual pages, documentation or translations from any later package.
have_image docker.io/library/debian:12-slim || commit_base docker.io/library/debian:12-slim '
  printf "%s\n" "path-exclude /usr/share/doc/*" "path-include /usr/share/doc/*/copyright" \
    "path-exclude /usr/share/man/*" "path-exclude /usr/share/info/*" \
    "path-exclude /usr/share/locale/*" "path-include /usr/share/locale/locale.alias" \
    "path-exclude /usr/share/lintian/*" >/etc/dpkg/dpkg.cfg.d/docker-slim
  find /usr/share/doc -mindepth 1 ! -name copyright ! -type d -delete
  find /usr/share/man /usr/share/info /usr/share/locale -mindepth 1 ! -name locale.alias \
    ! -type d -delete'
buildah images
