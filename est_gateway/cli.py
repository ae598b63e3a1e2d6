"""The ``est-gateway`` command (click: subcommands, help and prompts without hand-written parsing)."""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import socket
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar

import click

from est_gateway.backends.local import LocalCABackend
from est_gateway.backends.local.authority import utcnow
from est_gateway.backends.local.store import REVOCATION_REASONS, PendingRecord, Record
from est_gateway.config import GatewayConfig, ServerSettings, load_config
from est_gateway.errors import ConfigError
from est_gateway.passwords import PasswordHash

if TYPE_CHECKING:
    from est_gateway.localmode import LocalInstance
    from est_gateway.server.runner import Served

CONFIG_ENV = "EST_GATEWAY_CONFIG"
F = TypeVar("F", bound=Callable[..., Any])
config_option = click.option(
    "--config", "config_path", type=click.Path(dir_okay=False, path_type=Path),
    envvar=CONFIG_ENV, required=True, help=f"TOML configuration file (or ${CONFIG_ENV}).")


def _load(path: Path) -> GatewayConfig:
    try:
        return load_config(path)
    except ConfigError as exc:
        click.echo(f"{path}: {exc.render()}", err=True)
        sys.exit(2)


def _start(config: GatewayConfig) -> None:
    for backend in config.backends.values():
        backend.start()


def _fail(config: GatewayConfig, problems: list[str]) -> NoReturn:
    """Start-up problems, one line each, as check-config and serve both report them."""
    for problem in problems:
        click.echo(f"{config.source}: {problem}", err=True)
    sys.exit(2)


def _serve(config: GatewayConfig, *, listener: socket.socket | None = None, banner: str | None = None) -> None:
    """Bind, start the backends, run the start-up checks; only then say it is serving."""
    if listener is None:
        listener = _bind(config.server, f"[server] listen in {config.source}")
    # Before prometheus_client is first imported: every worker process writes its samples
    # to this folder and /metrics aggregates them (est_gateway.metrics).
    from est_gateway import metrics_folder

    metrics_dir = metrics_folder.fresh()
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(metrics_dir)
    from est_gateway import audit, logformat, startup
    from est_gateway.listener import StartupError
    from est_gateway.server.runner import GatewayServer
    from est_gateway.web.app import create_app

    console = config.console
    audit.configure(file=audit.AuditFile(console.audit_file, console.audit_file_max_bytes)
                    if console.audit_file else None)
    logformat.install(config.server.log_format, config.server.log_level)
    try:
        _start(config)
        problems = startup.startup_problems(config)
        if problems:
            _fail(config, problems)
        app = create_app(config)
        if banner:
            click.echo(banner)
        for name, backend in config.backends.items():
            for key, value in backend.describe_state().items():
                click.echo(f"backend {name}: {key}: {value}")
        server = config.server
        click.echo(f"serving EST on {server.url} ({server.workers} worker processes); Ctrl-C or SIGTERM stops")
        sys.stdout.flush()
        try:
            rebuild = functools.partial(_rebuild, config.source) if config.source is not None else None
            gateway = GatewayServer(config, app, listener=listener, more=_more_listeners(config, app),
                                    rebuild=rebuild)
        except StartupError as exc:     # another of its listeners' addresses
            raise click.ClickException(str(exc)) from None
        gateway.run()
    finally:
        metrics_folder.remove(metrics_dir)


def _rebuild(path: Path) -> Served:
    """On SIGHUP, in the arbiter: the configuration and every secret file read again, the
    new backends started and checked as serve starts them, the EST app and the other
    listeners' apps built anew (raises ConfigError, listing the problems)."""
    from est_gateway import startup
    from est_gateway.server.runner import Served, close_backends
    from est_gateway.web.app import create_app

    config = load_config(path)
    try:
        _start(config)
        problems = startup.startup_problems(config)
        if problems:
            raise ConfigError(problems)
        app = create_app(config)
        return Served(config, app, tuple(_more_listeners(config, app)))
    except BaseException:
        close_backends(config)
        raise


def _more_listeners(config: GatewayConfig, app: Any) -> list[Any]:
    """The listeners beside EST's: the operator console when it is enabled (its app shares
    the EST app's service: backends, failure throttle, metrics; TLS with the gateway's
    certificate), and the local CAs' CRLs and OCSP answers in plain HTTP."""
    from est_gateway.server.runner import Listener

    more = []
    console = config.console
    if console.enabled:
        from est_gateway.console import create_console_app
        from est_gateway.web.app import service_of

        click.echo(f"serving the operator console on {console.url}")
        more.append(Listener("console", console.host, console.port, True, create_console_app(config, service_of(app))))
    publication = config.publication
    if publication.enabled:
        from est_gateway.publication.app import create_publication_app

        click.echo(f"publishing CRLs and OCSP answers on {publication.url}")
        more.append(Listener("publication", publication.host, publication.port, False,
                             create_publication_app(config)))
    sys.stdout.flush()
    return more


