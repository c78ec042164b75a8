#!/usr/bin/env bash
# images.sh — build the container images the testbed's kubelets run, offline, with buildah:
#
#   ghcr.io/ferrolb/ferrolb:v$VERSION  ferrolb-{operator,controller,speaker}  <- the top-level Dockerfile
#                                      (its final stage, from host-built binaries: BINARIES=host)
#   docker.io/ferrolb-testbed/echo:v1  ferrolb-testbed (ENTRYPOINT ferrolb-testbed echo) + busybox sh
#   docker.io/ferrolb-testbed/pause:v1 tests/testbed/pause/pause.c (containerd's sandbox image)
#   docker.io/ferrolb-testbed/busybox:v1  busybox with sh and tar, no entrypoint (the scorecard's
#                                      pods untar the bundle with it)
#   quay.io/operator-framework/scorecard-test:$OPERATOR_SDK_VERSION  operator-sdk's scorecard test
#                                      runner (build-olm.sh builds it), named as the committed
#                                      bundle/tests/scorecard/config.yaml names it
#
# All FROM scratch, with static binaries: the Rust ones built with
# `RUSTFLAGS="-C target-feature=+crt-static" cargo build --target x86_64-unknown-linux-gnu` (with
# --target the flag reaches only the target binaries; build scripts and proc-macros stay dynamic),
# stripped of debug info; pause with `gcc -static`; busybox from Debian's busybox-static.
#
# Output: $FERROLB_TESTBED_CACHE/images/{ferrolb,echo,pause,busybox,scorecard}.tar, OCI archives
#         whose ref is the full image name (import with `ctr -n k8s.io images import FILE`), and
#         images.txt ("FILE NAME" lines).
#         An image whose inputs (binaries, Dockerfile, this script) did not change is not rebuilt.
# buildah's storage: $FERROLB_TESTBED_CACHE/buildah (default cache: /var/cache/ferrolb-testbed); its
# runroot and temporary files live in a work directory removed at exit, and buildah runs in a private
# mount namespace with an overlay on /var/lib so that its blob-info cache (always
# /var/lib/containers/cache for root) is thrown away too: nothing is left outside the cache.
# Environment: CARGO (default cargo), TESTBED_PROFILE (cargo profile dir, default debug),
#              TESTBED_CARGO_FLAGS (default --locked), CARGO_TARGET_DIR.
# Needs root, buildah, gcc with a static libc (libc6-dev), binutils, file, busybox-static.
# Prints the output directory on the last line of stdout.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
CACHE=${FERROLB_TESTBED_CACHE:-/var/cache/ferrolb-testbed}
OUT="$CACHE/images"
STORE="$CACHE/buildah"
CARGO=${CARGO:-cargo}
PROFILE=${TESTBED_PROFILE:-debug}
TRIPLE=x86_64-unknown-linux-gnu
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
BUSYBOX=/bin/busybox
# Fully qualified, as the kubelet asks containerd for them (`ferrolb-testbed/echo:v1` in a pod
# spec is docker.io/ferrolb-testbed/echo:v1): `ctr images import` keeps an archive's name as is.
ECHO_IMAGE=docker.io/ferrolb-testbed/echo:v1
PAUSE_IMAGE=docker.io/ferrolb-testbed/pause:v1
BUSYBOX_IMAGE=docker.io/ferrolb-testbed/busybox:v1
FERROLB_BINS=(ferrolb-operator ferrolb-controller ferrolb-speaker)
LABEL_SOURCE=https://github.com/ferrolb/ferrolb

log() { echo "[images $(date -u +%H:%M:%S)] $*" >&2; }
fail() {
  log "FAILED: $*"
  log "Retry with: bash tests/testbed/images.sh   (as root; needs buildah, gcc, libc6-dev, binutils,"
  log "file and busybox-static: make deps installs them)."
  exit 1
}

[ "$(id -u)" = 0 ] || fail "must run as root (buildah's overlay storage and the mount namespace)"
for c in buildah gcc objcopy file ldd b2sum unshare flock "$CARGO"; do
  command -v "$c" >/dev/null || fail "$c is not installed"
done
[ -f "$(gcc -print-file-name=libc.a)" ] || fail "gcc has no static libc (libc.a): apt-get install libc6-dev"
[ -x "$BUSYBOX" ] || fail "$BUSYBOX is missing: apt-get install busybox-static"

VERSION=$(sed -n '/^\[workspace\.package\]/,/^\[/s/^version[[:space:]]*=[[:space:]]*"\([^"]*\)".*/\1/p' "$ROOT/Cargo.toml")
[ -n "$VERSION" ] || fail "no version in [workspace.package] of $ROOT/Cargo.toml"
FERROLB_IMAGE="ghcr.io/ferrolb/ferrolb:v$VERSION"

