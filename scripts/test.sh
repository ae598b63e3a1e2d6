#!/usr/bin/env bash
# Set up everything the test suite needs on a fresh Debian machine, then run it all.
# Installs missing system packages (curl, openssl, apache2, libapache2-mod-wsgi-py3, golang-cfssl,
# sqlite3, systemd) with apt-get: needs root or sudo.
# Usage: scripts/test.sh [pytest arguments]
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/venv.sh

# System tools the end-to-end tests drive for real: curl, openssl, Apache httpd, and
# CloudFlare's CFSSL (cfssl serve/ocspserve, the real upstream CA of tests/cfssl/). What is
# missing is installed system-wide with apt-get, which needs root or sudo.
missing=()
command -v curl >/dev/null || missing+=(curl)
command -v openssl >/dev/null || missing+=(openssl)
command -v cfssl >/dev/null || missing+=(golang-cfssl)
# the operator console's browser test: Debian's headless chromium and its WebDriver
command -v chromium >/dev/null || missing+=(chromium)
command -v chromedriver >/dev/null || missing+=(chromium-driver)
command -v sqlite3 >/dev/null || missing+=(sqlite3)     # docs/cfssl.md's certificate database
# systemd-analyze verify checks contrib/systemd/. Installing Debian's systemd package where
# systemd is not running (a container) starts nothing and does not make it the init system
# (that is systemd-sysv, not pulled in without recommends).
command -v systemd-analyze >/dev/null || missing+=(systemd)
[ ${#missing[@]} -eq 0 ] || apt_install "${missing[@]}"
[ -x /usr/sbin/apache2 ] || install_apache
# Debian's mod_wsgi (built for /usr/bin/python3): tests/test_mod_wsgi.py runs the app in Apache.
[ -e /usr/lib/apache2/modules/mod_wsgi.so ] || install_apache libapache2-mod-wsgi-py3

ensure_venv
# test: pytest and friends; bench: the smoke test of the benchmark draws its plot too; and
# every vendor plugin under plugins/ (its own distribution, editable)
install_gateway '[test,bench]'
# The real django-ca of tests/django_ca/, in its own virtual environment (.cache/django-ca).
bash scripts/django-ca-venv.sh

# pytest exits non-zero on any failure, and with 5 when no test ran: both fail this script.
exec .venv/bin/python -m pytest "$@"
