"""Load a TOML configuration into :class:`GatewayConfig`, reporting every problem at once."""

from __future__ import annotations

import dataclasses
import datetime as dt
import grp
import ipaddress
import os
import re
import tomllib
from pathlib import Path
from typing import Any

from cryptography import x509

from est_gateway import csrattrs as csrattrs_mod
from est_gateway.backends.base import AnyBackend
from est_gateway.backends.registry import BackendRegistry
from est_gateway.config.model import LOG_FORMATS, AliasSettings, ConsoleSettings, GatewayConfig, ServerSettings
from est_gateway.config.reader import Problems, Section
from est_gateway.csrattrs import CsrAttrsPolicy
from est_gateway.errors import ConfigError
from est_gateway.keys import KEY_TYPES
from est_gateway.limits import CURVES, Limits
from est_gateway.passwords import PasswordHash
from est_gateway.publication.settings import parse_publication

#: EST operation names; an alias may not be called like one (the path would be ambiguous).
OPERATIONS = ("cacerts", "simpleenroll", "simplereenroll", "csrattrs", "serverkeygen", "fullcmc")
ALIAS_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
HEADER_RE = re.compile(r"^[A-Za-z0-9-]+$")
CHALLENGE_PASSWORD_MEANINGS = ("none", "channel-binding", "enrollment-code")
CLIENT_CERT_SOURCES = ("header", "mod_ssl")


