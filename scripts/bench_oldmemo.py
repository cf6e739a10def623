#!/usr/bin/python3
"""Benchmark python3-oldmemo's OMEMO 0.3 (eu.siacs.conversations.axolotl) costs, no XMPP server.

Run with the system interpreter (Debian's python3-omemo / python3-oldmemo), NOT pyenv's python3::

    /usr/bin/python3 scripts/bench_oldmemo.py [--iterations 50] [--json]

Level measured: python-omemo's high-level ``omemo.SessionManager`` with the ``oldmemo.Oldmemo`` backend
(what a real client such as tests/interop/omemo_peer.py drives). The PEP hooks read/write in-process dicts
shared by all managers (no network, no XML on the PEP side); python-omemo's own in-memory storage
(de)serialisation of sessions/keys IS included, as in a real client. Messages travel between the parties
as real <encrypted> XML: serialised with oldmemo.etree.serialize_message and parsed back with
oldmemo.etree.parse_message OUTSIDE the timed regions (so timings are crypto + session management, not XML).

Metrics (milliseconds):
  x3dh_build        alice.encrypt() of a first message to a fresh device of a fresh receiver (new identity
                    every iteration): bundle fetch from the in-memory PEP dict, trust decision, X3DH
                    (initiator), first Double Ratchet encryption of the 16+16-byte key||tag, AES-GCM of the
                    body, session store. The receiver's device list is fetched before timing (PEP push).
  first_decrypt     receiver.decrypt() of that PreKeySignalMessage: X3DH (responder) + first DR decrypt +
                    AES-GCM payload decrypt + session store + python-omemo's post-processing (pre key deletion,
                    refill of 1 pre key, bundle re-upload to the dict, and the automatic empty "session
                    completion" message it encrypts and hands to _send_message).
  ratchet_turn      one message encrypt (sender) + decrypt (receiver) where the direction alternates each turn
                    (A->B, B->A, ...), so every decrypt performs a DH ratchet step.
  encrypt_existing  sender encrypt of a same-direction message on an established, confirmed session
                    (symmetric-key ratchet step only).
  decrypt_existing  receiver decrypt of such a message (symmetric-key ratchet step only). The first message of
                    each same-direction run (which still carries the receiver's DH step) is not timed, and
                    runs are reset (untimed reply) before python-omemo's staleness heartbeat (53) could fire.
"""

import argparse
import asyncio
import json
import logging
import math
import statistics
import sys
import time
from typing import Any, Dict, FrozenSet, List, Optional, Tuple

import omemo
import oldmemo
import oldmemo.etree
from omemo.storage import Just, Maybe, Nothing, Storage
from omemo.types import DeviceInformation, JSONType, TrustLevel

NS = oldmemo.oldmemo.NAMESPACE
BODY = b"Hello, this is a benchmark message of moderate length. \xf0\x9f\x94\x90"

# ---- in-process "PEP" --------------------------------------------------------------------------------
PEP_BUNDLES: Dict[Tuple[str, int], omemo.Bundle] = {}
PEP_DEVICE_LISTS: Dict[str, Dict[int, Optional[str]]] = {}
OUTBOX: List[Tuple[str, omemo.Message]] = []  # (recipient bare jid, message) from _send_message


class MemStorage(Storage):
    def __init__(self) -> None:
        super().__init__()
        self._data: Dict[str, JSONType] = {}

    async def _load(self, key: str) -> Maybe[JSONType]:
        if key in self._data:
            return Just(self._data[key])
        return Nothing()

    async def _store(self, key: str, value: JSONType) -> Any:
        self._data[key] = value

    async def _delete(self, key: str) -> Any:
        self._data.pop(key, None)


