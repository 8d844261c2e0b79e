"""The peer of benches/submit.rs: what a Celery `.delay()` costs the
application's request handler, measured as herald's single submissions are:
THREADS threads (one per connection of wrk) call `notify.delay(...)` in a
loop for SECONDS against the same Redis broker, with the real celery
package (the message goes to the broker; no worker is needed to accept it).
Prints one JSON line: calls, calls per second, p50 and p99 in ms.

    python benches/submit_peer.py REDIS_URL QUEUE THREADS SECONDS
"""

import json
import sys
import threading
import time

from celery import Celery


def main():
    broker, queue, threads, seconds = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
    app = Celery("bench", broker=broker)
    app.conf.task_routes = {"apps.notifications.tasks.*": {"queue": queue}}

    @app.task(name="apps.notifications.tasks.notify")
    def notify(user_id, title, message, notification_type="general", data=None):
        raise RuntimeError("never run here")

    latencies = []
    lock = threading.Lock()
    deadline = time.perf_counter() + seconds

    def loop():
        mine = []
        while time.perf_counter() < deadline:
            started = time.perf_counter()
            notify.delay(7, "t", "m", "info")
            mine.append(time.perf_counter() - started)
        with lock:
            latencies.extend(mine)

    started = time.perf_counter()
    workers = [threading.Thread(target=loop) for _ in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    elapsed = time.perf_counter() - started
    latencies.sort()
    pick = lambda q: latencies[min(len(latencies) - 1, int(q * len(latencies)))] * 1000
    print(json.dumps({
        "calls": len(latencies),
        "per_second": len(latencies) / elapsed,
        "p50_ms": pick(0.50),
        "p99_ms": pick(0.99),
    }))


if __name__ == "__main__":
    main()
