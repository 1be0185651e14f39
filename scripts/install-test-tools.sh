#!/usr/bin/env bash
# Installs the tools the test suite drives, if they are missing: tmux (taskctl top is tested
# inside it) and the PostgreSQL and RabbitMQ command-line clients (psql, rabbitmqctl come with
# their servers). Safe to run any number of times; needs root and apt for a missing package.
set -euo pipefail

missing=()
command -v tmux >/dev/null || missing+=(tmux)
command -v psql >/dev/null || missing+=(postgresql-client)

if [ ${#missing[@]} -gt 0 ]; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        echo "install-test-tools: installing ${missing[*]}" >&2
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
    else
        echo "install-test-tools: missing ${missing[*]}; install them with your package manager" >&2
    fi
fi
