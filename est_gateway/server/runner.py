"""Run the gateway under gunicorn's arbiter with :class:`ESTWorker`."""

from __future__ import annotations

import logging
import os
import signal
import socket
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import gunicorn
from gunicorn.app.base import BaseApplication

from est_gateway.config.model import GatewayConfig
from est_gateway.errors import ConfigError
from est_gateway.listener import bind_address
from est_gateway.logformat import gunicorn_logger_class
from est_gateway.logwriter import LogWriter
from est_gateway.logwriter import install as install_log_writer

log = logging.getLogger(__name__)
WSGIApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


@dataclass(frozen=True)
class Listener:
    """One more address the workers serve, and the WSGI application behind it (the
    operator console, the revocation publication). ``tls``: with the gateway's TLS
    certificate, as the EST listener; otherwise plain HTTP."""

    name: str
    host: str
    port: int
    tls: bool
    app: WSGIApp = field(repr=False, compare=False)

    @property
    def bind(self) -> str:
        """The address as gunicorn's ``bind`` setting spells it."""
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"

    @property
    def url(self) -> str:
        """Where it serves, for messages."""
        return f"{'https' if self.tls else 'http'}://{self.bind}/ ({self.name})"


def _child_exit(server: object, worker: Any) -> None:
    """A worker died: its live metric samples must not linger in /metrics."""
    from est_gateway.metrics import mark_process_dead

    mark_process_dead(worker.pid)


def apply_settings(cfg: Any, settings: Mapping[str, Any]) -> None:
    """Set gunicorn settings; one this gunicorn does not know is an error, never dropped."""
    unknown = sorted(key for key in settings if key not in cfg.settings)
    if unknown:
        raise RuntimeError(f"gunicorn {gunicorn.__version__} has no setting {', '.join(unknown)}; "
                           "install the gunicorn version pyproject.toml asks for")
    for key, value in settings.items():
        cfg.set(key, value)


class TrueListeningLine(logging.Filter):
    """Rewrite gunicorn's "Listening at: http://…" into where and how the gateway serves."""

    def __init__(self, url: str) -> None:
        super().__init__()
        self.url = url

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.msg, str) and record.msg.startswith("Listening at:"):
            pid = record.args[-1] if isinstance(record.args, tuple) and len(record.args) > 1 else os.getpid()
            record.msg, record.args = "Listening at: %s (pid %s)", (self.url, pid)
        return True


def _post_fork(server: object, worker: Any) -> None:
    """In a new worker, at once: a SIGTERM that arrives while it boots must stop it. Until
    gunicorn installs the worker's own handlers, the arbiter's inherited handler would swallow
    the signal and the worker would serve on until the arbiter kills it (graceful_timeout)."""

    def stop_when_booted(signum: int, frame: object) -> None:
        worker.alive = False

    signal.signal(signal.SIGTERM, stop_when_booted)


def _start_log_writer(config: GatewayConfig, worker: Any) -> None:
    """In a booted worker: its log and audit records go through a writer thread of its own,
    so a log output that stops reading never stops the loop or a request."""
    from est_gateway.metrics import log_drop_counter

    worker.log_writer = LogWriter(config.server.log_queue_records, on_drop=log_drop_counter().inc)
    worker.log_writer.start()
    install_log_writer(worker.log_writer)


def _worker_exit(config: GatewayConfig, worker: Any) -> None:
    """As a worker exits: release the backends, then write the log records still queued."""
    close_backends(config)
    writer: LogWriter | None = getattr(worker, "log_writer", None)
    if writer is not None:
        writer.stop()


def close_backends(config: GatewayConfig) -> None:
    """Call every backend's ``close()`` (the plugin contract: in each worker process as it
    exits, and in the arbiter at shutdown); one that fails is logged, the others still run."""
    for name, backend in config.backends.items():
        try:
            backend.close()
        except Exception:  # a plugin's bug must not keep the others from releasing theirs
            log.exception("backend %s: close() failed", name)
        else:
            log.debug("backend %s: closed in process %d", name, os.getpid())


@dataclass(frozen=True)
class Served:
    """What the workers serve: a configuration (its backends started), the EST app, and
    the other listeners with theirs."""

    config: GatewayConfig
    app: WSGIApp
    more: tuple[Listener, ...] = ()

    def addresses(self) -> list[str]:
        """Every address bound, as gunicorn's ``bind`` spells it."""
        server = self.config.server
        host = f"[{server.host}]" if ":" in server.host else server.host
        est = f"unix:{server.unix_socket}" if server.unix_socket else f"{host}:{server.port}"
        return [est, *(listener.bind for listener in self.more)]


#: builds what to serve from the configuration as it is now on disk; raises ConfigError
Rebuild = Callable[[], Served]


