#!/usr/bin/env bash
# Install what nsai-work needs on a fresh Debian machine; quick and idempotent when present.
set -euo pipefail
cd "$(dirname "$0")/.."

# Debian packages: `unshare` (util-linux) and `ip` (iproute2) run the tests in a private
# network namespace. Later features add postgresql and chromium here.
need_apt=()
command -v unshare >/dev/null 2>&1 || need_apt+=(util-linux)
command -v ip >/dev/null 2>&1 || [ -x /usr/sbin/ip ] || [ -x /sbin/ip ] || need_apt+=(iproute2)
if [ ${#need_apt[@]} -gt 0 ]; then
    SUDO=""
    [ "$(id -u)" -eq 0 ] || SUDO="sudo"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need_apt[@]}"
fi

PYTHON="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
    "$PYTHON" -m venv .venv
fi
# Every version comes from requirements/constraints.txt (`make lock` refreshes it), the build
# tools included: they are installed first and the package is built without isolation, so a
# new release of pip, setuptools or any dependency never changes what a fresh clone runs.
PIP=(.venv/bin/python -m pip install --quiet --disable-pip-version-check -c requirements/constraints.txt)
"${PIP[@]}" pip setuptools wheel
"${PIP[@]}" --no-build-isolation -e '.[test]'