@click.group()
@click.version_option(package_name="est-gateway")
def main() -> None:
    """An EST (RFC 7030) server in front of CAs that do not speak EST."""


@main.command()
@config_option
def serve(config_path: Path) -> None:
    """Serve EST with the given configuration."""
    _serve(_load(config_path))


@main.command("reload")
@config_option
def reload_command(config_path: Path) -> None:
    """Make the running gateway read its configuration and secrets again (SIGHUP).

    The configuration is checked here first: one with problems is not sent. New worker
    processes serve the new one; the old ones finish their requests. The gateway's log
    says whether it took it (a new listen address needs a restart).
    """
    import signal

    from est_gateway.server.control import NoGateway, signal_arbiter

    config = _load(config_path)
    pid_file = config.server.pid_file
    if pid_file is None:
        raise click.ClickException(f"{config_path}: the gateway writes no pid file (its folder is not writable): "
                                   "set server.pid_file, or send SIGHUP to its main process yourself")
    try:
        pid = signal_arbiter(pid_file, signal.SIGHUP)
    except NoGateway as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"sent SIGHUP to est-gateway (pid {pid}): its log says whether it took {config_path}")


@main.command("check-config")
@config_option
def check_config(config_path: Path) -> None:
    """Run every start-up check serve runs, without serving; exit 0 when it would start.

    Backends whose first start would create something (a new local CA) are not started:
    the checks that need them run when serve creates them.
    """
    from est_gateway import startup

    config = _load(config_path)
    with startup.started(config) as skipped:
        problems = startup.startup_problems(config)
    if problems:
        _fail(config, problems)
    for name in skipped:
        click.echo(f"{config_path}: backend {name}: not started (its first start creates its state); "
                   "its trusted client CAs are compared with its CAs when serve starts it")
    click.echo(f"{config_path}: OK ({len(config.aliases)} alias(es), {len(config.backends)} backend(s))")


@main.command()
@click.option("--state-dir", type=click.Path(file_okay=False, path_type=Path),
              default=Path("est-local"), show_default=True, help="Folder of the local instance.")
@click.option("--port", type=click.IntRange(1, 65535), default=None,
              help="Port on 127.0.0.1 [default: 8443 for a new instance]. On an existing "
                   "instance it replaces the port in its gateway.toml.")
def local(state_dir: Path, port: int | None) -> None:
    """Local test mode: create (first time) or reuse a self-contained instance and serve it."""
    from est_gateway import localmode

    instance = localmode.LocalInstance(state_dir.resolve())
    existing = instance.config.exists()
    # A running instance keeps its folder and configuration untouched: lock first.
    lock = _hold(instance) if existing else None
    server = _load(instance.config).server if existing else ServerSettings(port=localmode.DEFAULT_PORT)
    if port is not None:
        server = dataclasses.replace(server, port=port)
    listener = _bind(server, "--port")      # before anything is created or rewritten
    instance, created = localmode.prepare(state_dir, port=server.port)
    if lock is None:
        lock = _hold(instance)
    if port is not None and not created:
        try:
            former = localmode.set_port(instance, port)
        except ValueError as exc:
            raise click.UsageError(str(exc)) from None
        if former is not None:
            click.echo(f"{instance.config}: port {former} changed to {port}")
    config = _load(instance.config)
    from est_gateway.publication.settings import published_urls

    banner = localmode.instructions(instance, port=config.server.port, created=created, aliases=config.aliases,
                                    console=config.console,
                                    **published_urls(config.backends, config.publication))
    _serve(config, listener=listener, banner=banner)
    os.close(lock)


def _bind(server: ServerSettings, change_port: str) -> socket.socket | None:
    from est_gateway import listener

    try:
        return listener.bind(server, change_port=change_port)
    except listener.StartupError as exc:
        raise click.ClickException(str(exc)) from None


def _hold(instance: LocalInstance) -> int:
    from est_gateway import localmode

    try:
        return localmode.hold(instance)
    except localmode.InstanceBusy as exc:
        raise click.ClickException(str(exc)) from None
    except OSError as exc:
        raise click.ClickException(f"cannot lock {instance.folder}: {exc.strerror or exc}") from None


@main.command("hash-password")
@click.option("--password", default=None, metavar="TEXT",
              help="The password. Without it: read from standard input when that is not a "
                   "terminal (first line), else asked for twice without echo. Prefer those: "
                   "a password on the command line is visible to other users.")
