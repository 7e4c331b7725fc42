"""Liveness and readiness."""

from __future__ import annotations

from fastapi import APIRouter
from sqlalchemy import text

import vigil
from vigil.protocol import PROTOCOL_VERSION
from vigil.server.api.deps import Db

router = APIRouter(tags=["health"])


@router.get("/api/v1/health")
def health(db: Db) -> dict[str, object]:
    """The server answers and its database too."""
    with db.read() as session:
        session.execute(text("SELECT 1"))
    return {"status": "ok", "version": vigil.__version__, "protocol": PROTOCOL_VERSION,
            "database": db.dialect}
