import assert from "node:assert/strict";
import { filterRecords } from "../../media/webrtc.ts";
import { netTest, rtpText, sleep, withRelayedCall } from "./helpers.ts";

// Injected from the relay, i.e. from the address b validated through ICE, so the datagrams get past
// the source-address filter (tests/media/source_address.test.ts) and reach werift's DTLS code.

netTest(
  "injected plaintext DTLS alert on the media path does not tear down the call",
  () =>
    withRelayedCall(async ({ b, relay, rtpAtB, sendAToB }) => {
      const foreignBefore = b.stats().foreignSourceDrops;
      // record: type 21 (alert), DTLS 1.2 (fe fd), epoch 0, seq 99, length 2, warning(1) close_notify(0)
      await relay.injectToB(new Uint8Array([21, 0xfe, 0xfd, 0, 0, 0, 0, 0, 0, 0, 99, 0, 2, 1, 0]));
      // record with an unknown content type (werift treats any unknown type as an alert)
      await relay.injectToB(new Uint8Array([30, 0xfe, 0xfd, 0, 0, 0, 0, 0, 0, 0, 100, 0, 2, 1, 0]));
      await sleep(200);
      assert.equal(b.state().dtls, "connected");
      await sendAToB(1, "after");
      assert.equal(rtpAtB.length, 1);
      assert.equal(rtpText(rtpAtB[0]!), "after");
      assert.equal(b.stats().foreignSourceDrops, foreignBefore, "came from the validated address");
    }),
);

Deno.test("filterRecords: after the handshake only encrypted, non-alert records pass", () => {
  const rec = (type: number, epoch: number, body: number[]) =>
    new Uint8Array([type, 0xfe, 0xfd, 0, epoch, 0, 0, 0, 0, 0, 1, 0, body.length, ...body]);
  const cat = (...r: Uint8Array[]) => {
    const out = new Uint8Array(r.reduce((n, x) => n + x.length, 0));
    let o = 0;
    for (const x of r) out.set(x, o), o += x.length;
    return out;
  };
  const hs0 = rec(22, 0, [1, 2, 3]);
  const hs1 = rec(22, 1, [4, 5, 6]);
  const app1 = rec(23, 1, [7]);
  const app0 = rec(23, 0, [8]);
  const alert1 = rec(21, 1, [1, 0]);
  const unknown = rec(30, 1, [1, 0]);
  // during the handshake: everything known passes unchanged
  assert.deepEqual(filterRecords(cat(hs0, alert1), false), cat(hs0, alert1));
  assert.equal(filterRecords(unknown, false), undefined);
  // after: plaintext (epoch 0) and alerts are dropped
  assert.deepEqual(Uint8Array.from(filterRecords(cat(hs0, hs1, app0, alert1, app1), true)!), cat(hs1, app1));
  assert.equal(filterRecords(hs0, true), undefined);
  assert.equal(filterRecords(cat(alert1, unknown), true), undefined);
  // truncated record is dropped
  assert.equal(filterRecords(hs1.subarray(0, 10), true), undefined);
});

netTest(
  "fuzz: 600 random/garbled datagrams on the media path neither crash nor break the call",
  () =>
    withRelayedCall(async ({ b, relay, rtpAtB, sendAToB }) => {
      const firstBytes = [0, 1, 20, 21, 22, 23, 30, 63, 64, 127, 128, 0x80, 0x90, 0xa0, 0xbf, 0xc0, 255];
      for (let i = 0; i < 600; i++) {
        const len = [0, 1, 2, 4, 11, 12, 13, 16, 20, 28, 40, 120][i % 12]!;
        const d = crypto.getRandomValues(new Uint8Array(len));
        if (len > 0) d[0] = firstBytes[i % firstBytes.length]!;
        if (len > 1 && i % 3 === 0) d[1] = 200 + (i % 8); // RTCP-looking
        await relay.injectToB(d);
        if (i % 50 === 0) await sleep(5);
      }
      await sleep(100);
      assert.equal(b.state().dtls, "connected");
      await sendAToB(7, "still");
      assert.equal(rtpAtB.length, 1);
    }),
);