def make_manager_class(own_jid: str) -> type:
    """_upload_device_list does not tell whose list it is, so each party gets its own subclass."""

    class MemSessionManager(omemo.SessionManager):
        @staticmethod
        async def _upload_bundle(bundle: omemo.Bundle) -> Any:
            PEP_BUNDLES[(bundle.bare_jid, bundle.device_id)] = bundle

        @staticmethod
        async def _download_bundle(namespace: str, bare_jid: str, device_id: int) -> omemo.Bundle:
            try:
                return PEP_BUNDLES[(bare_jid, device_id)]
            except KeyError:
                raise omemo.BundleNotFound(f"no bundle for {bare_jid}/{device_id}") from None

        @staticmethod
        async def _delete_bundle(namespace: str, device_id: int) -> Any:
            PEP_BUNDLES.pop((own_jid, device_id), None)

        @staticmethod
        async def _upload_device_list(namespace: str, device_list: Dict[int, Optional[str]]) -> Any:
            PEP_DEVICE_LISTS[own_jid] = dict(device_list)

        @staticmethod
        async def _download_device_list(namespace: str, bare_jid: str) -> Dict[int, Optional[str]]:
            return dict(PEP_DEVICE_LISTS.get(bare_jid, {}))

        async def _evaluate_custom_trust_level(self, device: DeviceInformation) -> TrustLevel:
            return TrustLevel.DISTRUSTED if device.trust_level_name == "distrusted" else TrustLevel.TRUSTED

        async def _make_trust_decision(self, undecided: FrozenSet[DeviceInformation],
                                       identifier: Optional[str]) -> Any:
            for device in undecided:
                await self.set_trust(device.bare_jid, device.identity_key, "blind")

        @staticmethod
        async def _send_message(message: omemo.Message, bare_jid: str) -> Any:
            OUTBOX.append((bare_jid, message))

    return MemSessionManager


class Party:
    def __init__(self, jid: str, sm: omemo.SessionManager) -> None:
        self.jid = jid
        self.sm = sm


async def new_party(jid: str) -> Party:
    storage = MemStorage()
    cls = make_manager_class(jid)
    sm = await cls.create([oldmemo.Oldmemo(storage)], storage, jid, None, "undecided")
    await sm.after_history_sync()
    return Party(jid, sm)


async def wire(msg: omemo.Message, sender: Party, receiver: Party) -> omemo.Message:
    """Serialise to <encrypted> XML and parse back as the receiver would (not timed)."""
    elt = oldmemo.etree.serialize_message(msg)
    return await oldmemo.etree.parse_message(elt, sender.jid, receiver.jid, receiver.sm)


async def encrypt(sender: Party, to: Party, body: bytes) -> omemo.Message:
    messages, errors = await sender.sm.encrypt(frozenset({to.jid}), {NS: body})
    if errors:
        raise RuntimeError(f"encryption errors: {errors}")
    return next(m for m in messages if m.namespace == NS)


async def decrypt(receiver: Party, msg: omemo.Message) -> Optional[bytes]:
    plaintext, _device, _pkm = await receiver.sm.decrypt(msg)
    return plaintext


async def deliver_outbox(parties: Dict[str, Party], sender: Party) -> None:
    """Deliver python-omemo's automatic empty messages (session completion) - not timed."""
    while OUTBOX:
        to, msg = OUTBOX.pop(0)
        rcpt = parties[to]
        await decrypt(rcpt, await wire(msg, sender, rcpt))


def ms(ns: int) -> float:
    return ns / 1e6


def summarize(samples: List[float]) -> Dict[str, float]:
    s = sorted(samples)
    p95 = s[max(0, math.ceil(0.95 * len(s)) - 1)]  # nearest-rank
    return {"median": round(statistics.median(s), 4), "p95": round(p95, 4), "min": round(s[0], 4)}


