#!/usr/bin/env bash
# Install what nsai-work needs on a fresh Debian machine; quick and idempotent when present.
set -euo pipefail
cd "$(dirname "$0")/.."

# Debian packages: `unshare` (util-linux) and `ip` (iproute2) run the tests in a private
# network namespace; `runuser` (util-linux) runs PostgreSQL's server as the postgres user.
# `chromium` is the browser the dashboard's tests drive with Playwright (Playwright's own
# browsers are never downloaded): tests/acceptance/test_dashboard.py.
need_apt=()
command -v chromium >/dev/null 2>&1 || [ -x /usr/bin/chromium ] || need_apt+=(chromium)
command -v unshare >/dev/null 2>&1 || need_apt+=(util-linux)
command -v runuser >/dev/null 2>&1 || [ -x /usr/sbin/runuser ] || need_apt+=(util-linux)
command -v ip >/dev/null 2>&1 || [ -x /usr/sbin/ip ] || [ -x /sbin/ip ] || need_apt+=(iproute2)
# PostgreSQL's server binaries (initdb, pg_ctl, postgres under /usr/lib/postgresql/N/bin) and
# the postgres user: the tests start throwaway clusters of their own (tests/_postgres.py) and
# never use a system cluster. So that installing leaves none behind, a drop-in tells
# postgresql-common not to create its default "main" cluster (which it would start on port 5432
# wherever services may start). Written only when the package is about to be installed: a
# machine that has postgresql already keeps its clusters and settings as they are.
pg_drop_in=""
if ! compgen -G '/usr/lib/postgresql/*/bin/postgres' >/dev/null; then
    need_apt+=(postgresql)
    pg_drop_in=/etc/postgresql-common/createcluster.d/nsai-work.conf
fi
if [ ${#need_apt[@]} -gt 0 ]; then
    SUDO=""
    [ "$(id -u)" -eq 0 ] || SUDO="sudo"
    if [ -n "$pg_drop_in" ]; then
        $SUDO mkdir -p "$(dirname "$pg_drop_in")"
        echo "create_main_cluster = false  # nsai-work: tests start clusters of their own" |
            $SUDO tee "$pg_drop_in" >/dev/null
    fi
    clusters_before=$(pg_lsclusters -h 2>/dev/null | awk '{print $1 "/" $2}' || true)
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends \
        "${need_apt[@]}"
    # Should the package have created (and started) a cluster all the same, drop it: it is
    # new and empty, and nothing of ours uses it.
    if [ -n "$pg_drop_in" ]; then
        pg_lsclusters -h 2>/dev/null | awk '{print $1, $2}' | while read -r version name; do
            if ! grep -qx "$version/$name" <<<"$clusters_before"; then
                echo "setup.sh: dropping the cluster $version/$name that installing postgresql made" >&2
                $SUDO pg_dropcluster --stop "$version" "$name"
            fi
        done
    fi
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