def load_config(path: str | Path, *, registry: BackendRegistry | None = None) -> GatewayConfig:
    """Read and validate ``path``; raise :class:`ConfigError` listing every problem."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError([f"{path}: cannot read the configuration file: {exc.strerror}"]) from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError([f"{path}: not valid TOML: {exc}"]) from None
    return parse_config(data, base_dir=path.resolve().parent, source=path, registry=registry)


def parse_config(data: dict[str, Any], *, base_dir: Path, source: Path | None = None,
                 registry: BackendRegistry | None = None) -> GatewayConfig:
    """Validate an already parsed TOML document (``base_dir`` anchors relative paths)."""
    problems = Problems()
    root = Section(data, "", problems, base_dir)
    server = _server(root.table("server"))
    limits = _limits(root.table("limits"))
    backends, broken = _backends(root.table("backends", required=True), registry or BackendRegistry())
    aliases = _aliases(root.table("aliases", required=True), backends, broken)
    console = _console(root.table("console"), server)
    publication = parse_publication(root.table("publication"), server.host, server.port, backends)
    root.check_unknown()
    if console.enabled and publication.enabled and (console.host, console.port) == (publication.host,
                                                                                    publication.port):
        problems.add("console.listen", f"{console.host}:{console.port} is also [publication] listen; "
                                       "give the console an address of its own")
    if server.tls is False:
        for alias in aliases.values():
            if alias.require_client_cert and not (server.trusted_proxies or server.trusted_unix_socket
                                                  or server.client_cert_source == "mod_ssl"):
                problems.add(f"aliases.{alias.name}.require_client_cert",
                             "client certificates cannot reach a plain-HTTP gateway without "
                             "server.trusted_proxies (the proxy that forwards them) or "
                             'server.client_cert_source = "mod_ssl" (Apache runs the gateway)')
            if alias.challenge_password == "channel-binding":
                problems.add(f"aliases.{alias.name}.challenge_password",
                             "channel binding can only be checked where TLS terminates; this gateway "
                             "serves plain HTTP behind a proxy (server.tls = false), so this alias "
                             "cannot be served here")
    server_table = data.get("server")
    if source is not None and not (isinstance(server_table, dict) and "pid_file" in server_table):
        server = dataclasses.replace(server, pid_file=default_pid_file(Path(source)))
    problems.raise_if_any()
    return GatewayConfig(server=server, backends=backends, aliases=aliases, source=source, limits=limits,
                         console=console, publication=publication)


def default_pid_file(source: Path) -> Path | None:
    """Without ``server.pid_file``: ``<configuration's name>.pid`` beside it, when its
    folder is writable (a local-mode folder); otherwise none."""
    folder = source.resolve().parent
    return folder / f"{source.stem}.pid" if os.access(folder, os.W_OK) else None


def _limits(sec: Section) -> Limits:
    d = Limits()
    limits = Limits(
        min_rsa_bits=sec.int("min_rsa_bits", d.min_rsa_bits, minimum=1024, maximum=16384),
        max_rsa_bits=sec.int("max_rsa_bits", d.max_rsa_bits, minimum=2048, maximum=16384),
        allowed_curves=tuple(sec.str_list("allowed_curves", list(d.allowed_curves), choices=CURVES)),
        max_subject_attributes=sec.int("max_subject_attributes", d.max_subject_attributes, minimum=1, maximum=256),
        max_sans=sec.int("max_sans", d.max_sans, minimum=0, maximum=1000),
        max_value_length=sec.int("max_value_length", d.max_value_length, minimum=16, maximum=4096),
        auth_failures_per_minute=sec.int("auth_failures_per_minute", d.auth_failures_per_minute,
                                         minimum=0, maximum=100_000),
        auth_failure_scope=sec.str("auth_failure_scope", d.auth_failure_scope, choices=("label", "gateway")),
        auth_failure_entries=sec.int("auth_failure_entries", d.auth_failure_entries, minimum=1024,
                                     maximum=4_194_304),
        password_cache_s=sec.int("password_cache_s", d.password_cache_s, minimum=0, maximum=3600),
    )
    if isinstance(limits.min_rsa_bits, int) and isinstance(limits.max_rsa_bits, int) \
            and limits.min_rsa_bits > limits.max_rsa_bits:
        sec.error("min_rsa_bits", "must not exceed max_rsa_bits")
    sec.check_unknown()
    return limits


def _server(sec: Section) -> ServerSettings:
    d = ServerSettings()
    listen = sec.str("listen", f"{d.host}:{d.port}")
    host, port, unix_socket = d.host, d.port, None
    tls = sec.bool("tls", True)
    if isinstance(listen, str) and listen.startswith("unix:"):
        unix_socket = Path(listen[5:]).expanduser()
        unix_socket = unix_socket if unix_socket.is_absolute() else sec.base_dir / unix_socket
        if not unix_socket.parent.is_dir():
            sec.error("listen", f"folder {unix_socket.parent} of the Unix socket does not exist")
        if tls:
            sec.error("tls", "a Unix socket serves plain HTTP to a local proxy: set tls = false")
    elif isinstance(listen, str):
        host, port = sec.address("listen", listen, (d.host, d.port))
    socket_group = sec.str("unix_socket_group", None)
    group_id = None
    if isinstance(socket_group, str) and socket_group:
        try:
            group_id = grp.getgrnam(socket_group).gr_gid
        except KeyError:
            sec.error("unix_socket_group", f'no group "{socket_group}" on this machine')
        if unix_socket is None:
            sec.error("unix_socket_group", 'only applies with listen = "unix:<path>"')
    cert = sec.path_value("tls_cert", None, must_exist=True)
    key = sec.private_path("tls_key")
    if tls and (cert is None or key is None):
        for name, value in (("tls_cert", cert), ("tls_key", key)):
            if value is None and not sec.has(name):
                sec.error(name, "is required when tls = true (PEM file)")
    proxies: list[ipaddress.IPv4Network | ipaddress.IPv6Network] = []
    trust_unix = False
    for i, item in enumerate(sec.str_list("trusted_proxies", [])):
        if item == "unix":     # whoever may open the Unix socket (its file permissions decide)
            trust_unix = True
            continue
        try:
            proxies.append(ipaddress.ip_network(item, strict=False))
        except ValueError:
            sec.problems.add(f"{sec.key('trusted_proxies')}[{i}]",
                             f'"{item}" is not an IP address or network (e.g. "127.0.0.1"), nor "unix"')
    header = sec.str("client_cert_header", d.client_cert_header)
    chain_prefix = sec.str("client_chain_header_prefix", d.client_chain_header_prefix)
    for name, text in (("client_cert_header", header), ("client_chain_header_prefix", chain_prefix)):
        if text and not HEADER_RE.match(text):
            sec.error(name, f'"{text}" is not a valid HTTP header name')
    source = sec.str("client_cert_source", d.client_cert_source, choices=CLIENT_CERT_SOURCES)
    if source == "mod_ssl" and tls:
        sec.error("client_cert_source", '"mod_ssl" takes the client certificate from Apache\'s mod_ssl '
                  "(SSLOptions +ExportCertData) when Apache runs the gateway under mod_wsgi, where "
                  "Apache terminates TLS; set tls = false there (this gateway terminates TLS itself "
                  "and reads certificates from its own TLS session)")
    # false: no pid file (est-gateway reload cannot find this gateway then)
    pid_file = None if sec.raw("pid_file") is False else sec.path_value("pid_file", None)
    if pid_file is not None and not os.access(pid_file.parent, os.W_OK):
        sec.error("pid_file", f"folder {pid_file.parent} does not exist or this user cannot write to it")
    settings = ServerSettings(
        host=host, port=port, unix_socket=unix_socket, unix_socket_group=group_id,
        tls=bool(tls), tls_cert=cert, tls_key=key,
        tls_min_version=sec.str("tls_min_version", d.tls_min_version, choices=("1.2", "1.3")),
        workers=sec.int("workers", d.workers, minimum=1, maximum=64),
        max_body_bytes=sec.int("max_body_bytes", d.max_body_bytes, minimum=1024, maximum=16 * 1024 * 1024),
        max_header_bytes=sec.int("max_header_bytes", d.max_header_bytes, minimum=1024, maximum=65536),
        max_header_fields=sec.int("max_header_fields", d.max_header_fields, minimum=10, maximum=1000),
        request_timeout_s=sec.number("request_timeout_s", d.request_timeout_s),
        keepalive_s=sec.number("keepalive_s", d.keepalive_s, allow_zero=True),
        max_requests_per_connection=sec.int("max_requests_per_connection", d.max_requests_per_connection,
                                            minimum=1, maximum=100_000),
        handshake_timeout_s=sec.number("handshake_timeout_s", d.handshake_timeout_s),
        max_connections=sec.int("max_connections", d.max_connections, minimum=16, maximum=1_000_000),
        max_connections_per_address=sec.int("max_connections_per_address", d.max_connections_per_address,
                                            minimum=0, maximum=1_000_000),
        client_cert_max_depth=sec.int("client_cert_max_depth", d.client_cert_max_depth, minimum=1, maximum=100),
        client_cert_max_count=sec.int("client_cert_max_count", d.client_cert_max_count, minimum=1, maximum=100),
        client_cert_max_bytes=sec.int("client_cert_max_bytes", d.client_cert_max_bytes,
                                      minimum=1024, maximum=1024 * 1024),
        trusted_proxies=tuple(proxies), trusted_unix_socket=trust_unix,
        client_cert_header=header, client_chain_header_prefix=chain_prefix, client_cert_source=source,
        log_level=sec.str("log_level", d.log_level, choices=("debug", "info", "warning", "error")),
        max_buffered_request_bytes=sec.int("max_buffered_request_bytes", d.max_buffered_request_bytes,
                                           minimum=1024 * 1024, maximum=1 << 40),
        log_queue_records=sec.int("log_queue_records", d.log_queue_records, minimum=16, maximum=1_000_000),
        log_format=sec.str("log_format", d.log_format, choices=LOG_FORMATS),
        pid_file=pid_file,
    )
    sec.check_unknown()
    return settings


def _backends(sec: Section, registry: BackendRegistry) -> tuple[dict[str, AnyBackend], dict[str, AnyBackend | None]]:
    """The backends that are fine, and those with problems (already reported): still built
    when their class loaded, so their aliases' settings are checked all the same."""
    backends: dict[str, AnyBackend] = {}
    broken: dict[str, AnyBackend | None] = {}
    for name, bsec in sec.subtables().items():
        broken[name] = None
        type_name = bsec.str("type")
        if not isinstance(type_name, str) or not type_name:
            bsec.check_unknown(only_misspellings=True)     # "typ" for "type"
            continue
        try:
            cls = registry.load(type_name)
        except LookupError as exc:
            bsec.error("type", str(exc))
            continue
        before = len(sec.problems.items)
        backend = cls.from_options(name, bsec)
        bsec.check_unknown()
        broken[name] = backend
        if len(sec.problems.items) == before:
            backends[name] = backend
            del broken[name]
    if not sec.data:
        sec.problems.add("backends", 'define at least one backend, e.g. [backends.local] type = "local"')
    return backends, broken


