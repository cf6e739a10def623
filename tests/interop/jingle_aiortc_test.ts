/**
 * Interop of whole calls with an independent Jingle client: tests/interop/jingle_aiortc_peer.py (python3-aiortc
 * 1.4 + python3-slixmpp 1.8, its own Jingle⇄SDP mapping) calls the bot and is called by it through a real
 * Prosody: JMI, session-initiate/accept with inline candidates, plain XEP-0320 fingerprints (the bot's
 * `verify: "prefer"` falls back to them), ICE + DTLS-SRTP between werift and aiortc, RTP both ways, hangup.
 */
import assert from "node:assert/strict";
import { endpointOn, quiet } from "../bot/_support.ts";
import type { Endpoint } from "../../bot/endpoint.ts";
import { type Call, type Calls, setupCalls } from "../../bot/calls.ts";
import { type ProsodyServer, startProsody } from "../../scripts/prosody.ts";
import { NS_DTLS, NS_JINGLE } from "../../jingle/mod.ts";
import type { Element } from "../../xmpp/mod.ts";
import { JsonLinePeer, type PeerEvent } from "./_peer.ts";

const PY = "/usr/bin/python3";
const script = new URL("./jingle_aiortc_peer.py", import.meta.url).pathname;
const hasPeerDeps = (() => {
  try {
    return new Deno.Command(PY, { args: ["-c", "import aiortc, slixmpp"], stderr: "null", stdout: "null" })
      .outputSync()
      .success;
  } catch {
    return false;
  }
})();

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Starts the Python peer as `user@domain/aiortc` and waits for its `ready`. */
async function startPeer(server: ProsodyServer, user: string, extra: string[] = []): Promise<JsonLinePeer> {
  await server.createAccount(user, "pw");
  const peer = new JsonLinePeer(PY, [
    script,
    "--jid",
    `${user}@${server.domain}/aiortc`,
    "--password",
    "pw",
    "--host",
    server.host,
    "--port",
    String(server.c2sPort),
    "--ca",
    server.certificatePath,
    ...extra,
  ]);
  const ready = await peer.next((e) => e.event === "ready" || e.event === "error", 30_000);
  assert.equal(ready.event, "ready", JSON.stringify(ready));
  return peer;
}

function nextIncoming(calls: Calls): Promise<Call> {
  return new Promise((resolve) => {
    const off = calls.onIncoming((c) => {
      off();
      resolve(c);
    });
  });
}

/** An RTP packet carrying one 20 ms Opus silence frame (werift rewrites SSRC and PT to the negotiated ones). */
function opusPacket(seq: number): Uint8Array {
  const p = new Uint8Array(12 + 3);
  const v = new DataView(p.buffer);
  p[0] = 0x80;
  p[1] = 111;
  v.setUint16(2, seq & 0xffff);
  v.setUint32(4, seq * 960);
  v.setUint32(8, 0x5eed1234);
  p.set([0xf8, 0xff, 0xfe], 12);
  return p;
}

let nextSeq = 1;

/** Alters the plain fingerprints in `e`'s outgoing Jingle IQs of `action` (a man in the middle on the
 * signalling path); returns the undo. */
function tamperFingerprints(e: Endpoint, action: string): () => void {
  const conn = e.conn;
  const orig = conn.iq.bind(conn);
  conn.iq = (stanza, o) => {
    const j = stanza.getChild("jingle", NS_JINGLE);
    if (j?.attrs.action === action) {
      for (const content of j.getChildren("content")) {
        for (const t of content.getChildElements().filter((x: Element) => x.name === "transport")) {
          const fp = t.getChild("fingerprint", NS_DTLS)!;
          const v = fp.text();
          fp.children = [(v.startsWith("00") ? "11" : "00") + v.slice(2)];
        }
      }
    }
    return orig(stanza, o);
  };
  return () => void (conn.iq = orig);
}

