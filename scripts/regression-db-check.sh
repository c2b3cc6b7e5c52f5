#!/usr/bin/env bash
# Run PostgreSQL's own regression database through aura-ops: backup with checksums, verify --deep,
# restore --to-database and compare. Outside CI; a maintainer reruns it after changing how the
# postgres component dumps, restores or fingerprints a database. Idempotent: rerun at will.
#
#   sudo bash scripts/regression-db-check.sh            # work folder /var/tmp/aura-regression-db
#   AURA_REGRESSION_DIR=/some/where bash scripts/regression-db-check.sh
#
# What it does (Debian 12, root):
#   1. adds deb-src lines for the machine's Debian mirror (a copy of its debian.sources with
#      'Types: deb-src', in /etc/apt/sources.list.d/aura-deb-src.sources), apt-get update;
#   2. fetches the source of the installed postgresql-15 (apt-get source, same version as the
#      server), installs a compiler and the few build tools it needs;
#   3. configures it like the installed server's paths and builds src/test/regress
#      (pg_regress and regress.so, about ten minutes on two cores; skipped when already built);
#   4. starts a throwaway cluster on 127.0.0.1 (a free port), runs `make installcheck`, which
#      leaves the `regression` database behind with every object type the tests create;
#   5. aura-ops backup (checksums: true), snapshots verify --deep, restore --to-database
#      regression_copy, and exits non-zero when any of them fails. Its log is in the work folder.
set -euo pipefail
cd "$(dirname "$0")/.."
CHECKOUT=$(pwd)
WORK=${AURA_REGRESSION_DIR:-/var/tmp/aura-regression-db}
PYTHON=${PYTHON:-$CHECKOUT/.venv/bin/python}
PG_BIN=/usr/lib/postgresql/15/bin
export DEBIAN_FRONTEND=noninteractive

say() { echo "regression-db-check: $*" >&2; }

[ "$(id -u)" -eq 0 ] || { say "run as root (apt-get, and the server runs as the postgres user)"; exit 2; }
[ -x "$PG_BIN/postgres" ] || { say "postgresql-15 is not installed (make bootstrap)"; exit 2; }
[ -x "$PYTHON" ] || { say "no venv python at $PYTHON (make bootstrap, or set PYTHON)"; exit 2; }
mkdir -p "$WORK"

# 1. deb-src lines
SRC_LIST=/etc/apt/sources.list.d/aura-deb-src.sources
if [ ! -f "$SRC_LIST" ]; then
  [ -f /etc/apt/sources.list.d/debian.sources ] || { say "no /etc/apt/sources.list.d/debian.sources to copy"; exit 2; }
  sed 's/^Types: deb$/Types: deb-src/' /etc/apt/sources.list.d/debian.sources > "$SRC_LIST"
  say "added deb-src lines in $SRC_LIST"
  apt-get update -qq
fi

