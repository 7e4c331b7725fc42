"""The FastAPI application factory of ``vigil server``."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles

import vigil
from vigil.config import Settings
from vigil.errors import AuthError, VigilError
from vigil.server.db.engine import Database
from vigil.server.db.migrate import upgrade
from vigil.server.detect.engine import DetectionEngine
from vigil.server.detect.watchdog import Watchdog
from vigil.server.notify.dispatcher import Notifier
from vigil.server.services.notifications import notify_detection

PORTAL = Path(__file__).with_name("portal")

SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; "
    "style-src 'self'; script-src 'self'; frame-ancestors 'none'; form-action 'self'",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
}


def create_app(settings: Settings | None = None, *, db: Database | None = None,
               migrate: bool = True) -> FastAPI:
    """Build the app: API, sensor API, portal, OpenAPI docs at ``/docs``."""
    settings = settings or Settings()
    db = db or Database(settings.db_url)
    if migrate:
        upgrade(db.engine)
    detector = DetectionEngine(settings, notify=notify_detection)

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        watchdog = Watchdog(db, detector, interval=settings.watchdog_interval,
                            missed_beats=settings.offline_after_beats)
        watchdog.start()
        notifier = Notifier(db, settings)
        notifier.start()
        _app.state.notifier = notifier
        try:
            yield
        finally:
            notifier.stop()
            watchdog.stop()
            db.dispose()

    app = FastAPI(
        lifespan=lifespan,
        title="Vigil",
        version=vigil.__version__,
        summary="Hypervisor and guest introspection: detect intrusions in cloud VMs, keep the "
        "evidence, share what was learned.",
    )
    app.state.settings = settings
    app.state.db = db
    app.state.detector = detector

    from vigil.server.api import fleet, health, notifications, security_events, sensors
    from vigil.server.portal import views

    app.include_router(health.router)
    app.include_router(sensors.router)
    app.include_router(fleet.router)
    app.include_router(security_events.router)
    app.include_router(notifications.router)
    app.include_router(views.router)
    app.mount("/static", StaticFiles(directory=PORTAL / "static"), name="static")

    @app.exception_handler(VigilError)
    async def _vigil_error(request: Request, exc: VigilError) -> Response:
        if isinstance(exc, AuthError) and _wants_html(request):
            return RedirectResponse("/login", status_code=303)
        headers = {"WWW-Authenticate": "Bearer"} if exc.status_code == 401 else None
        return JSONResponse({"detail": exc.message}, status_code=exc.status_code,
                            headers=headers)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> Response:
        errors = [{"loc": list(e["loc"]), "msg": e["msg"]} for e in exc.errors()[:20]]
        return JSONResponse({"detail": "invalid request: nothing was stored", "errors": errors},
                            status_code=422)

    @app.middleware("http")
    async def _headers(request: Request, call_next):  # type: ignore[no-untyped-def]
        response = await call_next(request)
        if not request.url.path.startswith(("/docs", "/redoc")):
            for key, value in SECURITY_HEADERS.items():
                response.headers.setdefault(key, value)
        return response

    return app


def create_worker_app() -> FastAPI:
    """One of several ``vigil server --workers N`` processes (the schema is migrated already)."""
    return create_app(migrate=False)


def _wants_html(request: Request) -> bool:
    return not request.url.path.startswith("/api/") and "text/html" in request.headers.get(
        "accept", "")
