#!/usr/bin/env python3
"""Writes the seed corpora in fuzz/corpus/<target>/ from the real vectors in
tests/fixtures/ and the job examples in jobs/, plus a few hand-made edge
cases per target. Deterministic: run it again after changing a fixture or an
input format (fuzz_targets/*.rs say each format) and commit the result.

    python3 fuzz/seeds.py

Python's standard library only. The 70 kB msgpack vector is left out: libFuzzer
takes its default -max_len from the largest seed, and long inputs slow every
run down.
"""

import base64
import hashlib
import hmac
import json
import shutil
import struct
from pathlib import Path

FUZZ = Path(__file__).resolve().parent
REPO = FUZZ.parent
CORPUS = FUZZ / "corpus"
MAX_SEED = 4096


def fixture(name):
    return json.loads((REPO / "tests" / "fixtures" / name).read_text())


def i64(n):
    return struct.pack("<q", n)


def u64(n):
    return struct.pack("<Q", n)


def b64(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=")


def compact(value):
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()


class Target:
    def __init__(self, name):
        self.dir = CORPUS / name
        shutil.rmtree(self.dir, ignore_errors=True)
        self.dir.mkdir(parents=True)
        self.names = set()

    def add(self, name, data):
        assert name not in self.names, name
        assert len(data) <= MAX_SEED, (name, len(data))
        self.names.add(name)
        (self.dir / name).write_bytes(data)


def slug(text):
    keep = "".join(c if c.isalnum() else "-" for c in text.lower())
    return "-".join(part for part in keep.split("-") if part)[:40]


def codec_decode():
    # Mode bit 0: queue codec (12-byte prefix); bit 1: the fixture's keys.
    t = Target("codec_decode")
    prefix = bytes(range(12))
    for v in fixture("msgpack_vectors.json")["vectors"]:
        packed = bytes.fromhex(v["msgpack_hex"])
        if len(packed) > MAX_SEED - 13:
            continue
        t.add(f"pubsub-{slug(v['name'])}", b"\x00" + packed)
        t.add(f"queue-{slug(v['name'])}", b"\x01" + prefix + packed)
    fernet = fixture("fernet_vectors.json")
    for v in fernet["vectors"]:
        t.add(f"pubsub-fernet-{slug(v['name'])}", b"\x02" + v["token"].encode())
        # The members are older than the queue codec's token age limit.
        t.add(f"queue-fernet-{slug(v['name'])}", b"\x03" + bytes.fromhex(v["member_hex"]))
    second = fernet["encrypted_with_second_key_only"]
    t.add("queue-fernet-second-key", b"\x03" + bytes.fromhex(second["member_hex"]))
    t.add("pubsub-fernet-second-key", b"\x02" + bytes.fromhex(second["member_hex"])[12:])
    t.add("pubsub-list", b"\x00\x91\x01")
    t.add("pubsub-bin-value", b"\x00\x81\xa1b\xc4\x01\x00")
    t.add("pubsub-int-key", b"\x00\x81\x01\xa1x")
    t.add("pubsub-ext-value", b"\x00\x81\xa1e\xd4\x01\x00")
    t.add("pubsub-float32-nan", b"\x00\x81\xa1f\xca\x7f\xc0\x00\x00")
    t.add("pubsub-empty-map", b"\x00\x80")
    t.add("queue-short", b"\x01short")
    t.add("pubsub-fernet-not-base64", b"\x02gAAAAA!!!!")


def token_validate():
    t = Target("token_validate")
    doc = fixture("tokens.json")
    made = 1796028372 + 1  # the vectors' iat, plus a second
    claims_seen = set()
    for tok in doc["tokens"]:
        name = slug(tok["variant"])
        t.add(f"raw-{name}", b"\x00" + i64(made) + tok["token"].encode())
        parts = tok["token"].split(".")
        if len(parts) == 3 and parts[1]:
            claims = base64.urlsafe_b64decode(parts[1] + "=" * (-len(parts[1]) % 4))
            if claims not in claims_seen:
                claims_seen.add(claims)
                t.add(f"claims-{name}", b"\x01" + i64(made) + claims)
    valid = doc["tokens"][0]["token"].encode()
    t.add("raw-valid-at-zero", b"\x00" + i64(0) + valid)
    t.add("raw-valid-at-max", b"\x00" + i64(2**63 - 1) + valid)
    t.add("raw-valid-at-min", b"\x00" + i64(-(2**63)) + valid)
    t.add("raw-empty", b"\x00" + i64(made))
    t.add("raw-dots", b"\x00" + i64(made) + b"..")
    base = {"token_type": "access", "exp": 2111388372, "iat": 1796028372, "jti": "j"}
    crafted = {
        "int-user": {**base, "user_id": 7},
        "zero-user": {**base, "user_id": "0"},
        "negative-user": {**base, "user_id": -3},
        "negative-user-text": {**base, "user_id": "-3"},
        "huge-user": {**base, "user_id": "9223372036854775808"},
        "float-user": {**base, "user_id": 4.0},
        "float-exp": {**base, "exp": 2111388372.9, "user_id": "1"},
        "huge-float-exp": {**base, "exp": 1e300, "user_id": "1"},
        "text-exp": {**base, "exp": "2111388372", "user_id": "1"},
        "nbf-future": {**base, "nbf": 2000000000, "user_id": "1"},
        "nbf-text": {**base, "nbf": "x", "user_id": "1"},
        "no-type": {"exp": 2111388372, "user_id": "1"},
        "array": [1, 2],
    }
    for name, claims in crafted.items():
        t.add(f"claims-{name}", b"\x01" + i64(made) + compact(claims))
    headers = {
        "hs256": {"alg": "HS256", "typ": "JWT"},
        "none": {"alg": "none"},
        "none-upper": {"alg": "NONE"},
        "hs512": {"alg": "HS512"},
        "rs256": {"alg": "RS256"},
        "no-alg": {"typ": "JWT"},
        "kid": {"alg": "HS256", "kid": "k1"},
        "crit": {"alg": "HS256", "crit": ["exp"]},
        "alg-number": {"alg": 256},
    }
    for name, header in headers.items():
        t.add(f"header-{name}", b"\x02" + i64(made) + compact(header))
    # Mode 3: user id, ttl, clock offset, secret.
    mints = {
        "user-42": (42, 300, 10, doc["secret_key"]),
        "user-0": (0, 1, 0, "s"),
        "user-max": (2**63 - 1, 60, 59, "s"),
        "user-negative": (-1, 60, 0, "s"),
        "ttl-zero": (5, 0, 0, "s"),
        "ttl-max-i64": (5, 2**63 - 1, 2**62, "s"),
        "ttl-max-u64": (5, 2**64 - 1, 0, "s"),
        "empty-secret": (5, 60, -10, ""),
        "unicode-secret": (5, 60, 61, "clé-\u00e9\u2603"),
    }
    for name, (user, ttl, offset, secret) in mints.items():
        t.add(f"mint-{name}", b"\x03" + i64(user) + u64(ttl) + i64(offset) + secret.encode())
    # A token as the sidecar sees one signed with another key, for contrast.
    other = hmac.new(b"other", b"x", hashlib.sha256).digest()
    t.add("raw-foreign-signature", b"\x00" + i64(made) + valid.rsplit(b".", 1)[0] + b"." + b64(other))


def client_message():
    t = Target("client_message")
    messages = {
        "ping": {"type": "ping"},
        "resume": {"type": "resume", "last_id": 7},
        "refresh": {"type": "refresh", "token": "a.b.c"},
        "mark-read": {"type": "mark_read", "id": 3},
        "mark-all-read": {"type": "mark_all_read"},
        "resume-text-id": {"type": "resume", "last_id": "7"},
        "resume-float-id": {"type": "resume", "last_id": 7.5},
        "resume-huge-id": {"type": "resume", "last_id": 2**64},
        "resume-negative-id": {"type": "resume", "last_id": -(2**63)},
        "resume-no-id": {"type": "resume"},
        "refresh-no-token": {"type": "refresh"},
        "refresh-number-token": {"type": "refresh", "token": 5},
        "mark-read-null": {"type": "mark_read", "id": None},
        "ping-extra": {"type": "ping", "data": {"x": [1, 2]}},
        "unknown-type": {"type": "subscribe", "group": "notifications_1"},
        "long-type": {"type": "t" * 100},
        "unicode-type": {"type": "p\u00efng\u2603"},
        "type-number": {"type": 1},
        "type-null": {"type": None},
        "no-type": {"last_id": 1},
    }
    for name, message in messages.items():
        t.add(name, compact(message))
    t.add("duplicate-type", b'{"type":"ping","type":"resume","last_id":1}')
    t.add("array", b'[{"type":"ping"}]')
    t.add("string", b'"ping"')
    t.add("not-json", b"ping")
    t.add("truncated", b'{"type":"resume","last_id":')
    t.add("escaped-type", b'{"type":"p\\u0069ng"}')
    t.add("deep", b'{"type":"ping","x":' + b"[" * 200 + b"]" * 200 + b"}")


def job_payload():
    t = Target("job_payload")
    examples = {}
    for path in sorted((REPO / "jobs").glob("*.example.json")):
        kind = path.name.removesuffix(".example.json")
        example = json.loads(path.read_text())
        examples[kind] = example
        t.add(f"{kind}-example", kind.encode() + b"\n" + compact(example))
    for kind, example in examples.items():
        for field in example:
            partial = {k: v for k, v in example.items() if k != field}
            t.add(f"{kind}-without-{slug(field)}", kind.encode() + b"\n" + compact(partial))
        wrong = {k: (str(v) if isinstance(v, int) else 5) for k, v in example.items()}
        if wrong:
            t.add(f"{kind}-wrong-types", kind.encode() + b"\n" + compact(wrong))
        t.add(f"{kind}-extra-field", kind.encode() + b"\n" + compact({**example, "extra": 1}))
    notify = examples["notify"]
    t.add("notify-nested-data", b"notify\n" + compact({**notify, "data": {"a": [{"b": None}]}}))
    t.add("notify-null-data", b"notify\n" + compact({**notify, "data": None}))
    t.add("notify-big-user", b"notify\n" + compact({**notify, "user_id": 2**64}))
    t.add("notify-float-user", b"notify\n" + compact({**notify, "user_id": 5.0}))
    t.add("notify-nul-title", b"notify\n" + compact({**notify, "title": "a\u0000b"}))
    t.add("notify-array", b"notify\n[1,2]")
    t.add("notify-null", b"notify\nnull")
    t.add("notify-no-payload", b"notify")
    t.add("overdue_check-number", b"overdue_check\n5")
    t.add("unknown-kind", b"send_email\n{}")
    t.add("empty-kind", b"\n{}")


def main():
    for make in (codec_decode, token_validate, client_message, job_payload):
        make()
    total = sum(p.stat().st_size for p in CORPUS.rglob("*") if p.is_file())
    counts = {d.name: len(list(d.iterdir())) for d in sorted(CORPUS.iterdir())}
    print(f"seeds: {counts}, {total} bytes")


if __name__ == "__main__":
    main()
