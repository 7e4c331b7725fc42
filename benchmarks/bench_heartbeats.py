"""10,000 simulated sensors heartbeating every 30 s against one `vigil server` process.

Each sensor is a real enrolled sensor (its own id and secret, checked on every call); beats
are spread evenly over the interval, as a fleet's would be. Latency is measured from each
beat's scheduled time (so a server that falls behind cannot hide it: no coordinated
omission) and, for comparison, from the moment it was actually sent.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import secrets
import time
import uuid
from typing import Any

from common import database, median, now, pct, server


def seed_sensors(db_url: str, n: int) -> list[str]:
    """Enrolled sensors, written the way enrollment writes them (hashed secrets)."""
    from sqlalchemy import insert, select

    from vigil.server.db.engine import Database
    from vigil.server.db.models import VM, Sensor, Tenant, utcnow
    from vigil.server.security import sensor_token, token_hash

    db = Database(db_url)
    tokens = []
    with db.write() as s:
        tenant_id = s.scalar(select(Tenant.id).where(Tenant.name == "default"))
        vm_rows = [{"tenant_id": tenant_id, "name": f"sim-{i}", "machine_id": uuid.uuid4().hex}
                   for i in range(n)]
        s.execute(insert(VM), vm_rows)
        vm_ids = s.scalars(select(VM.id).order_by(VM.id)).all()[-n:]
        rows = []
        for i in range(n):
            sid, secret = str(uuid.uuid4()), secrets.token_urlsafe(32)
            tokens.append(sensor_token(sid, secret))
            rows.append({"id": sid, "tenant_id": tenant_id, "kind": "guest",
                         "secret_hash": token_hash(secret), "hostname": f"sim-{i}",
                         "vm_id": vm_ids[i], "heartbeat_interval": 30.0, "enrolled_at": utcnow()})
        s.execute(insert(Sensor), rows)
    db.dispose()
    return tokens


class Conn:
    """A minimal keep-alive HTTP/1.1 client connection (light enough not to starve the server)."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def post(self, path: str, body: bytes, token: str) -> int:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection("127.0.0.1", self.port)
        assert self.reader is not None
        head = (f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                f"Authorization: Bearer {token}\r\nContent-Length: {len(body)}\r\n\r\n")
        self.writer.write(head.encode() + body)
        status_line = await self.reader.readline()
        length = 0
        while True:
            line = await self.reader.readline()
            if line in (b"\r\n", b""):
                break
            if line.lower().startswith(b"content-length:"):
                length = int(line.split(b":")[1])
        await self.reader.readexactly(length)
        return int(status_line.split()[1])


async def fleet(port: int, tokens: list[str], interval: float, duration: float,
                connections: int) -> dict[str, Any]:
    pool: asyncio.Queue[Conn] = asyncio.Queue()
    for _ in range(connections):
        pool.put_nowait(Conn(port))
    sched_lat: list[float] = []
    sent_lat: list[float] = []
    failures = 0
    n = len(tokens)
    start = time.perf_counter() + 1.0
    total = int(duration / interval * n)

    async def beat(i: int, due: float) -> None:
        nonlocal failures
        delay = due - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        conn = await pool.get()
        sent = time.perf_counter()
        body = json.dumps({"sent_at": now(), "seq": i // n, "resources": {
            "cpu_percent": 3.5, "cpu_count": 2, "mem_total": 2 << 30, "mem_used": 1 << 30,
            "disk_total": 20 << 30, "disk_used": 5 << 30, "net_rx_bytes": i,
            "net_tx_bytes": i}}).encode()
        try:
            status = await conn.post("/api/v1/sensors/heartbeat", body, tokens[i % n])
        except (OSError, asyncio.IncompleteReadError):
            conn = Conn(port)
            status = 0
        done = time.perf_counter()
        pool.put_nowait(conn)
        if status != 200:
            failures += 1
        sched_lat.append(done - due)
        sent_lat.append(done - sent)

    tasks = []
    for i in range(total):
        tasks.append(asyncio.ensure_future(beat(i, start + i * interval / n)))
        if len(tasks) % 2000 == 0:
            await asyncio.sleep(0)
    await asyncio.gather(*tasks)
    elapsed = time.perf_counter() - start
    ms = 1000.0
    return {"beats": total, "failures": failures, "rate_per_s": round(total / elapsed, 1),
            "p50_ms": round(median(sched_lat) * ms, 2), "p99_ms": round(pct(sched_lat, 99) * ms, 2),
            "max_ms": round(max(sched_lat) * ms, 2),
            "p50_ms_from_send": round(median(sent_lat) * ms, 2),
            "p99_ms_from_send": round(pct(sent_lat, 99) * ms, 2)}


def run(backend: str, *, sensors: int, interval: float, duration: float,
        connections: int, workers: int = 1) -> dict[str, Any]:
    with database(backend) as url, server(url, workers=workers) as srv:
        tokens = seed_sensors(srv["db_url"], sensors)
        result = asyncio.run(fleet(srv["port"], tokens, interval, duration, connections))
        return {"backend": backend, "workers": workers, "sensors": sensors, "interval_s": interval,
                "duration_s": duration, **result}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--sensors", type=int, default=10_000)
    ap.add_argument("--interval", type=float, default=30.0)
    ap.add_argument("--duration", type=float, default=60.0, help="seconds of load")
    ap.add_argument("--connections", type=int, default=64)
    ap.add_argument("--backend", choices=["sqlite", "postgresql", "both"], default="sqlite")
    ap.add_argument("--pg-workers", type=int, default=2,
                    help="also run PostgreSQL with this many server processes (0: skip)")
    args = ap.parse_args()
    runs = [("sqlite", 1), ("postgresql", 1)] if args.backend == "both" else [(args.backend, 1)]
    if args.pg_workers > 1 and args.backend in ("both", "postgresql"):
        runs.append(("postgresql", args.pg_workers))
    for backend, workers in runs:
        print(json.dumps(run(backend, sensors=args.sensors, interval=args.interval,
                             duration=args.duration, connections=args.connections,
                             workers=workers)), flush=True)


if __name__ == "__main__":
    main()
