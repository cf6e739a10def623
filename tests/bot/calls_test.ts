import assert from "node:assert/strict";
import { endpointOn, quiet } from "./_support.ts";
import { rtpPacket, sleep } from "../media/helpers.ts";
import type { Endpoint } from "../../bot/endpoint.ts";
import { type Call, type Calls, type CallsOptions, setupCalls } from "../../bot/calls.ts";
import { buildRecord, summarize } from "../../bot/records.ts";
import { startProsody } from "../../scripts/prosody.ts";
import { buildJingleIq, NS_DTLS, NS_JINGLE, NS_OMEMO_DTLS } from "../../jingle/mod.ts";
import { type Element, StanzaError, xml } from "../../xmpp/mod.ts";
import type { MediaKind } from "../../media/webrtc.ts";

const verbose = Deno.env.get("CALLS_DEBUG")
  ? {
    debug: (m: string, f?: unknown) => console.log("D", m, f ?? ""),
    info: (m: string, f?: unknown) => console.log("I", m, f ?? ""),
    warn: (m: string, f?: unknown) => console.log("W", m, f ?? ""),
    error: (m: string, f?: unknown) => console.log("E", m, f ?? ""),
  }
  : quiet;

/** Minimal RTP packet: V=2, PT, seq, ts, ssrc, payload. */
let nextSeq = 1;

/** Rewrites outgoing Jingle IQs of `action` sent by `e` (a man in the middle on the signalling path). */
function tamper(e: Endpoint, action: string, fn: (jingle: Element) => void): () => void {
  const conn = e.conn;
  const orig = conn.iq.bind(conn);
  conn.iq = (stanza, o) => {
    const j = stanza.getChild("jingle", NS_JINGLE);
    if (j?.attrs.action === action) fn(j);
    return orig(stanza, o);
  };
  return () => void (conn.iq = orig);
}

function transports(j: Element): Element[] {
  return j.getChildren("content").flatMap((c) => c.getChildElements().filter((x) => x.name === "transport"));
}

function nextIncoming(calls: Calls): Promise<Call> {
  return new Promise((resolve) => {
    const off = calls.onIncoming((c) => {
      off();
      resolve(c);
    });
  });
}

async function exchangeRtp(a: Call, b: Call, kind: MediaKind, n = 10) {
  const gotA: Uint8Array[] = [];
  const gotB: Uint8Array[] = [];
  const offA = a.peer!.onRtp((e) => e.kind === kind && gotA.push(e.packet));
  const offB = b.peer!.onRtp((e) => e.kind === kind && gotB.push(e.packet));
  const before = { a: a.peer!.stats()[kind], b: b.peer!.stats()[kind] };
  for (let i = 0; i < n; i++) {
    // Sequence numbers keep increasing across exchanges in one call: the SRTP replay window drops repeats.
    const seq = nextSeq++;
    assert.ok(await a.peer!.sendRtp(kind, rtpPacket(seq, new TextEncoder().encode(`a->b ${kind} ${i}`))));
    assert.ok(await b.peer!.sendRtp(kind, rtpPacket(seq, new TextEncoder().encode(`b->a ${kind} ${i}`))));
  }
  for (let i = 0; i < 100 && (gotA.length < n || gotB.length < n); i++) await sleep(20);
  offA();
  offB();
  assert.equal(gotB.length, n, `${kind} a→b`);
  assert.equal(gotA.length, n, `${kind} b→a`);
  assert.equal(new TextDecoder().decode(gotB[n - 1]!.subarray(12)), `a->b ${kind} ${n - 1}`);
  assert.equal(new TextDecoder().decode(gotA[0]!.subarray(12)), `b->a ${kind} 0`);
  const sa = a.peer!.stats();
  const sb = b.peer!.stats();
  assert.equal(sa[kind].packetsSent - before.a.packetsSent, n);
  assert.equal(sb[kind].packetsReceived - before.b.packetsReceived, n);
  assert.equal(sb[kind].packetsSent - before.b.packetsSent, n);
  assert.equal(sa[kind].packetsReceived - before.a.packetsReceived, n);
  assert.equal(sa.srtpAuthFailures, 0);
  assert.equal(sb.srtpAuthFailures, 0);
}

