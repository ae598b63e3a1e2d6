"""The URLs a local CA publishes at, as its configuration names them."""

from __future__ import annotations

from urllib.parse import unquote, urlsplit

from est_gateway.config.reader import Section


def read_url(sec: Section, key: str) -> str | None:
    """An ``http://`` URL with a host and a path, without query or fragment (None when
    absent or after a problem): relying parties fetch CRLs and ask OCSP in plain HTTP
    (RFC 5280 §4.2.1.13, RFC 6960 Appendix A), and an OCSP GET appends its request to it."""
    url = sec.str(key, None)
    if not isinstance(url, str) or not url.strip():
        return None
    try:
        parts = urlsplit(url)
        _ = parts.port     # raises for a port that is not a number
    except ValueError:
        parts = None
    if parts is None or parts.scheme != "http" or not parts.hostname or parts.query or parts.fragment \
            or "#" in url or "?" in url:
        sec.error(key, f'"{url}" must be an http:// URL with a host and no query '
                       '(e.g. "http://pki.example.org/crl/est-ca.crl")')
        return None
    return url


def url_path(url: str) -> str:
    """The path a URL names on the publication listener ("/" for none), percent-decoded as
    a request's path is."""
    return unquote(urlsplit(url).path, encoding="latin-1") or "/"