class GatewayServer(BaseApplication):  # type: ignore[misc]
    """gunicorn application: the apps are built in the arbiter and inherited by workers.

    ``app`` serves EST on the configured address; each of ``more`` its own address. With
    ``rebuild``, SIGHUP serves what it builds (the configuration and every secret read
    again) in new workers, while the old ones finish their requests."""

    def __init__(self, config: GatewayConfig, app: WSGIApp, *, threads: int = 8,
                 more: Sequence[Listener] = (), listener: socket.socket | None = None,
                 rebuild: Rebuild | None = None) -> None:
        self.served = Served(config, app, tuple(more))
        self.threads = threads
        self.rebuild = rebuild
        self._listening_line: TrueListeningLine | None = None
        #: a socket bound before start-up (est_gateway.listener.bind): gunicorn serves on it
        #: and never retries a busy port; detached once, as gunicorn closes the descriptor.
        #: Given one descriptor, gunicorn binds no address: the other listeners come bound too.
        #: A reload keeps them: a new address needs a restart.
        self.listen_fds: tuple[int, ...] = ()
        if listener is not None:
            self.listen_fds = (listener.detach(), *(
                bind_address(more.host, more.port, change_port=f"the {more.name} address").detach()
                for more in self.more))
        super().__init__()

    # The worker reads these three (the gateway's settings, the EST app, the listeners).
    @property
    def gateway_config(self) -> GatewayConfig:
        return self.served.config

    @property
    def wsgi_app(self) -> WSGIApp:
        return self.served.app

    @property
    def more(self) -> tuple[Listener, ...]:
        return self.served.more

    def reload(self) -> None:
        """SIGHUP, in the arbiter, before gunicorn forks the new workers: what they serve
        is rebuilt first; a configuration that fails is refused and the running one stays."""
        if self.rebuild is not None:
            self._take(self.rebuild)
        super().reload()

    def _take(self, rebuild: Rebuild) -> None:
        source = self.served.config.source
        try:
            new = rebuild()
        except ConfigError as exc:
            log.error("reload refused, still serving the previous configuration: %s: %s", source, exc.render())
            return
        except Exception:     # a plugin's start() may fail any way: the running gateway must not
            log.exception("reload refused, still serving the previous configuration: %s", source)
            return
        if new.addresses() != self.served.addresses():
            log.error("reload refused, still serving the previous configuration: %s: the listening "
                      "addresses changed (%s -> %s); a new address needs a restart", source,
                      ", ".join(self.served.addresses()), ", ".join(new.addresses()))
            close_backends(new.config)
            return
        old, self.served = self.served, new
        # The old workers hold their own copies and close them as they exit.
        close_backends(old.config)
        log.info("reloaded %s: new workers serve the configuration and secrets as read now", source)

    def load_config(self) -> None:
        server = self.gateway_config.server
        binds = self.served.addresses()
        if self.listen_fds:
            binds = [f"fd://{fd}" for fd in self.listen_fds]
        settings = {
            "bind": binds,
            # A Unix socket is created srw-rw----: its owner and group reach the gateway.
            "umask": 0o117 if server.unix_socket else 0,
            "workers": server.workers,
            "threads": self.threads,
            "worker_class": "est_gateway.server.worker.ESTWorker",
            "timeout": max(30, int(server.request_timeout_s * 2)),
            "graceful_timeout": max(10, int(server.request_timeout_s)),
            "loglevel": server.log_level,
            "accesslog": None,
            "errorlog": "-",
            # gunicorn's lines in the format of the gateway's own (est_gateway.logformat)
            "logger_class": gunicorn_logger_class(server.log_format),
            "proc_name": "est-gateway",
            # No control socket in $HOME: two instances would fight over it.
            "control_socket_disable": True,
            "child_exit": _child_exit,
            "post_fork": _post_fork,
            "post_worker_init": lambda worker: _start_log_writer(self.gateway_config, worker),
            # est_gateway.plugin's lifecycle: close() in each worker as it exits and in the arbiter
            "worker_exit": lambda _server, worker: _worker_exit(self.gateway_config, worker),
            "on_exit": lambda _server: close_backends(self.gateway_config),
            "when_ready": self._when_ready,
            # est-gateway reload finds the arbiter here; gunicorn removes it at exit
            "pidfile": str(server.pid_file) if server.pid_file is not None else None,
        }
        apply_settings(self.cfg, settings)
        # gunicorn names its listener "http://…" even when the worker terminates TLS.
        urls = ", ".join([server.url, *(listener.url for listener in self.more)])
        errors = logging.getLogger("gunicorn.error")
        if self._listening_line is not None:     # a reload sets everything again
            errors.removeFilter(self._listening_line)
        self._listening_line = TrueListeningLine(urls)
        errors.addFilter(self._listening_line)

    def run(self) -> None:
        pid_file = self.gateway_config.server.pid_file
        if pid_file is not None:
            from est_gateway.server.control import remove_stale_pid_file

            if remove_stale_pid_file(pid_file):
                log.info("removed the stale pid file %s (it named no running gateway)", pid_file)
        super().run()

    def _when_ready(self, server: object) -> None:
        """Bound and listening: hand the Unix socket to the proxy's group."""
        settings = self.gateway_config.server
        if settings.unix_socket is not None and settings.unix_socket_group is not None:
            os.chown(settings.unix_socket, -1, settings.unix_socket_group)

    def load(self) -> WSGIApp:
        return self.wsgi_app
