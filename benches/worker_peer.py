"""Celery peer for benches/worker.rs: the application's file-attached job as
a Celery 5 task (Redis broker, prefork pool with one process per core),
writing with psycopg and publishing with channels_redis, as the app does.

    python benches/worker_peer.py --database URL --redis URL --jobs N

Queues N jobs first, then starts `celery worker` and times it until every
notification row exists (each job: two rows, each published by group_send
before the task returns). Prints one JSON line: {"jobs", "seconds",
"jobs_per_second"}. Run as a module by the worker it starts (-A).
"""

import argparse
import json
import os
import subprocess
import sys
import time
import uuid

import psycopg
from asgiref.sync import async_to_sync
from celery import Celery
from channels_redis.core import RedisChannelLayer

DATABASE = os.environ.get("PEER_DATABASE", "")
REDIS = os.environ.get("PEER_REDIS", "redis://127.0.0.1:6379")
QUEUE = os.environ.get("PEER_QUEUE", "peer")

app = Celery("worker_peer", broker=REDIS)
app.conf.task_default_queue = QUEUE
app.conf.task_ignore_result = True
app.conf.worker_prefetch_multiplier = 4

_conn = None
_layer = None


def connection():
    global _conn
    if _conn is None:
        _conn = psycopg.connect(DATABASE, autocommit=True)
    return _conn


def layer():
    global _layer
    if _layer is None:
        _layer = RedisChannelLayer(
            hosts=[REDIS],
            prefix=os.environ.get("PEER_LAYER_PREFIX", f"peer-{QUEUE}"),
            capacity=int(os.environ.get("PEER_LAYER_CAPACITY", "100")),
        )
    return _layer


@app.task(name="file_attached")
def file_attached(task_id, file_id, file_name, uploaded_by):
    conn = connection()
    title, assignee, creator = conn.execute(
        "SELECT title, assignee_id, created_by_id FROM tasks_task WHERE id = %s", (task_id,)
    ).fetchone()
    for user in {assignee, creator} - {uploaded_by, None}:
        data = {"task_id": task_id, "file_id": file_id}
        message = f'"{file_name}" was attached to task "{title}".'
        row = conn.execute(
            "INSERT INTO notifications_notification "
            "(user_id, title, message, type, is_read, created_at, data, dedup_key) "
            "VALUES (%s, 'File Attached', %s, 'file_attached', false, now(), %s, %s) "
            "ON CONFLICT DO NOTHING RETURNING id, created_at",
            (user, message, json.dumps(data), f"file_attached:{file_id}"),
        ).fetchone()
        if row is None:
            continue
        payload = {
            "id": row[0], "title": "File Attached", "message": message,
            "notification_type": "file_attached", "is_read": False,
            "created_at": row[1].isoformat(), "data": data,
        }
        async_to_sync(layer().group_send)(
            f"notifications_{user}", {"type": "send_notification", "data": payload}
        )


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--database", required=True)
    parser.add_argument("--redis", default="redis://127.0.0.1:6379")
    parser.add_argument("--jobs", type=int, default=5000)
    parser.add_argument("--timeout", type=float, default=600)
    args = parser.parse_args()
    queue = f"peer-{uuid.uuid4().hex}"
    env = dict(os.environ, PEER_DATABASE=args.database, PEER_REDIS=args.redis, PEER_QUEUE=queue)
    app.conf.broker_url = args.redis
    for i in range(args.jobs):
        file_attached.apply_async(
            args=(1 + i % 1000, i, f"f{i}.pdf", 1), queue=queue
        )
    here = os.path.dirname(os.path.abspath(__file__))
    worker = subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "worker_peer", "worker", "-Q", queue,
         "-P", "prefork", "-c", str(os.cpu_count() or 2), "--without-heartbeat",
         "--without-gossip", "--without-mingle", "-l", "warning"],
        cwd=here, env=env, stdout=subprocess.DEVNULL,
    )
    started = time.monotonic()
    expected = 2 * args.jobs
    try:
        with psycopg.connect(args.database, autocommit=True) as conn:
            while True:
                (count,) = conn.execute("SELECT count(*) FROM notifications_notification").fetchone()
                if count >= expected:
                    break
                if time.monotonic() - started > args.timeout:
                    raise SystemExit(f"celery peer: {count} of {expected} rows after the timeout")
                time.sleep(0.05)
        seconds = time.monotonic() - started
    finally:
        worker.terminate()
        worker.wait(timeout=30)
    print(json.dumps({"jobs": args.jobs, "seconds": seconds,
                      "jobs_per_second": args.jobs / seconds}))


if __name__ == "__main__":
    main()