# 2. source and build tools
VERSION=$(dpkg-query -W -f '${Version}' postgresql-15)
UPSTREAM=${VERSION%%-*}
SRC="$WORK/postgresql-15-$UPSTREAM"
if [ ! -d "$SRC" ]; then
  NEED=()
  for pkg in dpkg-dev build-essential bison flex zlib1g-dev libreadline-dev pkg-config; do
    dpkg-query -W -f '${Status}' "$pkg" 2>/dev/null | grep -q "ok installed" || NEED+=("$pkg")
  done
  if [ ${#NEED[@]} -gt 0 ]; then
    say "installing ${NEED[*]}"
    apt-get install -y -qq "${NEED[@]}" >/dev/null
  fi
  rm -rf "$WORK/src.tmp" && mkdir -p "$WORK/src.tmp"
  (cd "$WORK/src.tmp" && apt-get source -qq --download-only "postgresql-15=$VERSION" \
    && dpkg-source --no-check -x ./*.dsc tree >/dev/null)
  mv "$WORK/src.tmp/tree" "$SRC"
  rm -rf "$WORK/src.tmp"
fi

# 3. build pg_regress and regress.so against the installed server's paths
if [ ! -f "$SRC/src/test/regress/regress.so" ]; then
  say "building src/test/regress (about ten minutes)"
  (cd "$SRC" && [ -f config.status ] || ./configure -q --prefix=/usr/lib/postgresql/15 \
    --datarootdir=/usr/share --includedir=/usr/include/postgresql --sysconfdir=/etc/postgresql-common \
    --without-icu --without-readline) >"$WORK/configure.log" 2>&1
  make -C "$SRC/src/test/regress" -j"$(nproc)" -s >"$WORK/build.log" 2>&1
fi
chown -R postgres:postgres "$WORK"

# 4. a throwaway cluster and the regression database
PORT=$("$PYTHON" -c 'from aura_ops.dev.sandbox import free_port; print(free_port())')
CLUSTER="$WORK/cluster"
stop_cluster() { runuser -u postgres -- "$PG_BIN/pg_ctl" -D "$CLUSTER/data" -m fast -w stop >/dev/null 2>&1 || true; }
stop_cluster
rm -rf "$CLUSTER" && mkdir -p "$CLUSTER/socket" && chown -R postgres:postgres "$CLUSTER"
runuser -u postgres -- "$PG_BIN/initdb" -D "$CLUSTER/data" -U postgres --auth=trust -E UTF8 \
  --locale=C.UTF-8 --no-sync >/dev/null
trap stop_cluster EXIT
runuser -u postgres -- "$PG_BIN/pg_ctl" -D "$CLUSTER/data" -l "$CLUSTER/server.log" -w -t 60 \
  -o "-p $PORT -k $CLUSTER/socket -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=60" start >/dev/null
say "running the regression tests (installcheck) on 127.0.0.1:$PORT"
if ! runuser -u postgres -- env PGHOST=127.0.0.1 PGPORT="$PORT" PGUSER=postgres \
  make -C "$SRC/src/test/regress" installcheck >"$WORK/installcheck.log" 2>&1; then
  say "some regression tests failed (a packaged server differs from a fresh build in places);"
  say "the database is used as it is: see $WORK/installcheck.log"
fi

# 5. aura-ops against it
RUN="$WORK/aura" && rm -rf "$RUN" && mkdir -p "$RUN"
cat >"$RUN/aura.yaml" <<EOF
repository: {path: $RUN/repo}
state: {path: $RUN/state}
logging: {dir: $RUN/logs}
components:
  db: {type: postgres, dsn_env: AURA_DB_DSN, checksums: true, jobs: 2}
EOF
export AURA_DB_DSN="postgresql://postgres@127.0.0.1:$PORT/regression"
aura() { PYTHONPATH="$CHECKOUT" "$PYTHON" -m aura_ops --config "$RUN/aura.yaml" "$@"; }
status=0
say "backup"
aura backup --json >"$RUN/backup.json" 2>"$RUN/backup.err" || { status=1; tail -n 5 "$RUN/backup.err" >&2; }
if [ $status -eq 0 ]; then
  say "snapshots verify --deep (different session settings than the backup)"
  PGTZ=Pacific/Chatham PGDATESTYLE="SQL, DMY" aura snapshots verify latest --deep --json \
    >"$RUN/verify.json" 2>"$RUN/verify.err" || { status=3; tail -n 5 "$RUN/verify.err" >&2; }
  say "restore --to-database regression_copy"
  aura restore latest --to-database regression_copy --yes --json >"$RUN/restore.json" 2>"$RUN/restore.err" \
    || { status=1; tail -n 5 "$RUN/restore.err" >&2; }
fi
tables=$("$PYTHON" -c 'import json,sys; print(len(json.load(open(sys.argv[1]))["components"]["db"]["row_counts"]))' \
  "$RUN/backup.json" 2>/dev/null || echo "?")
if [ $status -eq 0 ]; then
  say "OK: the regression database ($tables tables) backed up, deep-verified and restored"
else
  say "FAILED (exit $status): logs in $RUN"
fi
exit $status
