import assert from "node:assert/strict";
import dgram from "node:dgram";
import { orderedSends } from "../../media/webrtc.ts";
import { makePair, sleep } from "./helpers.ts";

const opts = { sanitizeOps: false, sanitizeResources: false };

Deno.test({
  ...opts,
  name: "orderedSends keeps datagram order (Deno's node:dgram does not)",
  fn: async () => {
    const rx = dgram.createSocket("udp4");
    const tx = dgram.createSocket("udp4");
    await new Promise<void>((r) => rx.bind(0, "127.0.0.1", () => r()));
    await new Promise<void>((r) => tx.bind(0, "127.0.0.1", () => r()));
    const got: number[] = [];
    rx.on("message", (m) => got.push(m.readUInt32BE(0)));
    orderedSends(tx as unknown as Parameters<typeof orderedSends>[0]);
    const port = rx.address().port;
    // small bursts (a DTLS flight is 3-5 datagrams), paced so the receive buffer never overflows
    for (let burst = 0; burst < 40; burst++) {
      for (let i = 0; i < 5; i++) {
        const b = new Uint8Array(4);
        new DataView(b.buffer).setUint32(0, burst * 5 + i);
        tx.send(b, port, "127.0.0.1");
      }
      await sleep(2);
    }
    for (let i = 0; i < 100 && got.length < 200; i++) await sleep(10);
    tx.close();
    rx.close();
    assert.equal(got.length, 200);
    assert.deepEqual(got, [...got].sort((x, y) => x - y));
  },
});

Deno.test({
  ...opts,
  name: "50 concurrent loopback pairs in one process all connect",
  fn: async () => {
    const t0 = performance.now();
    const pairs = await Promise.all(Array.from({ length: 50 }, () => makePair()));
    const results = await Promise.allSettled(
      pairs.flatMap(({ a, b }) => [a.waitConnected(15000), b.waitConnected(15000)]),
    );
    const failed = results.filter((r) => r.status === "rejected");
    console.log(`50 pairs: ${(performance.now() - t0).toFixed(0)} ms, ${failed.length} peers failed`);
    await Promise.all(pairs.flatMap(({ a, b }) => [a.close(), b.close()]));
    assert.equal(failed.length, 0, JSON.stringify(failed.slice(0, 3)));
  },
});