function phaseLine(label: string, c: Call) {
  const p = c.phases;
  const t0 = p.proposed ?? 0;
  const rel = (x?: number) => (x === undefined ? "-" : (x - t0).toFixed(1));
  return `${label}: proceed ${rel(p.proceed)} initiate ${rel(p.initiate)} accept ${rel(p.accept)} ice ${
    rel(p.iceConnected)
  } dtls ${rel(p.dtlsConnected)} rtpOut ${rel(p.firstRtpSent)} rtpIn ${rel(p.firstRtpReceived)} ended ${
    rel(p.ended)
  } ms`;
}

Deno.test({
  name: "setupCalls(): bot-to-bot calls over a real Prosody with OMEMO-verified DTLS, fallbacks and errors",
  sanitizeOps: false,
  sanitizeResources: false,
  async fn(t) {
    const server = await startProsody();
    const tmp = await Deno.makeTempDir({ prefix: "calls-test-" });
    const open: Endpoint[] = [];
    const stops: Calls[] = [];
    const connect = async (user: string) => {
      const e = await endpointOn(server, user, tmp);
      open.push(e);
      return e;
    };
    const calls = async (e: Endpoint, o: CallsOptions = {}) => {
      const c = await setupCalls(e, { logger: verbose, ...o });
      stops.push(c);
      return c;
    };
    const dial = async (from: Calls, to: Calls, toEndpoint: Endpoint, video = false) => {
      const incoming = nextIncoming(to);
      const a = await from.call(toEndpoint.conn.bareJid, { video });
      const b = await incoming;
      return { a, b };
    };
    try {
      const alice = await connect("alice");
      const bob = await connect("bob");
      const aliceCalls = await calls(alice, { verify: "require" });
      const bobCalls = await calls(bob, { verify: "prefer" });

      await t.step("disco advertises the call features", () => {
        for (
          const f of ["urn:xmpp:jingle:1", "urn:xmpp:jingle-message:0", "urn:xmpp:jingle:apps:rtp:audio"]
        ) {
          assert.ok(alice.disco.features().includes(f), f);
        }
      });

      await t.step("audio call, OMEMO-verified both ways, RTP both ways, hangup → success", async () => {
        let acceptCandidates = -1;
        const undo = tamper(bob, "session-accept", (j) => {
          acceptCandidates = transports(j).reduce((n, t) => n + t.getChildren("candidate").length, 0);
        });
        const { a, b } = await dial(aliceCalls, bobCalls, bob);
        assert.equal(a.direction, "outgoing");
        assert.equal(b.direction, "incoming");
        assert.equal(a.sid, b.sid);
        await Promise.all([a.connected, b.connected]);
        assert.equal(a.state, "active");
        assert.equal(b.state, "active");
        assert.equal(a.verification.omemo, true);
        assert.equal(b.verification.omemo, true);
        assert.equal(a.verification.deviceId, bob.deviceId);
        assert.equal(b.verification.deviceId, alice.deviceId);
        assert.ok(a.verification.identityFingerprint);
        undo();
        assert.ok(acceptCandidates > 0, "session-accept carries candidates (Conversations pitfall)");
        await exchangeRtp(a, b, "audio");
        const stats = { a: a.peer!.stats(), b: b.peer!.stats() };
        await a.hangup();
        assert.deepEqual(await a.ended, { reason: "success" });
        assert.equal((await b.ended).reason, "success");
        // The call records carry the media plane's security counters: nothing dropped on a normal call.
        for (const [call, st, by] of [[a, stats.a, "local"], [b, stats.b, "remote"]] as const) {
          const record = buildRecord(call, { ended: await call.ended, endedBy: by, stats: st });
          assert.ok("foreignSourceDrops" in record, "the record has foreignSourceDrops");
          assert.equal(record.foreignSourceDrops, 0);
          assert.equal(record.srtpAuthFailures, 0);
          assert.equal(record.traffic.audio?.packetsReceived, 10);
          assert.match(summarize(record), /datagrams from unvalidated addresses dropped 0/);
        }
        console.log(phaseLine("audio caller", a));
        console.log(phaseLine("audio callee", b));
      });

      await t.step("audio+video call, verified, RTP on both media", async () => {
        const { a, b } = await dial(bobCalls, aliceCalls, alice, true);
        assert.deepEqual(b.media, ["audio", "video"]);
        await Promise.all([a.connected, b.connected]);
        assert.equal(a.verification.omemo, true);
        assert.equal(b.verification.omemo, true);
        assert.equal(a.verification.deviceId, alice.deviceId);
        assert.equal(b.verification.deviceId, bob.deviceId);
        await exchangeRtp(a, b, "audio");
        await exchangeRtp(a, b, "video");
        console.log(phaseLine("video caller", a));
        await b.hangup();
        assert.equal((await a.ended).reason, "success");
        assert.equal((await b.ended).reason, "success");
      });

      const carol = await connect("carol");
      const carolCalls = await calls(carol, { verify: "off" });

      await t.step("callee verify=off → plain XEP-0320 fallback (prefer caller)", async () => {
        const { a, b } = await dial(bobCalls, carolCalls, carol);
        await Promise.all([a.connected, b.connected]);
        assert.equal(a.verification.omemo, false);
        assert.equal(b.verification.omemo, false);
        await exchangeRtp(a, b, "audio", 5);
        await a.hangup();
        assert.equal((await b.ended).reason, "success");
      });

      await t.step("caller require vs callee off → security-error on both sides", async () => {
        const { a, b } = await dial(aliceCalls, carolCalls, carol);
        assert.equal((await a.ended).reason, "security-error");
        assert.equal((await b.ended).reason, "security-error");
        assert.equal(a.peer?.stats().audio.packetsReceived ?? 0, 0);
      });

      await t.step("callee require vs plain initiate → security-error", async () => {
        const { a, b } = await dial(carolCalls, aliceCalls, alice);
        assert.equal((await b.ended).reason, "security-error");
        assert.equal((await a.ended).reason, "security-error");
      });

      await t.step("signalled fingerprint ≠ DTLS certificate → security-error, no media", async () => {
        const undo = tamper(carol, "session-initiate", (j) => {
          for (const t of transports(j)) {
            const fp = t.getChild("fingerprint", NS_DTLS)!;
            const v = fp.text();
            fp.children = [(v.startsWith("00") ? "11" : "00") + v.slice(2)];
          }
        });
        try {
          const { a, b } = await dial(carolCalls, bobCalls, bob);
          assert.equal((await b.ended).reason, "security-error");
          assert.equal((await a.ended).reason, "security-error");
          assert.equal(b.state, "ended");
          assert.equal(b.peer?.stats().audio.packetsReceived ?? 0, 0);
          assert.equal(b.phases.firstRtpReceived, undefined);
        } finally {
          undo();
        }
      });

      await t.step("caller that sent a verified initiate refuses a plain session-accept", async () => {
        const undo = tamper(bob, "session-accept", (j) => {
          const fp = bobCalls.calls.get(j.attrs.sid!)!.peer!.localFingerprint();
          for (const t of transports(j)) {
            const enc = t.getChild("fingerprint", NS_OMEMO_DTLS)!;
            t.children = t.children.filter((c) => c !== enc);
            t.append(xml("fingerprint", { xmlns: NS_DTLS, hash: "sha-256", setup: enc.attrs.setup! }, fp));
          }
        });
        try {
          const { a, b } = await dial(aliceCalls, bobCalls, bob);
          assert.equal((await a.ended).reason, "security-error");
          assert.match((await a.ended).text ?? "", /not verifiable/);
          assert.equal((await b.ended).reason, "security-error");
        } finally {
          undo();
        }
      });

      await t.step("transport-info from a third JID → unknown-session, call continues", async () => {
        const { a, b } = await dial(aliceCalls, bobCalls, bob);
        await Promise.all([a.connected, b.connected]);
        const iq = buildJingleIq({
          action: "transport-info",
          sid: a.sid,
          contents: [{
            creator: "initiator",
            name: "0",
            transport: {
              kind: "ice-udp",
              ufrag: "evil",
              pwd: "evilevilevilevilevilevil",
              candidates: [{
                component: 1,
                foundation: "1",
                ip: "127.0.0.1",
                port: 9,
                priority: 1,
                protocol: "udp",
                type: "host",
                generation: 0,
              }],
            },
          }],
          groups: [],
        }, { to: bob.conn.jid, id: crypto.randomUUID() });
        await assert.rejects(carol.conn.iq(iq as unknown as Element), (e: unknown) => {
          assert.ok(e instanceof StanzaError);
          assert.equal(e.condition, "item-not-found");
          assert.equal(e.application?.name, "unknown-session");
          return true;
        });
        assert.equal(b.state, "active");
        await exchangeRtp(a, b, "audio", 3);

        // session-accept a second time (from the right party) → out-of-order; call continues.
        const again = buildJingleIq(
          { action: "session-accept", sid: a.sid, contents: [], groups: [] },
          { to: alice.conn.jid, id: crypto.randomUUID() },
        );
        await assert.rejects(bob.conn.iq(again as unknown as Element), (e: unknown) => {
          assert.ok(e instanceof StanzaError);
          assert.equal(e.condition, "unexpected-request");
          assert.equal(e.application?.name, "out-of-order");
          return true;
        });
        assert.equal(a.state, "active");
        await exchangeRtp(a, b, "audio", 3);
        await b.hangup();
        assert.equal((await a.ended).reason, "success");
      });

      await t.step("unknown sid → unknown-session", async () => {
        const iq = buildJingleIq(
          {
            action: "session-terminate",
            sid: "nope",
            contents: [],
            groups: [],
            reason: { condition: "success" },
          },
          { to: bob.conn.jid, id: crypto.randomUUID() },
        );
        await assert.rejects(alice.conn.iq(iq as unknown as Element), (e: unknown) => {
          assert.ok(e instanceof StanzaError);
          assert.equal(e.application?.name, "unknown-session");
          return true;
        });
      });

      await t.step("declined call → JMI reject, caller ends with decline", async () => {
        const dave = await connect("dave");
        const daveCalls = await calls(dave, { accept: () => false });
        const a = await aliceCalls.call(dave.conn.bareJid);
        assert.equal((await a.ended).reason, "decline");
        await daveCalls.stop();
      });

      await t.step("ring timeout → caller retracts with timeout", async () => {
        const erin = await connect("erin");
        const erinCalls = await calls(erin, { accept: () => new Promise(() => {}), ringTimeoutMs: 60_000 });
        const frank = await connect("frank");
        const shortAlice = await calls(frank, { ringTimeoutMs: 500 });
        const incoming = nextIncoming(erinCalls);
        const a = await shortAlice.call(erin.conn.bareJid);
        const b = await incoming;
        assert.equal((await a.ended).reason, "timeout");
        assert.equal((await b.ended).reason, "timeout");
      });
    } finally {
      for (const c of stops) await c.stop().catch(() => {});
      for (const e of open) await e.close().catch(() => {});
      await server.stop();
      await Deno.remove(tmp, { recursive: true });
    }
  },
});

