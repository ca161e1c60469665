#!/usr/bin/env bash
# Creates the virtual environment of the Tinker-compatible test server (SkyRL's Tinker API
# server, JAX backend, CPU) used by tests/training/test_tinker.py and
# benchmarks/bench_training.py. Idempotent: a complete venv is left as it is.
#
# Usage: bash tests/servers/setup_tinker_server.sh   (prints the venv's path on its last line)
# Environment: TRACEDISTILL_SKYRL_VENV overrides the location (default
# ~/.cache/tracedistill/skyrl-venv); PYTHON names the interpreter (default python3.11).
#
# Why by hand: skyrl 0.4.0 declares Python >= 3.12 and pins tinker < 0.26, but its Tinker API
# server runs on 3.11 and serves tinker 0.38 clients with the small shims in
# tests/servers/tinker_server.py; so it is installed with --no-deps and its runtime
# dependencies are listed here.
set -euo pipefail

VENV="${TRACEDISTILL_SKYRL_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/tracedistill/skyrl-venv}"
PY="${PYTHON:-python3.11}"
STAMP="$VENV/.tracedistill-skyrl-v1"

if [[ -f "$STAMP" ]]; then
    echo "$VENV"
    exit 0
fi

echo "installing the Tinker-compatible server venv in $VENV" >&2
mkdir -p "$(dirname "$VENV")"
# A venv left half-installed by an interrupted run is completed, not rebuilt: pip skips what is
# already there.
[[ -x "$VENV/bin/python" ]] || "$PY" -m venv "$VENV"
PIP=("$VENV/bin/pip" install --quiet --disable-pip-version-check --no-warn-script-location)

# torch first and pinned, so nothing pulls a CUDA build.
"${PIP[@]}" "torch==2.13.0"
"${PIP[@]}" \
    "jax==0.10.2" "jaxlib==0.10.2" "flax==0.12.8" "optax>=0.2.5" \
    "transformers>=5.6.1,<=5.16.1" "peft==0.18.1" "safetensors>=0.6.2" "tokenizers>=0.23.1" \
    "tinker==0.38.0" \
    "fastapi[standard]" "uvicorn" "sqlmodel" "sqlalchemy[asyncio]" "aiosqlite" "alembic" \
    "aiohttp" "psutil" "cloudpathlib>=0.23.0" "zstandard>=0.23.0" "xxhash>=3.0.0" \
    "datasets>=4.0.0" "rich>=14.1.0" "typer>=0.17.4" "pillow>=11.3.0" "protobuf" \
    "typing_extensions" "loguru" "numpy"
"${PIP[@]}" --no-deps --ignore-requires-python "skyrl==0.4.0"

# The same TypedDict shim as tinker_server.py applies (pydantic needs it on Python 3.11).
"$VENV/bin/python" -c "import typing, typing_extensions
typing.TypedDict = typing_extensions.TypedDict
import skyrl.tinker.api, skyrl.tinker.engine, skyrl.backends.jax, jax, flax" >/dev/null
touch "$STAMP"
echo "$VENV"
