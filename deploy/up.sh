#!/usr/bin/env bash
# Brings the compose cluster up (3 masters, 3 workers, mutual TLS everywhere) and waits
# until every container is healthy. Project name: $WEIR_PROJECT (default "weir").
# Build the images first: deploy/build-images.sh
#
# Certificates: $WEIR_CERTS_DIR (default deploy/certs). When it holds no ca.pem, a new
# CA and the cluster's certificates are written there (`weirctl certs init`: masters
# 1-3, workers w1-w3, tenant default, admin admin). The containers run as uid 10001:
# the keys are given to it when this script runs as root, else made readable by this
# user's group, which the containers then run as (WEIR_CERTS_GID). The CA key is never
# shared. The workers join the Docker socket's group (WEIR_DOCKER_GID).
set -euo pipefail
cd "$(dirname "$0")"
project="${WEIR_PROJECT:-weir}"
container_uid=10001

certs="${WEIR_CERTS_DIR:-./certs}"
if [[ ! -f "$certs/ca.pem" ]]; then
    if [[ -x build/rootfs/usr/local/bin/weirctl ]]; then
        weirctl=(build/rootfs/usr/local/bin/weirctl)
    else
        weirctl=(cargo run -q --locked -p weirctl --)
    fi
    "${weirctl[@]}" certs init "$certs" --masters 1,2,3 --workers w1,w2,w3 \
        --tenants "${WEIR_TENANTS:-default}" --admins admin
fi
certs="$(cd "$certs" && pwd)"
export WEIR_CERTS_DIR="$certs"
shared=("$certs" "$certs"/*.pem)
for k in "$certs"/*.key; do
    [[ "$(basename "$k")" == ca.key ]] || shared+=("$k")
done
if [[ "$(id -u)" == 0 ]]; then
    chown "$container_uid:$container_uid" "${shared[@]}"
    unset WEIR_CERTS_GID
else
    chmod 0750 "$certs"
    chmod 0640 "${shared[@]:1}"
    export WEIR_CERTS_GID="$(id -g)"
fi
if [[ -S /var/run/docker.sock ]]; then
    export WEIR_DOCKER_GID="$(stat -c %g /var/run/docker.sock)"
fi

compose=(docker-compose -f docker-compose.yml -p "$project")
"${compose[@]}" up -d
for i in $(seq 1 60); do
    unhealthy=$("${compose[@]}" ps -q | xargs docker inspect \
        --format '{{.Name}} {{if .State.Health}}{{.State.Health.Status}}{{else}}{{.State.Status}}{{end}}' |
        grep -v ' healthy$' || true)
    if [[ -z "$unhealthy" ]]; then
        "${compose[@]}" ps
        echo "Weir is up: masters at 127.0.0.1:${WEIR_MASTER1_PORT:-27001},${WEIR_MASTER2_PORT:-27002},${WEIR_MASTER3_PORT:-27003}"
        echo "Talk to it as the cluster admin (a tenant: tenant-<name>.pem/.key):"
        echo "  export WEIR_MASTERS=127.0.0.1:${WEIR_MASTER1_PORT:-27001},127.0.0.1:${WEIR_MASTER2_PORT:-27002},127.0.0.1:${WEIR_MASTER3_PORT:-27003}"
        echo "  export WEIR_TLS_CA=$certs/ca.pem WEIR_TLS_CERT=$certs/admin-admin.pem WEIR_TLS_KEY=$certs/admin-admin.key"
        exit 0
    fi
    sleep 1
done
echo "not healthy after 60 s:" >&2
echo "$unhealthy" >&2
"${compose[@]}" logs --tail 30 >&2
exit 1
