#!/usr/bin/env bash
# Label selectors on a large table: seeds TASKS tasks (default 100000) into a taskd with the
# API role only (so they stay queued), then times `GET /api/v1/tasks?limit=50&label=…` for
# selectors from common to rare, the median of 11 requests each. Runs on the embedded SQLite
# database and, when PostgreSQL is up (scripts/services.sh), on a scratch PostgreSQL database.
# Release build, every flag at its default. Usage: scripts/bench-labels.sh [TASKS]
set -euo pipefail
cd "$(dirname "$0")/.."
tasks="${1:-100000}"
target="${CARGO_TARGET_DIR:-target}"
cargo build --release -q -p taskd
bin="$target/release"
work="$(mktemp -d)"
admin="${TASKPLANE_TEST_DATABASE_URL:-postgres://postgres@127.0.0.1:5432/test}"
pids=()
cleanup() {
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    psql "$admin" -qc "DROP DATABASE IF EXISTS taskplane_bench_labels WITH (FORCE)" >/dev/null 2>&1 || true
    rm -rf "$work"
}
trap cleanup EXIT

source scripts/bench-lib.sh  # the cwd is the repository (see the cd above)

# Task i: team=t(i mod 10) (10% each), shard=s(i mod 1000) (0.1%), env=prod for odd i (50%),
# rare=yes for one task in 10,000.
seed() {
    python3 - "$1" "$tasks" <<'PY'
import json, sys, urllib.request
url, total = sys.argv[1], int(sys.argv[2])
for start in range(0, total, 1000):
    batch = []
    for i in range(start, min(start + 1000, total)):
        labels = {"team": f"t{i % 10}", "shard": f"s{i % 1000}"}
        if i % 2:
            labels["env"] = "prod"
        if i % 10000 == 0:
            labels["rare"] = "yes"
        batch.append({"kind": "noop", "labels": labels})
    request = urllib.request.Request(url + "/api/v1/tasks/batch", json.dumps({"tasks": batch}).encode(),
                                     {"Content-Type": "application/json"})
    urllib.request.urlopen(request).read()
PY
}

time_query() { # time_query URL QUERY : median milliseconds and how many tasks the page held
    local times=() count
    count=$(curl -sf "$1/api/v1/tasks?limit=50&$2" | python3 -c 'import json,sys; print(len(json.load(sys.stdin)["tasks"]))')
    for _ in $(seq 1 11); do
        times+=("$(curl -sf -o /dev/null -w '%{time_total}' "$1/api/v1/tasks?limit=50&$2")")
    done
    printf '%s %s\n' "$(printf '%s\n' "${times[@]}" | median | awk '{ printf "%.1f", $1 * 1000 }')" "$count"
}

queries=(
    ""
    "label=team=t3"
    "label=shard=s7"
    "label=rare=yes"
    "label=rare"
    "label=!rare"
    "label=team!=t3"
    "label=team=t3&label=env=prod"
    "label=team=t4&label=env=prod"
    "label=nobody=x"
)

report() { # report NAME URL
    for q in "${queries[@]}"; do
        read -r ms count < <(time_query "$2" "$q")
        printf '| %s | `%s` | %s | %s |\n' "$1" "${q:-(no selector)}" "$count" "$ms"
    done
}

echo "| database | query (limit=50) | tasks on the page | median ms |"
echo "|---|---|---|---|"
start sqlite --role api --database "sqlite://$work/labels.db"
seed "$URL"
report "SQLite, $tasks tasks" "$URL"

if psql "$admin" -qc "DROP DATABASE IF EXISTS taskplane_bench_labels WITH (FORCE)" -c "CREATE DATABASE taskplane_bench_labels" >/dev/null 2>&1; then
    start postgres --role api --database "${admin%/*}/taskplane_bench_labels"
    seed "$URL"
    report "PostgreSQL, $tasks tasks" "$URL"
else
    echo "PostgreSQL is not reachable at $admin: its rows are left out" >&2
fi
