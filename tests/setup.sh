#!/usr/bin/env bash
# The project's test setup, for a fresh Debian machine, as root; safe to run again (idempotent).
#   bash tests/setup.sh                  pinned versions: constraints.txt (what CI runs)
#   MTLSC_NEWEST=1 bash tests/setup.sh   the newest release of every dependency, no pins
# Installs nginx and its njs module with apt-get when missing (the tests start their own nginx on
# loopback, so the system service apt may start is stopped and disabled), mtlsc with its test
# extra, sslyze in a virtual environment of its own (tests/sslyze-constraints.txt), and the Express
# test backend's npm packages when that backend is in the tree.
set -euo pipefail
cd "$(dirname "$0")/.."
export DEBIAN_FRONTEND=noninteractive
NJS=/usr/lib/nginx/modules/ngx_http_js_module.so
EXPRESS=tests/backends/express

stop_system_nginx() {
  # Only the service manager's nginx (its pid file): the tests' own nginx processes are left alone.
  if command -v systemctl >/dev/null && [ -d /run/systemd/system ]; then
    systemctl stop nginx || true
    systemctl disable nginx || true
  elif [ -x /etc/init.d/nginx ]; then
    /etc/init.d/nginx stop >/dev/null || true
    update-rc.d nginx disable >/dev/null 2>&1 || true
  fi
}

if ! command -v nginx >/dev/null || [ ! -e "$NJS" ]; then
  apt-get update -qq
  apt-get install -y -qq nginx libnginx-mod-http-js >/dev/null
  stop_system_nginx
fi

if [ "${MTLSC_NEWEST:-}" = 1 ]; then
  python -m pip install -q -U --upgrade-strategy eager -e '.[test]'
else
  python -m pip install -q -c constraints.txt -e '.[test]'
fi

# sslyze grades the lab's TLS against Mozilla's profiles (tests/test_server_tls_nginx.py). It needs an
# older cryptography than mtlsc pins, so it gets a virtual environment of its own (mtlsc runs its
# command line; $MTLSC_SSLYZE overrides where).
SSLYZE_VENV=/opt/mtlsc-sslyze
[ -x "$SSLYZE_VENV/bin/pip" ] || python -m venv "$SSLYZE_VENV"
if [ "${MTLSC_NEWEST:-}" = 1 ]; then
  "$SSLYZE_VENV/bin/pip" install -q -U --upgrade-strategy eager sslyze
else
  "$SSLYZE_VENV/bin/pip" install -q -c tests/sslyze-constraints.txt sslyze
fi

if [ -f "$EXPRESS/package-lock.json" ]; then
  if [ "${MTLSC_NEWEST:-}" = 1 ]; then
    # newest within package.json's ranges; the lock file in the tree is left as it is
    npm install --prefix "$EXPRESS" --no-package-lock --no-audit --no-fund --silent
  else
    npm ci --prefix "$EXPRESS" --no-audit --no-fund --silent
  fi
fi
