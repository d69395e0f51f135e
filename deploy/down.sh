#!/usr/bin/env bash
# Tears the compose cluster down: containers, network and the data volumes (masters' Raft
# state, workers' checkpoints: everything the cluster stored is gone). Project name:
# $WEIR_PROJECT (default "weir").
set -euo pipefail
cd "$(dirname "$0")"
docker-compose -f docker-compose.yml -p "${WEIR_PROJECT:-weir}" down -v --remove-orphans -t 5
