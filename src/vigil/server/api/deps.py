"""Request dependencies: the database, the calling user or sensor, list responses (JSON/CSV)."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Callable, Iterator
from typing import Annotated, Any

from fastapi import Depends, Query, Request
from fastapi.responses import StreamingResponse
from pydantic import BaseModel
from sqlalchemy import Select

from vigil.config import Settings
from vigil.errors import AuthError, Forbidden
from vigil.server.db.engine import Database
from vigil.server.security import constant_time_equal, csrf_token
from vigil.server.services import auth
from vigil.server.services.audit import audit
from vigil.server.services.auth import Principal, SensorPrincipal
from vigil.server.services.queries import iterate, paginate

SESSION_COOKIE = "vigil_session"
CSRF_HEADER = "X-CSRF-Token"
SAFE_METHODS = {"GET", "HEAD", "OPTIONS"}


def get_db(request: Request) -> Database:
    return request.app.state.db  # type: ignore[no-any-return]


def get_settings(request: Request) -> Settings:
    return request.app.state.settings  # type: ignore[no-any-return]


def client_ip(request: Request) -> str | None:
    return request.client.host if request.client else None


def bearer_token(request: Request) -> str | None:
    header = request.headers.get("authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip()
    return None


def current_user(request: Request) -> Principal:
    """A user from an API token (``Authorization: Bearer vgu_…``) or a portal session cookie."""
    db: Database = request.app.state.db
    token = bearer_token(request)
    ip = client_ip(request)
    with db.read() as session:
        if token is not None:
            if token.startswith("vgs_"):
                raise Forbidden("a sensor token cannot read the API: use a user API token")
            return auth.principal_for_api_token(session, token=token, client_ip=ip)
        cookie = request.cookies.get(SESSION_COOKIE)
        if not cookie:
            raise AuthError("authentication required: send 'Authorization: Bearer <API token>'")
        principal = auth.principal_for_session(session, token=cookie, client_ip=ip)
    if request.method not in SAFE_METHODS:
        expected = csrf_token(request.app.state.settings.secret_key, cookie)
        if not constant_time_equal(request.headers.get(CSRF_HEADER, ""), expected):
            raise Forbidden("missing or wrong CSRF token: reload the page")
    return principal


def current_sensor(request: Request) -> SensorPrincipal:
    token = bearer_token(request)
    if token is None:
        raise AuthError("sensor authentication required: send 'Authorization: Bearer <sensor token>'")
    with request.app.state.db.read() as session:
        return auth.sensor_for_token(session, token=token, client_ip=client_ip(request))


User = Annotated[Principal, Depends(current_user)]
SensorAuth = Annotated[SensorPrincipal, Depends(current_sensor)]
Db = Annotated[Database, Depends(get_db)]
Limit = Annotated[int, Query(ge=1, le=1000, description="items per page")]
Cursor = Annotated[str | None, Query(description="next_cursor of the previous page")]
Format = Annotated[str, Query(pattern="^(json|csv)$", description="json, or csv (streamed)")]


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, dict | list):
        value = json.dumps(value, default=str, separators=(",", ":"))
    text = value.isoformat() if hasattr(value, "isoformat") else str(value)
    # A cell starting with = + - @ would run as a formula in a spreadsheet: neutralise it.
    return "'" + text if text[:1] in ("=", "+", "-", "@", "\t", "\r") else text


def list_response(
    db: Database, stmt: Select[Any], id_col: Any, schema: type[BaseModel], *, fmt: str,
    limit: int, cursor: str | None, filename: str,
    enrich: Callable[[Any, list[Any]], list[dict[str, Any]]] | None = None,
    principal: Principal | None = None,
    csv_columns: list[str] | None = None,
) -> Any:
    """A page as JSON, or every matching row as a streamed CSV file.

    ``csv_columns`` (with ``enrich`` returning flat dicts for them) replaces the schema's fields
    as the CSV header, e.g. to spread an inventory item's data over columns.
    """
    def rows_to_dicts(session: Any, rows: list[Any]) -> list[dict[str, Any]]:
        if enrich is not None:
            return enrich(session, rows)
        return [schema.model_validate(r).model_dump() for r in rows]

    if fmt == "csv":
        fields = csv_columns or list(schema.model_fields)
        if principal is not None:  # a data export is an action worth auditing (AU-2)
            with db.write() as session:
                audit(session, actor=principal.actor, action="export.csv", target_type=filename)

        def stream() -> Iterator[str]:
            buf = io.StringIO()
            writer = csv.writer(buf)
            writer.writerow(fields)
            with db.read() as session:
                batch: list[Any] = []
                for row in iterate(session, stmt, id_col):
                    batch.append(row)
                    if len(batch) == 500:
                        for d in rows_to_dicts(session, batch):
                            writer.writerow([_cell(d.get(f)) for f in fields])
                        batch.clear()
                        yield buf.getvalue()
                        buf.seek(0)
                        buf.truncate()
                for d in rows_to_dicts(session, batch):
                    writer.writerow([_cell(d.get(f)) for f in fields])
            yield buf.getvalue()

        return StreamingResponse(
            stream(), media_type="text/csv; charset=utf-8",
            headers={"Content-Disposition": f'attachment; filename="{filename}.csv"'},
        )
    with db.read() as session:
        page = paginate(session, stmt, id_col, limit=limit, cursor=cursor)
        return {"items": rows_to_dicts(session, list(page.items)), "next_cursor": page.next_cursor}
