"""Ingest through HTTP into SQLite and PostgreSQL, against a raw executemany of the same rows.

Both sides run in the same run on the same database: events per second and their ratio.
"""

from __future__ import annotations

import argparse
import http.client
import json
import threading
import time
import uuid
from typing import Any

from common import auth_events, database, enroll, median, now, server, vigil_cli


def _bodies(events: list[dict[str, Any]], batch: int) -> list[bytes]:
    return [
        json.dumps({"batch_id": str(uuid.uuid4()), "sent_at": now(),
                    "events": events[i:i + batch], "snapshots": []}).encode()
        for i in range(0, len(events), batch)
    ]


def http_ingest(port: int, token: str, bodies: list[bytes], clients: int) -> float:
    """Post every body (several keep-alive clients); returns seconds."""
    queue = list(bodies)
    lock = threading.Lock()
    errors: list[str] = []

    def worker() -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
        while True:
            with lock:
                if not queue:
                    return
                body = queue.pop()
            conn.request("POST", "/api/v1/sensors/ingest", body,
                          {"Content-Type": "application/json", "Authorization": f"Bearer {token}"})
            resp = conn.getresponse()
            data = resp.read()
            if resp.status != 200:
                errors.append(f"{resp.status} {data[:200]!r}")

    threads = [threading.Thread(target=worker) for _ in range(clients)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - t0
    if errors:
        raise RuntimeError(f"{len(errors)} failed requests, e.g. {errors[0]}")
    return elapsed


COLUMNS = ("uuid", "tenant_id", "vm_id", "sensor_id", "kind", "observed_at", "received_at",
           "source", "message", "src_ip", "username", "pid", "path", "data")


def raw_rows(events: list[dict[str, Any]]) -> list[tuple[Any, ...]]:
    t = now()
    return [(str(uuid.uuid4()), 1, 1, "bench", e["kind"], e["observed_at"], t, e["source"],
             e["message"], e["src_ip"], e["user"], e["pid"], None, json.dumps(e["data"]))
            for e in events]


def raw_executemany(db_url: str, rows: list[tuple[Any, ...]], batch: int) -> float:
    """The baseline: the DB-API's executemany into the same events table, a commit per batch."""
    cols = ", ".join(COLUMNS)
    if db_url.startswith("sqlite"):
        import sqlite3

        conn = sqlite3.connect(db_url.split("///", 1)[1])
        conn.execute("PRAGMA synchronous=NORMAL")
        sql = f"INSERT INTO events ({cols}) VALUES ({', '.join('?' * len(COLUMNS))})"
        t0 = time.perf_counter()
        for i in range(0, len(rows), batch):
            conn.executemany(sql, rows[i:i + batch])
            conn.commit()
        elapsed = time.perf_counter() - t0
        conn.close()
        return elapsed
    import psycopg

    conn = psycopg.connect(db_url.replace("postgresql+psycopg", "postgresql"))
    sql = f"INSERT INTO events ({cols}) VALUES ({', '.join(['%s'] * len(COLUMNS))})"
    t0 = time.perf_counter()
    with conn.cursor() as cur:
        for i in range(0, len(rows), batch):
            cur.executemany(sql, rows[i:i + batch])
            conn.commit()
    elapsed = time.perf_counter() - t0
    conn.close()
    return elapsed


def run(backend: str, *, events: int, batch: int, clients: int, rounds: int) -> dict[str, Any]:
    with database(backend) as url, server(url) as srv:
        token = enroll(srv["port"], vigil_cli(srv["env"], "token", "enroll", "--tenant",
                                              "default"), "bench-vm")
        http_rates, raw_rates = [], []
        for _ in range(rounds):
            evs = auth_events(events)
            bodies = _bodies(evs, batch)
            http_rates.append(events / http_ingest(srv["port"], token, bodies, clients))
            raw_rates.append(events / raw_executemany(srv["db_url"], raw_rows(evs), batch))
        h, r = median(http_rates), median(raw_rates)
        return {"backend": backend, "events_per_round": events, "batch": batch,
                "clients": clients, "rounds": rounds, "http_events_per_s": round(h),
                "raw_executemany_events_per_s": round(r), "ratio_http_to_raw": round(h / r, 3)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--events", type=int, default=100_000)
    ap.add_argument("--batch", type=int, default=10_000,
                    help="events per request (the guest sensor sends up to 20,000 when it drains a backlog)")
    ap.add_argument("--clients", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--backend", choices=["sqlite", "postgresql", "both"], default="both")
    args = ap.parse_args()
    backends = ["sqlite", "postgresql"] if args.backend == "both" else [args.backend]
    for b in backends:
        print(json.dumps(run(b, events=args.events, batch=args.batch, clients=args.clients,
                             rounds=args.rounds)), flush=True)


if __name__ == "__main__":
    main()
