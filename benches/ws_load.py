"""Load for one notifications WebSocket server (herald's sidecar or Django's
NotificationConsumer under daphne), run by benches/sidecar-load once per peer.

Opens up to --users authenticated clients (one user each, a simplejwt-style
HS256 token as subprotocol) within --connect-budget seconds, holds them for
--hold seconds, then sends through Python channels_redis (as the app's
send_notification_ws does) one notification to each of the first --fanout
connected users twice: a *fan-out*, one group_send after the other, and a
*burst*, --burst-concurrency group_sends in flight. Measures delivered/expected
and latency (group_send call -> client receipt) for each, and the server's RSS
(--server-pid) idle, with the connections held, and after delivery. Then
SIGTERMs the server and counts the close codes the clients saw.

Prints one JSON object a line; the last is {"summary": ...} for
benches/sidecar_report.py. Needs the interop venv (scripts/python-env).
"""
import argparse, asyncio, collections, json, os, signal, time, uuid

import jwt
from websockets.asyncio.client import connect

# Notification ids per phase: the sidecar skips an id it already sent on a
# connection, so the burst must not reuse the fan-out's ids.
PHASE_IDS = {"fanout": 1, "burst": 1_000_001}


def token(secret, user_id):
    now = int(time.time())
    claims = {"token_type": "access", "exp": now + 3600, "iat": now,
              "jti": uuid.uuid4().hex, "user_id": str(user_id)}
    return jwt.encode(claims, secret, algorithm="HS256")


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return None


def out(**fields):
    print(json.dumps(fields), flush=True)


def percentiles(latencies):
    if not latencies:
        return {"p50_ms": None, "p99_ms": None, "max_ms": None}
    ordered = sorted(latencies)
    pick = lambda q: round(1000 * ordered[min(len(ordered) - 1, int(q * len(ordered)))], 2)
    return {"p50_ms": pick(0.5), "p99_ms": pick(0.99), "max_ms": pick(1.0)}


