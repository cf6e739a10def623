/** werift (media/webrtc.ts, with its DTLS peer-authentication guard) <-> aiortc 1.4 (OpenSSL DTLS). */
import assert from "node:assert/strict";
import { createPeer, type Peer } from "../../media/webrtc.ts";
import { JsonLinePeer } from "./_peer.ts";

const PY = "/usr/bin/python3";
const script = new URL("./aiortc_peer.py", import.meta.url).pathname;
const hasAiortc = (() => {
  try {
    return new Deno.Command(PY, { args: ["-c", "import aiortc"], stderr: "null", stdout: "null" })
      .outputSync()
      .success;
  } catch {
    return false;
  }
})();

function rtp(seq: number): Uint8Array {
  const p = new Uint8Array(12 + 160).fill(0xff); // PCMU silence-ish payload
  const v = new DataView(p.buffer);
  p[0] = 0x80;
  p[1] = 0;
  v.setUint16(2, seq);
  v.setUint32(4, seq * 160);
  v.setUint32(8, 0xdecafbad);
  return p;
}

async function exchange(peer: Peer, py: JsonLinePeer) {
  await peer.waitConnected(15000);
  let received = 0;
  peer.onRtp(() => received++);
  for (let i = 0; i < 50; i++) {
    assert.ok(await peer.sendRtp("audio", rtp(i)));
    await new Promise((r) => setTimeout(r, 20));
  }
  await py.send({ cmd: "stats" });
  const st = await py.next((e) => e.event === "stats");
  console.log(`aiortc: ${JSON.stringify(st)}; werift received ${received} RTP, role ${peer.dtlsRole()}`);
  assert.equal(st.dtls, "connected");
  assert.ok((st.rtpReceived as number) >= 40, "aiortc received our SRTP");
  assert.ok(received >= 10, "werift received aiortc's SRTP");
  assert.equal(peer.stats().srtpAuthFailures, 0);
}

for (const weriftOffers of [true, false]) {
  Deno.test({
    name: `werift ${weriftOffers ? "offers" : "answers"}, aiortc ${
      weriftOffers ? "answers" : "offers"
    }: ICE + DTLS-SRTP (guard verifies OpenSSL's handshake) + RTP both ways`,
    ignore: !hasAiortc,
    sanitizeOps: false,
    sanitizeResources: false,
    fn: async () => {
      const py = new JsonLinePeer(PY, [script]);
      const peer = await createPeer({
        role: weriftOffers ? "initiator" : "responder",
        audio: true,
        video: false,
      });
      try {
        if (weriftOffers) {
          const offer = await peer.createOffer();
          await py.send({ cmd: "answer", sdp: offer });
          const ans = await py.next((e) => e.event === "answer");
          await peer.setRemoteDescription("answer", ans.sdp as string);
        } else {
          await py.send({ cmd: "offer" });
          const off = await py.next((e) => e.event === "offer");
          await peer.setRemoteDescription("offer", off.sdp as string);
          const answer = await peer.createAnswer();
          await py.send({ cmd: "remote-answer", sdp: answer });
          await py.next((e) => e.event === "ok");
        }
        await exchange(peer, py);
        assert.ok(peer.remoteCertificateFingerprint());
      } finally {
        await peer.close();
        await py.send({ cmd: "close" }).catch(() => {});
        await py.close().catch(() => {});
      }
    },
  });
}
