#!/bin/sh
# System packages the test suite needs beyond Python: Debian's redis-server (the
# shared replay store of the end-to-end tests), nginx (the TLS terminator of
# the mTLS end-to-end tests, tests/e2e/), xmlsec1 (the pysaml2 IdP peer of the
# SAML tests shells out to it) and chromium (the browser tests).
#
# Idempotent and fast when already installed: apt is only touched when one of
# the binaries is missing. The system nginx service is never started (the
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

have_xmlsec1() {
    command -v xmlsec1 >/dev/null 2>&1 || test -x /usr/bin/xmlsec1
}

have_chromium() {
    command -v chromium >/dev/null 2>&1 || test -x /usr/bin/chromium
}

MISSING=""
have_nginx || MISSING="$MISSING nginx"
have_redis || MISSING="$MISSING redis-server"
have_xmlsec1 || MISSING="$MISSING xmlsec1"
have_chromium || MISSING="$MISSING chromium"

if [ -z "$MISSING" ]; then
    exit 0
fi

if ! command -v apt-get >/dev/null 2>&1; then
    echo "system-deps:$MISSING missing and this is not a Debian-like system (no apt-get)." >&2
    echo "system-deps: install them yourself to run the end-to-end tests; they are skipped meanwhile." >&2
    exit 0
fi

if [ "$(id -u)" -eq 0 ]; then
    SUDO=""
elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
    SUDO="sudo -n"
else
    echo "system-deps:$MISSING missing and installing needs root:" >&2
    echo "system-deps:     sudo apt-get install --no-install-recommends$MISSING" >&2
    echo "system-deps: the tests that need them are skipped until then." >&2
    exit 0
fi

echo "system-deps: installing$MISSING (Debian packages) for the real-peer tests"
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
# shellcheck disable=SC2086
$SUDO apt-get install -y -qq --no-install-recommends $MISSING
have_nginx || { echo "system-deps: nginx still not found after apt-get install" >&2; exit 1; }
have_redis || { echo "system-deps: redis-server still not found after apt-get install" >&2; exit 1; }
have_xmlsec1 || { echo "system-deps: xmlsec1 still not found after apt-get install" >&2; exit 1; }
have_chromium || { echo "system-deps: chromium still not found after apt-get install" >&2; exit 1; }
