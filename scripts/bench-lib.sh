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
