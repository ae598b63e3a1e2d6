# Sourced by local.sh and test.sh: make sure .venv exists (installing Debian's venv support when missing).
as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }

apt_install() {
    echo "installing system packages: $*"
    as_root apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@"
}

ensure_venv() {
    if [ ! -x .venv/bin/python ]; then
        python3 -c "import ensurepip, venv" 2>/dev/null || apt_install python3-venv
        python3 -m venv .venv
    fi
}