def _aliases(sec: Section, backends: dict[str, AnyBackend],
             broken: dict[str, AnyBackend | None]) -> dict[str, AliasSettings]:
    aliases: dict[str, AliasSettings] = {}
    for name, asec in sec.subtables().items():
        alias = _alias(name, asec, backends, broken)
        if alias is not None:
            aliases[name] = alias
    for name, alias in aliases.items():
        for label in alias.accept_renewals_from:
            if label not in sec.data:
                sec.problems.add(f"{sec.key(name)}.accept_renewals_from",
                                 f'unknown label "{label}"; known: {", ".join(sorted(sec.data))}')
    _check_renewal_domains(sec, aliases, backends)
    if not sec.data:
        sec.problems.add("aliases", "define at least one alias, e.g. [aliases.est]")
    return aliases


def _check_renewal_domains(sec: Section, aliases: dict[str, AliasSettings],
                           backends: dict[str, AnyBackend]) -> None:
    """A certificate renews only on the label that issued it. Where a backend cannot tell
    two of its labels' certificates apart (``CABackend.issues_alike``), either label's
    certificates would renew on both, bypassing the other's policy (same-key ban,
    authentication): refuse that unless each lists the other in ``accept_renewals_from``."""
    names = sorted(aliases)
    for i, first in enumerate(names):
        for second in names[i + 1:]:
            a, b = aliases[first], aliases[second]
            backend = backends.get(a.backend)
            if a.backend != b.backend or backend is None or not backend.issues_alike(a.target, b.target):
                continue
            if second in a.accept_renewals_from and first in b.accept_renewals_from:
                continue
            lacking = first if second not in a.accept_renewals_from else second
            sec.problems.add(
                f"{sec.key(lacking)}.accept_renewals_from",
                f'labels "{first}" and "{second}" issue through backend "{a.backend}" certificates it '
                "cannot tell apart, so a certificate of either would renew on both; declare them one "
                f'renewal domain (aliases.{first}.accept_renewals_from = ["{second}"] and '
                f'aliases.{second}.accept_renewals_from = ["{first}"]) or give them different CAs')


