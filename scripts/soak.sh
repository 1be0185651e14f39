#!/usr/bin/env bash
# The soak run (minutes; not in CI): 2 api + 2 worker processes on PostgreSQL + RabbitMQ,
# every flag at its default, TASKS noop tasks (default 40000) submitted as a stream of single
# submits (each with an idempotency key, retried on any failure, so a submit is either
# accepted once or not at all), while the script kill -9s a worker (and restarts it),
# restarts RabbitMQ, restarts PostgreSQL and kill -9s an API process. Then it waits for every
# accepted task to finish and prints: accepted, succeeded, lost (accepted, not in the
# database), stuck (not finished by the deadline), duplicate outcomes (a task that finished
# twice in the change feed), and the deadlock and panic lines of every log. Exit code 0 when
# lost, stuck, duplicates, deadlocks and panics are all 0.
# Needs: a local PostgreSQL cluster (pg_ctlcluster) and RabbitMQ (rabbitmqctl), psql.
# Usage: scripts/soak.sh [TASKS]
set -euo pipefail
cd "$(dirname "$0")/.."
tasks="${1:-40000}"
target="${CARGO_TARGET_DIR:-target}"
cargo build --release -q -p taskd
bin="$target/release"
work="$(mktemp -d)"
admin="${TASKPLANE_TEST_DATABASE_URL:-postgres://postgres@127.0.0.1:5432/test}"
db="${admin%/*}/taskplane_soak"
amqp="amqp://guest:guest@127.0.0.1:5672/taskplane_soak"
cluster="$(ls /etc/postgresql | head -n1)"
declare -A pid
cleanup() {
    for p in "${pid[@]}"; do kill "$p" 2>/dev/null || true; done
    psql "$admin" -qc "DROP DATABASE IF EXISTS taskplane_soak WITH (FORCE)" >/dev/null 2>&1 || true
    rabbitmqctl delete_vhost taskplane_soak >/dev/null 2>&1 || true
    rm -rf "$work"
}
trap cleanup EXIT

psql "$admin" -qc "DROP DATABASE IF EXISTS taskplane_soak WITH (FORCE)" -c "CREATE DATABASE taskplane_soak" >/dev/null
rabbitmqctl delete_vhost taskplane_soak >/dev/null 2>&1 || true
rabbitmqctl add_vhost taskplane_soak >/dev/null
rabbitmqctl set_permissions -p taskplane_soak guest '.*' '.*' '.*' >/dev/null
"$bin/taskd" migrate --database "$db" >/dev/null

start() { # start NAME PORT ROLE
    "$bin/taskd" --listen "127.0.0.1:$2" --role "$3" --database "$db" --broker "$amqp" \
        --log-level warn,taskd=info >>"$work/$1.log" 2>&1 &
    pid[$1]=$!
}
start api1 7181 api
start api2 7182 api
start worker1 7191 worker
start worker2 7192 worker
for port in 7181 7182; do
    for _ in $(seq 1 100); do curl -sf "127.0.0.1:$port/health" >/dev/null && break; sleep 0.1; done
done

# The submitter: 8 threads, each task once (its key), to either API, retried until accepted.
python3 - "$tasks" "$work/accepted" <<'PY' &
import json, sys, threading, time, urllib.request, urllib.error
total, out = int(sys.argv[1]), sys.argv[2]
apis = ["http://127.0.0.1:7181", "http://127.0.0.1:7182"]
accepted, lock, next_n = [], threading.Lock(), [0]
def submit(n):
    body = json.dumps({"kind": "noop", "idempotency_key": f"soak-{n}"}).encode()
    for attempt in range(600):
        url = apis[(n + attempt) % 2] + "/api/v1/tasks"
        try:
            request = urllib.request.Request(url, body, {"Content-Type": "application/json"})
            with urllib.request.urlopen(request, timeout=10) as answer:
                return json.load(answer)["id"]
        except Exception:
            time.sleep(0.1)
    return None
def run():
    while True:
        with lock:
            n = next_n[0]; next_n[0] += 1
        if n >= total:
            return
        task = submit(n)
        if task:
            with lock:
                accepted.append(task)
threads = [threading.Thread(target=run) for _ in range(8)]
for t in threads: t.start()
for t in threads: t.join()
open(out, "w").write("\n".join(accepted) + "\n")
PY
submitter=$!

count() { psql "$db" -Atc "SELECT count(*) FROM tasks" 2>/dev/null || echo 0; }
at() { # at N : waits until N tasks exist
    while [ "$(count)" -lt "$1" ] && kill -0 "$submitter" 2>/dev/null; do sleep 0.5; done
}
at $((tasks / 10)); echo "kill -9 worker1, restarted"; kill -9 "${pid[worker1]}"; sleep 1; start worker1 7191 worker
at $((tasks * 3 / 10)); echo "restart RabbitMQ"; rabbitmqctl stop_app >/dev/null; sleep 3; rabbitmqctl start_app >/dev/null
at $((tasks / 2)); echo "restart PostgreSQL"; pg_ctlcluster --skip-systemctl-redirect "$cluster" main restart
at $((tasks * 7 / 10)); echo "kill -9 api2"; kill -9 "${pid[api2]}"
wait "$submitter"

accepted=$(grep -c . "$work/accepted" || true)
deadline=$((SECONDS + 180))
while [ $SECONDS -lt $deadline ]; do
    open=$(psql "$db" -Atc "SELECT count(*) FROM tasks WHERE finished_at IS NULL")
    [ "$open" = 0 ] && break
    sleep 1
done
psql "$db" -qc "CREATE TEMP TABLE accepted (id TEXT)" -c "\\copy accepted FROM '$work/accepted'" \
    -Atc "SELECT 'succeeded ' || count(*) FILTER (WHERE t.status = 'succeeded'),
                 'lost ' || count(*) FILTER (WHERE t.id IS NULL),
                 'stuck ' || count(*) FILTER (WHERE t.id IS NOT NULL AND t.finished_at IS NULL)
          FROM accepted a LEFT JOIN tasks t ON t.id = a.id" > "$work/counts"
read -r _ succeeded _ lost _ stuck < <(tr '|' ' ' < "$work/counts")
# A feed row holds a statement's events: [task id, event, ...] each.
duplicates=$(psql "$db" -Atc "SELECT count(*) FROM (SELECT e->>0 FROM task_events,
        json_array_elements(events::json) AS e
    WHERE e->>1 IN ('succeeded', 'failed', 'cancelled') GROUP BY e->>0 HAVING count(*) > 1) d")
deadlocks=$(cat "$work"/*.log | grep -ci 'deadlock' || true)
panics=$(cat "$work"/*.log | grep -ci 'panicked' || true)
echo "accepted $accepted, succeeded $succeeded, lost $lost, stuck $stuck, duplicate outcomes $duplicates"
echo "log lines: $deadlocks deadlock, $panics panicked"
[ "$lost" = 0 ] && [ "$stuck" = 0 ] && [ "$duplicates" = 0 ] && [ "$deadlocks" = 0 ] && [ "$panics" = 0 ]