/** Sends 25 packets (20 ms apart) from the bot and checks both sides' counters: RTP went both ways. */
async function exchangeRtp(call: Call, py: JsonLinePeer, sid: string): Promise<void> {
  const before = call.peer!.stats().audio;
  for (let i = 0; i < 25; i++) {
    assert.ok(await call.peer!.sendRtp("audio", opusPacket(nextSeq++)), "bot could send RTP");
    await sleep(20);
  }
  let st: PeerEvent | undefined;
  for (let i = 0; i < 50; i++) {
    await py.send({ cmd: "stats", sid });
    st = await py.next((e) => e.event === "stats");
    if ((st.rtpReceived as number) >= 20) break;
    await sleep(20);
  }
  const after = call.peer!.stats();
  assert.equal(st!.live, true);
  assert.equal(st!.dtls, "connected");
  assert.equal(after.audio.packetsSent - before.packetsSent, 25);
  assert.ok((st!.rtpReceived as number) >= 20, `aiortc received the bot's SRTP: ${JSON.stringify(st)}`);
  assert.ok((st!.rtpSent as number) > 0, "aiortc sent RTP");
  assert.ok(after.audio.packetsReceived > 0, "the bot received aiortc's SRTP");
  assert.equal(after.srtpAuthFailures, 0);
  assert.ok(call.phases.firstRtpReceived !== undefined);
}

