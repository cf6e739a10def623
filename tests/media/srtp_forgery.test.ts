import assert from "node:assert/strict";
import dgram from "node:dgram";
import { ReplayWindow } from "../../media/webrtc.ts";
import { makePair, rtpPacket, sleep } from "./helpers.ts";

Deno.test({
  name: "forged SRTP (bad auth tag) injected on the media port is dropped and counted",
  sanitizeOps: false,
  sanitizeResources: false,
  fn: async () => {
    const { a, b, candidates } = await makePair();
    const attacker = dgram.createSocket("udp4");
    try {
      await Promise.all([a.waitConnected(), b.waitConnected()]);
      const got: Uint8Array[] = [];
      b.onRtp((e) => got.push(e.packet));
      const host = candidates.b.map((c) => c.candidate.split(" ")).find((f) => f[7] === "host");
      assert.ok(host, "victim host candidate");
      const [addr, port] = [host[4]!, Number(host[5])];

      // forged packets: plausible RTP header, random payload + 10-byte "tag"
      const forged = (i: number) => {
        const p = rtpPacket(1000 + i, crypto.getRandomValues(new Uint8Array(40)), 96);
        return p;
      };
      for (let i = 0; i < 5; i++) {
        await new Promise<void>((r) => attacker.send(forged(i), port, addr, () => r()));
      }
      // a legitimate packet still gets through afterwards
      assert.ok(await a.sendRtp("audio", rtpPacket(1, new TextEncoder().encode("legit"))));
      for (let i = 0; i < 50 && (b.stats().srtpAuthFailures < 5 || got.length < 1); i++) await sleep(20);
      assert.equal(b.stats().srtpAuthFailures, 5);
      assert.equal(got.length, 1);
      assert.equal(new TextDecoder().decode(got[0]!.subarray(12)), "legit");
      assert.equal(b.stats().audio.packetsReceived, 1);
    } finally {
      attacker.close();
      await a.close();
      await b.close();
    }
  },
});

Deno.test({
  name: "replayed authentic SRTP packets are dropped and counted",
  sanitizeOps: false,
  sanitizeResources: false,
  fn: async () => {
    const proto = dgram.Socket.prototype as unknown as { send: (...a: unknown[]) => unknown };
    const orig = proto.send;
    const captured: Uint8Array[] = [];
    proto.send = function (this: unknown, ...args: unknown[]) {
      const m = args[0];
      if (
        m instanceof Uint8Array && m.length > 12 && m[0]! >= 128 && m[0]! < 192 &&
        (m[1]! < 192 || m[1]! > 223)
      ) {
        captured.push(Uint8Array.from(m));
      }
      return orig.apply(this, args);
    };
    const { a, b, candidates } = await makePair();
    const attacker = dgram.createSocket("udp4");
    try {
      await Promise.all([a.waitConnected(), b.waitConnected()]);
      const got: Uint8Array[] = [];
      b.onRtp((e) => got.push(e.packet));
      for (let i = 0; i < 3; i++) await a.sendRtp("audio", rtpPacket(i, new TextEncoder().encode(`p${i}`)));
      for (let i = 0; i < 50 && got.length < 3; i++) await sleep(10);
      assert.equal(got.length, 3);
      assert.ok(captured.length >= 3, "captured SRTP from the wire");
      const host = candidates.b.map((c) => c.candidate.split(" ")).find((f) => f[7] === "host")!;
      for (const pkt of captured.slice(-3)) {
        await new Promise<void>((r) => attacker.send(pkt, Number(host[5]), host[4]!, () => r()));
      }
      for (let i = 0; i < 50 && b.stats().srtpReplays < 3; i++) await sleep(10);
      assert.equal(b.stats().srtpReplays, 3);
      assert.equal(got.length, 3, "no replayed packet delivered");
      assert.equal(b.stats().srtpAuthFailures, 0);
    } finally {
      proto.send = orig;
      attacker.close();
      await a.close();
      await b.close();
    }
  },
});

Deno.test("ReplayWindow: duplicates and too-old packets rejected, reordering within 64 accepted, seq wrap", () => {
  const w = new ReplayWindow();
  assert.ok(w.accept(1, 100));
  assert.ok(!w.accept(1, 100));
  assert.ok(w.accept(1, 102));
  assert.ok(w.accept(1, 101)); // late but inside the window
  assert.ok(!w.accept(1, 101));
  assert.ok(w.accept(1, 200));
  assert.ok(!w.accept(1, 120)); // 80 behind: outside the window
  assert.ok(w.accept(2, 100)); // other SSRC independent
  // wrap-around
  assert.ok(w.accept(3, 65534));
  assert.ok(w.accept(3, 65535));
  assert.ok(w.accept(3, 0));
  assert.ok(w.accept(3, 1));
  assert.ok(!w.accept(3, 65535));
  assert.ok(!w.accept(3, 0));
});
