#!/usr/bin/env bash
# The real django-ca the tests drive (tests/django_ca/), in a virtual environment of its own:
# never mixed into the gateway's dependencies. Reused across runs; created when missing.
# gunicorn serves it over HTTPS (runserver is HTTP only). Usage: scripts/django-ca-venv.sh [folder]
set -euo pipefail
cd "$(dirname "$0")/.."
venv="${1:-.cache/django-ca}"
if ! "$venv/bin/python" -c "import django_ca, gunicorn" 2>/dev/null; then
    python3 -m venv "$venv"
    "$venv/bin/python" -m pip install -q "django-ca[api]>=3.2,<3.3" "gunicorn>=23,<28"
fi
