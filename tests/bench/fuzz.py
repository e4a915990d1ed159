"""A long fuzz run against a real lab master: generated frames as an accepted key and as
unknown keys, every message kind, random field values, every msgpack type.

    python tests/bench/fuzz.py [--frames 100000] [--seed 1] --json OUT.json

Frames come from a seeded generator (reproducible): random msgpack values of every type
(nil, bool, int of every width, float, str, bin, ext, timestamp, arrays and maps nested
deep), valid envelopes of every minion kind with fields replaced by such values, and
valid frames cut short or with flipped bytes. Half are sent by a DEALER holding an
accepted key, half by DEALERs with fresh keys. Printed: frames sent and frames/s, the
master's refusal counters by reason (what the run added), replies by kind, whether the
master is alive (0 exits wanted) and whether every lab minion still answers test.ping.
"""

import argparse
import json
import random
import secrets
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import msgpack
import zmq

from saline.codec import decode_from_master
from saline.errors import ProtocolError
from saline.keys import KeyRing, KeyState, read_keypair
from saline.lab.lab import Lab
from saline.protocol import DEFAULT_MAX_FRAME, MINION_KINDS
from saline.transport import tcp_address

_INTS = [0, 1, -1, 127, 128, -33, 255, 2**15, -(2**15), 2**31, 2**32, -(2**63), 2**64 - 1]


def value(rng: random.Random, depth: int = 0) -> Any:
    pick = rng.randrange(14 if depth < 6 else 10)
    if pick == 0:
        return None
    if pick == 1:
        return rng.random() < 0.5
    if pick == 2:
        return rng.choice(_INTS)
    if pick == 3:
        return rng.choice([0.0, -1.5, 1e308, float("inf"), float("nan")])
    if pick == 4:
        return "".join(chr(rng.randrange(0x20, 0x2FF)) for _ in range(rng.randrange(12)))
    if pick == 5:
        return rng.randbytes(rng.randrange(12))
    if pick == 6:
        return msgpack.ExtType(rng.randrange(128), rng.randbytes(rng.randrange(6)))
    if pick == 7:
        return msgpack.Timestamp(rng.randrange(2**32), rng.randrange(10**9))
    if pick == 8:
        return rng.choice(["be1", "../etc", "saline/job/x", "a" * 300, ""])
    if pick == 9:
        return rng.choice(list(MINION_KINDS))
    if pick < 12:
        return [value(rng, depth + 1) for _ in range(rng.randrange(4))]
    return {str(value(rng, depth + 1))[:16]: value(rng, depth + 1) for _ in range(rng.randrange(4))}


def deep(rng: random.Random) -> bytes:
    """An array or map nested up to 1,500 levels (beyond msgpack's own packer)."""
    levels = rng.randrange(1, 1500)
    opener = b"\x91" if rng.random() < 0.5 else b"\x81\xa1k"
    return opener * levels + b"\xc0"


def envelope(rng: random.Random, own_id: str) -> dict[str, Any]:
    kind = rng.choice(sorted(MINION_KINDS))
    fields: dict[str, Any] = {"v": 1, "kind": kind, "id": own_id}
    extra = {
        "hello": {"grains": {"role": "x"}},
        "return": {
            "jid": "20260101000000000000",
            "fun": "test.ping",
            "success": True,
            "retcode": 0,
            "ret": True,
        },
        "event": {
            "eid": f"e{rng.randrange(10**9)}",
            "tag": f"saline/beacon/{own_id}/x/y",
            "data": {},
        },
        "file_request": {"req": 1, "path": "top.yaml"},
        "pillar_request": {"req": 1},
    }.get(kind, {})
    fields.update(extra)
    for key in rng.sample(sorted(fields), rng.randrange(len(fields) + 1)):
        if rng.random() < 0.6:
            fields[key] = value(rng)
    if rng.random() < 0.2:
        fields[str(value(rng))[:10]] = value(rng)
    return fields


