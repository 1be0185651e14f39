#!/usr/bin/env bash
# Starts the local PostgreSQL and RabbitMQ that the production-mode tests use, if they are
# not already running. Safe to run any number of times. Prints the URLs to export.
set -euo pipefail

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

wait_port() {
    local port=$1 name=$2
    for _ in $(seq 1 120); do
        port_open "$port" && return 0
        sleep 0.5
    done
    echo "services: $name did not open port $port within 60s" >&2
    return 1
}

if ! port_open 5432; then
    if command -v pg_ctlcluster >/dev/null && [ -d /etc/postgresql ]; then
        echo "services: starting PostgreSQL" >&2
        pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -n1)" main start || true
        wait_port 5432 PostgreSQL
    else
        echo "services: PostgreSQL is not installed here" >&2
    fi
fi

if ! port_open 5672; then
    if command -v rabbitmq-server >/dev/null; then
        echo "services: starting RabbitMQ" >&2
        rabbitmq-server -detached || true
        wait_port 5672 RabbitMQ
    else
        echo "services: RabbitMQ is not installed here" >&2
    fi
fi

echo "TASKPLANE_TEST_DATABASE_URL=${TASKPLANE_TEST_DATABASE_URL:-postgres://postgres@127.0.0.1:5432/test}"
echo "TASKPLANE_TEST_AMQP_URL=${TASKPLANE_TEST_AMQP_URL:-amqp://guest:guest@127.0.0.1:5672/%2f}"
