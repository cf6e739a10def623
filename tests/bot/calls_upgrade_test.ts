/**
 * Calls on a real Prosody, beyond set-up: the video upgrade (content-add / content-accept / content-reject on the
 * running BUNDLE transport, and with an own ICE transport per content in Dino-shaped unbundled sessions),
 * simultaneous content-adds (XEP-0166 tie-break: the initiator's wins), Jingle errors for content actions from a
 * wrong sender or for unknown contents, the media-set checks (session-initiate = proposed media, session-accept =
 * initiated contents) and the XEP-0353 existing-session rule (`<finish><migrated/></finish>`).
 */
import assert from "node:assert/strict";
import { connectionOn, endpointOn, quiet } from "./_support.ts";
import { rtpPacket, sleep } from "../media/helpers.ts";
import type { Endpoint } from "../../bot/endpoint.ts";
import { type Call, type Calls, type CallsOptions, setupCalls } from "../../bot/calls.ts";
import { startProsody } from "../../scripts/prosody.ts";
import {
  buildJingleIq,
  buildJmiMessage,
  type Element as JingleElement,
  type Jingle,
  type JmiAction,
  NS_JINGLE,
  NS_JMI,
  NS_RTP,
  NS_RTP_VIDEO,
  parseJingle,
  parseJmiElement,
} from "../../jingle/mod.ts";
import { type Element, StanzaError, type XmppConnection } from "../../xmpp/mod.ts";
import type { MediaKind } from "../../media/webrtc.ts";

const verbose = Deno.env.get("CALLS_DEBUG")
  ? {
    debug: (m: string, f?: unknown) => console.log("D", m, f ?? ""),
    info: (m: string, f?: unknown) => console.log("I", m, f ?? ""),
    warn: (m: string, f?: unknown) => console.log("W", m, f ?? ""),
    error: (m: string, f?: unknown) => console.log("E", m, f ?? ""),
  }
  : quiet;

/** A logger that keeps every line (to assert that a refusal was logged). */
function recordingLogger() {
  const lines: { level: string; msg: string; fields?: Record<string, unknown> }[] = [];
  const at = (level: string) => (msg: string, fields?: unknown) => {
    lines.push({ level, msg, fields: fields as Record<string, unknown> });
    (verbose as Record<string, (m: string, f?: unknown) => void>)[level]!(msg, fields);
  };
  return { lines, logger: { debug: at("debug"), info: at("info"), warn: at("warn"), error: at("error") } };
}

let nextSeq = 1;

/** Sends `n` RTP packets of `kind` each way and checks they arrive and are counted. */
async function exchangeRtp(a: Call, b: Call, kind: MediaKind, n = 8) {
  let atA = 0, atB = 0;
  const offA = a.peer!.onRtp((e) => e.kind === kind && atA++);
  const offB = b.peer!.onRtp((e) => e.kind === kind && atB++);
  const before = { a: a.peer!.stats()[kind], b: b.peer!.stats()[kind] };
  for (let i = 0; i < n; i++) {
    const seq = nextSeq++;
    assert.ok(
      await a.peer!.sendRtp(kind, rtpPacket(seq, new TextEncoder().encode(`a ${i}`))),
      `${kind} a sends`,
    );
    assert.ok(
      await b.peer!.sendRtp(kind, rtpPacket(seq, new TextEncoder().encode(`b ${i}`))),
      `${kind} b sends`,
    );
  }
  for (let i = 0; i < 150 && (atA < n || atB < n); i++) await sleep(20);
  offA();
  offB();
  assert.equal(atB, n, `${kind} a→b`);
  assert.equal(atA, n, `${kind} b→a`);
  assert.equal(a.peer!.stats()[kind].packetsReceived - before.a.packetsReceived, n);
  assert.equal(b.peer!.stats()[kind].packetsReceived - before.b.packetsReceived, n);
  assert.equal(a.peer!.stats().srtpAuthFailures, 0);
  assert.equal(b.peer!.stats().srtpAuthFailures, 0);
}

function nextIncoming(calls: Calls): Promise<Call> {
  return new Promise((resolve) => {
    const off = calls.onIncoming((c) => {
      off();
      resolve(c);
    });
  });
}

/** Records (and lets `edit` rewrite) the Jingle IQs `e` sends. */
function jingleOut(e: Endpoint, edit?: (j: Element) => void) {
  const sent: Jingle[] = [];
  const conn = e.conn;
  const orig = conn.iq.bind(conn);
  conn.iq = (stanza, o) => {
    const j = stanza.getChild("jingle", NS_JINGLE);
    if (j) {
      edit?.(j);
      sent.push(parseJingle(j as unknown as JingleElement));
    }
    return orig(stanza, o);
  };
  return { sent, undo: () => void (conn.iq = orig) };
}

/** Records the JMI messages `conn` receives. */
function jmiSpy(conn: XmppConnection) {
  const got: { from: string; a: JmiAction; raw: Element }[] = [];
  const off = conn.onMessage(NS_JMI, (p, ctx) => {
    try {
      got.push({ from: ctx.from, a: parseJmiElement(p as unknown as JingleElement), raw: p });
    } catch { /* ignore */ }
  });
  return { got, off };
}

