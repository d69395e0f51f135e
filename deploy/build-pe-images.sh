#!/usr/bin/env bash
# Builds the example PE images weir-pe-score:{v1,v2,broken} (deploy/pe.Dockerfile)
# with no registry: the weir-pe-score binary with the shared libraries ldd lists (the
# dynamic loader included), FROM scratch.
#
#   deploy/build-pe-images.sh                       # release build, then the images
#   WEIR_PE_BIN=target/debug/weir-pe-score deploy/build-pe-images.sh   # this binary
#
# The container tests run it with the binary cargo built for them.
set -euo pipefail
cd "$(dirname "$0")/.."

target_dir="${CARGO_TARGET_DIR:-target}"
bin="${WEIR_PE_BIN:-}"
if [[ -z "$bin" ]]; then
    echo "== cargo build --release (weir-pe-score)"
    cargo build --release --locked -p weir-tests --bin weir-pe-score
    bin="$target_dir/release/weir-pe-score"
fi
[[ -x "$bin" ]] || { echo "missing $bin (build first)" >&2; exit 1; }

# A context of its own, so two builds at once do not share files.
ctx=$(mktemp -d)
trap 'rm -rf "$ctx"' EXIT
mkdir -p "$ctx/rootfs"
cp "$bin" "$ctx/weir-pe-score"
strip --strip-debug "$ctx/weir-pe-score"
for lib in $(ldd "$bin" | awk '$2 == "=>" && $3 ~ /^\// { print $3 } $1 ~ /^\// { print $1 }' | sort -u); do
    mkdir -p "$ctx/rootfs$(dirname "$lib")"
    cp -L "$lib" "$ctx/rootfs$lib"
done

for tag in v1 v2 broken; do
    docker build -q -f deploy/pe.Dockerfile --target "$tag" -t "weir-pe-score:$tag" "$ctx" >/dev/null
done
docker images --format '{{.Repository}}:{{.Tag}}  {{.ID}}  {{.Size}}' | grep -E '^weir-pe-score:' || true
