"""channels_redis side of `cargo bench --bench layer` (benches/layer.rs).

Runs the same two measurements as the Rust side, with
channels_redis.core.RedisChannelLayer against the same Redis, and prints ONE
JSON line on stdout (everything else goes to stderr):

  throughput: one group with one member channel (from new_channel, capacity
              raised so nothing is dropped); N group_sends with at most
              CONCURRENCY in flight (CONCURRENCY worker coroutines under
              asyncio.gather), the receiver draining in the same event loop.
              msgs/s = N / time until every group_send has returned.
  latency:    group_send paced at RATE msg/s for SECONDS, each message
              carrying its send time (perf_counter_ns) taken just before
              group_send; latency = receive time - send time at the receiver.

Usage: python layer_peer.py --redis URL --prefix PREFIX [--messages N]
       [--concurrency C] [--rate R] [--seconds S] [--warmup W]
       [--budget SECONDS] [--drain SECONDS] [--wait SECONDS]
"""

import argparse
import asyncio
import json
import sys
import time

from channels_redis.core import RedisChannelLayer

# The throughput phase's group; the latency phase uses a fresh layer (its own
# queue key) and its own group, so a backlog left by the first phase cannot
# inflate the second.
GROUP = "bench_notifications"
LATENCY_GROUP = "bench_latency"


def log(*args):
    print("layer_peer:", *args, file=sys.stderr, flush=True)


def notification(i, sent_ns=None):
    """The contract's send_notification shape; sent_ns rides in data.data."""
    data = {"task_id": 42}
    if sent_ns is not None:
        data["bench_sent_ns"] = sent_ns
    return {
        "type": "send_notification",
        "data": {
            "id": i,
            "title": "Task Overdue",
            "message": 'Task "Report" is now overdue.',
            "notification_type": "overdue",
            "is_read": False,
            "created_at": "2025-12-11T08:12:34.123456Z",
            "data": data,
        },
    }


