"""One WebSocket client for scripts/bench-burst: connects as one user to a
notifications server (Django's NotificationConsumer under daphne, or herald's
sidecar), then runs the burst command given after `--` (`herald enqueue
--file ...`) and reads until --count different notification ids arrived.
Keeps reading until the socket is silent for --settle seconds, to count
repeats. Prints one JSON object: seconds from starting the command to the
last new id, the command's own seconds, events, distinct ids, repeats and
`resumed` events. Needs the interop venv (scripts/python-env).
"""
import argparse, asyncio, json, os, subprocess, time, uuid

import jwt
from websockets.asyncio.client import connect


def token(secret, user_id):
    now = int(time.time())
    claims = {"token_type": "access", "exp": now + 3600, "iat": now,
              "jti": uuid.uuid4().hex, "user_id": str(user_id)}
    return jwt.encode(claims, secret, algorithm="HS256")


async def main(args):
    url = f"ws://{args.address}/ws/notifications/"
    subprotocol = token(os.environ["SECRET_KEY"], args.user_id)
    async with connect(url, subprotocols=[subprotocol], max_queue=None,
                       open_timeout=30) as socket:
        if args.ping:
            # Herald's pong says its socket joined the group; Django's
            # consumer joins before it accepts.
            await socket.send(json.dumps({"type": "ping"}))
            while json.loads(await socket.recv())["type"] != "pong":
                pass
        started = time.monotonic()
        burst = await asyncio.create_subprocess_exec(
            *args.command, stdout=subprocess.DEVNULL)

        async def submitted_after():
            code = await burst.wait()
            return code, time.monotonic() - started

        submitting = asyncio.create_task(submitted_after())
        ids, events, resumed, last_new = set(), 0, 0, None
        while len(ids) < args.count:
            try:
                frame = await asyncio.wait_for(socket.recv(), args.timeout)
            except asyncio.TimeoutError:
                break
            event = json.loads(frame)
            if event["type"] == "notification":
                events += 1
                if event["data"]["id"] not in ids:
                    ids.add(event["data"]["id"])
                    last_new = time.monotonic()
            elif event["type"] == "resumed":
                resumed += 1
        submitted, submit_seconds = await submitting
        while True:
            try:
                event = json.loads(await asyncio.wait_for(socket.recv(), args.settle))
            except asyncio.TimeoutError:
                break
            events += event["type"] == "notification"
            resumed += event["type"] == "resumed"
    print(json.dumps({
        "delivered": len(ids),
        "expected": args.count,
        "seconds": round(last_new - started, 3) if last_new else None,
        "submit_exit": submitted,
        "submit_seconds": round(submit_seconds, 3),
        "events": events,
        "repeats": events - len(ids),
        "resumed": resumed,
    }), flush=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--address", required=True)
    parser.add_argument("--user-id", type=int, required=True)
    parser.add_argument("--count", type=int, required=True)
    parser.add_argument("--ping", action="store_true")
    parser.add_argument("--timeout", type=float, default=60.0,
                        help="longest wait for the next new event")
    parser.add_argument("--settle", type=float, default=2.0)
    parser.add_argument("command", nargs="+")
    asyncio.run(main(parser.parse_args()))
