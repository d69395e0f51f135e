#!/usr/bin/env bash
# Brings the compose cluster up (3 masters, 3 workers) and waits until every
# container is healthy. Project name: $WEIR_PROJECT (default "weir").
# Build the images first: deploy/build-images.sh
set -euo pipefail
cd "$(dirname "$0")"
project="${WEIR_PROJECT:-weir}"
compose=(docker-compose -f docker-compose.yml -p "$project")
"${compose[@]}" up -d
for i in $(seq 1 60); do
    unhealthy=$("${compose[@]}" ps -q | xargs docker inspect \
        --format '{{.Name}} {{if .State.Health}}{{.State.Health.Status}}{{else}}{{.State.Status}}{{end}}' |
        grep -v ' healthy$' || true)
    if [[ -z "$unhealthy" ]]; then
        "${compose[@]}" ps
        echo "Weir is up: masters at 127.0.0.1:${WEIR_MASTER1_PORT:-27001},${WEIR_MASTER2_PORT:-27002},${WEIR_MASTER3_PORT:-27003}"
        echo "  export WEIR_MASTERS=127.0.0.1:${WEIR_MASTER1_PORT:-27001},127.0.0.1:${WEIR_MASTER2_PORT:-27002},127.0.0.1:${WEIR_MASTER3_PORT:-27003}"
        exit 0
    fi
    sleep 1
done
echo "not healthy after 60 s:" >&2
echo "$unhealthy" >&2
"${compose[@]}" logs --tail 30 >&2
exit 1
