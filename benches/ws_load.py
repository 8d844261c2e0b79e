"""Load for herald's sidecar: N authenticated WebSocket clients (one user
each, token as subprotocol), then one notification to each user sent by
Python channels_redis group_send (as send_notification_ws does), then waits
for the server to close everyone (run with the server's SIGTERM).

Prints JSON lines: connected, delivered with latency percentiles, close codes.
Run by benches/sidecar-load; needs the interop venv (scripts/python-env).
"""
import argparse, asyncio, collections, json, os, time, uuid

import jwt
from websockets.asyncio.client import connect


def token(secret, user_id):
    now = int(time.time())
    claims = {"token_type": "access", "exp": now + 3600, "iat": now,
              "jti": uuid.uuid4().hex, "user_id": str(user_id)}
    return jwt.encode(claims, secret, algorithm="HS256")


async def main(args):
    from channels_redis.core import RedisChannelLayer

    secret = os.environ["SECRET_KEY"]
    url = f"ws://{args.address}/ws/notifications/"
    layer = RedisChannelLayer(hosts=[args.redis], prefix=args.prefix, capacity=args.capacity)
    conns, latencies, codes = [], [], collections.Counter()
    gate = asyncio.Semaphore(200)

    async def open_one(user_id):
        async with gate:
            ws = await connect(url, subprotocols=[token(secret, user_id)], ping_interval=None,
                               max_size=2 ** 16, open_timeout=60)
            await ws.send('{"type":"ping"}')
            await ws.recv()
            conns.append(ws)

    async def read(ws):
        try:
            async for text in ws:
                event = json.loads(text)
                if event["type"] == "notification":
                    latencies.append(time.time() - event["data"]["sent_at"])
        except Exception:
            pass
        codes[str(ws.close_code)] += 1

    start = time.time()
    await asyncio.gather(*(open_one(u) for u in range(args.users)))
    print(json.dumps({"connected": len(conns), "seconds": round(time.time() - start, 2)}), flush=True)
    readers = [asyncio.create_task(read(ws)) for ws in conns]
    start = time.time()
    for u in range(args.users):
        data = {"id": u, "title": "bench", "sent_at": time.time()}
        await layer.group_send(f"notifications_{u}", {"type": "send_notification", "data": data})
    sent_in = time.time() - start
    deadline = time.time() + 30
    while len(latencies) < args.users and time.time() < deadline:
        await asyncio.sleep(0.1)
    latencies.sort()
    pick = lambda q: round(1000 * latencies[min(len(latencies) - 1, int(q * len(latencies)))], 2) if latencies else None
    print(json.dumps({"delivered": len(latencies), "expected": args.users, "send_seconds": round(sent_in, 2),
                      "p50_ms": pick(0.5), "p99_ms": pick(0.99), "max_ms": pick(1.0)}), flush=True)
    print(json.dumps({"ready_for_shutdown": True}), flush=True)
    await asyncio.wait(readers, timeout=args.close_wait)
    print(json.dumps({"close_codes": dict(codes)}), flush=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--address", default="127.0.0.1:8001")
    parser.add_argument("--users", type=int, default=1000)
    parser.add_argument("--redis", default="redis://127.0.0.1:6379")
    parser.add_argument("--prefix", default="asgi")
    parser.add_argument("--capacity", type=int, default=100)
    parser.add_argument("--close-wait", type=float, default=60)
    asyncio.run(main(parser.parse_args()))