def _alias(name: str, sec: Section, backends: dict[str, AnyBackend],
           broken: dict[str, AnyBackend | None]) -> AliasSettings | None:
    before = len(sec.problems.items)
    if not ALIAS_RE.match(name) or name in OPERATIONS:
        sec.problems.add(sec.path, "alias names are 1-64 letters, digits, '.', '_' or '-', "
                                   f"and not an EST operation name ({', '.join(OPERATIONS)})")
    backend_name = sec.str("backend")
    backend = backends.get(backend_name) if isinstance(backend_name, str) else None
    # A backend with problems of its own is not unknown: those problems are reported already.
    if isinstance(backend_name, str) and backend_name and backend is None and backend_name not in broken:
        known = ", ".join(sorted({*backends, *broken})) or "none"
        sec.error("backend", f'unknown backend "{backend_name}"; known: {known}')
    # The CA side of the alias (``ca``, profiles, ``[aliases.<name>.upstream]``, ...) is the
    # backend's: it parses it into its own target, which the core only hands back.
    parser = backend if backend is not None else broken.get(backend_name)
    target = parser.parse_target(sec) if parser is not None else None
    require_cert = sec.bool("require_client_cert", False)
    username = sec.str("username", None)
    has_password = any(sec.has(k) for k in ("password_file", "password_env", "password_hash"))
    password, plain = _password(sec)
    previous, until = _previous_password(sec, password, plain)
    if username is not None and not has_password:
        sec.error("password_file", "is required when username is set (or password_env, password_hash)")
    if username is None and has_password:
        sec.error("username", "is required when a password is configured")
    if username is None and not has_password and not require_cert:
        sec.error("username", "an alias needs username/password or require_client_cert = true; "
                              "otherwise anyone could enroll")
    cas = _certificates(sec, "trusted_client_cas_file")
    csrattrs = _csrattrs(sec.table("csrattrs"))
    challenge = sec.str("challenge_password", "none", choices=CHALLENGE_PASSWORD_MEANINGS)
    keygen = sec.bool("serverkeygen", True)
    keygen_type = sec.str("serverkeygen_key_type", AliasSettings.serverkeygen_key_type,
                          choices=("csr", *KEY_TYPES))
    same_key = sec.bool("allow_same_key_renewal", True)
    renew_from = tuple(sec.str_list("accept_renewals_from", []))
    supersede = sec.bool("supersede_on_renewal", True)
    # Without a backend class nobody read the CA-side keys: report only misspelt core keys.
    sec.check_unknown(only_misspellings=parser is None)
    if backend is not None and challenge == "enrollment-code" and not backend.checks_enrollment_code(target):
        sec.error("challenge_password", f'backend "{backend_name}" does not check enrollment codes '
                                        "for this alias")
    if len(sec.problems.items) != before:
        return None
    return AliasSettings(
        name=name, backend=backend_name, target=target, require_client_cert=require_cert,
        username=username, password=password, allow_same_key_renewal=same_key,
        trusted_client_cas=cas, csrattrs=csrattrs, challenge_password=challenge,
        serverkeygen=keygen, serverkeygen_key_type=keygen_type,
        accept_renewals_from=renew_from, supersede_on_renewal=supersede,
        previous_password=previous, previous_password_until=until,
    )


