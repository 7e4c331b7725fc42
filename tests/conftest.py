"""Fixtures: databases (SQLite and a throwaway PostgreSQL), the app, a populated world."""

from __future__ import annotations

import os
import subprocess
import sys
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.harness.pgcluster import (  # noqa: E402
    PgCluster,
    free_port,  # noqa: E402
    pg_bindir,
)
from tests.harness.procs import VIGIL, spawn, stop, wait_http  # noqa: E402

warnings.filterwarnings("ignore", message=".*httpx2.*")


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[PgCluster | None]:
    if pg_bindir() is None:
        if os.environ.get("VIGIL_REQUIRE_PG"):
            pytest.fail("PostgreSQL is required (VIGIL_REQUIRE_PG) but not installed")
        yield None
        return
    cluster = PgCluster().start()
    try:
        yield cluster
    finally:
        cluster.stop()


_db_counter = iter(range(10**6))


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Each storage/API test runs against SQLite and against a fresh PostgreSQL database."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'vigil.db'}"
    cluster = request.getfixturevalue("pg_cluster")
    if cluster is None:
        pytest.skip("PostgreSQL not installed")
    return cluster.createdb(f"t{os.getpid()}_{next(_db_counter)}")


@pytest.fixture
def settings(tmp_path: Path, db_url: str) -> Any:
    from vigil.config import Settings, write_secret_key

    home = tmp_path / "home"
    home.mkdir()
    write_secret_key(home / "secret.key")
    return Settings(home=home, database_url=db_url)


@pytest.fixture
def app(settings: Any) -> Iterator[Any]:
    from vigil.server.app import create_app

    application = create_app(settings)
    yield application
    application.state.db.dispose()


@pytest.fixture
def client(app: Any) -> Iterator[Any]:
    from fastapi.testclient import TestClient

    with TestClient(app) as c:
        yield c


@dataclass
class World:
    """Two tenants, their users and tokens, an enrolled guest sensor in each."""

    db: Any
    admin_token: str = ""
    tokens: dict[str, str] = field(default_factory=dict)  # user -> API token
    sensors: dict[str, dict[str, Any]] = field(default_factory=dict)  # tenant -> enroll answer

    def h(self, who: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.tokens[who]}"}

    def sh(self, tenant: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.sensors[tenant]['token']}"}


@pytest.fixture
def world(app: Any, client: Any) -> World:
    from vigil.server.services import auth, fleet
    from vigil.server.services.audit import SYSTEM

    db = app.state.db
    w = World(db)
    with db.write() as s:
        for tenant in ("acme", "globex"):
            fleet.create_tenant(s, name=tenant, actor=SYSTEM)
        auth.create_user(s, email="admin@example.org", password="admin-pass-1", role="admin",
                         tenant=None, actor=SYSTEM)
        w.tokens["admin"] = auth.create_api_token(s, email="admin@example.org", name="t",
                                                  actor=SYSTEM)
        for tenant in ("acme", "globex"):
            email = f"ops@{tenant}.example"
            auth.create_user(s, email=email, password="csp-pass-12", role="csp", tenant=tenant,
                             actor=SYSTEM)
            w.tokens[tenant] = auth.create_api_token(s, email=email, name="t", actor=SYSTEM)
    for i, tenant in enumerate(("acme", "globex")):
        with db.write() as s:
            token, _ = fleet.create_enrollment_token(s, tenant=tenant, actor=SYSTEM)
        r = client.post("/api/v1/sensors/enroll", json={
            "enroll_token": token, "kind": "guest", "hostname": f"vm-{tenant}",
            "machine_id": f"{i + 1:032x}"})
        assert r.status_code == 201, r.text
        w.sensors[tenant] = r.json()
    return w


@dataclass
class LiveServer:
    url: str
    home: Path
    admin_token: str
    proc: subprocess.Popen[bytes]
    env: dict[str, str]
    port: int
    log: Path
    workers: int = 1

    def vigil(self, *args: str) -> str:
        out = subprocess.run([VIGIL, *args], env={**os.environ, **self.env}, check=True,
                             capture_output=True, text=True)
        return out.stdout.strip()

    def start(self) -> None:
        self.proc = spawn([VIGIL, "server", "--host", "127.0.0.1", "--port", str(self.port),
                           "--workers", str(self.workers)], env=self.env, log=self.log)
        wait_http(self.url + "/api/v1/health")

    def stop(self) -> None:
        stop(self.proc)


@contextmanager
def running_server(workdir: Path, *, database_url: str | None = None,
                   workers: int = 1, env: dict[str, str] | None = None) -> Iterator[LiveServer]:
    """A real `vigil server` process (SQLite unless given a URL), initialised like the README."""
    workdir.mkdir(parents=True, exist_ok=True)
    home = workdir / "vigil-home"
    pw = workdir / "pw.txt"
    pw.write_text("admin-password-1\n")
    env = {"VIGIL_HOME": str(home), **(env or {})}
    if database_url:
        env["VIGIL_DATABASE_URL"] = database_url
    subprocess.run([VIGIL, "init", "--admin-email", "admin@example.org",
                    "--admin-password-file", str(pw)], env={**os.environ, **env}, check=True,
                   capture_output=True)
    port = free_port()
    srv = LiveServer(f"http://127.0.0.1:{port}", home, "", None, env, port,  # type: ignore[arg-type]
                     workdir / "server.log", workers)
    srv.start()
    try:
        srv.admin_token = srv.vigil("token", "api", "--user", "admin@example.org")
        yield srv
    finally:
        srv.stop()


@pytest.fixture
def live_server(tmp_path: Path) -> Iterator[LiveServer]:
    with running_server(tmp_path / "server") as srv:
        yield srv


def pytest_terminal_summary(terminalreporter: Any) -> None:
    from tests.harness.figures import FIGURES

    if FIGURES:
        terminalreporter.section("figures measured by the tests")
        for line in FIGURES:
            terminalreporter.write_line(line)