def hash_password(password: str | None) -> None:
    """Print a salted scrypt hash for an alias's password_hash setting.

    \b
    Examples:
      est-gateway hash-password
      printf '%s\\n' "$SECRET" | est-gateway hash-password
    """
    if password is None and not sys.stdin.isatty():
        password = sys.stdin.readline().rstrip("\r\n")
    elif password is None:
        password = click.prompt("Password", hide_input=True, confirmation_prompt=True)
    if not password:
        raise click.UsageError("the password is empty")
    click.echo(PasswordHash.create(password).render())


# -- operator commands of the built-in CA ----------------------------------------------
# --config and --backend are accepted before and after the subcommand; the configuration
# is read only when a subcommand runs, so --help never needs one.

@dataclass(frozen=True)
class _CAChoice:
    config_path: Path | None
    backend_name: str | None


def _ca_options(func: F) -> F:
    func = click.option("--backend", "backend_name", default=None,
                        help="Name of the local backend (default: the only one).")(func)
    return click.option("--config", "config_path", type=click.Path(dir_okay=False, path_type=Path),
                        envvar=CONFIG_ENV, default=None,
                        help=f"TOML configuration file (or ${CONFIG_ENV}).")(func)


def _with_backend(func: Callable[..., None]) -> Callable[..., None]:
    """A local-ca subcommand: takes --config/--backend too, and gets the started backend."""
    def command(ctx: click.Context, /, config_path: Path | None, backend_name: str | None,
                **kwargs: Any) -> None:
        group = ctx.find_object(_CAChoice) or _CAChoice(None, None)
        func(_local_backend(config_path or group.config_path, backend_name or group.backend_name),
             **kwargs)
    functools.update_wrapper(command, func)     # the docstring is the subcommand's help
    return _ca_options(click.pass_context(command))


def _local_backend(config_path: Path | None, backend_name: str | None) -> LocalCABackend:
    if config_path is None:
        raise click.UsageError(f"Missing option '--config' (or ${CONFIG_ENV}).")
    config = _load(config_path)
    locals_ = {n: b for n, b in config.backends.items() if isinstance(b, LocalCABackend)}
    if not locals_:
        others = ", ".join(sorted(config.backends))
        raise click.UsageError(f'{config_path} has no local backend (type = "local"), only: {others}; '
                               "local-ca works on the built-in CA's record")
    if backend_name is None and len(locals_) == 1:
        backend_name = next(iter(locals_))
    if backend_name is None:
        raise click.UsageError(f"choose a local backend with --backend: {', '.join(sorted(locals_))}")
    if backend_name not in locals_:
        raise click.UsageError(f'unknown local backend "{backend_name}" in {config_path}; '
                               f"known: {', '.join(sorted(locals_))}")
    backend = locals_[backend_name]
    backend.start()
    return backend


@main.group("local-ca")
@_ca_options
@click.pass_context
def local_ca(ctx: click.Context, config_path: Path | None, backend_name: str | None) -> None:
    """Inspect, revoke and approve what the built-in CA issues.

    --config and --backend may come before or after the subcommand.
    """
    ctx.obj = _CAChoice(config_path, backend_name)


#: widths of local-ca list's columns (a status fits: "superseded" is the longest)
LIST_COLUMNS = (("SERIAL", 40), ("STATUS", 10), ("NOT AFTER", 19), ("LABEL", 12), ("SUBJECT", 30), ("SANS", 0))
#: serials named when a prefix is ambiguous
SHOWN_MATCHES = 5
#: what local-ca list --json shows of a record (everything but the DER)
LIST_FIELDS = tuple(f.name for f in dataclasses.fields(Record) if f.name != "der")


@local_ca.command("list")
@click.option("--status", type=click.Choice(["valid", "superseded", "revoked"]), default=None,
              help="Only certificates with this status (default: all; superseded: renewed).")
@click.option("--limit", type=int, default=100, show_default=True, help="Most records shown.")
@click.option("--json", "as_json", is_flag=True,
              help="One JSON object per record, one per line (every field but the certificate).")
@_with_backend
def ca_list(backend: LocalCABackend, status: str | None, limit: int, as_json: bool) -> None:
    """List issued certificates, newest first."""
    records = backend.store.records(limit=limit, status=status)
    if as_json:
        for r in records:
            click.echo(json.dumps({name: getattr(r, name) for name in LIST_FIELDS}, ensure_ascii=False))
        return
    click.echo(_row(name for name, _ in LIST_COLUMNS))
    for r in records:
        click.echo(_row((r.serial, r.status, r.not_after[:19], r.alias, r.subject, ",".join(r.sans) or "-")))
    click.echo(f"({len(records)} shown, {backend.store.count()} on record)")


