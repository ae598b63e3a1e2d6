# Sourced by local.sh and test.sh: make sure .venv exists (installing Debian's venv support when
# missing) and install system packages. Installing needs root, or sudo.
as_root() {
    if [ "$(id -u)" -eq 0 ]; then "$@"
    elif command -v sudo >/dev/null; then sudo "$@"
    else echo "installing system packages needs root or sudo: run as root, or install sudo" >&2; return 1
    fi
}

apt_install() {
    echo "installing system packages: $*"
    as_root apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@"
}

# The core (with the extras in $1, e.g. "[test]") and every in-tree plugin, each its own
# distribution under plugins/<vendor>/, editable, in one pip run.
install_gateway() {
    local args=(-e ".${1:-}") plugin
    for plugin in plugins/*/pyproject.toml; do
        args+=(-e "${plugin%/pyproject.toml}")
    done
    .venv/bin/python -m pip install -q "${args[@]}"
}

ensure_venv() {
    if [ ! -x .venv/bin/python ]; then
        python3 -c "import ensurepip, venv" 2>/dev/null || apt_install python3-venv
        python3 -m venv .venv
    fi
}

# Apache httpd for the end-to-end tests, which run their own private instance on a loopback
# port. Debian would also start the system service on :80 and enable it at boot: while
# apt-get runs, a policy-rc.d refuses every service start (an existing one is put back
# afterwards), and the service is disabled at boot. An Apache installed before is left alone.
# Arguments: the packages (default apache2; e.g. libapache2-mod-wsgi-py3, whose postinst
# enables its module and would restart the service).
POLICY_RC_D=${POLICY_RC_D:-/usr/sbin/policy-rc.d}

install_apache() {
    _policy_saved=""
    if [ -e "$POLICY_RC_D" ]; then
        _policy_saved=$(mktemp)
        as_root cp -p "$POLICY_RC_D" "$_policy_saved"
    fi
    trap _restore_policy EXIT
    printf '#!/bin/sh\n# scripts/test.sh: no service starts while apache2 is installed\nexit 101\n' \
        | as_root tee "$POLICY_RC_D" >/dev/null
    as_root chmod 755 "$POLICY_RC_D"
    apt_install "${@:-apache2}"
    _restore_policy
    trap - EXIT
    local unit
    for unit in apache2 apache-htcacheclean; do
        [ -e "/lib/systemd/system/$unit.service" ] || [ -e "/etc/init.d/$unit" ] || continue
        if command -v systemctl >/dev/null; then
            as_root systemctl disable --quiet "$unit.service"   # works without a running systemd too
        else
            as_root update-rc.d "$unit" disable
        fi
    done
    echo "installed ${*:-apache2} for the tests; the apache2 system service is not started and not enabled"
}

_restore_policy() {
    if [ -n "$_policy_saved" ]; then as_root mv "$_policy_saved" "$POLICY_RC_D"; else as_root rm -f "$POLICY_RC_D"; fi
}