Deno.test({
  name: "Jingle calls between the bot and an independent aiortc/slixmpp client through a real Prosody",
  ignore: !hasPeerDeps,
  sanitizeOps: false,
  sanitizeResources: false,
  async fn(t) {
    const server = await startProsody();
    const tmp = await Deno.makeTempDir({ prefix: "interop-jingle-aiortc-" });
    const peers: JsonLinePeer[] = [];
    let bot: Endpoint | undefined;
    let calls: Calls | undefined;
    try {
      bot = await endpointOn(server, "bot", tmp);
      calls = await setupCalls(bot, { verify: "prefer", logger: quiet, connectTimeoutMs: 15_000 });
      const carol = await startPeer(server, "carol");
      peers.push(carol);
      const carolBare = `carol@${server.domain}`;

      await t.step("aiortc calls the bot: connected, RTP both ways, aiortc hangs up → success", async () => {
        const incoming = nextIncoming(calls!);
        await carol.send({ cmd: "call", to: bot!.conn.bareJid });
        const proposed = await carol.next((e) => e.event === "proposed");
        const b = await incoming;
        assert.equal(b.sid, proposed.sid);
        assert.equal(b.direction, "incoming");
        await b.connected;
        const connected = await carol.next((e) => e.event === "connected" && e.sid === b.sid);
        assert.equal(connected.dtls, "connected");
        assert.equal(b.verification.omemo, false, "plain XEP-0320 fingerprint");
        assert.equal(b.peerJid, `${carolBare}/aiortc`);
        await exchangeRtp(b, carol, b.sid);
        await carol.send({ cmd: "hangup", sid: b.sid });
        const ended = await carol.next((e) => e.event === "ended" && e.sid === b.sid);
        assert.equal(ended.reason, "success");
        assert.equal(ended.by, "local");
        assert.equal((await b.ended).reason, "success");
        assert.ok((ended.rtpReceived as number) >= 20 && (ended.rtpSent as number) > 0);
      });

      await t.step("the bot calls aiortc: connected, RTP both ways, the bot hangs up → success", async () => {
        const a = await calls!.call(carolBare);
        const incoming = await carol.next((e) => e.event === "incoming");
        assert.equal(incoming.sid, a.sid);
        assert.equal(incoming.from, bot!.conn.jid);
        await a.connected;
        await carol.next((e) => e.event === "connected" && e.sid === a.sid);
        assert.equal(a.verification.omemo, false);
        assert.equal(a.peerJid, `${carolBare}/aiortc`);
        // aiortc answers setup=active: it is the DTLS client and sends its ClientHello as soon as its own ICE
        // is done, often before ours is. It must be kept for our DTLS server, not lost to OpenSSL's 1 s resend.
        assert.equal(a.peer!.dtlsRole(), "server");
        assert.equal(a.peer!.stats().dtlsInitialClientHellos, 1, "aiortc sent its ClientHello once");
        await exchangeRtp(a, carol, a.sid);
        await a.hangup();
        assert.deepEqual(await a.ended, { reason: "success" });
        const ended = await carol.next((e) => e.event === "ended" && e.sid === a.sid);
        assert.equal(ended.reason, "success");
        assert.equal(ended.by, "remote");
        assert.ok((ended.rtpReceived as number) >= 20 && (ended.rtpSent as number) > 0);
      });

      const mallory = await startPeer(server, "mallory", ["--bad-fingerprint"]);
      peers.push(mallory);
      const malloryBare = `mallory@${server.domain}`;

      await t.step(
        "aiortc answers with a fingerprint ≠ its certificate → security-error, no media",
        async () => {
          const a = await calls!.call(malloryBare);
          await assert.rejects(a.connected);
          const end = await a.ended;
          assert.equal(end.reason, "security-error", JSON.stringify(end));
          assert.equal(a.phases.firstRtpReceived, undefined);
          assert.equal(a.peer?.stats().audio.packetsReceived ?? 0, 0);
          assert.equal(await a.peer?.sendRtp("audio", opusPacket(nextSeq++)) ?? false, false);
          const ended = await mallory.next((e) => e.event === "ended" && e.sid === a.sid);
          assert.equal(ended.by, "remote");
          assert.equal(ended.reason, "security-error");
          assert.equal(ended.rtpReceived, 0);
        },
      );

      await t.step(
        "aiortc calls with a fingerprint ≠ its certificate → security-error, no media",
        async () => {
          const incoming = nextIncoming(calls!);
          await mallory.send({ cmd: "call", to: bot!.conn.bareJid });
          const b = await incoming;
          await assert.rejects(b.connected);
          assert.equal((await b.ended).reason, "security-error");
          assert.equal(b.phases.firstRtpReceived, undefined);
          assert.equal(b.peer?.stats().audio.packetsReceived ?? 0, 0);
          const ended = await mallory.next((e) => e.event === "ended" && e.sid === b.sid);
          assert.equal(ended.reason, "security-error");
          assert.equal(ended.rtpReceived, 0);
        },
      );

      await t.step(
        "the bot's initiate fingerprint altered in transit → aiortc refuses: security-error",
        async () => {
          const undo = tamperFingerprints(bot!, "session-initiate");
          try {
            const a = await calls!.call(carolBare);
            const ended = await carol.next((e) => e.event === "ended" && e.sid === a.sid);
            assert.equal(ended.by, "local");
            assert.equal(ended.reason, "security-error", JSON.stringify(ended));
            assert.match(ended.text as string, /does not match the signalled fingerprint/);
            assert.equal(ended.rtpReceived, 0);
            assert.equal(ended.rtpSent, 0);
            assert.equal((await a.ended).reason, "security-error");
            assert.equal(a.peer?.stats().audio.packetsReceived ?? 0, 0);
          } finally {
            undo();
          }
        },
      );

      await t.step("after the refused calls a good call still works (no state left behind)", async () => {
        const a = await calls!.call(carolBare);
        await a.connected;
        await exchangeRtp(a, carol, a.sid);
        await a.hangup();
        assert.equal((await a.ended).reason, "success");
        assert.equal((await carol.next((e) => e.event === "ended" && e.sid === a.sid)).reason, "success");
      });

      const dave = await startPeer(server, "dave", ["--answer", "manual"]);
      peers.push(dave);

      await t.step(
        "aiortc declines the bot's call (JMI reject) → the bot's call ends with decline",
        async () => {
          const a = await calls!.call(`dave@${server.domain}`);
          const incoming = await dave.next((e) => e.event === "incoming");
          assert.equal(incoming.sid, a.sid);
          await dave.send({ cmd: "reject", sid: a.sid });
          assert.equal((await a.ended).reason, "decline");
          assert.equal(a.peer?.stats().audio.packetsReceived ?? 0, 0);
          assert.equal((await dave.next((e) => e.event === "ended" && e.sid === a.sid)).by, "local");
        },
      );

      await t.step("aiortc answers by command after ringing → connected, RTP both ways", async () => {
        const a = await calls!.call(`dave@${server.domain}`);
        await dave.next((e) => e.event === "incoming" && e.sid === a.sid);
        // Our <ringing/> went out before the `incoming` event; let the bot read it.
        for (let i = 0; i < 100 && a.state !== "ringing"; i++) await sleep(10);
        assert.equal(a.state, "ringing");
        await dave.send({ cmd: "accept", sid: a.sid });
        await a.connected;
        await exchangeRtp(a, dave, a.sid);
        await dave.send({ cmd: "hangup", sid: a.sid });
        assert.equal((await a.ended).reason, "success");
      });
    } finally {
      for (const p of peers) await p.close().catch(() => {});
      await calls?.stop().catch(() => {});
      await bot?.close().catch(() => {});
      await server.stop();
      await Deno.remove(tmp, { recursive: true }).catch(() => {});
    }
  },
});
