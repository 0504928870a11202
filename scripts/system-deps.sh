#!/bin/sh
# System packages the test suite needs beyond Python: Debian's redis-server (the
# shared replay store of the end-to-end tests) and nginx, the TLS
# terminator of the mTLS end-to-end tests (tests/e2e/).
#
# Idempotent and fast when already installed: apt is only touched when the
# nginx binary is missing. The system nginx service is never started (the
# tests run their own nginx on loopback, with a config and pid file under a
# temporary directory). Without root or sudo it only says what to install, and
# the e2e tests skip themselves.
set -eu

have_nginx() {
    command -v nginx >/dev/null 2>&1 || test -x /usr/sbin/nginx
}

have_redis() {
    command -v redis-server >/dev/null 2>&1 || test -x /usr/bin/redis-server
}

if have_nginx && have_redis; then
    exit 0
fi

if ! command -v apt-get >/dev/null 2>&1; then
    echo "system-deps: nginx or redis-server is missing and this is not a Debian-like system (no apt-get)." >&2
    echo "system-deps: install them yourself to run the end-to-end tests; they are skipped meanwhile." >&2
    exit 0
fi

if [ "$(id -u)" -eq 0 ]; then
    SUDO=""
elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
    SUDO="sudo -n"
else
    echo "system-deps: nginx or redis-server is missing and installing them needs root:" >&2
    echo "system-deps:     sudo apt-get install --no-install-recommends nginx redis-server" >&2
    echo "system-deps: the mTLS end-to-end tests (tests/e2e/) are skipped until then." >&2
    exit 0
fi

echo "system-deps: installing nginx and redis-server (Debian packages) for the end-to-end tests"
export DEBIAN_FRONTEND=noninteractive
# policy-rc.d exit 101 keeps the package's post-install from starting the
# system nginx service (only where no policy exists already, and removed after).
POLICY=/usr/sbin/policy-rc.d
OWN_POLICY=""
if [ ! -e "$POLICY" ]; then
    printf '#!/bin/sh\nexit 101\n' | $SUDO tee "$POLICY" >/dev/null
    $SUDO chmod 0755 "$POLICY"
    OWN_POLICY=1
fi
cleanup() {
    if [ -n "$OWN_POLICY" ]; then
        $SUDO rm -f "$POLICY"
    fi
}
trap cleanup EXIT
trap 'cleanup; exit 130' INT TERM
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends nginx redis-server
have_nginx || { echo "system-deps: nginx still not found after apt-get install" >&2; exit 1; }
have_redis || { echo "system-deps: redis-server still not found after apt-get install" >&2; exit 1; }
