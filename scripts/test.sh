#!/usr/bin/env bash
# Every test, for real: installs the tools the suites drive (scripts/install-test-tools.sh),
# starts PostgreSQL and RabbitMQ if they are down (scripts/services.sh), then runs
# `cargo test --workspace` with TASKPLANE_REQUIRE_SERVICES=1, so a test that cannot run fails
# instead of being skipped. Extra arguments go to cargo test (e.g. `-p taskctl --test it live::`).
# Plain `cargo test --workspace` works anywhere too: it skips what it cannot run, and says so.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/install-test-tools.sh
while IFS='=' read -r name value; do
    export "$name=$value"
done < <(bash scripts/services.sh)
export TASKPLANE_REQUIRE_SERVICES=1

cargo test --workspace "$@"