def frame(rng: random.Random, own_id: str) -> bytes:
    pick = rng.randrange(10)
    if pick == 0:
        return rng.randbytes(rng.randrange(64))
    if pick == 1:
        return msgpack.packb(value(rng), use_bin_type=True)
    if pick == 2:  # an envelope whose data (or grains, or ret) is nested deep
        head = {"v": 1, "kind": "event", "id": own_id, "eid": "deep", "tag": f"minion/{own_id}/d"}
        packer = msgpack.Packer(use_bin_type=True)
        out = packer.pack_map_header(len(head) + 1)
        for k, v in head.items():
            out += packer.pack(k) + packer.pack(v)
        return out + packer.pack("data") + b"\x81\xa1k" + deep(rng)
    data = msgpack.packb(envelope(rng, own_id), use_bin_type=True)
    if pick == 3 and data:
        return data[: rng.randrange(len(data))]
    if pick == 4 and data:
        flipped = bytearray(data)
        flipped[rng.randrange(len(flipped))] ^= 1 << rng.randrange(8)
        return bytes(flipped)
    return data


def dealer(
    ctx: zmq.Context[Any], master_pub: str, address: str, public: bytes, secret: bytes
) -> Any:
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.CURVE_SERVERKEY, master_pub.encode())
    sock.setsockopt(zmq.CURVE_PUBLICKEY, public)
    sock.setsockopt(zmq.CURVE_SECRETKEY, secret)
    sock.connect(address)
    return sock


def drain(sock: Any, replies: Counter[str], wait_ms: int = 0) -> None:
    """Count the replies waiting on ``sock``, waiting up to ``wait_ms`` for the first."""
    ready = sock.poll(wait_ms)
    while ready:
        try:
            replies[decode_from_master(sock.recv(), DEFAULT_MAX_FRAME).kind] += 1
        except ProtocolError:
            replies["undecodable"] += 1
        ready = sock.poll(0)


def run(frames: int, seed: int, minions: int) -> dict[str, Any]:
    rng = random.Random(seed)
    with tempfile.TemporaryDirectory(prefix="saline-fuzz-") as tmp:
        lab = Lab(Path(tmp) / "lab")
        lab.up(minions, timeout=60)
        try:
            pki = lab.directory / "master" / "pki"
            master_pub = read_keypair(pki, "master").public
            address = tcp_address("127.0.0.1", int(lab.state["port"]))
            public, secret = zmq.curve_keypair()
            own_id = f"fuzz-{secrets.token_hex(3)}"
            KeyRing(pki).add(own_id, public.decode(), KeyState.ACCEPTED)
            with lab.client() as master:
                before = Counter(master.request("status")["refusals"])
            ctx: zmq.Context[Any] = zmq.Context()
            accepted = dealer(ctx, master_pub, address, public, secret)
            strangers = [dealer(ctx, master_pub, address, *zmq.curve_keypair()) for _ in range(8)]
            replies: Counter[str] = Counter()
            started = time.perf_counter()
            for n in range(frames):
                sock = accepted if n % 2 == 0 else strangers[n % len(strangers)]
                sock.send(frame(rng, own_id), copy=False)
                if n % 500 == 0:
                    for s in (accepted, *strangers):
                        drain(s, replies)
                    if not lab.running()["master"]:
                        raise RuntimeError(f"the master died after {n} frames")
            elapsed = time.perf_counter() - started
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline and sum(replies.values()) < frames * 0.5:
                drain(accepted, replies, wait_ms=50)  # returns as soon as a reply is there
                for s in strangers:
                    drain(s, replies)
            alive = lab.running()["master"]
            with lab.client(timeout=30) as master:
                after = Counter(master.request("status")["refusals"])
                done = [m for m in master.stream("run", target="*", fun="test.ping")][-1]
            for s in (accepted, *strangers):
                s.close(linger=0)
            ctx.term()
        finally:
            lab.down()
    return {
        "frames": frames,
        "seconds": round(elapsed, 2),
        "frames_per_s": round(frames / elapsed),
        "master_alive": alive,
        "master_exits": 0 if alive else 1,
        "refusals": dict(sorted((after - before).items())),
        "refused_total": sum((after - before).values()),
        "replies": dict(sorted(replies.items())),
        "minions_answered_after": done["succeeded"],
        "minions_expected": sorted(lab.state["minions"]),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=100_000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--minions", type=int, default=4)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    result = run(args.frames, args.seed, args.minions)
    print(
        f"{result['frames']} frames in {result['seconds']} s ({result['frames_per_s']}/s);"
        f" master exits: {result['master_exits']}; refused {result['refused_total']}:"
        f" {result['refusals']}; replies {result['replies']};"
        f" test.ping afterwards: {len(result['minions_answered_after'])}"
        f"/{len(result['minions_expected'])} answered"
    )
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
