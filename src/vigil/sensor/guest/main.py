"""``vigil sensor guest``: the command line of the guest sensor.

:func:`configure_parser` adds the options to a parser (the ``vigil`` CLI's subcommand, or this
module's own when run as ``python3 -m vigil.sensor.guest.main``) and :func:`run` runs the sensor
and returns the exit code: 0 after a clean stop (SIGTERM/SIGINT), 78 (EX_CONFIG) when it cannot
run as configured — not enrolled and no token, token refused, credentials revoked — so systemd's
``RestartPreventExitStatus=78`` stops restarting it, and 1 for any other failure.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
from pathlib import Path

from vigil.protocol import FAST_INTERVAL, INVENTORY_INTERVAL, PROCESS_INTERVAL

from .agent import GuestSensor, SensorConfig
from .client import normalise_server_url
from .decoys import DEFAULT_BIND, DEFAULT_HTTP_PORT, DEFAULT_SSH_PORT, DecoySettings
from .errors import ConfigurationError, CredentialsRevoked, SensorError
from .state import StateDir

DEFAULT_STATE_DIR = "/var/lib/vigil/sensor"
EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_CONFIG = 78
#: Canaries planted when no --canary is given (skipped where a real file already is).
ROOT_CANARIES = ("/root/.aws/credentials", "/root/.ssh/id_rsa.bak")

log = logging.getLogger("vigil.sensor.guest")


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not 0.1 <= value <= 86400:
        raise argparse.ArgumentTypeError(f"must be between 0.1 and 86400 seconds, not {text}")
    return value


def _port(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a port number: {text!r}") from None
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"must be between 0 (off) and 65535, not {text}")
    return value


def configure_parser(parser: argparse.ArgumentParser) -> None:
    """Add the guest sensor's options to ``parser``."""
    parser.add_argument(
        "--server",
        required=True,
        metavar="URL",
        help="URL of the Vigil server, e.g. https://vigil.example:8443",
    )
    parser.add_argument(
        "--enroll-token",
        metavar="TOKEN",
        default=os.environ.get("VIGIL_ENROLL_TOKEN"),
        help="one-time enroll token created on the server; needed only for the first run "
        "(default: $VIGIL_ENROLL_TOKEN; prefer --enroll-token-file, which ps cannot show)",
    )
    parser.add_argument(
        "--enroll-token-file",
        metavar="PATH",
        help="read the enroll token from this file (used only while not enrolled yet)",
    )
    parser.add_argument(
        "--state-dir",
        metavar="DIR",
        default=DEFAULT_STATE_DIR,
        help="where credentials, the spool, log offsets and baselines are kept, mode 0700 "
        f"(default: {DEFAULT_STATE_DIR})",
    )
    parser.add_argument(
        "--log",
        metavar="PATH",
        action="append",
        default=None,
        help="an extra auth/security log file to follow and watch for tampering, in syslog "
        "format or as `sshd -E` writes it; repeat for several files",
    )
    parser.add_argument(
        "--heartbeat-interval",
        type=_seconds,
        metavar="SECONDS",
        default=None,
        help="seconds between heartbeats (default: what the server asks for, else 10)",
    )
    parser.add_argument(
        "--fast-interval",
        type=_seconds,
        metavar="SECONDS",
        default=FAST_INTERVAL,
        help="seconds between looks at connections, listening sockets, security logs, "
        f"persistence paths and log integrity (default: {FAST_INTERVAL:g})",
    )
    parser.add_argument(
        "--process-interval",
        type=_seconds,
        metavar="SECONDS",
        default=PROCESS_INTERVAL,
        help=f"seconds between process list snapshots (default: {PROCESS_INTERVAL:g})",
    )
    parser.add_argument(
        "--inventory-interval",
        type=_seconds,
        metavar="SECONDS",
        default=INVENTORY_INTERVAL,
        help="seconds between looks at services, packages and logged-in users "
        f"(default: {INVENTORY_INTERVAL:g})",
    )
    parser.add_argument(
        "--poll-only",
        action="store_true",
        help="do not collect early on kernel notifications (process events, inotify); only poll",
    )
    decoys = parser.add_argument_group("decoys")
    decoys.add_argument(
        "--no-decoys",
        action="store_true",
        help="run no decoy listener and plant no canary file",
    )
    decoys.add_argument(
        "--decoy-bind",
        metavar="ADDRESS",
        default=DEFAULT_BIND,
        help=f"address the decoy listeners bind to (default: {DEFAULT_BIND})",
    )
    decoys.add_argument(
        "--decoy-ssh-port",
        type=_port,
        metavar="PORT",
        default=DEFAULT_SSH_PORT,
        help=f"port of the fake SSH server; 0 turns it off (default: {DEFAULT_SSH_PORT})",
    )
    decoys.add_argument(
        "--decoy-http-port",
        type=_port,
        metavar="PORT",
        default=DEFAULT_HTTP_PORT,
        help=f"port of the fake admin login page; 0 turns it off (default: {DEFAULT_HTTP_PORT})",
    )
    decoys.add_argument(
        "--canary",
        metavar="PATH",
        action="append",
        default=None,
        help="a canary file to plant (if missing) and watch; repeat for several (default: "
        f"{' and '.join(ROOT_CANARIES)} as root, ~/.aws/credentials otherwise, each skipped "
        "where a file the sensor did not plant already exists)",
    )
    parser.add_argument("--verbose", action="store_true", help="log debugging detail to stderr")


