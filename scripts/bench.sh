#!/usr/bin/env bash
# Reproduces the README's benchmark table as shipped: release builds, every taskd flag at its
# default, noop tasks, taskctl bench on the same host, three runs per row, the median
# reported. Rows per mode: single submits from 16 concurrent clients (how applications
# submit), batches of 100 from 8 submitters, one task at a time on an idle taskd, and the
# single submits again with a running limit on the queue (the gated claim's cost). Needs
# PostgreSQL and RabbitMQ for the production rows (scripts/services.sh) and psql/rabbitmqctl
# to make a scratch database and vhost; the Redis rows start a redis-server of their own
# (Debian's defaults: no persistence beyond its snapshots; skipped when it is not installed). On PostgreSQL it also counts the row writes per task
# (n_tup_ins + n_tup_upd over every table, TOAST included, across the batch row's runs) and,
# with RabbitMQ, the deliveries the worker dropped as duplicates. Ends with the count of
# deadlock and slow-statement lines in every taskd log. The last column is the CPU each
# part took over a row's three runs, in % of one core (the machine has nproc × 100): taskd's
# processes, PostgreSQL's, RabbitMQ's, and the rest (taskctl bench, mostly). Usage: scripts/bench.sh [SINGLE_TASKS] [BATCH_TASKS]
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
    [ -n "${redis_port:-}" ] && redis-cli -p "$redis_port" shutdown nosave >/dev/null 2>&1 || true
    rm -rf "$work"
}
trap cleanup EXIT

source scripts/bench-lib.sh  # the cwd is the repository (see the cd above)

summarize() { # summarize JSON… : rate p50 p99 of bench runs that ran side by side
    python3 - "$@" <<'PY'
import json, sys
runs = [json.load(open(path)) for path in sys.argv[1:]]
seconds = max(r["tasks"] / r["completed_per_sec"] for r in runs)
print(round(sum(r["tasks"] for r in runs) / seconds),
      max(r["end_to_end_ms"]["p50"] for r in runs),
      max(r["end_to_end_ms"]["p99"] for r in runs))
PY
}

table_row() { # table_row LABEL TICKS : the medians of the caller's rates, p50s and p99s, and the CPU taken since cpu_ticks read TICKS
    printf '| %s | %s | %s | %s | %s |\n' "$1" \
        "$(printf '%s\n' "${rates[@]}" | median)" \
        "$(printf '%s\n' "${p50s[@]}" | median)" \
        "$(printf '%s\n' "${p99s[@]}" | median)" \
        "$(cpu_share "$2" "$(cpu_ticks)")"
}

row() { # row LABEL URL BENCH-ARGS…
    local label=$1 url=$2; shift 2
    local rates=() p50s=() p99s=() rate p50 p99 before
    before=$(cpu_ticks)
    for run in 1 2 3; do
        "$bin/taskctl" --server "$url" bench -o json "$@" >"$work/run.json"
        read -r rate p50 p99 < <(summarize "$work/run.json")
        rates+=("$rate"); p50s+=("$p50"); p99s+=("$p99")
    done
    table_row "$label" "$before"
}

writes() { # writes DB : row writes so far, every table (the statistics settle first)
    # A backend reports its counts when idle, at most every 10 s (PostgreSQL 15).
    sleep 11
    psql "$1" -Atc "SELECT COALESCE(SUM(n_tup_ins + n_tup_upd), 0) FROM pg_stat_all_tables
        WHERE schemaname IN ('public', 'pg_toast')"
}

notes=()
rows() { # rows MODE URL [DB] : the three workloads against one deployment
    row "$1, $single single submits (16 clients)" "$2" --tasks "$single" --concurrency 16 --batch 1
    local before=""
    [ -n "${3:-}" ] && before=$(writes "$3")
    row "$1, $batched in batches of 100 (8 submitters)" "$2" --tasks "$batched" --concurrency 8 --batch 100
    if [ -n "$before" ]; then
        local after; after=$(writes "$3")
        notes+=("$1: $(python3 -c "print(round(($after - $before) / (3 * $batched), 2))") row writes per task (batch row)")
    fi
    row "$1, idle, one task at a time" "$2" --tasks 200 --concurrency 1 --batch 1
    # What a running limit costs: the same single submits with one set on the queue (high
    # enough never to hold a task back), so every start goes through the gated claim.
    "$bin/taskctl" --server "$2" queues set default --max-running 100000 >/dev/null
    row "$1, $single single submits, --max-running set (not reached)" "$2" --tasks "$single" --concurrency 16 --batch 1
    "$bin/taskctl" --server "$2" queues set default --max-running none >/dev/null
}

pair_row() { # pair_row LABEL URL1 URL2 TASKS CONCURRENCY BATCH : half the load through each api
    local label=$1 one=$2 two=$3 tasks=$4 conc=$5 batch=$6
    local rates=() p50s=() p99s=() rate p50 p99 before
    before=$(cpu_ticks)
    for run in 1 2 3; do
        "$bin/taskctl" --server "$one" bench -o json --tasks $((tasks / 2)) --concurrency $((conc / 2)) --batch "$batch" >"$work/one.json" &
        local first=$!
        "$bin/taskctl" --server "$two" bench -o json --tasks $((tasks / 2)) --concurrency $((conc / 2)) --batch "$batch" >"$work/two.json"
        wait "$first"
        read -r rate p50 p99 < <(summarize "$work/one.json" "$work/two.json")
        rates+=("$rate"); p50s+=("$p50"); p99s+=("$p99")
    done
    table_row "$label" "$before"
}

