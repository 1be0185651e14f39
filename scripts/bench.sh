#!/usr/bin/env bash
# Reproduces the README's benchmark table as shipped: release builds, every taskd flag at its
# default, noop tasks, taskctl bench on the same host, three runs per row, the median
# reported. Rows per mode: single submits from 16 concurrent clients (how applications
# submit), batches of 100 from 8 submitters, and one task at a time on an idle taskd. Needs
# PostgreSQL and RabbitMQ for the production rows (scripts/services.sh) and psql/rabbitmqctl
# to make a scratch database and vhost. Ends with the count of deadlock and slow-statement
# lines in every taskd log. Usage: scripts/bench.sh [SINGLE_TASKS] [BATCH_TASKS]
# (default 20000 and 50000)
set -euo pipefail
cd "$(dirname "$0")/.."
single="${1:-20000}"
batched="${2:-50000}"
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

source scripts/bench-lib.sh  # the cwd is the repository (see the cd above)

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

rows() { # rows MODE URL : the three workloads against one deployment
    row "$1, $single single submits (16 clients)" "$2" --tasks "$single" --concurrency 16 --batch 1
    row "$1, $batched in batches of 100 (8 submitters)" "$2" --tasks "$batched" --concurrency 8 --batch 100
    row "$1, idle, one task at a time" "$2" --tasks 200 --concurrency 1 --batch 1
}

echo "| mode | tasks/s end to end | p50 ms | p99 ms |"
echo "|---|---|---|---|"
start embedded --database "sqlite://$work/bench.db"
rows "embedded (SQLite)" "$URL"
kill "${pids[${#pids[@]}-1]}"

admin="${TASKPLANE_TEST_DATABASE_URL:-postgres://postgres@127.0.0.1:5432/test}"
psql "$admin" -qc "DROP DATABASE IF EXISTS taskplane_bench WITH (FORCE)" -c "CREATE DATABASE taskplane_bench" 2>/dev/null
db="${admin%/*}/taskplane_bench"
start pg-db --database "$db" --broker db
rows "PostgreSQL, --broker db" "$URL"
kill "${pids[${#pids[@]}-1]}"

rabbitmqctl add_vhost taskplane_bench >/dev/null
rabbitmqctl set_permissions -p taskplane_bench guest '.*' '.*' '.*' >/dev/null
amqp="amqp://guest:guest@127.0.0.1:5672/taskplane_bench"
start pg-worker --role worker --database "$db" --broker "$amqp"
start pg-api --role api --database "$db" --broker "$amqp"
rows "PostgreSQL + RabbitMQ, 1 api + 1 worker" "$URL"

echo
for log in "$work"/*.log; do
    printf '%s: %s deadlock, %s slow statement lines\n' "$(basename "$log" .log)" \
        "$(grep -ci 'deadlock' "$log" || true)" "$(grep -ci 'slow statement' "$log" || true)"
done