def _certificates(sec: Section, key: str) -> tuple[x509.Certificate, ...]:
    """PEM certificates from a file named by ``key`` (none when the key is absent)."""
    path = sec.path_value(key, None, must_exist=True)
    if path is None or not path.exists():
        return ()
    try:
        found = x509.load_pem_x509_certificates(path.read_bytes())
    except (OSError, ValueError):
        sec.error(key, f"{path} holds no readable PEM certificate")
        return ()
    return tuple(found)


def _csrattrs(sec: Section) -> CsrAttrsPolicy:
    oids: dict[str, list[str]] = {}
    for key in ("attributes", "extension_requests"):
        oids[key] = []
        for i, name in enumerate(sec.str_list(key, [])):
            try:
                oids[key].append(csrattrs_mod.resolve_oid(name))
            except ValueError as exc:
                sec.problems.add(f"{sec.key(key)}[{i}]", str(exc))
    policy = CsrAttrsPolicy(
        attributes=tuple(oids["attributes"]), extension_requests=tuple(oids["extension_requests"]),
        key_type=sec.str("key_type", None, choices=KEY_TYPES),
        signature_hash=sec.str("signature_hash", None, choices=csrattrs_mod.HASHES),
        enforce=sec.bool("enforce", False),
    )
    sec.check_unknown()
    return policy


def _password(sec: Section, name: str = "password") -> tuple[PasswordHash | None, str | None]:
    """The hash of ``<name>_hash``, ``<name>_file`` or ``<name>_env``, and the plain text
    when it came from a file or the environment (for comparisons at load only)."""
    hash_key = f"{name}_hash"
    if sec.has(hash_key):
        if sec.has(f"{name}_file") or sec.has(f"{name}_env"):
            sec.error(hash_key, f"give only one of {hash_key}, {name}_file, {name}_env")
            return None, None
        text = sec.str(hash_key)
        if not isinstance(text, str):
            return None, None
        try:
            return PasswordHash.parse(text), None
        except ValueError as exc:
            sec.error(hash_key, str(exc))
            return None, None
    secret = sec.secret(name, required=False)
    return (PasswordHash.create(secret), secret) if secret is not None else (None, None)


PREVIOUS_KEYS = ("previous_password_file", "previous_password_env", "previous_password_hash")
UNTIL_EXAMPLE = "2027-01-31T00:00:00Z"


def _previous_password(sec: Section, current: PasswordHash | None,
                       current_plain: str | None) -> tuple[PasswordHash | None, dt.datetime | None]:
    """A rotation's previous password and the instant it stops working."""
    has_previous = any(sec.has(key) for key in PREVIOUS_KEYS)
    has_until = sec.has("previous_password_until")
    if not has_previous and not has_until:
        return None, None
    previous, plain = _password(sec, "previous_password")
    until = _instant(sec, "previous_password_until") if has_until else None
    if not has_previous:
        sec.error("previous_password_until", "applies only with a previous password "
                                             f"({', '.join(PREVIOUS_KEYS)})")
    elif not has_until:
        sec.error("previous_password_until", "is required with a previous password: the instant it stops "
                                             f"working, e.g. previous_password_until = {UNTIL_EXAMPLE}")
    elif not any(sec.has(key) for key in ("password_file", "password_env", "password_hash")):
        sec.error(next(key for key in PREVIOUS_KEYS if sec.has(key)),
                  "a previous password needs a current one (password_file, password_env or password_hash)")
    elif current is not None and previous is not None and _same_password(current, current_plain, previous, plain):
        sec.error(next(key for key in PREVIOUS_KEYS if sec.has(key)),
                  "is the same password as the current one: write the new password to password_file "
                  "(or password_env, password_hash) and keep the old one here")
    return previous, until