def percentile(sorted_values, p):
    """Nearest-rank percentile of an ascending list."""
    if not sorted_values:
        return None
    rank = max(1, -(-len(sorted_values) * p // 100))  # ceil(n * p / 100)
    return sorted_values[int(min(rank, len(sorted_values))) - 1]


class Drain:
    """Receives up to `count` messages from `channel` in a task."""

    def __init__(self, layer, channel, count, on_message=None):
        self.received = 0
        self.last = None
        self._count = count
        self._task = asyncio.create_task(self._run(layer, channel, on_message))

    async def _run(self, layer, channel, on_message):
        while self.received < self._count:
            message = await layer.receive(channel)
            self.received += 1
            self.last = time.perf_counter()
            if on_message is not None:
                on_message(message)

    async def wait(self, seconds):
        """Waits at most `seconds` for the rest; False when it gave up."""
        try:
            await asyncio.wait_for(asyncio.shield(self._task), seconds)
            return True
        except asyncio.TimeoutError:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            return False


async def send_bounded(layer, n, concurrency, deadline, offset=0):
    """Up to n group_sends, at most `concurrency` in flight, none started
    after `deadline` (perf_counter seconds). Returns how many completed."""
    next_index = 0
    done = 0

    async def worker():
        nonlocal next_index, done
        while next_index < n and time.perf_counter() < deadline:
            i = next_index
            next_index += 1
            await layer.group_send(GROUP, notification(offset + i))
            done += 1

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return done


async def throughput(layer, channel, n, concurrency, warmup, budget, drain_budget):
    # Warm-up: opens the pool's connections and warms the code paths.
    drain = Drain(layer, channel, warmup)
    sent = await send_bounded(
        layer, warmup, concurrency, time.perf_counter() + budget, offset=10_000_000
    )
    if not await drain.wait(drain_budget):
        # Left-overs would be counted below as received: give up instead.
        raise SystemExit(
            f"warm-up: only {drain.received} of {sent} received in {drain_budget} s"
        )

    drain = Drain(layer, channel, n)
    start = time.perf_counter()
    completed = await send_bounded(layer, n, concurrency, start + budget)
    send_seconds = time.perf_counter() - start
    if completed < n:
        log(f"throughput: time budget ({budget} s) reached after {completed} of {n} group_sends")
    drain._count = completed
    finished = await drain.wait(drain_budget)
    if not finished:
        log(f"throughput: only {drain.received} of {completed} received within the budget")
    end = drain.last if drain.last is not None else time.perf_counter()
    return {
        "throughput_msgs_per_s": completed / send_seconds,
        "throughput_completed": completed,
        "throughput_send_seconds": send_seconds,
        "end_to_end_msgs_per_s": drain.received / (end - start),
        "throughput_received": drain.received,
    }


async def latency(layer, channel, rate, seconds, wait):
    total = int(rate * seconds)
    latencies_ns = []

    def record(message):
        sent_ns = message["data"]["data"].get("bench_sent_ns")
        if sent_ns is not None:  # not a left-over of the throughput phase
            latencies_ns.append(time.perf_counter_ns() - sent_ns)

    drain = Drain(layer, channel, total, record)
    durations_ns = []

    async def timed_send(i, sent_ns):
        await layer.group_send(LATENCY_GROUP, notification(i, sent_ns))
        durations_ns.append(time.perf_counter_ns() - sent_ns)

    loop = asyncio.get_running_loop()
    pending = set()
    errors = 0
    start = loop.time()
    for i in range(total):
        # Open loop: absolute deadlines, so a slow group_send never slows
        # the pace; each send is its own task.
        delay = start + i / rate - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        task = asyncio.create_task(timed_send(i, time.perf_counter_ns()))
        pending.add(task)
        task.add_done_callback(pending.discard)
    elapsed = loop.time() - start
    # Sends still running and the receiver share one deadline: `wait`
    # seconds after the last send was started.
    deadline = loop.time() + wait
    unfinished = 0
    tasks = list(pending)
    if tasks:
        _, still = await asyncio.wait(tasks, timeout=wait)
        for task in still:
            task.cancel()
        unfinished = len(still)
        if still:
            await asyncio.gather(*still, return_exceptions=True)
        errors = sum(
            1 for t in tasks if t not in still and not t.cancelled() and t.exception() is not None
        )
    if not await drain.wait(max(0.1, deadline - loop.time())):
        log(f"latency: only {len(latencies_ns)} of {total} received within {wait} s of the last send")
    if unfinished:
        log(f"latency: {unfinished} group_sends still running {wait} s after the last one started")
    durations = sorted(ns / 1e6 for ns in durations_ns)
    durations += [None] * unfinished  # slower than any that finished
    values = sorted(ns / 1e6 for ns in latencies_ns)
    # Messages never received count as slower than any received one: a
    # percentile that lands on them is reported as null ("over the wait").
    missing = total - len(values)
    values += [None] * missing
    return {
        "latency_sent": total,
        "latency_received": total - missing,
        "latency_send_errors": errors,
        "latency_sends_unfinished": unfinished,
        "latency_rate_achieved": total / elapsed if elapsed > 0 else None,
        "latency_wait_s": wait,
        "latency_p50_ms": percentile(values, 50),
        "latency_p99_ms": percentile(values, 99),
        "latency_max_ms": values[-1] if values else None,
        "group_send_p50_ms": percentile(durations, 50),
        "group_send_p99_ms": percentile(durations, 99),
    }


async def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--redis", default="redis://127.0.0.1:6379")
    parser.add_argument("--prefix", required=True)
    parser.add_argument("--messages", type=int, default=20_000)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--rate", type=float, default=1000.0)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--warmup", type=int, default=1000)
    # Bounds on the run time: the warm-up and the measured sends get at most
    # --budget seconds each, the drain after each at most --drain seconds
    # (rates are then computed over what completed), and the latency
    # receiver at most --wait seconds after the last paced send.
    parser.add_argument("--budget", type=float, default=20.0)
    parser.add_argument("--drain", type=float, default=20.0)
    parser.add_argument("--wait", type=float, default=10.0)
    args = parser.parse_args()

    import channels_redis

    def make_layer():
        return RedisChannelLayer(
            hosts=[args.redis],
            prefix=args.prefix,
            capacity=args.messages + args.warmup + int(args.rate * args.seconds) + 1000,
        )

    result = {
        "implementation": "channels_redis",
        "version": getattr(channels_redis, "__version__", "?"),
    }
    layers = []
    try:
        layer = make_layer()
        layers.append(layer)
        channel = await layer.new_channel()
        await layer.group_add(GROUP, channel)
        log(f"throughput: {args.messages} group_sends, {args.concurrency} in flight")
        result.update(
            await throughput(
                layer,
                channel,
                args.messages,
                args.concurrency,
                args.warmup,
                args.budget,
                args.drain,
            )
        )
        await layer.group_discard(GROUP, channel)

        layer = make_layer()
        layers.append(layer)
        channel = await layer.new_channel()
        await layer.group_add(LATENCY_GROUP, channel)
        log(f"latency: {args.rate:g} msg/s for {args.seconds:g} s")
        result.update(await latency(layer, channel, args.rate, args.seconds, args.wait))
        await layer.group_discard(LATENCY_GROUP, channel)
    finally:
        # flush() deletes every key under our prefix and closes the pools.
        for layer in reversed(layers):
            try:
                await asyncio.wait_for(layer.flush(), 10)
            except Exception as error:  # the Rust side deletes the prefix too
                log(f"flush failed: {error!r}")
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    asyncio.run(main())
