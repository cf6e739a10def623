import assert from "node:assert/strict";
import { makePair, netTest, rtpPacket, rtpText, waitFor } from "./helpers.ts";

netTest("loopback pair connects over real UDP and exchanges SRTP both ways", async () => {
  const t0 = performance.now();
  const { a, b } = await makePair();
  try {
    await Promise.all([a.waitConnected(), b.waitConnected()]);
    const setupMs = performance.now() - t0;
    console.log(`setup ${setupMs.toFixed(1)} ms`);
    const gotA: Uint8Array[] = [];
    const gotB: Uint8Array[] = [];
    a.onRtp((e) => gotA.push(e.packet));
    b.onRtp((e) => gotB.push(e.packet));
    for (let i = 0; i < 10; i++) {
      assert.ok(await a.sendRtp("audio", rtpPacket(i, new TextEncoder().encode(`a->b ${i}`))));
      assert.ok(await b.sendRtp("audio", rtpPacket(i, new TextEncoder().encode(`b->a ${i}`))));
    }
    await waitFor(() => gotA.length >= 10 && gotB.length >= 10);
    assert.equal(gotB.length, 10);
    assert.equal(gotA.length, 10);
    assert.equal(rtpText(gotB[3]!), "a->b 3");
    assert.equal(rtpText(gotA[7]!), "b->a 7");
    assert.equal(a.stats().audio.packetsSent, 10);
    assert.equal(b.stats().audio.packetsReceived, 10);
    assert.equal(a.stats().srtpAuthFailures, 0);
    // fingerprint of the certificate actually presented == the one each side signalled
    assert.equal(a.remoteCertificateFingerprint(), b.localFingerprint());
    assert.equal(b.remoteCertificateFingerprint(), a.localFingerprint());
    assert.match(a.localFingerprint(), /^([0-9A-F]{2}:){31}[0-9A-F]{2}$/);
  } finally {
    await a.close();
    await b.close();
  }
});
