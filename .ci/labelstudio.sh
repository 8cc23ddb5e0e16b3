#!/usr/bin/env bash
# A real Label Studio server for the tests (and for trying the loop by hand), in its own virtual environment.
#
#   .ci/labelstudio.sh install            # create $LS_VENV (default <repo>/.venv-ls) with label-studio==1.23.2
#   .ci/labelstudio.sh start [DATA_DIR]   # start on 127.0.0.1:<free port> with a fresh data dir; prints
#                                         #   LS_URL=..., LS_TOKEN=..., LS_PID=..., LS_DATA=... (eval-able)
#   .ci/labelstudio.sh stop PID           # SIGTERM (SIGINT is ignored when Label Studio runs in the background)
#   .ci/labelstudio.sh test               # install if needed, then run the labelstudio-marked tests with CI=true
#
# Environment: LS_VENV (venv path), LS_TOKEN (legacy API token, 6-40 chars; default a fixed test token),
# LS_PORT (default: a free port), LS_TIMEOUT (seconds to wait for /health, default 180).
# The pytest fixture (tests/fixtures/labelstudio_server.py) does the same start/stop in Python; it finds the server executable via
# ITJNER_LS_BIN, defaulting to .venv-ls/bin/label-studio.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
LS_VENV="${LS_VENV:-$REPO/.venv-ls}"
LS_VERSION="1.23.2"
LS_TOKEN="${LS_TOKEN:-itjner-test-token-0123456789}"
LS_USER="admin@example.com"
LS_PASSWORD="${LS_PASSWORD:-itjner-test-password}"

install() {
    if [ -x "$LS_VENV/bin/label-studio" ] && \
       "$LS_VENV/bin/python" -c "import importlib.metadata as m; assert m.version('label-studio') == '$LS_VERSION'" \
       2>/dev/null; then
        echo "label-studio $LS_VERSION already in $LS_VENV" >&2
        return 0
    fi
    python3 -m venv "$LS_VENV"
    "$LS_VENV/bin/pip" install --quiet --disable-pip-version-check "label-studio==$LS_VERSION"
    echo "installed label-studio $LS_VERSION in $LS_VENV" >&2
}

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
}

start() {
    local data="${1:-$(mktemp -d -t itjner-ls.XXXXXX)}"
    local port="${LS_PORT:-$(free_port)}"
    local bin="$LS_VENV/bin/label-studio"
    [ -x "$bin" ] || { echo "no Label Studio at $bin: run '$0 install' first" >&2; exit 1; }
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
        echo "port $port is busy (Label Studio would silently take another)" >&2; exit 1
    fi
    mkdir -p "$data/home"
    # Stray HOST/PORT/USERNAME variables are read by Label Studio too: run it with a clean, explicit environment.
    env -i PATH="$LS_VENV/bin:/usr/bin:/bin" HOME="$data/home" LANG=C.UTF-8 \
        LABEL_STUDIO_BASE_DATA_DIR="$data" \
        LABEL_STUDIO_USERNAME="$LS_USER" LABEL_STUDIO_PASSWORD="$LS_PASSWORD" LABEL_STUDIO_USER_TOKEN="$LS_TOKEN" \
        LABEL_STUDIO_ENABLE_LEGACY_API_TOKEN=true LABEL_STUDIO_DISABLE_SIGNUP_WITHOUT_LINK=true \
        LABEL_STUDIO_LATEST_VERSION_CHECK=false LABEL_STUDIO_COLLECT_ANALYTICS=false SENTRY_DSN= FRONTEND_SENTRY_DSN= \
        LABEL_STUDIO_LOCAL_FILES_SERVING_ENABLED=true LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT="$data" \
        "$bin" start --no-browser --internal-host 127.0.0.1 --port "$port" </dev/null >"$data/server.log" 2>&1 &
    local pid=$!
    local url="http://127.0.0.1:$port"
    local deadline=$(( $(date +%s) + ${LS_TIMEOUT:-180} ))
    until curl -fsS "$url/health" 2>/dev/null | grep -q '"UP"'; do
        if ! kill -0 "$pid" 2>/dev/null; then
            echo "Label Studio exited during start; log: $data/server.log" >&2; tail -20 "$data/server.log" >&2; exit 1
        fi
        if [ "$(date +%s)" -ge "$deadline" ]; then
            echo "Label Studio not UP after ${LS_TIMEOUT:-180}s; log: $data/server.log" >&2; kill -TERM "$pid"; exit 1
        fi
        sleep 0.5
    done
    echo "LS_URL=$url"
    echo "LS_TOKEN=$LS_TOKEN"
    echo "LS_PID=$pid"
    echo "LS_DATA=$data"
}

stop() {
    local pid="$1"
    kill -TERM "$pid" 2>/dev/null || return 0
    for _ in $(seq 1 40); do kill -0 "$pid" 2>/dev/null || return 0; sleep 0.25; done
    echo "Label Studio ($pid) still running 10 s after SIGTERM" >&2
    return 1
}

run_tests() {
    install
    cd "$REPO"
    CI=true ITJNER_LS_BIN="$LS_VENV/bin/label-studio" "$REPO/.venv/bin/python" -m pytest -q -m labelstudio tests "$@"
}

cmd="${1:-}"; shift || true
case "$cmd" in
    install) install ;;
    start) start "$@" ;;
    stop) stop "$@" ;;
    test) run_tests "$@" ;;
    *) sed -n '2,13p' "${BASH_SOURCE[0]}"; exit 2 ;;
esac