stop_last() { # stop_last : stops the taskd started last and waits for it (its CPU must not vanish mid-row)
    local pid=${pids[${#pids[@]}-1]}
    unset 'pids[${#pids[@]}-1]'
    kill "$pid"
    wait "$pid" 2>/dev/null || true
}

dropped() { # dropped URL : deliveries the worker there dropped as not ready
    curl -s "$1/metrics" | awk '$1 == "taskplane_deliveries_dropped_total" { print $2 }'
}

echo "| mode | tasks/s end to end | p50 ms | p99 ms | CPU, % of one core |"
echo "|---|---|---|---|---|"
start embedded --database "sqlite://$work/bench.db"
rows "embedded (SQLite)" "$URL"
stop_last

admin="${TASKPLANE_TEST_DATABASE_URL:-postgres://postgres@127.0.0.1:5432/test}"
psql "$admin" -qc "DROP DATABASE IF EXISTS taskplane_bench WITH (FORCE)" -c "CREATE DATABASE taskplane_bench" 2>/dev/null
db="${admin%/*}/taskplane_bench"
start pg-db --database "$db" --broker db
rows "PostgreSQL, --broker db" "$URL" "$db"
stop_last

rabbitmqctl add_vhost taskplane_bench >/dev/null
rabbitmqctl set_permissions -p taskplane_bench guest '.*' '.*' '.*' >/dev/null
amqp="amqp://guest:guest@127.0.0.1:5672/taskplane_bench"
start pg-worker --role worker --database "$db" --broker "$amqp"
worker_url=$URL
start pg-api --role api --database "$db" --broker "$amqp"
rows "PostgreSQL + RabbitMQ, 1 api + 1 worker" "$URL" "$db"
notes+=("PostgreSQL + RabbitMQ, 1 + 1: $(dropped "$worker_url") deliveries dropped as duplicates or not ready")

# The same database and broker, a second api and worker beside the first: the load is split
# between the two apis (half the tasks and half the clients through each).
api_url=$URL
start pg-worker2 --role worker --database "$db" --broker "$amqp"
worker2_url=$URL
start pg-api2 --role api --database "$db" --broker "$amqp"
pair_row "PostgreSQL + RabbitMQ, 2 api + 2 workers, $single single submits (16 clients)" "$api_url" "$URL" "$single" 16 1
pair_row "PostgreSQL + RabbitMQ, 2 api + 2 workers, $batched in batches of 100 (8 submitters)" "$api_url" "$URL" "$batched" 8 100
notes+=("PostgreSQL + RabbitMQ, 2 + 2: $(( $(dropped "$worker_url") + $(dropped "$worker2_url") )) deliveries dropped in all")
for _ in 1 2 3 4; do stop_last; done

# Redis instead of RabbitMQ, on a fresh database: a redis-server of its own on a free port.
if command -v redis-server >/dev/null; then
    psql "$admin" -qc "DROP DATABASE IF EXISTS taskplane_bench WITH (FORCE)" -c "CREATE DATABASE taskplane_bench" 2>/dev/null
    redis_port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
    redis-server --port "$redis_port" --bind 127.0.0.1 --dir "$work" --daemonize yes --logfile "$work/redis-server.txt" >/dev/null
    redis="redis://127.0.0.1:$redis_port"
    for _ in $(seq 1 50); do redis-cli -p "$redis_port" ping 2>/dev/null | grep -q PONG && break; sleep 0.1; done
    start redis-worker --role worker --database "$db" --broker "$redis"
    start redis-api --role api --database "$db" --broker "$redis"
    rows "PostgreSQL + Redis, 1 api + 1 worker" "$URL" "$db"
    api_url=$URL
    start redis-worker2 --role worker --database "$db" --broker "$redis"
    start redis-api2 --role api --database "$db" --broker "$redis"
    pair_row "PostgreSQL + Redis, 2 api + 2 workers, $single single submits (16 clients)" "$api_url" "$URL" "$single" 16 1
    pair_row "PostgreSQL + Redis, 2 api + 2 workers, $batched in batches of 100 (8 submitters)" "$api_url" "$URL" "$batched" 8 100
else
    notes+=("PostgreSQL + Redis: skipped (redis-server is not installed)")
fi

echo
printf '%s\n' "${notes[@]}"
for log in "$work"/*.log; do
    printf '%s: %s deadlock, %s slow statement lines\n' "$(basename "$log" .log)" \
        "$(grep -ci 'deadlock' "$log" || true)" "$(grep -ci 'slow statement' "$log" || true)"
    # What they were, so that a slow or deadlocked statement can be found.
    grep -hi -A2 'deadlock\|slow statement' "$log" | head -n 6 | cut -c1-400 | sed 's/^/    /' || true
done
