#!/usr/bin/env bash
# Builds the weir-master and weir-worker images from a clean clone, with no registry:
# release binaries built here, copied with the shared libraries ldd lists (the dynamic
# loader included) into deploy/build/, then two FROM scratch images; then the example
# PE images weir-pe-score:{v1,v2,broken} (deploy/build-pe-images.sh).
#
#   deploy/build-images.sh            # tags weir-master:latest, weir-worker:latest
#   WEIR_TAG=dev deploy/build-images.sh
#   WEIR_SKIP_CARGO=1 deploy/build-images.sh   # reuse the binaries already built
set -euo pipefail
cd "$(dirname "$0")/.."

tag="${WEIR_TAG:-latest}"
target_dir="${CARGO_TARGET_DIR:-target}"
bins=(weir-master weir-worker weirctl)

if [[ "${WEIR_SKIP_CARGO:-0}" != 1 ]]; then
    echo "== cargo build --release (${bins[*]})"
    cargo build --release --locked -p weir-master -p weir-worker -p weirctl
    cargo build --release --locked -p weir-tests --bin weir-pe-score
fi

ctx=deploy/build
rm -rf "$ctx"
mkdir -p "$ctx/bin" "$ctx/rootfs/etc" "$ctx/rootfs/tmp" "$ctx/rootfs/var/lib" \
    "$ctx/rootfs/usr/local/bin" "$ctx/data/weir" "$ctx/data/weir-worker" "$ctx/data/weir-output"
chmod 1777 "$ctx/rootfs/tmp"
# Data directories, given to uid 10001 by the Dockerfile (the processes run as it); a
# new named volume mounted there takes their owner and mode.
chmod 0750 "$ctx"/data/*
# glibc's resolver: container hostnames from /etc/hosts, then Docker's DNS.
printf 'hosts: files dns\n' >"$ctx/rootfs/etc/nsswitch.conf"

for b in "${bins[@]}"; do
    src="$target_dir/release/$b"
    [[ -x "$src" ]] || { echo "missing $src (build first)" >&2; exit 1; }
    dest="$ctx/bin/$b"
    [[ "$b" == weirctl ]] && dest="$ctx/rootfs/usr/local/bin/$b"
    cp "$src" "$dest"
    strip --strip-debug "$dest"
done

# Every library the three binaries load, at the path ldd resolves it to, plus the
# loader at the path written in the binaries (PT_INTERP). Symlinks are followed.
libs=$(for b in "${bins[@]}"; do ldd "$target_dir/release/$b"; done |
    awk '$2 == "=>" && $3 ~ /^\// { print $3 } $1 ~ /^\// { print $1 }' | sort -u)
for lib in $libs; do
    mkdir -p "$ctx/rootfs$(dirname "$lib")"
    cp -L "$lib" "$ctx/rootfs$lib"
done
echo "== libraries: $(echo $libs | tr '\n' ' ')"

for target in master worker; do
    echo "== docker build weir-$target:$tag"
    docker build -q -f deploy/Dockerfile --target "$target" -t "weir-$target:$tag" deploy
done
docker images --format '{{.Repository}}:{{.Tag}}  {{.Size}}' | grep -E "^weir-(master|worker):$tag " || true

echo "== example PE images (deploy/build-pe-images.sh)"
WEIR_PE_BIN="$target_dir/release/weir-pe-score" deploy/build-pe-images.sh
