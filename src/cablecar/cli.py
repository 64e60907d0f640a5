"""The ``cablecar`` command: ``serve``, ``demo``, ``listen``, ``perform``, ``broadcast``."""

from __future__ import annotations

import argparse
import errno
import importlib
import importlib.util
import logging
import os
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from ._cli_help import add_server_options, subcommand
from ._version import __version__

__all__ = ["load_cable", "main"]

logger = logging.getLogger("cablecar.cli")


def load_cable(target: str) -> Any:
    """Import ``module:attr`` or ``path/to/file.py:attr`` (``attr`` defaults to ``cable``).

    Raises:
        SystemExit: the module or attribute cannot be found (with a clear message).
    """
    module_name, _, attr = target.partition(":")
    attr = attr or "cable"
    if module_name.endswith(".py") or os.sep in module_name:
        path = Path(module_name).resolve()
        if not path.is_file():
            raise SystemExit(f"cablecar: no such file: {module_name}")
        sys.path.insert(0, str(path.parent))
        spec = importlib.util.spec_from_file_location(path.stem, path)
        if spec is None or spec.loader is None:
            raise SystemExit(f"cablecar: cannot load {module_name}")
        module = importlib.util.module_from_spec(spec)
        sys.modules[path.stem] = module
        spec.loader.exec_module(module)
    else:
        sys.path.insert(0, os.getcwd())
        try:
            module = importlib.import_module(module_name)
        except ImportError as exc:
            if exc.name is not None and module_name.startswith(exc.name):
                raise SystemExit(f"cablecar: cannot import {module_name!r}: {exc}") from None
            raise SystemExit(  # the app was found; something it imports was not
                f"cablecar: cannot import {module_name!r}: {exc} ({_where(exc)})"
            ) from None
    obj = module
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise SystemExit(f"cablecar: {module_name!r} has no attribute {attr!r}") from None
    return obj


def _where(exc: BaseException) -> str:
    """``file:line`` of the application code that raised ``exc`` (the innermost frame
    outside Python's import machinery)."""
    frames = [
        f for f in traceback.extract_tb(exc.__traceback__) if not f.filename.startswith("<frozen")
    ]
    frame = next((f for f in reversed(frames) if f.filename != __file__), None)
    return f"raised at {frame.filename}:{frame.lineno}" if frame else "no traceback"


def _serve(args: argparse.Namespace) -> int:
    from .cable import Cable
    from .errors import ConfigurationError
    from .pubsub.memory import MemoryPubSub
    from .transports.standalone import run

    if args.workers > 1:
        url = args.pubsub or ""
        if not url or url.startswith("memory"):
            cable = load_cable(args.app) if not url else None
            is_memory = url.startswith("memory") or (
                isinstance(cable, Cable) and isinstance(cable.pubsub, MemoryPubSub)
            )
            if is_memory:
                print(
                    "cablecar: --workers N > 1 needs a cross-process pub/sub adapter "
                    "(--pubsub redis://..., postgresql://... or nats://...): with the in-memory "
                    "adapter a broadcast in one worker would never reach clients of the others",
                    file=sys.stderr,
                )
                return 2
        return _run_workers(args)
    cable = load_cable(args.app)
    if not isinstance(cable, Cable):
        print(f"cablecar: {args.app} is not a cablecar.Cable", file=sys.stderr)
        return 2
    if args.pubsub:
        try:
            cable.use_pubsub(args.pubsub, channel_prefix=args.channel_prefix)
        except ConfigurationError as exc:
            print(f"cablecar: {exc}", file=sys.stderr)
            return 2
    if args.allowed_origins:
        cable.allowed_origins = "*" if args.allowed_origins == ["*"] else args.allowed_origins

    def ready(server: Any) -> None:
        print(
            f"cablecar {__version__} serving {args.app} at {server.url} (pid {os.getpid()})",
            flush=True,
        )

    handler = None
    if args.static:
        from .static_files import static_handler

        try:
            handler = static_handler(args.static)
        except NotADirectoryError as exc:
            print(f"cablecar: {exc}", file=sys.stderr)
            return 2
    try:
        run(cable, args.host, args.port, reuse_port=args.reuse_port, on_ready=ready,
            http_handler=handler)  # fmt: skip
    except OSError as exc:
        if exc.errno not in (errno.EADDRINUSE, errno.EADDRNOTAVAIL, errno.EACCES):
            raise
        hint = {
            errno.EADDRINUSE: "another server on that port? choose one with --port",
            errno.EADDRNOTAVAIL: "not an address of this machine: check --host",
            errno.EACCES: "ports below 1024 need privileges: choose one with --port",
        }[exc.errno]
        print(
            f"cablecar: cannot listen on {args.host}:{args.port}: "
            f"{os.strerror(exc.errno)} ({hint})",
            file=sys.stderr,
        )
        return 1
    return 0


