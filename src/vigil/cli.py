"""The ``vigil`` command.

Server-side commands import the server lazily, so ``vigil sensor guest`` runs with the
standard library and psutil only.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import vigil

Handler = Callable[[argparse.Namespace], int]


def _database() -> Any:
    from vigil.config import Settings
    from vigil.server.db.engine import Database
    from vigil.server.db.migrate import is_current

    settings = Settings()
    db = Database(settings.db_url)
    if not is_current(db.engine):
        from vigil.errors import ConfigError

        raise ConfigError(
            f"the database at {settings.db_url.split('@')[-1]} is not initialised or not "
            "up to date: run `vigil init` first"
        )
    return db


def _read_secret_file(path: str) -> str:
    from vigil.errors import ConfigError

    try:
        if path == "-":
            return sys.stdin.readline().strip()
        value = Path(path).read_text().splitlines()[0].strip()
    except (OSError, IndexError) as exc:
        raise ConfigError(f"cannot read a password from {path}: {exc}") from exc
    return value


def cmd_init(args: argparse.Namespace) -> int:
    from vigil.config import Settings, write_secret_key
    from vigil.errors import NotFound
    from vigil.server.db.engine import Database
    from vigil.server.db.migrate import upgrade
    from vigil.server.services import auth, fleet
    from vigil.server.services.audit import SYSTEM

    settings = Settings()
    settings.home.mkdir(parents=True, exist_ok=True)
    settings.home.chmod(0o700)
    if not settings.secret_key_path.exists():
        write_secret_key(settings.secret_key_path)
    password = _read_secret_file(args.admin_password_file)
    db = Database(settings.db_url)
    upgrade(db.engine)
    with db.write() as session:
        try:
            fleet.tenant_by_name(session, args.tenant)
        except NotFound:
            fleet.create_tenant(session, name=args.tenant, actor=SYSTEM)
        from sqlalchemy import select

        from vigil.server.db.models import User

        if session.scalar(select(User.id).where(User.email == args.admin_email.lower())):
            print(f"vigil: {args.admin_email} exists already; nothing changed", file=sys.stderr)
        else:
            auth.create_user(session, email=args.admin_email, password=password, role="admin",
                             tenant=None, actor=SYSTEM)
    db.dispose()
    print(f"Initialised {settings.home} ({settings.db_url.split('@')[-1]}); "
          f"tenant {args.tenant!r}, admin {args.admin_email}", file=sys.stderr)
    return 0


def cmd_server(args: argparse.Namespace) -> int:
    import uvicorn

    from vigil.config import Settings
    from vigil.errors import ConfigError
    from vigil.server.app import create_app
    from vigil.server.db.engine import Database
    from vigil.server.db.migrate import upgrade

    settings = Settings()
    settings.secret_key  # noqa: B018 - fail now, with a clear message, when it is missing or unsafe
    if args.workers < 1:
        raise ConfigError("--workers must be at least 1")
    if args.workers > 1 and settings.db_url.startswith("sqlite"):
        raise ConfigError("several workers need PostgreSQL (VIGIL_DATABASE_URL): SQLite has one "
                          "writer at a time, so they would only queue on its lock")
    print(f"vigil server: http://{args.host}:{args.port}/ (API docs at /docs)", file=sys.stderr)
    common = {"host": args.host, "port": args.port, "log_level": args.log_level,
              "access_log": args.access_log, "timeout_graceful_shutdown": 5}
    if args.workers == 1:
        uvicorn.run(create_app(settings), **common)
    else:  # stateless processes sharing one PostgreSQL; migrate once, before they start
        db = Database(settings.db_url)
        upgrade(db.engine)
        db.dispose()
        uvicorn.run("vigil.server.app:create_worker_app", factory=True, workers=args.workers,
                    **common)
    return 0


def cmd_token_enroll(args: argparse.Namespace) -> int:
    from vigil.server.services import fleet
    from vigil.server.services.audit import SYSTEM

    db = _database()
    with db.write() as session:
        token, _ = fleet.create_enrollment_token(session, tenant=args.tenant, actor=SYSTEM,
                                                 ttl_hours=args.ttl_hours)
    print(token)
    return 0


def cmd_token_api(args: argparse.Namespace) -> int:
    from vigil.server.services import auth
    from vigil.server.services.audit import SYSTEM

    db = _database()
    with db.write() as session:
        token = auth.create_api_token(session, email=args.user, name=args.name, actor=SYSTEM,
                                      days=args.days)
    print(token)
    return 0


def cmd_user_add(args: argparse.Namespace) -> int:
    from vigil.server.services import auth
    from vigil.server.services.audit import SYSTEM

    db = _database()
    with db.write() as session:
        user = auth.create_user(session, email=args.email,
                                password=_read_secret_file(args.password_file), role=args.role,
                                tenant=args.tenant, actor=SYSTEM)
        print(user.id)
    return 0


def cmd_tenant_add(args: argparse.Namespace) -> int:
    from vigil.server.services import fleet
    from vigil.server.services.audit import SYSTEM

    db = _database()
    with db.write() as session:
        print(fleet.create_tenant(session, name=args.name, display_name=args.display_name,
                                  actor=SYSTEM).id)
    return 0


def cmd_audit_verify(args: argparse.Namespace) -> int:
    from vigil.server.services.audit import verify_chain

    db = _database()
    with db.read() as session:
        count, broken = verify_chain(session)
    if broken is not None:
        print(f"audit log BROKEN at record {broken} (after {count - 1} intact records)")
        return 1
    print(f"audit log intact: {count} records")
    return 0


def cmd_db_upgrade(args: argparse.Namespace) -> int:
    from vigil.config import Settings
    from vigil.server.db.engine import Database
    from vigil.server.db.migrate import upgrade

    upgrade(Database(Settings().db_url).engine)
    print("database schema is up to date", file=sys.stderr)
    return 0


def cmd_sensor_guest(args: argparse.Namespace) -> int:
    from vigil.sensor.guest.main import run

    return run(args)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="vigil",
        description="Vigil watches cloud VMs from the hypervisor and from inside, detects "
        "intrusions and keeps the evidence. Data lives in $VIGIL_HOME (default ./vigil-data).",
    )
    parser.add_argument("--version", action="version", version=f"vigil {vigil.__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add(parent: Any, name: str, handler: Handler, help_: str) -> argparse.ArgumentParser:
        p = parent.add_parser(name, help=help_, description=help_)
        p.set_defaults(handler=handler)
        return p

    p = add(sub, "init", cmd_init, "Create the data directory, the database and the first admin.")
    p.add_argument("--admin-email", required=True, help="e-mail (login) of the first admin")
    p.add_argument("--admin-password-file", required=True,
                   help="file whose first line is the admin's password ('-' reads stdin)")
    p.add_argument("--tenant", default="default", help="name of the first tenant (default: default)")

    p = add(sub, "server", cmd_server, "Run the Vigil server (API, sensor API and portal).")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=8740, help="port to listen on (default 8740)")
    p.add_argument("--log-level", default="warning",
                   choices=["critical", "error", "warning", "info", "debug"], help="log level")
    p.add_argument("--access-log", action="store_true", help="log every HTTP request")
    p.add_argument("--workers", type=int, default=1,
                   help="server processes (default 1; more than one needs PostgreSQL)")

    token = add(sub, "token", lambda a: 2, "Create tokens (printed alone, for scripts).")
    tsub = token.add_subparsers(dest="token_command", required=True, metavar="KIND")
    p = add(tsub, "enroll", cmd_token_enroll, "A one-time, expiring enrollment token for sensors.")
    p.add_argument("--tenant", required=True, help="tenant the sensor will belong to")
    p.add_argument("--ttl-hours", type=float, default=24.0, help="lifetime (default 24 h)")
    p = add(tsub, "api", cmd_token_api, "An API token for a user's scripts.")
    p.add_argument("--user", required=True, help="the user's e-mail")
    p.add_argument("--name", default="cli", help="a label to recognise the token by")
    p.add_argument("--days", type=float, default=None, help="expire after this many days")

    user = add(sub, "user", lambda a: 2, "Manage users.")
    usub = user.add_subparsers(dest="user_command", required=True, metavar="ACTION")
    p = add(usub, "add", cmd_user_add, "Add a user (prints its id).")
    p.add_argument("--email", required=True, help="e-mail, used to log in")
    p.add_argument("--role", required=True, choices=["admin", "csp", "cirt", "viewer"],
                   help="admin: everything; csp: its tenant; cirt: investigates; viewer: reads")
    p.add_argument("--tenant", default=None, help="tenant of a csp user (others: optional)")
    p.add_argument("--password-file", required=True, help="file whose first line is the password")

    tenant = add(sub, "tenant", lambda a: 2, "Manage tenants (cloud service providers).")
    tnsub = tenant.add_subparsers(dest="tenant_command", required=True, metavar="ACTION")
    p = add(tnsub, "add", cmd_tenant_add, "Add a tenant (prints its id).")
    p.add_argument("name", help="short name: lowercase letters, digits, '-' or '_'")
    p.add_argument("--display-name", default="", help="name shown in the portal")

    audit_p = add(sub, "audit", lambda a: 2, "The audit log.")
    asub = audit_p.add_subparsers(dest="audit_command", required=True, metavar="ACTION")
    add(asub, "verify", cmd_audit_verify,
        "Recompute the audit log's hash chain; exit 1 naming the first broken record.")

    db_p = add(sub, "db", lambda a: 2, "Database maintenance.")
    dsub = db_p.add_subparsers(dest="db_command", required=True, metavar="ACTION")
    add(dsub, "upgrade", cmd_db_upgrade, "Apply pending schema migrations.")

    sensor = add(sub, "sensor", lambda a: 2, "Run a sensor.")
    ssub = sensor.add_subparsers(dest="sensor_command", required=True, metavar="KIND")
    p = add(ssub, "guest", cmd_sensor_guest,
            "The guest sensor: runs inside a VM and reports what runs there.")
    from vigil.sensor.guest.main import configure_parser

    configure_parser(p)

    from vigil.lab.cli import configure as configure_lab
    from vigil.vmi.cli import configure as configure_vmi

    configure_lab(sub, add)
    configure_vmi(sub, add)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.handler(args) or 0)
    except KeyboardInterrupt:
        return 130
    except Exception as exc:  # VigilError and pydantic settings errors: no traceback for users
        from vigil.errors import VigilError

        if isinstance(exc, VigilError):
            print(f"vigil: error: {exc.message}", file=sys.stderr)
            return 2
        raise


if __name__ == "__main__":
    sys.exit(main())