def _row(values: Iterable[str]) -> str:
    """One line of local-ca list: padded columns; a value longer than its column pushes the
    next one right rather than being cut (a serial is never shortened)."""
    cells = [value.ljust(width) if width else value for value, (_, width) in zip(values, LIST_COLUMNS, strict=True)]
    return " ".join(cells).rstrip()


@local_ca.command("show")
@click.argument("serial")
@click.option("--pem", is_flag=True, help="Print the certificate in PEM too.")
@_with_backend
def ca_show(backend: LocalCABackend, serial: str, pem: bool) -> None:
    """Show one record by serial number (hex), or by a prefix of it that only one serial has."""
    record = _record(backend, serial)
    for key in ("serial", "status", "subject", "sans", "issuer", "not_before", "not_after",
                "ca", "alias", "certificate_profile", "requester", "request_id", "issued_at",
                "revoked_at", "revocation_reason"):
        click.echo(f"{key:<20} {getattr(record, key)}")
    if pem:
        from cryptography.hazmat.primitives.serialization import Encoding

        click.echo(record.certificate().public_bytes(Encoding.PEM).decode().rstrip())


@local_ca.command("revoke")
@click.argument("serial")
@click.option("--reason", type=click.Choice(REVOCATION_REASONS), default="unspecified", show_default=True,
              help="Revocation reason recorded with it.")
@_with_backend
def ca_revoke(backend: LocalCABackend, serial: str, reason: str) -> None:
    """Revoke a certificate: its next simplereenroll is refused."""
    try:
        record = backend.store.revoke(serial, reason, utcnow())
    except (LookupError, ValueError) as exc:
        raise click.ClickException(_message(exc)) from None
    click.echo(f"revoked {record.serial} ({record.subject}) at {record.revoked_at}, reason {reason}")


@local_ca.command("pending")
@click.option("--all", "show_all", is_flag=True, help="Include decided requests.")
@_with_backend
def ca_pending(backend: LocalCABackend, show_all: bool) -> None:
    """List requests waiting for approval (backends with approval = "manual")."""
    records = backend.store.pending_list(status=None if show_all else "pending")
    click.echo(f"{'ID':<18} {'STATUS':<9} {'CREATED':<20} {'ALIAS':<12} SUBJECT / REQUESTER")
    for r in records:
        click.echo(f"{r.id:<18} {r.status:<9} {r.created_at[:19]:<20} {r.alias:<12} {r.subject} / {r.requester}")
    click.echo(f"({len(records)} shown)")


@local_ca.command("approve")
@click.argument("request_id")
@_with_backend
def ca_approve(backend: LocalCABackend, request_id: str) -> None:
    """Approve a pending request: the client's next retry receives its certificate."""
    record = _decide(backend, request_id, "approved", None)
    click.echo(f"approved {record.id} ({record.subject}); issued when the client retries")


@local_ca.command("reject")
@click.argument("request_id")
@click.option("--reason", default=None, help="Told to the client in the 403 reason.")
@_with_backend
def ca_reject(backend: LocalCABackend, request_id: str, reason: str | None) -> None:
    """Reject a pending request: the client's next retry gets 403."""
    record = _decide(backend, request_id, "rejected", reason)
    click.echo(f"rejected {record.id} ({record.subject})")


def _decide(backend: LocalCABackend, request_id: str, decision: str, reason: str | None) -> PendingRecord:
    try:
        return backend.store.pending_decide(request_id, decision, utcnow(), reason)
    except (LookupError, ValueError) as exc:
        raise click.ClickException(_message(exc)) from None


def _message(exc: Exception) -> str:
    """An exception's own message (``str()`` of a KeyError would add quotes around it)."""
    return str(exc.args[0]) if exc.args else str(exc)


def _record(backend: LocalCABackend, serial: str) -> Record:
    """The record with this serial, else the only one whose serial starts with it."""
    try:
        record = backend.store.get(serial)
        found = [record] if record is not None else backend.store.with_serial_prefix(serial, limit=SHOWN_MATCHES + 1)
    except ValueError as exc:
        raise click.ClickException(_message(exc)) from None
    if not found:
        raise click.ClickException(f"no certificate with serial {serial} on record")
    if len(found) > 1:
        listed = ", ".join(r.serial for r in found[:SHOWN_MATCHES])
        more = ", ..." if len(found) > SHOWN_MATCHES else ""
        raise click.ClickException(f"serial prefix {serial} is ambiguous: {listed}{more}; give more digits")
    return found[0]


if __name__ == "__main__":  # pragma: no cover
    main()
