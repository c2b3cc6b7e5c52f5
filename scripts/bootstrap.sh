#!/usr/bin/env bash
# Install what aura-ops, its tests and its demo need on Debian 12, idempotently.
# Installs only what is missing; when everything is present it changes nothing and takes seconds.
set -euo pipefail
cd "$(dirname "$0")/.."

VENV=${AURA_VENV:-.venv}
PYTHON=${PYTHON:-python3}

# binary -> Debian package that provides it
declare -A NEEDED=(
  [/usr/lib/postgresql/15/bin/postgres]=postgresql-15
  [/usr/lib/postgresql/15/bin/pg_dump]=postgresql-client-15
  [/usr/lib/postgresql/15/bin/pgbench]=postgresql-contrib
  [/usr/bin/rsync]=rsync
  [/usr/sbin/sshd]=openssh-server
  [/usr/bin/ssh]=openssh-client
  [/usr/sbin/dockerd]=docker.io
  [/bin/busybox]=busybox-static
  [/usr/bin/zstd]=zstd
  [/usr/bin/setfacl]=acl
  [/usr/bin/time]=time
)

missing=()
for binary in "${!NEEDED[@]}"; do
  [ -x "$binary" ] || missing+=("${NEEDED[$binary]}")
done
# Debian's own python3 has no venv/ensurepip until python3-venv is installed.
if ! "$PYTHON" -c "import ensurepip, venv" >/dev/null 2>&1; then
  missing+=(python3-venv)
fi
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "bootstrap: missing Debian packages: ${missing[*]} (run as root to install them)" >&2
    exit 2
  fi
  echo "bootstrap: installing ${missing[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

"$PYTHON" - <<'PY'
import sys
if sys.version_info < (3, 11):
    sys.exit(f"bootstrap: Python 3.11+ is required, found {sys.version.split()[0]}")
PY

stamp="$VENV/.aura-bootstrap"
want=$(sha256sum pyproject.toml | cut -d' ' -f1)
if [ ! -x "$VENV/bin/python" ] || [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  echo "bootstrap: preparing $VENV" >&2
  [ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
  if ! "$VENV/bin/pip" install -q --disable-pip-version-check -e '.[test]' > "$VENV/pip.log" 2>&1; then
    grep -v "^WARNING: Location" "$VENV/pip.log" >&2
    echo "bootstrap: pip install failed (log: $VENV/pip.log)" >&2
    exit 1
  fi
  echo "$want" > "$stamp"
fi
