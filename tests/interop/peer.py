"""The Python side of herald's interop tests: real channels, channels_redis
and consumers, driven by the Rust tests in tests/interop/main.rs.

    python peer.py COMMAND --layer '<json>' [options]

--layer is {"backend": "redis"|"pubsub", "hosts": [...], "prefix": "...",
"capacity": N, "expiry": N, "group_expiry": N, "symmetric_encryption_keys": [...]}.
Every command prints JSON lines on stdout; errors go to stderr with exit 1.
"""

import argparse
import asyncio
import json
import sys

import django
from django.conf import settings


def configure(layer):
    backend = {
        "redis": "channels_redis.core.RedisChannelLayer",
        "pubsub": "channels_redis.pubsub.RedisPubSubChannelLayer",
    }[layer.get("backend", "redis")]
    config = {"hosts": layer["hosts"]}
    for key in ("prefix", "capacity", "expiry", "group_expiry", "symmetric_encryption_keys"):
        if key in layer:
            config[key] = layer[key]
    if backend.endswith("PubSubChannelLayer"):
        for key in ("capacity", "expiry", "group_expiry"):
            config.pop(key, None)
    settings.configure(
        SECRET_KEY="interop-tests-only",
        INSTALLED_APPS=["channels"],
        CHANNEL_LAYERS={"default": {"BACKEND": backend, "CONFIG": config}},
    )
    django.setup()


def emit(obj):
    print(json.dumps(obj), flush=True)


def type_sig(value):
    """The Python types of a value, recursively, in JSON-friendly form."""
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "int"
    if isinstance(value, float):
        return "float"
    if isinstance(value, str):
        return "str"
    if value is None:
        return "null"
    if isinstance(value, dict):
        return {k: type_sig(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [type_sig(v) for v in value]
    return type(value).__name__


def read_messages():
    return [json.loads(line) for line in sys.stdin if line.strip()]


async def consume(args):
    """Runs a real consumer (channels' AsyncConsumer) that joins --group and
    prints every event its handlers get."""
    from channels.consumer import AsyncConsumer
    from channels.testing import ApplicationCommunicator

    received = asyncio.Queue()

    class Probe(AsyncConsumer):
        async def probe_join(self, event):
            await self.channel_layer.group_add(event["group"], self.channel_name)
            emit({"ready": self.channel_name})

        async def send_notification(self, event):
            await received.put(event)

        async def chat_message(self, event):
            await received.put(event)

    communicator = ApplicationCommunicator(Probe.as_asgi(), {"type": "channel"})
    await communicator.send_input({"type": "probe.join", "group": args.group})
    for _ in range(args.count):
        try:
            event = await asyncio.wait_for(received.get(), args.timeout)
        except asyncio.TimeoutError:
            emit({"timeout": True})
            break
        emit({"event": event, "types": type_sig(event)})
    communicator.future.cancel()


async def receive(args):
    """A channel of its own: prints its name, then what receive() returns."""
    from channels.layers import get_channel_layer

    layer = get_channel_layer()
    channel = await layer.new_channel()
    if args.group:
        await layer.group_add(args.group, channel)
    emit({"ready": channel})
    for _ in range(args.count):
        try:
            message = await asyncio.wait_for(layer.receive(channel), args.timeout)
        except asyncio.TimeoutError:
            emit({"timeout": True})
            break
        emit({"event": message, "types": type_sig(message)})


async def group_send(args):
    from channels.layers import get_channel_layer

    layer = get_channel_layer()
    for message in read_messages():
        await layer.group_send(args.group, message)
    emit({"sent": True})


async def send(args):
    """Sends each stdin message to --channel; prints ok or full per message."""
    from channels.exceptions import ChannelFull
    from channels.layers import get_channel_layer

    layer = get_channel_layer()
    for message in read_messages():
        try:
            await layer.send(args.channel, message)
            emit({"sent": True})
        except ChannelFull:
            emit({"full": True})


async def group_add(args):
    from channels.layers import get_channel_layer

    layer = get_channel_layer()
    await layer.group_add(args.group, args.channel)
    emit({"added": True})


def hashes(args):
    from channels_redis.utils import _consistent_hash

    for name in sys.stdin.read().split():
        emit([name, _consistent_hash(name, args.ring)])


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("command")
    parser.add_argument("--layer", default='{"hosts": ["redis://127.0.0.1:6379"]}')
    parser.add_argument("--group")
    parser.add_argument("--channel")
    parser.add_argument("--count", type=int, default=1)
    parser.add_argument("--timeout", type=float, default=10.0)
    parser.add_argument("--ring", type=int, default=2)
    args = parser.parse_args()
    if args.command == "hash":
        return hashes(args)
    configure(json.loads(args.layer))
    command = {
        "consume": consume,
        "receive": receive,
        "group_send": group_send,
        "send": send,
        "group_add": group_add,
    }[args.command]
    asyncio.run(command(args))


if __name__ == "__main__":
    main()
