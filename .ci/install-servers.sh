#!/usr/bin/env bash
# Install the real servers the test-suite starts for itself (Debian 12), idempotently.
#
# - Dovecot (dovecot-imapd) comes from apt. The tests run their own throwaway instance
#   (tests/fixtures/dovecot.py) on free loopback ports, so the packaged service must not
#   be left running on 143/993.
# - Synapse is a pip package and is NOT installed here; the pip step must include
#   "matrix-synapse~=1.163.2" (tests/fixtures/synapse.py).
#
# The Dovecot fixture itself needs root (it serves the maildirs as uid nobody).
set -euo pipefail

export DEBIAN_FRONTEND=noninteractive
SUDO=()
if [[ "$(id -u)" -ne 0 ]]; then
    SUDO=(sudo)
fi

is_installed() {
    dpkg-query -W -f='${db:Status-Status}' "$1" 2>/dev/null | grep -qx installed
}

# pflogsumm: tests/test_traffic.py and bench/traffic.py compare repbot's counts with it.
if ! is_installed pflogsumm; then
    "${SUDO[@]}" apt-get update
    "${SUDO[@]}" apt-get install -y --no-install-recommends pflogsumm
fi

if is_installed dovecot-imapd; then
    echo "dovecot-imapd already installed: $(dpkg-query -W -f='${Version}' dovecot-imapd)"
else
    "${SUDO[@]}" apt-get update
    "${SUDO[@]}" apt-get install -y --no-install-recommends dovecot-imapd
fi

# The package's postinst starts the system instance where the init system allows it.
# Stop it and keep it from coming back; each step may legitimately fail (no init system).
"${SUDO[@]}" service dovecot stop >/dev/null 2>&1 || true
if [[ -d /run/systemd/system ]]; then
    "${SUDO[@]}" systemctl disable --now dovecot.service dovecot.socket >/dev/null 2>&1 || true
fi
if pid="$(cat /run/dovecot/master.pid 2>/dev/null)" && [[ -n "$pid" ]] && kill -0 "$pid" 2>/dev/null; then
    "${SUDO[@]}" doveadm -c /etc/dovecot/dovecot.conf stop || "${SUDO[@]}" kill -TERM "$pid" || true
fi

if command -v ss >/dev/null && ss -Hltn 'sport = :143 or sport = :993' | grep -q .; then
    echo "warning: something still listens on port 143/993 (the tests do not need those ports)" >&2
fi
echo "dovecot: $(dovecot --version)"
echo "pflogsumm: $(pflogsumm --version)"