async def bench(n: int, log) -> Dict[str, List[float]]:
    res: Dict[str, List[float]] = {k: [] for k in
                                   ("x3dh_build", "first_decrypt", "ratchet_turn",
                                    "encrypt_existing", "decrypt_existing")}
    now = time.perf_counter_ns

    alice = await new_party("alice@bench.local")

    # --- x3dh_build / first_decrypt: fresh receiver identity each iteration ---
    for i in range(n):
        bob = await new_party(f"bob{i}@bench.local")
        parties = {alice.jid: alice, bob.jid: bob}
        await alice.sm.refresh_device_list(NS, bob.jid)  # PEP notification, not timed
        await bob.sm.refresh_device_list(NS, alice.jid)
        t0 = now()
        msg = await encrypt(alice, bob, BODY)
        t1 = now()
        res["x3dh_build"].append(ms(t1 - t0))
        wmsg = await wire(msg, alice, bob)
        if not any(kex is not None for _ekm, kex in wmsg.keys):
            raise RuntimeError("first message is not a PreKeySignalMessage")
        t0 = now()
        pt = await decrypt(bob, wmsg)
        t1 = now()
        res["first_decrypt"].append(ms(t1 - t0))
        if pt != BODY:
            raise RuntimeError("first_decrypt: plaintext mismatch")
        OUTBOX.clear()
    log(f"x3dh_build/first_decrypt done ({n})")

    # --- established session alice <-> bob ---
    bob = await new_party("bob@bench.local")
    parties = {alice.jid: alice, bob.jid: bob}
    await alice.sm.refresh_device_list(NS, bob.jid)
    await bob.sm.refresh_device_list(NS, alice.jid)
    OUTBOX.clear()
    await decrypt(bob, await wire(await encrypt(alice, bob, BODY), alice, bob))
    await deliver_outbox(parties, bob)  # bob's empty completion message confirms alice's session
    assert not OUTBOX

    # --- ratchet_turn: alternate direction every message ---
    # Last message was bob->alice (completion), so start with alice->bob.
    pair = [(alice, bob), (bob, alice)]
    for i in range(n):
        s, r = pair[i % 2]
        t0 = now()
        m = await encrypt(s, r, BODY)
        t1 = now()
        wm = await wire(m, s, r)
        t2 = now()
        pt = await decrypt(r, wm)
        t3 = now()
        if pt != BODY:
            raise RuntimeError("ratchet_turn: plaintext mismatch")
        if any(kex is not None for _e, kex in wm.keys):
            raise RuntimeError("ratchet_turn: unexpected key exchange on established session")
        res["ratchet_turn"].append(ms((t1 - t0) + (t3 - t2)))
        if OUTBOX:
            raise RuntimeError("unexpected automatic message during ratchet_turn")
    log(f"ratchet_turn done ({n})")

    # --- encrypt_existing / decrypt_existing: alice->bob same direction ---
    RUN = 40  # < STALENESS_MAGIC_NUMBER (53) incl. the untimed first message
    done = 0
    while done < n:
        # reset: bob replies (untimed), then alice's first message (bob's DH step) is untimed too
        await decrypt(alice, await wire(await encrypt(bob, alice, BODY), bob, alice))
        await decrypt(bob, await wire(await encrypt(alice, bob, BODY), alice, bob))
        for _ in range(min(RUN, n - done)):
            t0 = now()
            m = await encrypt(alice, bob, BODY)
            t1 = now()
            wm = await wire(m, alice, bob)
            t2 = now()
            pt = await decrypt(bob, wm)
            t3 = now()
            if pt != BODY:
                raise RuntimeError("decrypt_existing: plaintext mismatch")
            res["encrypt_existing"].append(ms(t1 - t0))
            res["decrypt_existing"].append(ms(t3 - t2))
            done += 1
        if OUTBOX:
            raise RuntimeError("unexpected automatic (heartbeat) message during *_existing")
    log(f"encrypt_existing/decrypt_existing done ({n})")
    return res


def impl_version(mod: Any) -> str:
    v = getattr(mod, "__version__", None)
    if isinstance(v, dict) and "short" in v:
        return str(v["short"])
    try:
        from importlib.metadata import version
        return version(mod.__name__)
    except Exception:  # noqa: BLE001
        return "unknown"


def main() -> int:
    ap = argparse.ArgumentParser(description="Benchmark python3-oldmemo OMEMO 0.3 costs (in-memory, no XMPP)")
    ap.add_argument("--iterations", type=int, default=50)
    ap.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    args = ap.parse_args()
    if args.iterations < 1:
        ap.error("--iterations must be >= 1")
    logging.basicConfig(level=logging.ERROR, stream=sys.stderr)

    def log(msg: str) -> None:
        print(f"[bench_oldmemo] {msg}", file=sys.stderr, flush=True)

    t_start = time.monotonic()
    samples = asyncio.run(bench(args.iterations, log))
    log(f"total {time.monotonic() - t_start:.1f}s")
    out = {
        "impl": f"python3-oldmemo {impl_version(oldmemo)}",
        "level": f"omemo.SessionManager (python-omemo {impl_version(omemo)})"
                 " + oldmemo.Oldmemo backend, in-memory storage & PEP dicts; XML (de)serialisation untimed",
        "iterations": args.iterations,
        "results": {k: summarize(v) for k, v in samples.items()},
    }
    if args.json:
        print(json.dumps(out))
    else:
        print(f"{out['impl']} — {out['level']} — {out['iterations']} iterations (ms)")
        for k, v in out["results"].items():
            print(f"  {k:17s} median {v['median']:9.3f}  p95 {v['p95']:9.3f}  min {v['min']:9.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