def _same_password(current: PasswordHash, current_plain: str | None,
                   previous: PasswordHash, previous_plain: str | None) -> bool:
    """Whether a rotation's two passwords are one (one scrypt, only when a previous one is set)."""
    if current_plain is not None and previous_plain is not None:
        return current_plain == previous_plain
    if previous_plain is not None:
        return current.verify(previous_plain)
    if current_plain is not None:
        return previous.verify(current_plain)
    return current.render() == previous.render()


def _instant(sec: Section, name: str) -> dt.datetime | None:
    """A TOML date-time with its offset (or such a string), in UTC."""
    value = sec.raw(name)
    if isinstance(value, str):
        try:
            value = dt.datetime.fromisoformat(value)
        except ValueError:
            sec.error(name, f'"{value}" is not a date and time like {UNTIL_EXAMPLE}')
            return None
    if not isinstance(value, dt.datetime):
        what = "a date without a time" if isinstance(value, dt.date) else f"a {type(value).__name__}"
        sec.error(name, f"must be a date and time with its offset, like {UNTIL_EXAMPLE}, not {what}")
        return None
    if value.tzinfo is None:
        sec.error(name, f"has no offset: write it in UTC with a Z ({UNTIL_EXAMPLE}) or with +hh:mm")
        return None
    return value.astimezone(dt.UTC)


#: shortest cookie-signing secret accepted (characters of the file, e.g. 32 random bytes in hex)
MIN_CONSOLE_SECRET = 32


def _console(sec: Section, server: ServerSettings) -> ConsoleSettings:
    """``[console]``: checked fully only when enabled (a disabled console reads nothing)."""
    d = ConsoleSettings()
    enabled = sec.bool("enabled", False)
    host, port = sec.address("listen", sec.str("listen", f"{d.host}:{d.port}"), (d.host, d.port))
    admin_cas = _certificates(sec, "admin_ca")
    username = sec.str("admin_username", None)
    has_password = any(sec.has(f"admin_password_{k}") for k in ("file", "env", "hash"))
    password, _ = _password(sec, "admin_password")
    secret = sec.secret("secret", required=enabled)
    audit_file = sec.path_value("audit_file", None)
    settings = ConsoleSettings(
        enabled=bool(enabled), host=host, port=port, admin_cas=admin_cas, admin_username=username,
        admin_password=password,
        session_idle_timeout_s=sec.number("session_idle_timeout_s", d.session_idle_timeout_s),
        secret=(secret or "").encode("utf-8"), audit_file=audit_file,
        audit_file_max_bytes=sec.int("audit_file_max_bytes", d.audit_file_max_bytes,
                                     minimum=64 * 1024, maximum=1024 * 1024 * 1024),
    )
    sec.check_unknown()
    if audit_file is not None and not audit_file.parent.is_dir():
        sec.error("audit_file", f"folder {audit_file.parent} does not exist")
    if not enabled:
        return settings
    if username is not None and not has_password:
        sec.error("admin_password_file", "is required when admin_username is set (or admin_password_hash)")
    if username is None and has_password:
        sec.error("admin_username", "is required when an admin password is configured")
    if username is None and not sec.has("admin_ca"):
        sec.error("admin_username", "the console needs admin_username with a password, or admin_ca "
                                    "(client certificates of admins), or both")
    if secret is not None and len(secret) < MIN_CONSOLE_SECRET:
        sec.error("secret_file", f"the cookie-signing secret must be at least {MIN_CONSOLE_SECRET} "
                                 "characters (e.g. openssl rand -hex 32)")
    if not server.tls or server.tls_cert is None:
        sec.error("enabled", "the console is served over HTTPS with the gateway's TLS certificate; "
                             "it needs server.tls = true with tls_cert and tls_key")
    if server.unix_socket is None and port == server.port and (
            host == server.host or "0.0.0.0" in (host, server.host) or "::" in (host, server.host)):
        sec.error("listen", f"must differ from server.listen ({server.host}:{server.port}): the console "
                            "is never served where EST is")
    return settings