case "$PROFILE" in
  debug|dev) pflag=(); pdir=debug ;;
  *) pflag=(--profile "$PROFILE"); pdir=$PROFILE ;;
esac
BIN_DIR="$TARGET_DIR/$TRIPLE/$pdir"

mkdir -p "$OUT" "$STORE" || fail "cannot create $OUT and $STORE (run as root or set FERROLB_TESTBED_CACHE)"
case "$(realpath "$CACHE")/" in
  /var/lib/*) fail "FERROLB_TESTBED_CACHE=$CACHE is under /var/lib, which buildah sees through a throw-away overlay" ;;
esac
# One run at a time: the buildah storage and the archives are shared.
exec 9>"$CACHE/images.lock"
flock 9
rm -rf "$CACHE"/images-work.*   # left by a run that was killed (SIGKILL)
W=$(mktemp -d "$CACHE/images-work.XXXXXX")
trap 'rm -rf "$W"' EXIT
start=$(date +%s)

# is_static FILE: a static executable (no program interpreter, no shared-library dependency).
is_static() {
  local f=$1 desc ldd_out
  desc=$(file -b -L "$f")
  case "$desc" in
    *ELF*executable*) ;;
    *) fail "$f is not an ELF executable: $desc" ;;
  esac
  case "$desc" in
    *interpreter*|*dynamically\ linked*) fail "$f is dynamically linked: $desc" ;;
    *statically\ linked*|*static-pie\ linked*) ;;
    *) fail "$f: cannot tell how it is linked: $desc" ;;
  esac
  ldd_out=$(ldd "$f" 2>&1 || true)
  case "$ldd_out" in
    *"statically linked"*|*"not a dynamic executable"*) ;;
    *) fail "$f has shared-library dependencies: $ldd_out" ;;
  esac
}

# --- 1. binaries ------------------------------------------------------------------------------
read -r -a cflags <<<"${TESTBED_CARGO_FLAGS---locked}"
log "step 1/3: cargo build (static, --target $TRIPLE, profile $PROFILE): ${FERROLB_BINS[*]} ferrolb-testbed"
(cd "$ROOT" && RUSTFLAGS="${RUSTFLAGS:+$RUSTFLAGS }-C target-feature=+crt-static" \
  "$CARGO" build "${cflags[@]}" "${pflag[@]}" --target "$TRIPLE" \
    -p ferrolb-operator -p ferrolb-controller -p ferrolb-speaker -p ferrolb-testbed \
    --bin ferrolb-operator --bin ferrolb-controller --bin ferrolb-speaker --bin ferrolb-testbed) \
  || fail "cargo build of the static binaries (see the compiler output above)"
for b in "${FERROLB_BINS[@]}" ferrolb-testbed; do
  [ -x "$BIN_DIR/$b" ] || fail "cargo build did not produce $BIN_DIR/$b"
  is_static "$BIN_DIR/$b"
done
is_static "$BUSYBOX"

log "step 2/3: gcc -static pause"
gcc -static -O2 -s -Wall -Wextra -Werror -o "$W/pause" "$HERE/pause/pause.c" || fail "gcc -static $HERE/pause/pause.c"
is_static "$W/pause"

# --- 2. images --------------------------------------------------------------------------------
# bah ARGS: buildah with our storage, in a private mount namespace whose /var/lib is an overlay
# written into $W (thrown away at exit).
mkdir -p "$W/runroot" "$W/tmp" "$W/varlib"
bah() {
  TMPDIR="$W/tmp" unshare --mount --propagation private -- sh -c '
    mount -t tmpfs -o mode=0700 tmpfs "$1" && mkdir "$1/upper" "$1/work" \
      && mount -t overlay overlay -o "lowerdir=/var/lib,upperdir=$1/upper,workdir=$1/work" /var/lib \
      || { echo "images.sh: cannot put an overlay on /var/lib in a mount namespace" >&2; exit 1; }
    shift
    exec buildah "$@"' sh "$W/varlib" \
    --root "$STORE" --runroot "$W/runroot" --storage-driver overlay "$@"
}

# hash_of FILE...: one hash of the files' names (not their directories) and contents. A file's
# content hash is remembered by (device, inode, size, mtime) in $OUT/.file-hashes, so the fast path
# does not re-read ~1 GB of debug binaries.
MEMO_OLD="$OUT/.file-hashes"; MEMO_NEW="$W/file-hashes"
touch "$MEMO_OLD" "$MEMO_NEW"
hash_of() {
  local f id h
  for f in "$@"; do
    id="$(stat -L -c '%d:%i:%s:%.9Y' "$f") $f"
    h=$(awk -v id="$id" 'substr($0, length($1) + 2) == id { print $1; exit }' "$MEMO_OLD" "$MEMO_NEW")
    if [ -z "$h" ]; then
      h=$(b2sum <"$f" | cut -d' ' -f1)
      [ -n "$h" ] || fail "cannot read $f"
    fi
    grep -qxF "$h $id" "$MEMO_NEW" || echo "$h $id" >>"$MEMO_NEW"
    echo "$(basename "$f") $h"
  done | b2sum | cut -d' ' -f1
}

# strip_into DIR BIN...: copies of the binaries without debug info, executable by anyone.
strip_into() {
  local dir=$1 b; shift
  mkdir -p "$dir"
  for b in "$@"; do
    objcopy --strip-debug "$b" "$dir/$(basename "$b")" || fail "objcopy --strip-debug $b"
    chmod 0755 "$dir/$(basename "$b")"
  done
}

# publish NAME IMAGE KEY CONTAINERFILE CONTEXT [BUD ARGS...]: build IMAGE, export it to
# $OUT/NAME.tar (atomically) with IMAGE as its ref, and remember KEY as its inputs.
publish() {
  local name=$1 image=$2 key=$3 file=$4 ctx=$5; shift 5
  local t0; t0=$(date +%s)
  find "$ctx" -type d -exec chmod 0755 {} +   # the image's directories: traversable by 65532
  log "$image: buildah bud ($file)"
  bah bud --quiet --timestamp 0 --format oci --layers=false -f "$file" -t "$image" "$@" "$ctx" >/dev/null \
    || fail "buildah bud of $image"
  rm -f "$OUT/.$name.tar.tmp"
  bah push --quiet "$image" "oci-archive:$OUT/.$name.tar.tmp:$image" >&2 || fail "buildah push of $image"
  bah rmi --force "$image" >/dev/null 2>&1 || true
  mv -f "$OUT/.$name.tar.tmp" "$OUT/$name.tar"
  echo "$key" >"$OUT/.$name.inputs.tmp" && mv -f "$OUT/.$name.inputs.tmp" "$OUT/$name.inputs"
  log "$image: $OUT/$name.tar ($(du -h "$OUT/$name.tar" | cut -f1), $(( $(date +%s) - t0 ))s)"
  built=$((built + 1))
}

# stale NAME IMAGE KEY: true when $OUT/NAME.tar must be built (missing, or built from other
# inputs); otherwise says it is up to date.
stale() {
  if [ -s "$OUT/$1.tar" ] && [ -f "$OUT/$1.inputs" ] && [ "$(cat "$OUT/$1.inputs")" = "$3" ]; then
    log "$2: up to date ($OUT/$1.tar)"
    return 1
  fi
}

# containerfile TITLE: the start of a testbed image's Containerfile (FROM scratch, OCI labels).
containerfile() {
  printf 'FROM scratch\nLABEL org.opencontainers.image.title="%s" \\\n      org.opencontainers.image.source="%s" \\\n      org.opencontainers.image.licenses="Apache-2.0"\n' \
    "$1" "$LABEL_SOURCE"
}

log "step 3/3: images into $OUT (buildah storage $STORE)"
SELF=$(hash_of "${BASH_SOURCE[0]}")
built=0

# a. FerroLB: the Dockerfile's final stage; its Rust stage is skipped (BINARIES=host: the binaries
#    come from the build context, a directory holding bin/).
bins=(); for b in "${FERROLB_BINS[@]}"; do bins+=("$BIN_DIR/$b"); done
key=$(echo "$SELF $VERSION $FERROLB_IMAGE $(hash_of "$ROOT/Dockerfile" "${bins[@]}")" | b2sum | cut -d' ' -f1)
if stale ferrolb "$FERROLB_IMAGE" "$key"; then
  strip_into "$W/ferrolb/bin" "${bins[@]}"
  publish ferrolb "$FERROLB_IMAGE" "$key" "$ROOT/Dockerfile" "$W/ferrolb" \
    --build-arg BINARIES=host --build-arg "VERSION=$VERSION"
fi

# b. The testbed's echo server, with a busybox shell for `kubectl exec` and exec probes.
{ containerfile "FerroLB testbed echo server"; cat <<EOF; } >"$W/echo.Containerfile"
COPY bin/ /bin/
COPY usr/ /usr/
ENV PATH=/usr/local/bin:/bin
USER 65532:65532
ENTRYPOINT ["ferrolb-testbed", "echo"]
EOF
key=$(echo "$SELF $(hash_of "$W/echo.Containerfile" "$BIN_DIR/ferrolb-testbed" "$BUSYBOX")" | b2sum | cut -d' ' -f1)
if stale echo "$ECHO_IMAGE" "$key"; then
  strip_into "$W/echo/usr/local/bin" "$BIN_DIR/ferrolb-testbed"
  mkdir -p "$W/echo/bin"
  cp "$BUSYBOX" "$W/echo/bin/busybox" && chmod 0755 "$W/echo/bin/busybox"
  ln -s busybox "$W/echo/bin/sh"
  publish echo "$ECHO_IMAGE" "$key" "$W/echo.Containerfile" "$W/echo"
fi

# c. The pod sandbox (containerd's sandbox_image).
{ containerfile "FerroLB testbed pause (pod sandbox)"; cat <<EOF; } >"$W/pause.Containerfile"
COPY pause /pause
USER 65535:65535
ENTRYPOINT ["/pause"]
EOF
key=$(echo "$SELF $(hash_of "$W/pause.Containerfile" "$W/pause")" | b2sum | cut -d' ' -f1)
if stale pause "$PAUSE_IMAGE" "$key"; then
  mkdir -p "$W/pausectx" && cp "$W/pause" "$W/pausectx/pause" && chmod 0755 "$W/pausectx/pause"
  publish pause "$PAUSE_IMAGE" "$key" "$W/pause.Containerfile" "$W/pausectx"
fi

# d. A busybox with sh and tar and no entrypoint: the scorecard's pods run `tar xvzf ...` in it.
{ containerfile "FerroLB testbed busybox (sh, tar)"; cat <<EOF; } >"$W/busybox.Containerfile"
COPY bin/ /bin/
ENV PATH=/bin
USER 65532:65532
EOF
key=$(echo "$SELF $(hash_of "$W/busybox.Containerfile" "$BUSYBOX")" | b2sum | cut -d' ' -f1)
if stale busybox "$BUSYBOX_IMAGE" "$key"; then
  mkdir -p "$W/busybox/bin"
  cp "$BUSYBOX" "$W/busybox/bin/busybox" && chmod 0755 "$W/busybox/bin/busybox"
  for applet in sh tar gzip; do ln -s busybox "$W/busybox/bin/$applet"; done
  publish busybox "$BUSYBOX_IMAGE" "$key" "$W/busybox.Containerfile" "$W/busybox"
fi

# e. operator-sdk's scorecard test runner, under the name the committed scorecard config gives.
SCORECARD_IMAGE=$(sed -n 's/^[[:space:]]*image:[[:space:]]*\([^[:space:]]*\).*/\1/p' \
  "$ROOT/bundle/tests/scorecard/config.yaml" | sort -u)