def _setup_logging(verbose: bool) -> None:
    logger = logging.getLogger("vigil.sensor")
    if not logger.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s vigil-sensor %(levelname)s %(message)s"))
        logger.addHandler(handler)
        logger.propagate = False
    logger.setLevel(logging.DEBUG if verbose else logging.INFO)


def _enroll_token(args: argparse.Namespace, state: StateDir) -> str | None:
    """The enroll token, read only when the sensor is not enrolled yet."""
    if state.load_credentials() is not None:
        return None
    if args.enroll_token:
        return str(args.enroll_token).strip()
    if args.enroll_token_file:
        try:
            return Path(args.enroll_token_file).read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise ConfigurationError(
                f"cannot read the enroll token file {args.enroll_token_file}: {exc.strerror}"
            ) from None
    return None


def decoys_from_args(args: argparse.Namespace) -> DecoySettings | None:
    """The decoy settings of the parsed options (None with --no-decoys)."""
    if getattr(args, "no_decoys", False):
        return None
    canaries = [os.path.abspath(p) for p in (args.canary or [])]
    if canaries:
        defaults: list[str] = []
    elif os.geteuid() == 0:
        defaults = list(ROOT_CANARIES)
    else:
        defaults = [os.path.expanduser("~/.aws/credentials")]
    return DecoySettings(
        bind=args.decoy_bind,
        ssh_port=args.decoy_ssh_port or None,
        http_port=args.decoy_http_port or None,
        canaries=canaries,
        default_canaries=defaults,
    )


def config_from_args(args: argparse.Namespace) -> SensorConfig:
    """A SensorConfig from parsed options (reading the enroll token only if it is needed)."""
    server = normalise_server_url(args.server)
    state = StateDir(args.state_dir)
    return SensorConfig(
        server=server,
        state_dir=Path(args.state_dir),
        enroll_token=_enroll_token(args, state),
        extra_logs=[os.path.abspath(p) for p in (args.log or [])],
        heartbeat_interval=args.heartbeat_interval,
        intervals={
            "fast": args.fast_interval,
            "process": args.process_interval,
            "inventory": args.inventory_interval,
        },
        event_driven=not args.poll_only,
        decoys=decoys_from_args(args),
    )


def run(args: argparse.Namespace) -> int:
    """Run the guest sensor until SIGTERM/SIGINT; returns the process exit code."""
    _setup_logging(bool(getattr(args, "verbose", False)))
    try:
        sensor = GuestSensor(config_from_args(args))
        if threading.current_thread() is threading.main_thread():
            for signum in (signal.SIGTERM, signal.SIGINT):
                signal.signal(signum, lambda *_: sensor.stop())
        return sensor.run()
    except (ConfigurationError, CredentialsRevoked) as exc:
        print(f"vigil sensor guest: error: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    except SensorError as exc:
        print(f"vigil sensor guest: error: {exc}", file=sys.stderr)
        return EXIT_FAILURE


def main(argv: list[str] | None = None) -> int:
    """Entry point for ``python3 -m vigil.sensor.guest.main``."""
    parser = argparse.ArgumentParser(
        prog="vigil sensor guest",
        description="Run Vigil's guest sensor inside this VM.",
    )
    configure_parser(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
