"""One real django-ca for every django-ca test of the session (set up once: a few seconds)."""

from __future__ import annotations

import secrets
from collections.abc import Iterator

import pytest

from tests.support.django_ca import DjangoCa, free_port


@pytest.fixture(scope="session")
def django_ca(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DjangoCa]:
    ca = DjangoCa(home=tmp_path_factory.mktemp("django-ca"), port=free_port(),
                  password=secrets.token_urlsafe(18), readonly_password=secrets.token_urlsafe(18))
    ca.setup().start()
    try:
        yield ca
    finally:
        ca.stop()