/** Counts the OMEMO encryptions `e` starts (the calls' fingerprints) and lets a test wait for them. */
function countEncryptions(e: Endpoint): { readonly started: number; done(): Promise<unknown> } {
  const jobs: Promise<unknown>[] = [];
  const orig = e.omemo.encrypt.bind(e.omemo);
  e.omemo.encrypt = (...args) => {
    const job = orig(...args);
    jobs.push(job.catch(() => {}));
    return job;
  };
  return {
    get started() {
      return jobs.length;
    },
    done: () => Promise.all(jobs),
  };
}

/** Resolves once `cond()` holds (checked every few ms; gives up after `maxMs`, the caller's assertions then fail). */
async function until(cond: () => boolean, maxMs = 10_000) {
  for (let waited = 0; !cond() && waited < maxMs; waited += 5) await sleep(5);
}

Deno.test({
  name:
    "setupCalls(): our fingerprint OMEMO-encrypted ahead (caller while it rings, callee before the initiate)",
  sanitizeOps: false,
  sanitizeResources: false,
  async fn(t) {
    const server = await startProsody();
    const tmp = await Deno.makeTempDir({ prefix: "calls-pre-test-" });
    const open: Endpoint[] = [];
    const stops: Calls[] = [];
    try {
      const alice = await endpointOn(server, "alice", tmp);
      open.push(alice);
      const bob = await endpointOn(server, "bob", tmp);
      open.push(bob);
      const aliceEnc = countEncryptions(alice);
      const bobEnc = countEncryptions(bob);
      let bobAnswers: () => Promise<boolean> = () => Promise.resolve(true);
      const aliceCalls = await setupCalls(alice, { logger: verbose, verify: "require" });
      const bobCalls = await setupCalls(bob, {
        logger: verbose,
        verify: "require",
        accept: () => bobAnswers(),
      });
      stops.push(aliceCalls, bobCalls);
      const bobBare = bob.conn.bareJid;
      const call = async () => {
        const incoming = nextIncoming(bobCalls);
        const a = await aliceCalls.call(bobBare);
        return { a, b: await incoming };
      };

      // The first call builds the OMEMO sessions (nothing is encrypted ahead without one).
      const first = await call();
      await Promise.all([first.a.connected, first.b.connected]);
      await first.a.hangup();
      await first.b.ended;

      await t.step("with sessions: no encryption after proceed / after the initiate arrived", async () => {
        let aliceBeforeProceed = -1, aliceAtInitiate = -1, bobAtInitiate = -1, bobAtAccept = -1;
        const aliceStart = aliceEnc.started, bobStart = bobEnc.started;
        // Bob answers once Alice's encryption ahead (started with the propose) is done.
        bobAnswers = async () => {
          await until(() => aliceEnc.started > aliceStart);
          await aliceEnc.done();
          aliceBeforeProceed = aliceEnc.started;
          return true;
        };
        const undoA = tamper(alice, "session-initiate", () => aliceAtInitiate = aliceEnc.started);
        // Bob decrypts the initiate once his encryption ahead (started after the proceed) has begun.
        const origDecrypt = bob.omemo.decrypt.bind(bob.omemo);
        bob.omemo.decrypt = async (...args) => {
          await until(() => bobEnc.started > bobStart);
          bobAtInitiate = bobEnc.started;
          return await origDecrypt(...args);
        };
        const undoB = tamper(bob, "session-accept", () => bobAtAccept = bobEnc.started);
        try {
          const { a, b } = await call();
          await Promise.all([a.connected, b.connected]);
          assert.equal(a.verification.omemo, true);
          assert.equal(b.verification.omemo, true);
          assert.equal(a.verification.deviceId, bob.deviceId);
          assert.equal(b.verification.deviceId, alice.deviceId);
          assert.ok(aliceBeforeProceed > aliceStart, "the caller encrypted while it rang");
          assert.equal(aliceAtInitiate, aliceBeforeProceed, "no encryption between proceed and initiate");
          assert.ok(bobAtInitiate > bobStart, "the callee encrypted before the initiate was read");
          assert.equal(bobAtAccept, bobAtInitiate, "no encryption between initiate and accept");
          await exchangeRtp(a, b, "audio", 3);
          await a.hangup();
          assert.equal((await b.ended).reason, "success");
        } finally {
          undoA();
          undoB();
          bob.omemo.decrypt = origDecrypt;
          bobAnswers = () => Promise.resolve(true);
        }
      });

      await t.step(
        "caller rebuilt its session: the callee's early copy is dropped, the call verifies",
        async () => {
          // Alice lost her session with Bob: her initiate is a PreKeySignalMessage starting a new one, which Bob's
          // copy encrypted in the old session would not reach (Alice cannot read the old one any more).
          await alice.omemo.store.removeSession(bobBare, bob.deviceId);
          const bobStart = bobEnc.started;
          const origDecrypt = bob.omemo.decrypt.bind(bob.omemo);
          bob.omemo.decrypt = async (...args) => {
            await until(() => bobEnc.started > bobStart); // his copy in the old session exists
            return await origDecrypt(...args);
          };
          try {
            const { a, b } = await call();
            await Promise.all([a.connected, b.connected]);
            assert.equal(a.verification.omemo, true);
            assert.equal(b.verification.omemo, true);
            assert.equal(bobEnc.started, bobStart + 2, "encrypted again in the new session");
            await a.hangup();
            assert.equal((await b.ended).reason, "success");
          } finally {
            bob.omemo.decrypt = origDecrypt;
          }
        },
      );

      await t.step(
        "device distrusted after the early encryption: it is not used, the call fails",
        async () => {
          const bobDevice = alice.omemo.listDevices(bobBare).find((d) => d.deviceId === bob.deviceId)!;
          const aliceStart = aliceEnc.started;
          bobAnswers = async () => {
            await until(() => aliceEnc.started > aliceStart);
            await aliceEnc.done();
            await alice.omemo.setTrust(bobBare, bobDevice.fingerprint, "untrusted");
            return true;
          };
          try {
            const { a, b } = await call();
            // Never connected (a call that does connect is hung up, and the assertion fails).
            const connected = await a.connected.then(() => true, () => false);
            if (connected) await a.hangup();
            assert.equal(connected, false);
            assert.notEqual((await a.ended).reason, "success");
            assert.equal(a.phases.initiate, undefined, "no session-initiate went out");
            assert.equal(a.verification.omemo, false);
            await b.ended;
          } finally {
            bobAnswers = () => Promise.resolve(true);
            await alice.omemo.setTrust(bobBare, bobDevice.fingerprint, "verified");
          }
        },
      );

      await t.step("the callee distrusts the caller's device: security-error naming the device", async () => {
        const aliceBare = alice.conn.bareJid;
        const aliceDevice = bob.omemo.listDevices(aliceBare).find((d) => d.deviceId === alice.deviceId)!;
        await bob.omemo.setTrust(aliceBare, aliceDevice.fingerprint, "untrusted");
        try {
          const { a, b } = await call();
          const [ea, eb] = await Promise.all([a.ended, b.ended]);
          assert.equal(eb.reason, "security-error");
          assert.match(eb.text ?? "", new RegExp(`device ${alice.deviceId} of ${aliceBare} is not trusted`));
          assert.equal(ea.reason, "security-error");
          assert.equal(b.phases.dtlsConnected, undefined, "no media path was authenticated");
          assert.equal(a.phases.dtlsConnected, undefined);
        } finally {
          await bob.omemo.setTrust(aliceBare, aliceDevice.fingerprint, "verified");
        }
      });
    } finally {
      for (const c of stops) await c.stop().catch(() => {});
      for (const e of open) await e.close().catch(() => {});
      await server.stop();
      await Deno.remove(tmp, { recursive: true });
    }
  },
});
