"""Prints the table of benches/sidecar-load: one column per peer (herald's
sidecar, Django's NotificationConsumer under daphne), the herald/daphne
ratios, and the sidecar issue's targets met or missed.

    sidecar_report.py HERALD.jsonl [DAPHNE.jsonl]

Each file is what benches/ws_load.py printed; only its {"summary": ...} line
is read. Conditions (profile, load averages) come from the environment
variables BENCH_PROFILE, BENCH_LOAD_START and BENCH_LOAD_END.
"""
import json, os, sys, time


def summary(path):
    if not path or not os.path.exists(path):
        return None
    with open(path) as lines:
        found = [json.loads(l)["summary"] for l in lines if l.startswith('{"summary"')]
    return found[-1] if found else None


def num(value, digits=0):
    if value is None:
        return "-"
    return f"{value:,.{digits}f}"


def ratio(a, b):
    """a / b as "12.3x", or "-" when either side is missing or zero."""
    if not a or not b:
        return "-"
    return f"{a / b:,.1f}x"


def row(label, herald, daphne, r=""):
    print(f"| {label} | {herald} | {daphne} | {r} |")


def main():
    herald, daphne = summary(sys.argv[1]), summary(sys.argv[2] if len(sys.argv) > 2 else None)
    if herald is None:
        sys.exit("sidecar_report: no summary from the herald run (see its output above)")
    d = daphne or {}

    print(f"\nSidecar load, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, "
          f"{os.environ.get('BENCH_PROFILE', '?')} build, {os.cpu_count()} cores, "
          f"load average (1/5/15 min) {os.environ.get('BENCH_LOAD_START', '?')} at start, "
          f"{os.environ.get('BENCH_LOAD_END', '?')} at end")
    print("ratio: herald/daphne for counts and delivery, daphne/herald for latency and memory "
          "(higher = herald better)\n")
    print("| measure | herald | daphne | ratio |")
    print("|---|---:|---:|---:|")
    row("connections asked", num(herald["users"]), num(d.get("users")))
    # Held counts compare only when daphne fell short of what it was asked.
    held_ratio = ratio(herald["held"], d.get("held")) if d and d["held"] < d["users"] else "- (all held)"
    row("connections held (after the hold)", num(herald["held"]), num(d.get("held")),
        held_ratio if d else "")
    row("connect phase (s)", num(herald["connect_seconds"], 1), num(d.get("connect_seconds"), 1))
    row("RSS idle (MiB)", num(herald["rss_idle_kib"] / 1024, 1),
        num(d["rss_idle_kib"] / 1024, 1) if d.get("rss_idle_kib") else "-")
    row("RSS with connections held (MiB)", num(herald["rss_loaded_kib"] / 1024, 1),
        num(d["rss_loaded_kib"] / 1024, 1) if d.get("rss_loaded_kib") else "-")
    row("RSS growth per connection (KiB)", num(herald["kib_per_connection"], 1),
        num(d.get("kib_per_connection"), 1), ratio(d.get("kib_per_connection"), herald["kib_per_connection"]))
    for phase in ("fanout", "burst"):
        h, p = herald.get(phase) or {}, d.get(phase) or {}
        label = "fan-out" if phase == "fanout" else f"burst ({h.get('concurrency')} in flight)"
        share = lambda s: s["delivered"] / s["expected"] if s.get("expected") else None
        row(f"{label}: delivered / expected",
            f"{num(h.get('delivered'))} / {num(h.get('expected'))}",
            f"{num(p.get('delivered'))} / {num(p.get('expected'))}" if p else "-",
            ratio(share(h), share(p)) + " (share)" if p else "")
        for key in ("p50_ms", "p99_ms", "max_ms"):
            row(f"{label}: latency {key[:-3]} (ms)", num(h.get(key), 1), num(p.get(key), 1),
                ratio(p.get(key), h.get(key)))
        gs_h, gs_p = h.get("group_send_returned") or {}, p.get("group_send_returned") or {}
        row(f"{label}: *context:* group_send returned p50 / p99 (ms)",
            f"{num(gs_h.get('p50_ms'), 1)} / {num(gs_h.get('p99_ms'), 1)}",
            f"{num(gs_p.get('p50_ms'), 1)} / {num(gs_p.get('p99_ms'), 1)}" if gs_p else "-")
        row(f"{label}: sends took (s)", num(h.get("send_seconds"), 1), num(p.get("send_seconds"), 1))
        row(f"{label}: all received after (s)", num(h.get("all_received_seconds"), 1) if h else "-",
            num(p.get("all_received_seconds"), 1) if p.get("all_received_seconds") else
            ("not all" if p else "-"))
    row("RSS after delivery (MiB)", num(herald["rss_after_delivery_kib"] / 1024, 1),
        num(d["rss_after_delivery_kib"] / 1024, 1) if d.get("rss_after_delivery_kib") else "-")
    row("SIGTERM: close codes seen", fmt_codes(herald), fmt_codes(d) if d else "-")

    print()
    if daphne is None:
        print("daphne: not run (or no summary; see its output above)")
    for s in (herald, daphne):
        if s and (s["connect_failures"] or s["not_attempted_in_budget"]):
            print(f"{s['peer']}: connect failures {s['connect_failures']}, "
                  f"{s['not_attempted_in_budget']} not connected within the connect budget")
    fan, burst = herald.get("fanout") or {}, herald.get("burst") or {}

    def target(text, size_ok, ok, detail):
        verdict = ("met" if ok else "MISSED") if size_ok else "not measured at this size"
        print(f"target: {text}: {verdict} ({detail})")

    target("one herald process holds 18,000 connections", herald["users"] >= 18000,
           herald["held"] >= 18000, f"{herald['held']:,} held of {herald['users']:,} asked")
    target("herald RSS growth <= 20 KiB per connection", herald["users"] >= 18000,
           (herald["kib_per_connection"] or 1e9) <= 20, f"{herald['kib_per_connection']} KiB")
    target("fan-out to 10,000 users, all delivered, p99 <= 100 ms", fan.get("expected", 0) >= 10000,
           fan.get("delivered") == fan.get("expected") and (fan.get("p99_ms") or 1e9) <= 100,
           f"{fan.get('delivered')}/{fan.get('expected')}, p99 {fan.get('p99_ms')} ms")
    target("burst of Python group_sends to 10,000 herald users, all delivered",
           burst.get("expected", 0) >= 10000, burst.get("delivered") == burst.get("expected"),
           f"{burst.get('delivered')}/{burst.get('expected')}")
    print("One 2-core machine for servers, load generator and Redis; other work on it makes the figures noisy.")


def fmt_codes(s):
    codes = s.get("close_codes") or {}
    text = ", ".join(f"{n:,} x {code}" for code, n in sorted(codes.items(), key=lambda kv: -kv[1]))
    left = s.get("open_after_close_wait")
    return (text or "none") + (f"; {left:,} still open" if left else "") + \
        (f" (in {s['closed_within_seconds']} s)" if "closed_within_seconds" in s else "")


if __name__ == "__main__":
    main()