case "$SCORECARD_IMAGE" in
  quay.io/operator-framework/scorecard-test:v*) ;;
  *) fail "bundle/tests/scorecard/config.yaml names no single scorecard-test image: $SCORECARD_IMAGE" ;;
esac
sdk=$(bash "$HERE/build-olm.sh" | awk '$1 == "operator-sdk" {print $2}') || fail "build-olm.sh"
[ "$(basename "$sdk")" = "operator-sdk-${SCORECARD_IMAGE##*:}" ] \
  || fail "the scorecard config names $SCORECARD_IMAGE but build-olm.sh builds $(basename "$sdk")"
is_static "$sdk/bin/scorecard-test"
{ containerfile "operator-sdk scorecard-test ${SCORECARD_IMAGE##*:}, built from source"; cat <<EOF; } >"$W/scorecard.Containerfile"
COPY scorecard-test /usr/local/bin/scorecard-test
ENV PATH=/usr/local/bin HOME=/tmp
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/scorecard-test"]
EOF
key=$(echo "$SELF $SCORECARD_IMAGE $(hash_of "$W/scorecard.Containerfile" "$sdk/bin/scorecard-test")" | b2sum | cut -d' ' -f1)
if stale scorecard "$SCORECARD_IMAGE" "$key"; then
  mkdir -p "$W/scorecardctx" && cp "$sdk/bin/scorecard-test" "$W/scorecardctx/" \
    && chmod 0755 "$W/scorecardctx/scorecard-test"
  publish scorecard "$SCORECARD_IMAGE" "$key" "$W/scorecard.Containerfile" "$W/scorecardctx"
fi

if [ "$built" -gt 0 ]; then
  # Nothing needs to stay in buildah's storage: the archives are the product.
  bah rmi --all --force >/dev/null 2>&1 || true
fi
printf '%s\n' "ferrolb.tar $FERROLB_IMAGE" "echo.tar $ECHO_IMAGE" "pause.tar $PAUSE_IMAGE" \
  "busybox.tar $BUSYBOX_IMAGE" "scorecard.tar $SCORECARD_IMAGE" >"$OUT/.images.txt.tmp"
mv -f "$OUT/.images.txt.tmp" "$OUT/images.txt"
cp "$MEMO_NEW" "$OUT/.file-hashes.tmp" && mv -f "$OUT/.file-hashes.tmp" "$MEMO_OLD"
log "done in $(( $(date +%s) - start ))s ($built image(s) built): $FERROLB_IMAGE $ECHO_IMAGE $PAUSE_IMAGE $BUSYBOX_IMAGE $SCORECARD_IMAGE"
echo "$OUT"
