#!/usr/bin/env bash
# Set up a fresh machine for mysimbdp: the system packages the platform runs (Docker engine, Mosquitto,
# debootstrap, iptables, Java 17 and Maven for Cassandra; Chromium and its driver for the dashboard's browser
# tests) and a Python virtual environment with the project installed. Idempotent: a second run only checks.
# Services are started by `mysimbdp up`.
set -euo pipefail
cd "$(dirname "$0")/.."

as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else
    echo "setup: need root to install system packages ($*)" >&2; exit 1; fi
}

have() { command -v "$1" >/dev/null 2>&1 || [ -x "/usr/sbin/$1" ] || [ -x "/sbin/$1" ]; }

missing=()
have dockerd     || missing+=(docker.io)
have docker-compose || missing+=(docker-compose)  # docker-compose.yml (tests/test_compose.py)
have mosquitto   || missing+=(mosquitto)
have mosquitto_passwd || missing+=(mosquitto-clients)
have debootstrap || missing+=(debootstrap)
have iptables    || missing+=(iptables)
have ip          || missing+=(iproute2)
have java        || missing+=(openjdk-17-jre-headless)
have jcmd        || missing+=(openjdk-17-jdk-headless)  # opens the node's JMX for nodetool (backups)
have mvn         || missing+=(maven)
have go || [ -x /usr/local/go/bin/go ] || missing+=(golang-go)  # builds the static sample app
have make        || missing+=(make)
have chromium    || missing+=(chromium)         # the dashboard's tests drive it headless (tests/test_dashboard.py)
have chromedriver || missing+=(chromium-driver)
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing ${missing[*]}"
  as_root env DEBIAN_FRONTEND=noninteractive apt-get update -q
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}"
fi
# Debian's mosquitto package starts a broker of its own on port 1883 where systemd runs; the platform
# runs its own with its own configuration.
if command -v systemctl >/dev/null && [ -d /run/systemd/system ]; then
  as_root systemctl disable --now mosquitto >/dev/null 2>&1 || true
fi

PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
stamp=.venv/.mysimbdp-installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ] || [ python-sdk/pyproject.toml -nt "$stamp" ]; then
  echo "setup: installing the Python packages into .venv"
  .venv/bin/pip install -q --upgrade pip >/dev/null
  # the client SDK first: fetchdata and mysimbdp-publish are built on it, and it is not on PyPI
  .venv/bin/pip install -q -e python-sdk
  .venv/bin/pip install -q -e '.[test]'
  touch "$stamp"
fi
scripts/sample-apps.sh  # the compiled sample tenant apps (Java, Go), when their sources changed
echo "setup: done (.venv ready; start the platform with: .venv/bin/mysimbdp up)"
