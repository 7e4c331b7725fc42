"""The sensor API: enrollment, heartbeats, ingest and task results."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request, status
from fastapi.responses import JSONResponse, Response
from pydantic import ValidationError

from vigil.errors import AuthError
from vigil.protocol import (
    ENROLL_PATH,
    HEARTBEAT_PATH,
    INGEST_PATH,
    TASK_RESULT_PATH,
)
from vigil.protocol.models import (
    EnrollRequest,
    EnrollResponse,
    HeartbeatRequest,
    HeartbeatResponse,
    IngestAck,
    IngestBatch,
    TaskResult,
)
from vigil.server.api.deps import Db, SensorAuth, bearer_token, client_ip, get_settings
from vigil.server.services import fleet, telemetry
from vigil.server.services.audit import Actor, audit

router = APIRouter(tags=["sensors"])


@router.post(ENROLL_PATH, status_code=status.HTTP_201_CREATED)
def enroll(req: EnrollRequest, request: Request, db: Db) -> EnrollResponse:
    """Exchange a one-time enrollment token for the sensor's id and token (shown once)."""
    settings = get_settings(request)
    ip = client_ip(request)
    try:
        with db.write() as session:
            return fleet.enroll(session, req=req, client_ip=ip,
                                heartbeat_interval=settings.heartbeat_interval)
    except AuthError as exc:
        with db.write() as session:  # the refused attempt is audited in its own transaction
            audit(session, actor=Actor("sensor", f"unenrolled@{ip or '?'}", None, ip),
                  action="sensor.enroll", outcome="failure",
                  detail={"reason": exc.message, "hostname": req.hostname})
        raise


@router.post(HEARTBEAT_PATH, response_model=HeartbeatResponse)
def heartbeat(beat: HeartbeatRequest, request: Request, db: Db) -> Response:
    """Record a heartbeat (with resource usage) and return the sensor's pending tasks.

    The sensor is authenticated inside the same transaction (one round trip to the database
    per beat: this is the call a whole fleet makes every few seconds).
    """
    token = bearer_token(request)
    if token is None:
        raise AuthError("sensor authentication required: send 'Authorization: Bearer <sensor token>'")
    with db.write() as session:
        answer = telemetry.heartbeat(session, token=token, client_ip=client_ip(request),
                                     beat=beat, interval=get_settings(request).heartbeat_interval)
    return Response(answer.model_dump_json(), media_type="application/json")


async def _read_limited(request: Request, limit: int) -> bytes | JSONResponse:
    too_big = JSONResponse(
        status_code=413,
        content={"detail": f"batch too large: the limit is {limit} bytes; send smaller batches"},
    )
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        return too_big
    chunks = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            return too_big
        chunks.append(chunk)
    return b"".join(chunks)


@router.post(
    INGEST_PATH,
    response_model=IngestAck,
    openapi_extra={"requestBody": {"required": True, "content": {"application/json": {
        "schema": {"description": "an IngestBatch (see vigil.protocol.models)", "type": "object"}
    }}}},
    responses={413: {"description": "batch larger than the limit"},
               422: {"description": "batch does not validate"}},
)
async def ingest(request: Request, sensor: SensorAuth, db: Db) -> Any:
    """Store a batch of events and snapshots; acknowledged only after commit, idempotent by UUID."""
    body = await _read_limited(request, get_settings(request).max_batch_bytes)
    if isinstance(body, JSONResponse):
        return body
    try:
        batch = IngestBatch.model_validate_json(body)
    except ValidationError as exc:
        errors = [{"loc": e["loc"], "msg": e["msg"]} for e in exc.errors()[:20]]
        return JSONResponse(status_code=422, content={
            "detail": f"malformed batch: {exc.error_count()} error(s); nothing was stored",
            "errors": errors})
    from starlette.concurrency import run_in_threadpool

    def store() -> IngestAck:
        with db.write() as session:
            return telemetry.ingest(session, sensor=sensor, batch=batch,
                                    engine=request.app.state.detector)

    return await run_in_threadpool(store)


@router.post(TASK_RESULT_PATH)
def task_result(task_id: int, result: TaskResult, sensor: SensorAuth, db: Db) -> dict[str, str]:
    """Post the result of a task handed out with a heartbeat."""
    with db.write() as session:
        task = telemetry.complete_task(session, sensor=sensor, task_id=task_id, result=result)
        return {"status": task.status}
