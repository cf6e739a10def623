import assert from "node:assert/strict";
import { ReplayWindow } from "../../media/webrtc.ts";
import { isSrtcp, isSrtp, netTest, rtpPacket, rtpText, waitFor, withRelayedCall } from "./helpers.ts";

// The attacker here is on the media path (the relay), so its packets come from the address b
// validated through ICE and reach the SRTP layer; off-path packets are tests/media/source_address.test.ts.

netTest(
  "forged SRTP (bad auth tag) injected on the media path is dropped and counted",
  () =>
    withRelayedCall(async ({ b, relay, rtpAtB, sendAToB }) => {
      const foreignBefore = b.stats().foreignSourceDrops;
      // plausible RTP header, random payload + 10-byte "tag"
      for (let i = 0; i < 5; i++) {
        await relay.injectToB(rtpPacket(1000 + i, crypto.getRandomValues(new Uint8Array(40)), 96));
      }
      await waitFor(() => b.stats().srtpAuthFailures >= 5);
      // a legitimate packet still gets through afterwards
      await sendAToB(1, "legit");
      assert.equal(b.stats().srtpAuthFailures, 5);
      assert.equal(rtpAtB.length, 1);
      assert.equal(rtpText(rtpAtB[0]!), "legit");
      assert.equal(b.stats().audio.packetsReceived, 1);
      assert.equal(b.stats().foreignSourceDrops, foreignBefore, "came from the validated address");
    }),
);

netTest(
  "replayed authentic SRTP packets are dropped and counted",
  () =>
    withRelayedCall(async ({ b, relay, rtpAtB, sendAToB }) => {
      for (let i = 0; i < 3; i++) await sendAToB(i, `p${i}`);
      assert.equal(rtpAtB.length, 3);
      const captured = relay.aToB.filter((d) => isSrtp(d) && !isSrtcp(d));
      assert.ok(captured.length >= 3, "captured SRTP on the wire");
      for (const pkt of captured.slice(-3)) await relay.injectToB(pkt);
      await waitFor(() => b.stats().srtpReplays >= 3);
      assert.equal(b.stats().srtpReplays, 3);
      assert.equal(rtpAtB.length, 3, "no replayed packet delivered");
      assert.equal(b.stats().srtpAuthFailures, 0);
    }),
);

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
