#!/usr/bin/env bash
# Reproduces the README's benchmark table: release builds, noop tasks, taskctl bench on the
# same host, three runs per row, the median reported. Needs PostgreSQL and RabbitMQ for the
# production rows (scripts/services.sh) and psql/rabbitmqctl to make a scratch database and
# vhost. Usage: scripts/bench.sh [TASKS]   (default 20000)
set -euo pipefail
cd "$(dirname "$0")/.."
tasks="${1:-20000}"
target="${CARGO_TARGET_DIR:-target}"
cargo build --release -q -p taskd -p taskctl
bin="$target/release"
work="$(mktemp -d)"
pids=()
cleanup() {
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    psql "${TASKPLANE_TEST_DATABASE_URL:-postgres://postgres@127.0.0.1:5432/test}" -qc "DROP DATABASE IF EXISTS taskplane_bench WITH (FORCE)" >/dev/null 2>&1 || true
    rabbitmqctl delete_vhost taskplane_bench >/dev/null 2>&1 || true
    rm -rf "$work"
}
trap cleanup EXIT

start() { # start NAME ARGS… : runs taskd, waits for its port, sets URL
    local name=$1; shift
    "$bin/taskd" --listen 127.0.0.1:0 --log-level warn,taskd=info "$@" >"$work/$name.log" 2>&1 &
    pids+=($!)
    for _ in $(seq 1 100); do
        if grep -q "listening on http://" "$work/$name.log"; then
            URL=$(grep -o 'listening on http://[0-9.:]*' "$work/$name.log" | head -n1 | sed 's/listening on //')
            return
        fi
        sleep 0.1
    done
    echo "taskd $name did not start" >&2; cat "$work/$name.log" >&2; exit 1
}

median() { sort -n | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'; }

row() { # row LABEL URL BENCH-ARGS…
    local label=$1 url=$2; shift 2
    local rates=() p50s=() p99s=()
    for run in 1 2 3; do
        json=$("$bin/taskctl" --server "$url" bench -o json "$@")
        rates+=("$(echo "$json" | python3 -c 'import json,sys; print(round(json.load(sys.stdin)["completed_per_sec"]))')")
        p50s+=("$(echo "$json" | python3 -c 'import json,sys; print(json.load(sys.stdin)["end_to_end_ms"]["p50"])')")
        p99s+=("$(echo "$json" | python3 -c 'import json,sys; print(json.load(sys.stdin)["end_to_end_ms"]["p99"])')")
    done
    printf '| %s | %s | %s | %s |\n' "$label" \
        "$(printf '%s\n' "${rates[@]}" | median)" \
        "$(printf '%s\n' "${p50s[@]}" | median)" \
        "$(printf '%s\n' "${p99s[@]}" | median)"
}

echo "| mode | tasks/s end to end | p50 ms | p99 ms |"
echo "|---|---|---|---|"
start embedded --database "sqlite://$work/bench.db" --concurrency 256
row "embedded (SQLite), $tasks tasks, 8 submitters × batch 100" "$URL" --tasks "$tasks" --concurrency 8 --batch 100
row "embedded (SQLite), idle, one task at a time" "$URL" --tasks 200 --concurrency 1 --batch 1

admin="${TASKPLANE_TEST_DATABASE_URL:-postgres://postgres@127.0.0.1:5432/test}"
psql "$admin" -qc "DROP DATABASE IF EXISTS taskplane_bench WITH (FORCE)" -c "CREATE DATABASE taskplane_bench" 2>/dev/null
db="${admin%/*}/taskplane_bench"
start pg-db --database "$db" --broker db --concurrency 256
row "PostgreSQL, --broker db, $tasks tasks" "$URL" --tasks "$tasks" --concurrency 8 --batch 100
row "PostgreSQL, --broker db, idle" "$URL" --tasks 200 --concurrency 1 --batch 1
kill "${pids[${#pids[@]}-1]}"

rabbitmqctl add_vhost taskplane_bench >/dev/null
rabbitmqctl set_permissions -p taskplane_bench guest '.*' '.*' '.*' >/dev/null
amqp="amqp://guest:guest@127.0.0.1:5672/taskplane_bench"
start pg-worker --role worker --database "$db" --broker "$amqp" --concurrency 256
start pg-api --role api --database "$db" --broker "$amqp"
row "PostgreSQL + RabbitMQ, 1 api + 1 worker, $tasks tasks" "$URL" --tasks "$tasks" --concurrency 8 --batch 100
row "PostgreSQL + RabbitMQ, idle" "$URL" --tasks 200 --concurrency 1 --batch 1