def _run_workers(args: argparse.Namespace) -> int:
    """Start N worker processes sharing the port with SO_REUSEPORT; forward signals."""
    cmd = [
        sys.executable,
        "-m",
        "cablecar",
        "serve",
        args.app,
        "--host",
        args.host,
        "--port",
        str(args.port),
        "--reuse-port",
        "--log-level",
        args.log_level,
        "--log-format",
        args.log_format,
    ]
    if args.pubsub:
        cmd += ["--pubsub", args.pubsub]
    if args.channel_prefix:
        cmd += ["--channel-prefix", args.channel_prefix]
    for origin in args.allowed_origins or ():
        cmd += ["--allowed-origin", origin]
    if args.static:
        cmd += ["--static", args.static]
    # Each worker gets its own process group: a terminal's Ctrl-C (SIGINT to the
    # foreground group) then reaches only this parent, which forwards it once. (A worker
    # takes signals within a second of each other as one request anyway.)
    # Workers share their metrics through snapshot files (see cablecar.metrics).
    metrics_dir = tempfile.mkdtemp(prefix="cablecar-metrics-")
    env = {**os.environ, "CABLECAR_METRICS_DIR": metrics_dir}
    procs = [subprocess.Popen(cmd, process_group=0, env=env) for _ in range(args.workers)]
    print(
        f"cablecar: {args.workers} workers on port {args.port}: pids {[p.pid for p in procs]}",
        flush=True,
    )
    stopping = False

    def forward(signum: int, _frame: Any) -> None:
        # SIGHUP (the terminal went away) shuts the workers down gracefully too.
        nonlocal stopping
        stopping = True
        sig = signal.SIGTERM if signum == signal.SIGHUP else signum
        for p in procs:
            if p.poll() is None:
                p.send_signal(sig)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    signal.signal(signal.SIGHUP, forward)
    return _supervise(procs, lambda: subprocess.Popen(cmd, process_group=0, env=env),
                      lambda: stopping, forward)  # fmt: skip


#: A worker that dies is replaced, unless this many died within a minute (a crash loop:
#: then every worker is stopped and the exit status says why).
_MAX_RESTARTS_PER_MINUTE = 5


