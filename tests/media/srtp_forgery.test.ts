import assert from "node:assert/strict";
import dgram from "node:dgram";
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
