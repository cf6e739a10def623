/** werift (media/webrtc.ts, with its DTLS peer-authentication guard) <-> aiortc 1.4 (OpenSSL DTLS). */
import assert from "node:assert/strict";
import { createPeer, mediaTuning, type Peer } from "../../media/webrtc.ts";
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

/** werift offers (ICE controlling, so DTLS server: aiortc answers setup=active) and aiortc answers. */
async function weriftOffersToAiortc(peer: Peer, py: JsonLinePeer) {
  const offer = await peer.createOffer();
  await py.send({ cmd: "answer", sdp: offer });
  const ans = await py.next((e) => e.event === "answer");
  await peer.setRemoteDescription("answer", ans.sdp as string);
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
        if (weriftOffers) await weriftOffersToAiortc(peer, py);
        else {
          await py.send({ cmd: "offer" });
          const off = await py.next((e) => e.event === "offer");
          await peer.setRemoteDescription("offer", off.sdp as string);
          const answer = await peer.createAnswer();
          await py.send({ cmd: "remote-answer", sdp: answer });
          await py.next((e) => e.event === "ok");
        }
        await exchange(peer, py);
        assert.ok(peer.remoteCertificateFingerprint());
        if (weriftOffers) {
          // aiortc (OpenSSL) is the DTLS client. Its ClientHello often arrives before werift's ICE side
          // has finished and started DTLS; it must be kept, not lost to OpenSSL's 1 s retransmission.
          assert.equal(peer.dtlsRole(), "server");
          assert.equal(peer.stats().dtlsInitialClientHellos, 1, "aiortc never retransmitted its ClientHello");
        } else {
          assert.equal(peer.dtlsRole(), "client");
        }
      } finally {
        await peer.close();
        await py.send({ cmd: "close" }).catch(() => {});
        await py.close().catch(() => {});
      }
    },
  });
}

// The race made certain: werift's DTLS layer starts 300 ms after its ICE is connected, so aiortc's first
// ClientHello surely arrives before anything listens. With the replay it is handed to the DTLS server when
// that starts and the handshake needs no retransmission; without it (werift's own behaviour) it is lost
// and OpenSSL has to send it again after its 1 s timer, which the counter shows.
for (const replay of [true, false]) {
  Deno.test({
    name: replay
      ? "werift as DTLS server starting late: aiortc's early ClientHello is buffered and replayed, never retransmitted"
      : "without the early-record replay aiortc has to retransmit its ClientHello (what the counter detects)",
    ignore: !hasAiortc,
    sanitizeOps: false,
    sanitizeResources: false,
    fn: async () => {
      const py = new JsonLinePeer(PY, [script]);
      const peer = await createPeer({ role: "initiator", audio: true, video: false });
      const saved = { ...mediaTuning };
      mediaTuning.dtlsStartDelayMs = 300;
      mediaTuning.replayEarlyDtls = replay;
      try {
        await weriftOffersToAiortc(peer, py);
        await peer.waitConnected(15000);
        assert.equal(peer.dtlsRole(), "server");
        const st = peer.stats();
        console.log(
          `early DTLS: ${JSON.stringify(st, (k, v) => k === "audio" || k === "video" ? undefined : v)}`,
        );
        assert.equal(st.foreignSourceDrops, 0);
        assert.equal(st.earlyDtlsRecordsDropped, 0);
        if (replay) {
          assert.ok(st.earlyDtlsRecordsReplayed >= 1, "the early ClientHello was replayed");
          assert.equal(st.dtlsInitialClientHellos, 1, "aiortc sent its ClientHello once");
        } else {
          assert.equal(st.earlyDtlsRecordsReplayed, 0);
          assert.ok(st.dtlsInitialClientHellos >= 2, "the lost ClientHello was retransmitted");
        }
        await exchange(peer, py);
      } finally {
        Object.assign(mediaTuning, saved);
        await peer.close();
        await py.send({ cmd: "close" }).catch(() => {});
        await py.close().catch(() => {});
      }
    },
  });
}
