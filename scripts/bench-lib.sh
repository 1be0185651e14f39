# Shared by scripts/bench.sh and scripts/bench-labels.sh (sourced): start a release taskd and
# take a median. The caller sets $bin (the release binaries), $work (a temp dir) and the
# array pids (killed by its cleanup).

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

cpu_ticks() { # cpu_ticks : CPU clock ticks used so far by taskd, PostgreSQL, RabbitMQ and Redis, by the machine, and the wall clock in ticks
    python3 - <<'PY'
import os
by = {"taskd": 0, "postgres": 0, "rabbitmq": 0, "redis": 0}
rabbit = {"beam.smp", "erl_child_setup", "epmd", "inet_gethost"}
for pid in filter(str.isdigit, os.listdir("/proc")):
    try:
        stat = open(f"/proc/{pid}/stat").read()
    except OSError:
        continue
    comm = stat[stat.index("(") + 1:stat.rindex(")")]
    fields = stat[stat.rindex(")") + 2:].split()
    ticks = int(fields[11]) + int(fields[12])  # utime + stime
    if comm == "taskd":
        by["taskd"] += ticks
    elif comm == "postgres" or comm.startswith("postgres:"):
        by["postgres"] += ticks
    elif comm in rabbit:
        by["rabbitmq"] += ticks
    elif comm == "redis-server":
        by["redis"] += ticks
cpu = [int(v) for v in open("/proc/stat").readline().split()[1:]]
busy = sum(cpu) - cpu[3] - cpu[4]  # everything but idle and iowait
wall = sum(cpu) / os.cpu_count()
print(by["taskd"], by["postgres"], by["rabbitmq"], by["redis"], busy, int(wall))
PY
}

cpu_share() { # cpu_share BEFORE AFTER : what each used between two cpu_ticks, in % of one core
    python3 - "$1" "$2" <<'PY'
import sys
a, b = ([int(v) for v in s.split()] for s in sys.argv[1:])
d = [y - x for x, y in zip(a, b)]
wall = max(d[5], 1)
taskd, pg, rabbit, redis, busy = (round(100 * v / wall) for v in d[:5])
parts = [f"taskd {taskd}"]
if pg:
    parts.append(f"PostgreSQL {pg}")
if rabbit:
    parts.append(f"RabbitMQ {rabbit}")
if redis:
    parts.append(f"Redis {redis}")
parts.append(f"rest {max(busy - taskd - pg - rabbit - redis, 0)}")
print(" · ".join(parts))
PY
}