async def main(args):
    from channels_redis.core import RedisChannelLayer

    secret = os.environ["SECRET_KEY"]
    url = f"ws://{args.address}/ws/notifications/"
    # Sender capacity as docs/operations.md recommends: default 100, and
    # enough for the largest burst on the per-process queue keys.
    layer = RedisChannelLayer(hosts=[args.redis], prefix=args.prefix, capacity=100,
                              channel_capacity={"specific.*": args.channel_capacity})
    summary = {"peer": args.peer, "users": args.users}
    clients = {}  # user id -> websocket
    failures = collections.Counter()
    gate = asyncio.Semaphore(args.connect_concurrency)
    await asyncio.sleep(1)
    summary["rss_idle_kib"] = rss_kib(args.server_pid)

    async def open_one(user_id):
        async with gate:
            try:
                ws = await connect(url, subprotocols=[token(secret, user_id)], ping_interval=None,
                                   max_size=2 ** 16, open_timeout=30, close_timeout=5)
                if args.ping:  # herald joins the group after the upgrade; the pong says it has
                    await ws.send('{"type":"ping"}')
                    await asyncio.wait_for(ws.recv(), 30)
                clients[user_id] = ws
            except Exception as error:
                # An OSError's errno tells port exhaustion (99) from the
                # open-file limit (24) and refusals (111).
                errno = getattr(error, "errno", None)
                failures[type(error).__name__ + (f"[{errno}]" if errno else "")] += 1

    start = time.time()
    tasks = [asyncio.create_task(open_one(u)) for u in range(args.users)]
    _, pending = await asyncio.wait(tasks, timeout=args.connect_budget)
    for task in pending:
        task.cancel()
    await asyncio.gather(*pending, return_exceptions=True)
    summary.update(connected=len(clients), connect_seconds=round(time.time() - start, 1),
                   connect_failures=dict(failures), not_attempted_in_budget=len(pending))
    out(phase="connect", connected=len(clients), seconds=summary["connect_seconds"],
        failures=dict(failures), cut_by_budget=len(pending))

    received = {phase: {} for phase in PHASE_IDS}  # phase -> {user id: latency}
    duplicates, codes = collections.Counter(), collections.Counter()

    async def read(user_id, ws):
        try:
            async for text in ws:
                event = json.loads(text)
                if event.get("type") != "notification":
                    continue
                now, data = time.time(), event["data"]
                phase = data["data"]["phase"]
                if user_id in received[phase]:
                    duplicates[phase] += 1
                else:
                    received[phase][user_id] = now - data["data"]["sent_at"]
        except Exception:
            pass
        codes[str(ws.close_code)] += 1

    readers = [asyncio.create_task(read(u, ws)) for u, ws in clients.items()]
    await asyncio.sleep(args.hold)
    held = sum(1 for r in readers if not r.done())
    summary.update(held=held, rss_loaded_kib=rss_kib(args.server_pid))
    summary["kib_per_connection"] = (
        round((summary["rss_loaded_kib"] - summary["rss_idle_kib"]) / held, 1) if held else None)
    out(phase="hold", held=held, after_seconds=args.hold, rss_idle_kib=summary["rss_idle_kib"],
        rss_loaded_kib=summary["rss_loaded_kib"], kib_per_connection=summary["kib_per_connection"])

    targets = sorted(clients)[:args.fanout]

    async def deliver(phase, concurrency):
        got = received[phase]
        send_gate = asyncio.Semaphore(concurrency)
        returned = []  # how long each group_send call took

        async def send(user_id):
            async with send_gate:
                data = {"id": PHASE_IDS[phase] + user_id, "title": "Task Overdue",
                        "message": "bench", "notification_type": "overdue", "is_read": False,
                        "created_at": "2026-11-26T00:00:00Z",
                        "data": {"phase": phase, "sent_at": time.time()}}
                await layer.group_send(f"notifications_{user_id}",
                                       {"type": "send_notification", "data": data})
                returned.append(time.time() - data["data"]["sent_at"])

        start = time.time()
        sends = [asyncio.create_task(send(u)) for u in targets]
        _, unfinished = await asyncio.wait(sends, timeout=args.send_budget)
        for task in unfinished:
            task.cancel()
        sent = time.time()
        # Wait for the rest: until all arrived, the budget ends, or nothing
        # new arrived for --stall seconds.
        last_count, last_change = len(got), sent
        while len(got) < len(targets) and time.time() < sent + args.deliver_wait:
            await asyncio.sleep(0.1)
            if len(got) != last_count:
                last_count, last_change = len(got), time.time()
            elif time.time() - last_change > args.stall:
                break
        all_in = round(time.time() - start, 2) if len(got) == len(targets) else None
        result = {"concurrency": concurrency, "delivered": len(got), "expected": len(targets),
                  "send_seconds": round(sent - start, 2), "all_received_seconds": all_in,
                  "sends_unfinished": len(unfinished), "duplicates": duplicates[phase],
                  **percentiles(list(got.values())), "group_send_returned": percentiles(returned)}
        summary[phase] = result
        out(phase=phase, **result)

    await deliver("fanout", 1)
    await deliver("burst", args.burst_concurrency)
    summary["rss_after_delivery_kib"] = rss_kib(args.server_pid)
    summary["still_open"] = sum(1 for r in readers if not r.done())
    out(phase="after_delivery", rss_kib=summary["rss_after_delivery_kib"], still_open=summary["still_open"])

    start = time.time()
    os.kill(args.server_pid, signal.SIGTERM)
    if readers:
        await asyncio.wait(readers, timeout=args.close_wait)
    summary["close_codes"] = dict(codes)
    summary["closed_within_seconds"] = round(time.time() - start, 1)
    summary["open_after_close_wait"] = sum(1 for r in readers if not r.done())
    out(phase="shutdown", close_codes=dict(codes), seconds=summary["closed_within_seconds"],
        still_open=summary["open_after_close_wait"])
    for ws in clients.values():
        ws.transport.abort()
    out(summary=summary)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--peer", default="herald", help="label for the report")
    parser.add_argument("--address", default="127.0.0.1:8001")
    parser.add_argument("--server-pid", type=int, required=True, help="measured, then SIGTERMed")
    parser.add_argument("--users", type=int, default=1000)
    parser.add_argument("--fanout", type=int, default=10000, help="users notified (first connected)")
    parser.add_argument("--ping", action="store_true", help="await a pong after connecting (herald)")
    parser.add_argument("--redis", default="redis://127.0.0.1:6379")
    parser.add_argument("--prefix", default="asgi")
    parser.add_argument("--channel-capacity", type=int, default=20000)
    parser.add_argument("--connect-concurrency", type=int, default=100)
    parser.add_argument("--connect-budget", type=float, default=150)
    parser.add_argument("--hold", type=float, default=10)
    parser.add_argument("--burst-concurrency", type=int, default=100)
    parser.add_argument("--send-budget", type=float, default=120)
    parser.add_argument("--deliver-wait", type=float, default=60)
    parser.add_argument("--stall", type=float, default=15)
    parser.add_argument("--close-wait", type=float, default=30)
    asyncio.run(main(parser.parse_args()))