const isTieBreakError = (e: unknown) =>
  e instanceof StanzaError && e.condition === "conflict" && e.application?.name === "tie-break";

async function until(cond: () => boolean, ms = 5000, what = "condition") {
  for (let t = 0; t < ms && !cond(); t += 20) await sleep(20);
  assert.ok(cond(), `timed out waiting for ${what}`);
}

Deno.test({
  name: "setupCalls(): video upgrade, media-set checks and JMI session migration on a real Prosody",
  sanitizeOps: false,
  sanitizeResources: false,
  async fn(t) {
    const server = await startProsody();
    const tmp = await Deno.makeTempDir({ prefix: "calls-upgrade-test-" });
    const open: Endpoint[] = [];
    const raws: XmppConnection[] = [];
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
      await Promise.all([a.connected, b.connected]);
      return { a, b };
    };
    try {
      const alice = await connect("alice");
      const bob = await connect("bob");
      const aliceLog = recordingLogger();
      const bobLog = recordingLogger();
      const aliceCalls = await calls(alice, { logger: aliceLog.logger });
      const bobCalls = await calls(bob, { logger: bobLog.logger });

      await t.step(
        "caller upgrades an audio call to video: content-add → content-accept, video both ways",
        async () => {
          const outA = jingleOut(alice);
          const outB = jingleOut(bob);
          try {
            const { a, b } = await dial(aliceCalls, bobCalls, bob);
            assert.deepEqual(a.media, ["audio"]);
            assert.equal(await a.peer!.sendRtp("video", rtpPacket(nextSeq++, new Uint8Array(4))), false);
            await exchangeRtp(a, b, "audio");
            assert.equal(await a.addVideo(), true);
            assert.deepEqual(a.media, ["audio", "video"]);
            await until(() => b.media.includes("video"), 3000, "callee media include video");
            await exchangeRtp(a, b, "video");
            await exchangeRtp(a, b, "audio");
            assert.equal(a.state, "active");
            assert.equal(b.state, "active");

            // What went over the wire: a content-add with the full video description and an empty STUB transport
            // (no ufrag, no fingerprint, no candidates: the BUNDLE transport is reused), answered likewise.
            const add = outA.sent.find((j) => j.action === "content-add")!;
            assert.ok(add, "content-add sent");
            assert.equal(add.contents.length, 1);
            const c = add.contents[0]!;
            assert.equal(c.creator, "initiator");
            assert.ok(c.description?.kind === "rtp" && c.description.media === "video");
            assert.ok(c.description.payloadTypes.length > 0);
            assert.deepEqual(c.transport, { kind: "ice-udp", candidates: [] });
            const acc = outB.sent.find((j) => j.action === "content-accept")!;
            assert.ok(acc, "content-accept sent");
            assert.equal(acc.contents[0]!.name, c.name);
            assert.ok(acc.contents[0]!.description?.kind === "rtp");
            assert.deepEqual(acc.contents[0]!.transport, { kind: "ice-udp", candidates: [] });
            assert.equal(outB.sent.filter((j) => j.action === "content-reject").length, 0);

            // A second upgrade is refused locally.
            await assert.rejects(a.addVideo(), /already has video/);
            await a.hangup();
            assert.equal((await b.ended).reason, "success");
          } finally {
            outA.undo();
            outB.undo();
          }
        },
      );

      await t.step("callee upgrades an audio call to video (the answerer re-offers)", async () => {
        const { a, b } = await dial(aliceCalls, bobCalls, bob);
        assert.equal(await b.addVideo(), true);
        await until(() => a.media.includes("video"), 3000, "caller media include video");
        await exchangeRtp(a, b, "video");
        await exchangeRtp(a, b, "audio");
        await b.hangup();
        assert.equal((await a.ended).reason, "success");
      });

      await t.step(
        "content-add to a call that already has video → content-reject, call continues",
        async () => {
          const { a, b } = await dial(aliceCalls, bobCalls, bob, true);
          const outB = jingleOut(bob);
          try {
            const iq = buildJingleIq({
              action: "content-add",
              sid: a.sid,
              contents: [{
                creator: "initiator",
                name: "2",
                description: {
                  kind: "rtp",
                  media: "video",
                  payloadTypes: [{ id: 100, name: "VP8", clockrate: 90000, parameters: [], rtcpFb: [] }],
                  rtcpFb: [],
                  headerExtensions: [],
                  extmapAllowMixed: false,
                  sources: [],
                  ssrcGroups: [],
                  rtcpMux: true,
                },
                transport: { kind: "ice-udp", candidates: [] },
              }],
              groups: [],
            }, { to: bob.conn.jid, id: crypto.randomUUID() });
            // The content-add itself is acknowledged; the answer is a separate content-reject.
            await alice.conn.iq(iq as unknown as Element);
            await until(() => outB.sent.some((j) => j.action === "content-reject"), 3000, "content-reject");
            const rej = outB.sent.find((j) => j.action === "content-reject")!;
            assert.equal(rej.sid, a.sid);
            assert.equal(rej.contents[0]!.name, "2");
            assert.ok(
              rej.contents[0]!.description?.kind === "rtp" && rej.contents[0]!.description.media === "video",
            );
            assert.ok(
              bobLog.lines.some((l) =>
                l.msg === "content-add rejected" && /not an audio-only call/.test(`${l.fields?.why}`)
              ),
              "the refusal is logged with its reason",
            );
            await exchangeRtp(a, b, "video", 4);
            assert.equal(b.state, "active");
          } finally {
            outB.undo();
          }
          await a.hangup();
          await b.ended;
        },
      );

      await t.step(
        "content-add of audio, or of video with another fingerprint → content-reject",
        async () => {
          const { a, b } = await dial(aliceCalls, bobCalls, bob);
          const outB = jingleOut(bob);
          const contentAdd = (media: string, fingerprint?: string) =>
            buildJingleIq({
              action: "content-add",
              sid: a.sid,
              contents: [{
                creator: "initiator",
                name: media === "audio" ? "7" : "8",
                description: {
                  kind: "rtp",
                  media,
                  payloadTypes: [{
                    id: 100,
                    name: media === "audio" ? "opus" : "VP8",
                    clockrate: 90000,
                    parameters: [],
                    rtcpFb: [],
                  }],
                  rtcpFb: [],
                  headerExtensions: [],
                  extmapAllowMixed: false,
                  sources: [],
                  ssrcGroups: [],
                  rtcpMux: true,
                },
                transport: {
                  kind: "ice-udp",
                  candidates: [],
                  ...(fingerprint
                    ? {
                      fingerprint: {
                        kind: "plain" as const,
                        hash: "sha-256",
                        setup: "actpass" as const,
                        value: fingerprint,
                      },
                    }
                    : {}),
                },
              }],
              groups: [],
            }, { to: bob.conn.jid, id: crypto.randomUUID() }) as unknown as Element;
          try {
            await alice.conn.iq(contentAdd("audio"));
            await until(
              () => outB.sent.filter((j) => j.action === "content-reject").length === 1,
              3000,
              "reject 1",
            );
            await alice.conn.iq(contentAdd("video", "00:" + "AB:".repeat(30) + "CD"));
            await until(
              () => outB.sent.filter((j) => j.action === "content-reject").length === 2,
              3000,
              "reject 2",
            );
            const whys = bobLog.lines.filter((l) => l.msg === "content-add rejected").slice(-2).map((l) =>
              `${l.fields?.why}`
            );
            assert.match(whys[0]!, /not video/);
            assert.match(whys[1]!, /different DTLS fingerprint/);
            assert.deepEqual(b.media, ["audio"]);
            assert.equal(outB.sent.filter((j) => j.action === "content-accept").length, 0);
            await exchangeRtp(a, b, "audio", 4);
          } finally {
            outB.undo();
          }
          // A content-accept nobody asked for → out-of-order.
          const stray = buildJingleIq({
            action: "content-accept",
            sid: a.sid,
            contents: [{ creator: "initiator", name: "1", transport: { kind: "ice-udp", candidates: [] } }],
            groups: [],
          }, { to: alice.conn.jid, id: crypto.randomUUID() });
          await assert.rejects(bob.conn.iq(stray as unknown as Element), (e: unknown) => {
            assert.ok(e instanceof StanzaError);
            assert.equal(e.condition, "unexpected-request");
            assert.equal(e.application?.name, "out-of-order");
            return true;
          });
          assert.equal(a.state, "active");
          await a.hangup();
          await b.ended;
        },
      );

      await t.step("peer that refuses video upgrades → addVideo() false, audio continues", async () => {
        const carol = await connect("carol");
        const carolOptions: CallsOptions = { logger: verbose, acceptVideoUpgrade: false };
        const carolCalls = await setupCalls(carol, carolOptions);
        stops.push(carolCalls);
        const { a, b } = await dial(aliceCalls, carolCalls, carol);
        assert.equal(await a.addVideo(), false);
        assert.deepEqual(a.media, ["audio"]);
        assert.deepEqual(b.media, ["audio"]);
        assert.equal(await a.peer!.sendRtp("video", rtpPacket(nextSeq++, new Uint8Array(4))), false);
        await exchangeRtp(a, b, "audio", 4);
        assert.ok(aliceLog.lines.some((l) => l.msg === "video upgrade refused"));

        // The refused offer left an inactive video m-line in alice's werift: a later upgrade in the same call reuses
        // it and works once carol accepts video.
        carolOptions.acceptVideoUpgrade = true;
        assert.equal(await a.addVideo(), true);
        await until(() => b.media.includes("video"), 3000, "carol's media include video");
        await exchangeRtp(a, b, "video", 4);
        await exchangeRtp(a, b, "audio", 4);
        carolOptions.acceptVideoUpgrade = false;
        await a.hangup();
        await b.ended;

        // A peer that does not advertise video is not asked at all.
        await carol.disco.removeFeatures(NS_RTP_VIDEO);
        const again = await dial(aliceCalls, carolCalls, carol);
        await assert.rejects(again.a.addVideo(), /does not advertise urn:xmpp:jingle:apps:rtp:video/);
        assert.equal(again.a.state, "active");
        await again.a.hangup();
        await again.b.ended;
        await carolCalls.stop();
      });

      await t.step(
        "Dino-style send-only content-add (senders = the adder's role) is accepted receive-only",
        async () => {
          const outA = jingleOut(alice, (j) => {
            if (j.attrs.action !== "content-add") return;
            for (const c of j.getChildren("content")) c.attrs.senders = "initiator";
          });
          const outB = jingleOut(bob);
          try {
            const { a, b } = await dial(aliceCalls, bobCalls, bob);
            assert.equal(await a.addVideo(), true);
            const acc = outB.sent.find((j) => j.action === "content-accept")!;
            assert.equal(
              acc.contents[0]!.senders,
              "initiator",
              "bob answers: only the initiator sends video",
            );
            let got = 0;
            const off = b.peer!.onRtp((e) => e.kind === "video" && got++);
            for (let i = 0; i < 5; i++) {
              assert.ok(await a.peer!.sendRtp("video", rtpPacket(nextSeq++, new Uint8Array(10))));
            }
            await until(() => got === 5, 3000, "video a→b");
            off();
            await exchangeRtp(a, b, "audio", 4);
            await a.hangup();
            await b.ended;
          } finally {
            outA.undo();
            outB.undo();
          }
        },
      );

      await t.step(
        "content-add while ours is pending → conflict + tie-break; ours still completes",
        async () => {
          const { a, b } = await dial(aliceCalls, bobCalls, bob);
          // Hold bob's content-accept back so that alice's content-add stays pending.
          let release!: () => void;
          const held = new Promise<void>((r) => release = r);
          let acceptHeld = false;
          const orig = bob.conn.iq.bind(bob.conn);
          bob.conn.iq = async (stanza, o) => {
            if (stanza.getChild("jingle", NS_JINGLE)?.attrs.action === "content-accept") {
              acceptHeld = true;
              await held;
            }
            return orig(stanza, o);
          };
          try {
            const upgrade = a.addVideo();
            await until(() => acceptHeld, 5000, "bob's content-accept");
            const add = buildJingleIq({
              action: "content-add",
              sid: a.sid,
              contents: [{
                creator: "initiator",
                name: "9",
                description: {
                  kind: "rtp",
                  media: "video",
                  payloadTypes: [{ id: 100, name: "VP8", clockrate: 90000, parameters: [], rtcpFb: [] }],
                  rtcpFb: [],
                  headerExtensions: [],
                  extmapAllowMixed: false,
                  sources: [],
                  ssrcGroups: [],
                  rtcpMux: true,
                },
                transport: { kind: "ice-udp", candidates: [] },
              }],
              groups: [],
            }, { to: alice.conn.jid, id: crypto.randomUUID() });
            await assert.rejects(orig(add as unknown as Element), (e: unknown) => {
              assert.ok(e instanceof StanzaError);
              assert.equal(e.condition, "conflict");
              assert.equal(e.application?.name, "tie-break");
              return true;
            });
            release();
            assert.equal(await upgrade, true);
            await exchangeRtp(a, b, "video", 4);
          } finally {
            bob.conn.iq = orig;
            release();
          }
          await a.hangup();
          await b.ended;
        },
      );

      await t.step(
        "content-modify is acknowledged and recorded; content-remove of the video stops it",
        async () => {
          const { a, b } = await dial(aliceCalls, bobCalls, bob);
          assert.equal(await a.addVideo(), true);
          await until(() => b.media.includes("video"), 3000, "bob has video");
          const modify = (name: string) =>
            buildJingleIq({
              action: "content-modify",
              sid: a.sid,
              contents: [{ creator: "initiator", name, senders: "initiator" }],
              groups: [],
            }, { to: alice.conn.jid, id: crypto.randomUUID() }) as unknown as Element;
          await bob.conn.iq(modify("1"));
          assert.ok(
            aliceLog.lines.some((l) =>
              l.msg === "content-modify from peer" && l.fields?.senders === "initiator"
            ),
          );
          await assert.rejects(bob.conn.iq(modify("nope")), (e: unknown) => {
            assert.ok(e instanceof StanzaError);
            assert.equal(e.condition, "bad-request");
            return true;
          });
          assert.equal(a.state, "active");
          await bob.conn.iq(buildJingleIq({
            action: "content-remove",
            sid: a.sid,
            contents: [{ creator: "initiator", name: "1" }],
            groups: [],
          }, { to: alice.conn.jid, id: crypto.randomUUID() }) as unknown as Element);
          assert.deepEqual(a.media, ["audio"]);
          assert.equal(await a.peer!.sendRtp("video", rtpPacket(nextSeq++, new Uint8Array(4))), false);
          await exchangeRtp(a, b, "audio", 4);
          await a.hangup();
          await b.ended;
        },
      );

      /** Holds every content-add `es` send until each of them has sent one: the adds cross on the wire. */
      const crossContentAdds = (es: Endpoint[]) => {
        const held: (() => void)[] = [];
        const undo: (() => void)[] = [];
        for (const e of es) {
          const orig = e.conn.iq.bind(e.conn);
          e.conn.iq = async (stanza, o) => {
            if (stanza.getChild("jingle", NS_JINGLE)?.attrs.action === "content-add") {
              await new Promise<void>((release) => {
                held.push(release);
                if (held.length === es.length) { for (const r of held) r(); }
              });
            }
            return orig(stanza, o);
          };
          undo.push(() => void (e.conn.iq = orig));
        }
        return () => undo.reverse().forEach((u) => u());
      };
      /** The peer's video contents a call negotiated that are not idle (refused/removed). */
      const liveVideo = (c: Call) =>
        c.negotiated!.remote.contents.filter((x) =>
          x.description?.kind === "rtp" && x.description.media === "video" && x.senders !== "none"
        );

      await t.step(
        "simultaneous content-adds: the initiator's wins (conflict + tie-break to the responder's), video once",
        async () => {
          const { a, b } = await dial(aliceCalls, bobCalls, bob);
          const uncross = crossContentAdds([alice, bob]);
          const outA = jingleOut(alice);
          const outB = jingleOut(bob);
          try {
            const [fromA, fromB] = await Promise.all([a.addVideo(), b.addVideo()]);
            assert.equal(fromA, true, "the initiator's upgrade went through");
            assert.equal(
              fromB,
              true,
              "the responder's addVideo() ends with the call upgraded (by the initiator)",
            );
            assert.equal(outA.sent.filter((j) => j.action === "content-add").length, 1);
            assert.equal(outB.sent.filter((j) => j.action === "content-add").length, 1);
            // Only the initiator's content-add was accepted, by the responder; nobody rejected anything.
            assert.equal(outA.sent.filter((j) => j.action === "content-accept").length, 0);
            const acc = outB.sent.filter((j) => j.action === "content-accept");
            assert.equal(acc.length, 1);
            assert.equal(
              acc[0]!.contents[0]!.name,
              outA.sent.find((j) => j.action === "content-add")!.contents[0]!.name,
            );
            assert.equal([...outA.sent, ...outB.sent].filter((j) => j.action === "content-reject").length, 0);
            assert.ok(aliceLog.lines.some((l) => /ours \(initiator\) wins the tie-break/.test(l.msg)));
            assert.ok(bobLog.lines.some((l) => /the initiator's .*wins the tie-break/.test(l.msg)));
            // The responder's addVideo() took the outcome of the initiator's add, not a wait for another one.
            assert.ok(!bobLog.lines.some((l) => /no content-add of the peer came/.test(l.msg)));
          } finally {
            outA.undo();
            outB.undo();
            uncross();
          }
          assert.deepEqual(a.media, ["audio", "video"]);
          assert.deepEqual(b.media, ["audio", "video"]);
          assert.equal(liveVideo(a).length, 1, "one video content (caller)");
          assert.equal(liveVideo(b).length, 1, "one video content (callee)");
          await exchangeRtp(a, b, "video");
          await exchangeRtp(a, b, "audio", 4);
          assert.equal(a.state, "active");
          assert.equal(b.state, "active");
          await a.hangup();
          assert.equal((await b.ended).reason, "success");
        },
      );

      await t.step(
        "tie-break error before the initiator's content-add arrives: the responder waits for it and accepts it",
        async () => {
          const { a, b } = await dial(aliceCalls, bobCalls, bob);
          // alice's (the initiator's) content-add is held until bob's own got its tie-break error.
          let aliceHeld = false;
          let bobRefused!: () => void;
          const refusedP = new Promise<void>((r) => bobRefused = r);
          const origA = alice.conn.iq.bind(alice.conn);
          const origB = bob.conn.iq.bind(bob.conn);
          alice.conn.iq = async (stanza, o) => {
            if (stanza.getChild("jingle", NS_JINGLE)?.attrs.action === "content-add") {
              aliceHeld = true;
              await refusedP;
            }
            return origA(stanza, o);
          };
          let bobError: unknown;
          bob.conn.iq = (stanza, o) => {
            const p = origB(stanza, o);
            if (stanza.getChild("jingle", NS_JINGLE)?.attrs.action === "content-add") {
              p.catch((e) => {
                bobError = e;
                bobRefused();
              });
            }
            return p;
          };
          try {
            const upA = a.addVideo();
            await until(() => aliceHeld, 5000, "alice's content-add");
            const [fromA, fromB] = await Promise.all([upA, b.addVideo()]);
            assert.ok(isTieBreakError(bobError), "bob's content-add was answered with conflict + tie-break");
            assert.deepEqual([fromA, fromB], [true, true]);
          } finally {
            alice.conn.iq = origA;
            bob.conn.iq = origB;
            bobRefused();
          }
          assert.equal(liveVideo(a).length, 1);
          assert.equal(liveVideo(b).length, 1);
          await exchangeRtp(a, b, "video");
          await exchangeRtp(a, b, "audio", 4);
          await a.hangup();
          await b.ended;
        },
      );

      // Dino's session shape: no BUNDLE group, one ICE transport per content. dan offers that way (bundle: false).
      const dan = await connect("dan");
      const eve = await connect("eve");
      const danLog = recordingLogger();
      const danCalls = await calls(dan, { bundle: false, logger: danLog.logger });
      const eveLog = recordingLogger();
      const eveOptions: CallsOptions = { logger: eveLog.logger };
      const eveCalls = await setupCalls(eve, eveOptions);
      stops.push(eveCalls);

      /** What a content-add / content-accept of an unbundled session carries: its own ICE transport. */
      const assertOwnTransport = (j: Jingle | undefined, what: string) => {
        assert.ok(j, what);
        assert.equal(j.contents.length, 1);
        const tr = j.contents[0]!.transport;
        assert.ok(tr?.kind === "ice-udp" && tr.ufrag && tr.pwd, `${what}: own ICE credentials`);
        // Both bots are OMEMO endpoints: the call is verified and so is the new transport's fingerprint.
        assert.equal(tr.fingerprint?.kind, "omemo", `${what}: OMEMO-encrypted fingerprint`);
        assert.ok(tr.candidates.length > 0, `${what}: candidates gathered so far`);
        assert.equal(j.groups.length, 0, `${what}: no BUNDLE group`);
      };

      await t.step(
        "unbundled session: the caller adds video with its own transport, video both ways",
        async () => {
          const outD = jingleOut(dan);
          const outE = jingleOut(eve);
          try {
            const { a, b } = await dial(danCalls, eveCalls, eve);
            const init = outD.sent.find((j) => j.action === "session-initiate")!;
            assert.equal(init.groups.length, 0, "an unbundled session-initiate");
            assert.equal(outE.sent.find((j) => j.action === "session-accept")!.groups.length, 0);
            assert.equal(a.verification.omemo, true);
            await exchangeRtp(a, b, "audio", 4);
            assert.equal(await a.addVideo(), true);
            await until(() => b.media.includes("video"), 3000, "callee media include video");
            const add = outD.sent.find((j) => j.action === "content-add");
            assertOwnTransport(add, "content-add");
            const audioT = init.contents[0]!.transport;
            const videoT = add!.contents[0]!.transport;
            assert.ok(audioT?.kind === "ice-udp" && videoT?.kind === "ice-udp");
            assert.notDeepEqual(
              videoT.candidates.map((c) => c.port),
              audioT.candidates.map((c) => c.port),
              "the video transport has its own ports",
            );
            assertOwnTransport(outE.sent.find((j) => j.action === "content-accept"), "content-accept");
            await exchangeRtp(a, b, "video");
            await exchangeRtp(a, b, "audio", 4);
            // Trickled candidates name a content of the session.
            for (const j of [...outD.sent, ...outE.sent].filter((x) => x.action === "transport-info")) {
              for (const c of j.contents) {
                assert.ok(["0", "1"].includes(c.name), `transport-info for '${c.name}'`);
              }
            }
            assert.equal(a.state, "active");
            await a.hangup();
            assert.equal((await b.ended).reason, "success");
          } finally {
            outD.undo();
            outE.undo();
          }
        },
      );

      await t.step(
        "unbundled session: the callee adds video with its own transport, video both ways",
        async () => {
          const outE = jingleOut(eve);
          try {
            const { a, b } = await dial(danCalls, eveCalls, eve);
            assert.equal(await b.addVideo(), true);
            await until(() => a.media.includes("video"), 3000, "caller media include video");
            assertOwnTransport(
              outE.sent.find((j) => j.action === "content-add"),
              "content-add",
            );
            await exchangeRtp(a, b, "video");
            await exchangeRtp(a, b, "audio", 4);
            await b.hangup();
            assert.equal((await a.ended).reason, "success");
          } finally {
            outE.undo();
          }
        },
      );

      await t.step(
        "unbundled session, simultaneous content-adds: the initiator's wins, video once",
        async () => {
          const { a, b } = await dial(danCalls, eveCalls, eve);
          const uncross = crossContentAdds([dan, eve]);
          try {
            assert.deepEqual(await Promise.all([a.addVideo(), b.addVideo()]), [true, true]);
            assert.ok(danLog.lines.some((l) => /ours \(initiator\) wins the tie-break/.test(l.msg)));
            assert.ok(!eveLog.lines.some((l) => /no content-add of the peer came/.test(l.msg)));
          } finally {
            uncross();
          }
          assert.equal(liveVideo(a).length, 1);
          assert.equal(liveVideo(b).length, 1);
          await exchangeRtp(a, b, "video");
          await exchangeRtp(a, b, "audio", 4);
          assert.equal(a.state, "active");
          await a.hangup();
          assert.equal((await b.ended).reason, "success");
        },
      );

      await t.step(
        "unbundled session: a refused content-add leaves the call alone; a retry, or the peer's own add, then works",
        async () => {
          try {
            eveOptions.acceptVideoUpgrade = false;
            const first = await dial(danCalls, eveCalls, eve);
            assert.equal(await first.a.addVideo(), false);
            assert.deepEqual(first.a.media, ["audio"]);
            assert.deepEqual(first.b.media, ["audio"]);
            assert.equal(
              await first.a.peer!.sendRtp("video", rtpPacket(nextSeq++, new Uint8Array(4))),
              false,
            );
            await exchangeRtp(first.a, first.b, "audio", 4);
            eveOptions.acceptVideoUpgrade = true;
            assert.equal(await first.a.addVideo(), true, "the retry");
            await until(() => first.b.media.includes("video"), 3000, "callee media include video");
            await exchangeRtp(first.a, first.b, "video");
            await exchangeRtp(first.a, first.b, "audio", 4);
            await first.a.hangup();
            await first.b.ended;

            eveOptions.acceptVideoUpgrade = false;
            const second = await dial(danCalls, eveCalls, eve);
            assert.equal(await second.a.addVideo(), false);
            // The peer's own content-add replaces the offer of ours it refused.
            assert.equal(await second.b.addVideo(), true);
            await until(() => second.a.media.includes("video"), 3000, "caller media include video");
            await exchangeRtp(second.a, second.b, "video");
            await exchangeRtp(second.a, second.b, "audio", 4);
            await second.a.hangup();
            await second.b.ended;
          } finally {
            delete eveOptions.acceptVideoUpgrade;
          }
        },
      );

      await t.step(
        "content-* / transport-info from a wrong sender or for an unknown content → Jingle error, nothing changes",
        async () => {
          const { a, b } = await dial(aliceCalls, bobCalls, bob);
          const mallory = await connectionOn(server, "mallory", "x");
          const bobOther = await connectionOn(server, "bob", "other");
          raws.push(mallory, bobOther);
          const snapshot = () => JSON.stringify({ media: a.media, n: a.negotiated, state: a.state });
          const before = snapshot();
          const candidate = {
            component: 1,
            foundation: "1",
            ip: "127.0.0.1",
            port: 9,
            priority: 1,
            protocol: "udp",
            type: "host" as const,
            generation: 0,
          };
          const video = {
            kind: "rtp" as const,
            media: "video",
            payloadTypes: [{ id: 100, name: "VP8", clockrate: 90000, parameters: [], rtcpFb: [] }],
            rtcpFb: [],
            headerExtensions: [],
            extmapAllowMixed: false,
            sources: [],
            ssrcGroups: [],
            rtcpMux: true,
          };
          const stanza = (
            action: Jingle["action"],
            name: string,
            extra: Partial<Jingle["contents"][0]> = {},
          ) =>
            buildJingleIq({
              action,
              sid: a.sid,
              contents: [{ creator: "initiator", name, ...extra }],
              groups: [],
            }, { to: alice.conn.jid, id: crypto.randomUUID() }) as unknown as Element;
          const each: [Jingle["action"], Partial<Jingle["contents"][0]>][] = [
            ["content-add", { description: video, transport: { kind: "ice-udp", candidates: [] } }],
            ["content-accept", { description: video, transport: { kind: "ice-udp", candidates: [] } }],
            ["content-reject", { transport: { kind: "ice-udp", candidates: [] } }],
            ["content-remove", {}],
            ["content-modify", { senders: "initiator" }],
            ["transport-info", {
              transport: { kind: "ice-udp", ufrag: "x", pwd: "y".repeat(22), candidates: [candidate] },
            }],
          ];
          const refused = (condition: string, app?: string) => (e: unknown) => {
            assert.ok(e instanceof StanzaError, String(e));
            assert.equal(e.condition, condition);
            assert.equal(e.application?.name, app);
            return true;
          };
          // A third party, and another resource of the peer: the session is not theirs.
          for (const from of [mallory, bobOther]) {
            for (const [action, extra] of each) {
              await assert.rejects(
                from.iq(stanza(action, "0", extra)),
                refused("item-not-found", "unknown-session"),
              );
            }
          }
          // The peer, naming a content the session does not have.
          for (const action of ["transport-info", "content-remove", "content-modify"] as const) {
            const extra = each.find(([x]) => x === action)![1];
            await assert.rejects(bob.conn.iq(stanza(action, "nope", extra)), refused("bad-request"));
          }
          // A content-modify naming a known and an unknown content changes neither.
          const modify = buildJingleIq({
            action: "content-modify",
            sid: a.sid,
            contents: [
              { creator: "initiator", name: "0", senders: "initiator" },
              { creator: "initiator", name: "nope", senders: "initiator" },
            ],
            groups: [],
          }, { to: alice.conn.jid, id: crypto.randomUUID() }) as unknown as Element;
          await assert.rejects(bob.conn.iq(modify), refused("bad-request"));
          assert.equal(snapshot(), before, "the call's media and negotiation are unchanged");
          assert.equal(a.state, "active");
          await exchangeRtp(a, b, "audio", 4);
          await a.hangup();
          await b.ended;
          // The ended session is gone: anything for it is an unknown session.
          await assert.rejects(
            bob.conn.iq(stanza("transport-info", "0", each[5]![1])),
            refused("item-not-found", "unknown-session"),
          );
          await assert.rejects(
            bob.conn.iq(stanza("content-add", "1", each[0]![1])),
            refused("item-not-found", "unknown-session"),
          );
        },
      );

      await t.step("session-initiate with more media than proposed → security-error", async () => {
        // A man in the middle strips the video from alice's propose: bob agrees to an audio call, then the
        // session-initiate carries video too.
        const conn = alice.conn;
        const origSend = conn.send.bind(conn);
        conn.send = (stanza: Element) => {
          const p = stanza.getChild("propose", NS_JMI);
          if (p) p.children = p.children.filter((c) => typeof c === "string" || c.attrs.media !== "video");
          return origSend(stanza);
        };
        try {
          const incoming = nextIncoming(bobCalls);
          const a = await aliceCalls.call(bob.conn.bareJid, { video: true });
          const b = await incoming;
          assert.deepEqual(b.media, ["audio"]);
          const end = await b.ended;
          assert.equal(end.reason, "security-error");
          assert.match(end.text ?? "", /differ from the proposed/);
          assert.equal((await a.ended).reason, "security-error");
          assert.equal(b.phases.firstRtpReceived, undefined);
          assert.ok(bobLog.lines.some((l) => l.msg === "session-initiate media differ from the JMI propose"));
        } finally {
          conn.send = origSend;
        }
      });

      await t.step("session-accept without a content of the initiate → security-error", async () => {
        const out = jingleOut(bob, (j) => {
          if (j.attrs.action !== "session-accept") return;
          j.children = j.children.filter((c) =>
            typeof c === "string" ||
            !(c.name === "content" && c.getChild("description", NS_RTP)?.attrs.media === "video")
          );
          for (const g of j.getChildren("group")) {
            g.children = g.children.filter((c) => typeof c === "string" || c.attrs.name !== "1");
          }
        });
        try {
          const incoming = nextIncoming(bobCalls);
          const a = await aliceCalls.call(bob.conn.bareJid, { video: true });
          const b = await incoming;
          const end = await a.ended;
          assert.equal(end.reason, "security-error");
          assert.match(end.text ?? "", /session-accept contents .* differ from the initiated/);
          assert.equal((await b.ended).reason, "security-error");
          assert.ok(
            aliceLog.lines.some((l) => l.msg === "session-accept contents differ from the session-initiate"),
          );
        } finally {
          out.undo();
        }
      });

      await t.step(
        "XEP-0353 existing-session rule: a new propose from the peer migrates the running call",
        async () => {
          const { a, b } = await dial(bobCalls, aliceCalls, alice);
          // bob's client "restarts" as another resource and calls again.
          const phone = await connectionOn(server, "bob", "phone");
          raws.push(phone);
          await phone.sendPresence();
          const phoneSpy = jmiSpy(phone);
          const bobSpy = jmiSpy(bob.conn);
          const incoming = nextIncoming(aliceCalls);
          try {
            await phone.send(
              buildJmiMessage({ action: "propose", id: "migrated-1", media: ["audio"] }, {
                to: alice.conn.bareJid,
              }) as unknown as Element,
            );
            // alice: the old call ends as expired, naming the new session.
            assert.deepEqual(await b.ended, {
              reason: "expired",
              text: "migrated to migrated-1",
              migratedTo: "migrated-1",
            });
            // bob/bot got <finish><reason><expired/></reason><migrated to='migrated-1'/></finish> and ends its side.
            assert.deepEqual(await a.ended, {
              reason: "expired",
              migratedTo: "migrated-1",
            });
            await until(
              () => bobSpy.got.some((m) => m.a.action === "finish" && m.a.id === a.sid),
              3000,
              "finish",
            );
            const fin = bobSpy.got.find((m) => m.a.action === "finish" && m.a.id === a.sid)!;
            assert.ok(fin, "finish for the old sid");
            assert.equal(fin.from, alice.conn.jid);
            const migrated = fin.raw.getChild("migrated");
            assert.equal(migrated?.attrs.to, "migrated-1");
            assert.equal(migrated?.getNS(), NS_JMI);
            // … and the new propose is answered without asking: proceed to the new resource.
            const c = await incoming;
            assert.equal(c.sid, "migrated-1");
            await until(
              () => phoneSpy.got.some((m) => m.a.action === "proceed" && m.a.id === "migrated-1"),
              3000,
              "proceed",
            );
            assert.equal(aliceCalls.calls.size, 1);
            await c.hangup();
          } finally {
            phoneSpy.off();
            bobSpy.off();
          }
        },
      );
    } finally {
      for (const c of stops) await c.stop().catch(() => {});
      for (const e of open) await e.close().catch(() => {});
      for (const c of raws) await c.close().catch(() => {});
      await server.stop();
      await Deno.remove(tmp, { recursive: true });
    }
  },
});
