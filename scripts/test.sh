#!/usr/bin/env bash
# Install Qualify with its test tools into .venv and run the whole suite:
# lint, types, and pytest on SQLite and PostgreSQL. CI runs exactly this.
set -euo pipefail
cd "$(dirname "$0")/.."

python3 -m venv .venv
# shellcheck disable=SC1091
. .venv/bin/activate
python -m pip install --quiet --upgrade pip
python -m pip install --quiet -e ".[test]"

# PostgreSQL: the tests use QUALIFY_TEST_POSTGRES_URL (default: postgres@127.0.0.1:5432/test).
# Where a local cluster is installed but stopped, start it; CI must not skip the PostgreSQL half.
if [ -z "${QUALIFY_TEST_POSTGRES_URL:-}" ] && command -v pg_ctlcluster >/dev/null 2>&1; then
  if ! pg_isready -h 127.0.0.1 -p 5432 -q 2>/dev/null; then
    version=$(ls /etc/postgresql 2>/dev/null | head -n 1)
    [ -n "$version" ] && pg_ctlcluster --skip-systemctl-redirect "$version" main start || true
  fi
fi
# The dashboard's browser tests drive Debian's chromium: install it where it is missing (as root).
if ! command -v chromium >/dev/null 2>&1 && [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
  echo "== installing chromium for the browser tests"
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) \
    || echo "chromium could not be installed: the browser tests will say so"
fi
# Segment's browser library for its browser test: fetched from npm into the virtual environment
# (never kept in the repository); its version is pinned here.
ajs_version=1.84.3
ajs=".venv/share/analytics-next-$ajs_version"
if [ ! -f "$ajs/umd/index.js" ] && command -v npm >/dev/null 2>&1; then
  echo "== fetching @segment/analytics-next $ajs_version for the browser tests"
  scratch=$(mktemp -d)
  if (cd "$scratch" && npm pack --silent "@segment/analytics-next@$ajs_version" >/dev/null \
      && tar xzf segment-analytics-next-"$ajs_version".tgz); then
    mkdir -p "$ajs" && cp -r "$scratch/package/dist/umd" "$ajs/"
  else
    echo "analytics-next could not be fetched: its browser test will say so"
  fi
  rm -rf "$scratch"
fi
if [ "${CI:-}" = "true" ]; then
  export QUALIFY_REQUIRE_POSTGRES=1
  export QUALIFY_REQUIRE_BROWSER=1
fi

echo "== ruff"
ruff check src tests benchmarks
ruff format --check src tests benchmarks
echo "== mypy (strict)"
mypy
echo "== layer contracts (import-linter)"
lint-imports
echo "== pytest"
# On two cores at most (QUALIFY_TEST_WORKERS to change it; 0 runs in this process). Tests that
# share a module-wide world, and the timing-sensitive crash and load tests, keep to one worker
# each (tests/conftest.py gives them an xdist group). `-m "not slow"` leaves out the slowest.
workers=${QUALIFY_TEST_WORKERS:-$(( $(nproc) < 2 ? $(nproc) : 2 ))}
status=0
# --dist loadgroup: the tests tests/conftest.py puts in one group (a file, the crash tests) share a worker.
# --durations: the slowest tests are listed at the end, to keep the run short.
python -m pytest -n "$workers" --dist loadgroup --durations=30 "$@" || status=$?
if [ "$status" -eq 5 ]; then  # no test matched the selection given: nothing failed
  echo "== pytest: no tests were selected"
  status=0
fi
exit "$status"
