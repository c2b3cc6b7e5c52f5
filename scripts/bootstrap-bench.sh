#!/usr/bin/env bash
# Install what `make bench` needs beyond scripts/bootstrap.sh (the tests need none of it):
# the peers it measures aura-ops against. Idempotent: installs only what is missing.
set -euo pipefail

# binary -> Debian package that provides it
declare -A NEEDED=(
  [/usr/bin/restic]=restic
  [/usr/bin/borg]=borgbackup
  [/usr/bin/pgbackrest]=pgbackrest
  [/usr/bin/zstd]=zstd
  [/usr/bin/time]=time
)

missing=()
for binary in "${!NEEDED[@]}"; do
  [ -x "$binary" ] || missing+=("${NEEDED[$binary]}")
done
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "bootstrap-bench: missing Debian packages: ${missing[*]} (run as root to install them)" >&2
    exit 2
  fi
  echo "bootstrap-bench: installing ${missing[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