def _supervise(
    procs: list[subprocess.Popen[bytes]],
    spawn: Callable[[], subprocess.Popen[bytes]],
    stopping: Callable[[], bool],
    stop_all: Callable[[int, Any], None],
) -> int:
    """Wait for the workers; replace one that dies while the service is not stopping.

    Returns the exit status: 0 when every worker ended cleanly on a stop (or, still
    starting, was ended by the stop's own signal), else the worst (a worker killed by
    signal N counts 128 + N, as in a shell).
    """
    restarts: list[float] = []
    codes: list[int] = []
    running = list(procs)
    while running:
        time.sleep(0.1)
        for proc in list(running):
            code = proc.poll()
            if code is None:
                continue
            running.remove(proc)
            if stopping() or code == 0:
                # A worker still starting when the stop came has no handler yet: the
                # forwarded SIGTERM/SIGINT ends it as a signal would; it had nothing to drain.
                stopped = stopping() and code in (-signal.SIGTERM, -signal.SIGINT)
                codes.append(0 if stopped else code)
                continue
            now = time.monotonic()
            restarts[:] = [t for t in restarts if now - t < 60.0] + [now]
            if len(restarts) > _MAX_RESTARTS_PER_MINUTE:
                logger.error(
                    "worker %d exited with status %d: %d workers died within a minute; "
                    "stopping", proc.pid, code, len(restarts),
                )  # fmt: skip
                codes.append(code)
                stop_all(signal.SIGTERM, None)
                continue
            replacement = spawn()
            procs[procs.index(proc)] = replacement
            running.append(replacement)
            logger.warning(
                "worker %d exited with status %d; started worker %d in its place",
                proc.pid, code, replacement.pid,
            )  # fmt: skip
    for code in codes:
        if code != 0:
            logger.warning("a worker exited with status %d", code)
    return max((128 - code if code < 0 else code for code in codes), default=0)


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="cablecar", description="Action Cable for Python")
    parser.add_argument("--version", action="version", version=f"cablecar {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    serve = subcommand(
        sub, "serve", "serve a Cable: cablecar serve app:cable",
        "Serve a cablecar.Cable on the standalone (uvloop) server.",
    )  # fmt: skip
    serve.add_argument("app", help="module:attr or path/to/file.py:attr naming a cablecar.Cable")
    add_server_options(serve)
    serve.add_argument(
        "--pubsub",
        "--adapter",
        dest="pubsub",
        default=None,
        help="pub/sub URL: memory://, redis://..., postgresql://..., nats://... "
        "(default: the Cable's own)",
    )
    serve.add_argument(
        "--channel-prefix", default=None, help="prefix for stream names in the pub/sub service"
    )
    serve.add_argument(
        "--workers", type=int, default=1, help="worker processes sharing the port (SO_REUSEPORT)"
    )
    serve.add_argument(
        "--static",
        metavar="DIR",
        help="also serve the files of DIR over HTTP (DIR/index.html at /, and /cablecar.js)",
    )
    serve.add_argument("--reuse-port", action="store_true", help=argparse.SUPPRESS)
    serve.add_argument(
        "--allowed-origin",
        dest="allowed_origins",
        action="append",
        help="allow this browser Origin (repeatable; '*' allows all)",
    )
    serve.add_argument(
        "--log-format",
        default="text",
        choices=["text", "json"],
        help="json: one JSON object per line (time, level, logger, message, and fields)",
    )
    serve.set_defaults(func=_serve)
    for module, commands, extra in _EXTRAS:
        try:
            mod = importlib.import_module(module)
        except ImportError as exc:
            for command in commands:
                _missing_extra(sub, command, extra, exc)
            continue
        mod.add_subcommand(sub)
    return parser


#: Subcommands whose module needs an optional dependency: (module, commands, extra).
_EXTRAS = (
    ("cablecar.demo.cli", ("demo",), None),
    ("cablecar.client.cli", ("listen", "perform"), "client"),
    ("cablecar._cli_broadcast", ("broadcast",), None),
)


def _missing_extra(sub: Any, command: str, extra: str | None, exc: ImportError) -> None:
    """A stand-in for ``command`` whose module cannot be imported: it says what to install
    instead of argparse's "invalid choice"."""
    hint = f"pip install 'cablecar-py[{extra}]'" if extra else "reinstall cablecar-py"
    text = f"cablecar {command} needs {exc.name or 'a missing module'}: {hint}"
    parser = sub.add_parser(command, help=f"(unavailable: {hint})", add_help=False)
    parser.add_argument("rest", nargs=argparse.REMAINDER)

    def fail(_args: argparse.Namespace) -> int:
        print(f"cablecar: {text}", file=sys.stderr)
        return 2

    parser.set_defaults(func=fail)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``cablecar`` command; returns the exit status."""
    parser = _build_parser()
    args = parser.parse_args(argv)
    level = getattr(args, "log_level", "info").upper()
    if getattr(args, "log_format", "text") == "json":
        from ._logging import JSONFormatter

        handler = logging.StreamHandler()
        handler.setFormatter(JSONFormatter())
        logging.basicConfig(level=level, handlers=[handler])
    else:
        logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    result = args.func(args)
    return int(result or 0)
