"""Celery side of benches/celery/ (the celery bench), on the interop Django project
(tests/interop/django_app: its models, its Celery app and its
`apps.tasks.tasks.file_attached` task, the one the application's views
`.delay()`). Configured from the environment as that project is (INTEROP_*,
CELERY_BROKER_URL, CELERY_RESULT_BACKEND, INTEROP_CELERY_QUEUE).

    python benches/celery_peer.py fill --jobs N [--processes P]
        N real `file_attached.delay(task_id, file_id, file_name, uploaded_by)`
        calls (task ids 1..1000, file ids 0..N-1, uploaded by user 1), made
        by P processes, into the queue INTEROP_CELERY_QUEUE routes to.
        Prints {"jobs", "seconds"}.

    python benches/celery_peer.py drain --queue Q --from QF --jobs M
        Starts `celery worker -Q Q -P prefork -c 2`, waits until it has run a
        warm-up call, then hands it the M messages filled into QF and times
        the worker until every one's two notification rows exist. On Redis
        QF is moved to Q in one RENAME; on RabbitMQ (AMQP has no rename) the
        worker is told to consume QF too, by Celery's remote control
        (`add_consumer`, its reply awaited). Prints {"jobs", "seconds",
        "jobs_per_second", "worker_cpu_seconds" (the worker and its pool
        processes' CPU time over the timed part), "handed_over_seconds" and
        "first_row_seconds" (when the hand-over returned, when the first
        row of the sample appeared)}.
"""

import argparse
import json
import multiprocessing
import os
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
APP = os.path.join(os.path.dirname(HERE), "tests", "interop", "django_app")
sys.path.insert(0, APP)
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "settings")


def setup():
    import django

    django.setup()
    import celery_app  # noqa: F401  (the application's Celery app)


def fill_part(first, last):
    setup()
    from apps.tasks.tasks import file_attached

    for i in range(first, last):
        file_attached.delay(1 + i % 1000, i, f"f{i}.pdf", 1)


def fill(args):
    started = time.monotonic()
    step = (args.jobs + args.processes - 1) // args.processes
    parts = [(i, min(i + step, args.jobs)) for i in range(0, args.jobs, step)]
    with multiprocessing.get_context("fork").Pool(len(parts)) as pool:
        pool.starmap(fill_part, parts)
    print(json.dumps({"jobs": args.jobs, "seconds": time.monotonic() - started}))


def rows(conn):
    return conn.execute("SELECT count(*) FROM notifications_notification").fetchone()[0]


def wait_rows(conn, count, timeout, started):
    while rows(conn) < count:
        if time.monotonic() - started > timeout:
            raise SystemExit(f"celery peer: {rows(conn)} of {count} rows after {timeout} s")
        time.sleep(0.05)


def cpu_seconds(root):
    """utime + stime of process `root` and its children (the prefork pool)."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/stat") as stat:
                fields = stat.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(pid) == root or int(fields[1]) == root:
            total += (int(fields[11]) + int(fields[12])) / ticks
    return total


def hand_over(app, source, queue):
    """Gives the running worker the messages filled into `source`."""
    url = os.environ["CELERY_BROKER_URL"]
    if url.startswith(("amqp", "pyamqp")):
        replies = app.control.add_consumer(source, reply=True, limit=1, timeout=30)
        if not replies:
            raise SystemExit("celery peer: the worker did not answer add_consumer")
    else:
        import redis

        redis.Redis.from_url(url).rename(source, queue)


def drain(args):
    import psycopg

    setup()
    from apps.tasks.tasks import file_attached

    database = os.environ["INTEROP_DATABASE"]
    env = dict(os.environ, INTEROP_CELERY_QUEUE=args.queue, PYTHONPATH=APP)
    worker = subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "celery_app", "worker", "-Q", args.queue,
         "-P", "prefork", "-c", "2", "--without-heartbeat", "--without-gossip",
         "--without-mingle", "-l", "warning"],
        cwd=APP, env=env, stdout=subprocess.DEVNULL,
    )
    try:
        with psycopg.connect(database, autocommit=True) as conn:
            before = rows(conn)
            # Warm up: the worker has booted once it ran one call.
            file_attached.apply_async((1, -1, "warm-up.pdf", 1), queue=args.queue)
            wait_rows(conn, before + 2, 120, time.monotonic())
            started = time.monotonic()
            cpu = cpu_seconds(worker.pid)
            hand_over(file_attached.app, args.source, args.queue)
            handed = time.monotonic() - started
            wait_rows(conn, before + 3, args.timeout, started)
            first = time.monotonic() - started
            wait_rows(conn, before + 2 + 2 * args.jobs, args.timeout, started)
            seconds = time.monotonic() - started
            cpu = cpu_seconds(worker.pid) - cpu
    finally:
        worker.terminate()
        worker.wait(timeout=60)
    print(json.dumps({"jobs": args.jobs, "seconds": seconds, "jobs_per_second": args.jobs / seconds,
                      "worker_cpu_seconds": cpu, "handed_over_seconds": handed,
                      "first_row_seconds": first}))


def main():
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="command", required=True)
    fill_args = sub.add_parser("fill")
    fill_args.add_argument("--jobs", type=int, required=True)
    fill_args.add_argument("--processes", type=int, default=4)
    drain_args = sub.add_parser("drain")
    drain_args.add_argument("--queue", required=True)
    drain_args.add_argument("--from", dest="source", required=True)
    drain_args.add_argument("--jobs", type=int, required=True)
    drain_args.add_argument("--timeout", type=float, default=900)
    args = parser.parse_args()
    {"fill": fill, "drain": drain}[args.command](args)


if __name__ == "__main__":
    main()
