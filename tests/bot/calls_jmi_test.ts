/**
 * JMI edge cases on a real Prosody: glare tie-break, `<finish/>`, direct session-initiate, own-JID JMI (other
 * devices), session-info, and XEP-0215 STUN discovery against a tiny in-test STUN responder.
 */
import assert from "node:assert/strict";
import { connectionOn, endpointOn, quiet } from "./_support.ts";
import dgram from "node:dgram";
import type { Endpoint } from "../../bot/endpoint.ts";
import { type Call, type Calls, type CallsOptions, NS_EXTDISCO, setupCalls } from "../../bot/calls.ts";
import { startProsody } from "../../scripts/prosody.ts";
import {
  buildJingleIq,
  buildJmiMessage,
  type Element as JingleElement,
  type JmiAction,
  NS_JMI,
  parseJmiElement,
} from "../../jingle/mod.ts";
import { type Element, queryDiscoInfo, StanzaError, xml, type XmppConnection } from "../../xmpp/mod.ts";

const verbose = Deno.env.get("CALLS_DEBUG")
  ? {
    debug: (m: string, f?: unknown) => console.log("D", m, f ?? ""),
    info: (m: string, f?: unknown) => console.log("I", m, f ?? ""),
    warn: (m: string, f?: unknown) => console.log("W", m, f ?? ""),
    error: (m: string, f?: unknown) => console.log("E", m, f ?? ""),
  }
  : quiet;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** A minimal STUN server (RFC 5389 Binding success with XOR-MAPPED-ADDRESS) on 127.0.0.1. */
async function stunResponder() {
  const sock = dgram.createSocket("udp4");
  const requests: { address: string; port: number }[] = [];
  sock.on("message", (msg: Uint8Array, rinfo: { address: string; port: number }) => {
    if (msg.length < 20) return;
    const v = new DataView(msg.buffer, msg.byteOffset, msg.byteLength);
    if (v.getUint16(0) !== 0x0001 || v.getUint32(4) !== 0x2112a442) return;
    requests.push({ address: rinfo.address, port: rinfo.port });
    const out = new Uint8Array(32);
    const o = new DataView(out.buffer);
    o.setUint16(0, 0x0101);
    o.setUint16(2, 12);
    o.setUint32(4, 0x2112a442);
    out.set(msg.subarray(8, 20), 8);
    o.setUint16(20, 0x0020); // XOR-MAPPED-ADDRESS
    o.setUint16(22, 8);
    o.setUint8(25, 0x01);
    o.setUint16(26, rinfo.port ^ 0x2112);
    const ip = rinfo.address.split(".").map(Number);
    o.setUint32(28, (((ip[0]! << 24) | (ip[1]! << 16) | (ip[2]! << 8) | ip[3]!) ^ 0x2112a442) >>> 0);
    sock.send(out, rinfo.port, rinfo.address);
  });
  await new Promise<void>((r) => sock.bind(0, "127.0.0.1", () => r()));
  return {
    port: sock.address().port,
    requests,
    close: () => new Promise<void>((r) => sock.close(() => r())),
  };
}

function nextIncoming(calls: Calls): Promise<Call> {
  return new Promise((resolve) => {
    const off = calls.onIncoming((c) => {
      off();
      resolve(c);
    });
  });
}

/** Records the JMI messages `conn` receives (including carbons). */
function jmiSpy(conn: XmppConnection) {
  const got: { from: string; a: JmiAction; carbon?: string; raw: Element }[] = [];
  const off = conn.onMessage(NS_JMI, (p, ctx) => {
    try {
      got.push({
        from: ctx.from,
        a: parseJmiElement(p as unknown as JingleElement),
        ...(ctx.carbon ? { carbon: ctx.carbon } : {}),
        raw: p,
      });
    } catch { /* ignore */ }
  });
  return { got, off };
}

async function until(cond: () => boolean, ms = 5000, what = "condition") {
  for (let t = 0; t < ms && !cond(); t += 20) await sleep(20);
  assert.ok(cond(), `timed out waiting for ${what}`);
}

async function rtpBothWays(a: Call, b: Call) {
  let ab = 0, ba = 0;
  const offA = a.peer!.onRtp(() => ba++);
  const offB = b.peer!.onRtp(() => ab++);
  const pkt = new Uint8Array(20);
  pkt[0] = 0x80;
  pkt[1] = 111;
  for (let i = 0; i < 5 && (ab === 0 || ba === 0); i++) {
    await a.peer!.sendRtp("audio", pkt);
    await b.peer!.sendRtp("audio", pkt);
    await sleep(30);
  }
  await until(() => ab > 0 && ba > 0, 3000, "RTP both ways");
  offA();
  offB();
}

Deno.test({
  name:
    "setupCalls(): glare, finish, direct initiate, other devices, session-info, XEP-0215 on a real Prosody",
  sanitizeOps: false,
  sanitizeResources: false,
  async fn(t) {
    const stun = await stunResponder();
    const server = await startProsody({
      externalServices: [{ type: "stun", host: "127.0.0.1", port: stun.port, transport: "udp" }],
    });
    const tmp = await Deno.makeTempDir({ prefix: "calls-jmi-test-" });
    const open: Endpoint[] = [];
    const raws: XmppConnection[] = [];
    const stops: Calls[] = [];
    const connect = async (user: string) => {
      const e = await endpointOn(server, user, tmp);
      open.push(e);
      return e;
    };
    const raw = async (user: string, resource: string) => {
      const c = await connectionOn(server, user, resource);
      raws.push(c);
      await c.sendPresence();
      return c;
    };
    const calls = async (e: Endpoint, o: CallsOptions = {}) => {
      const c = await setupCalls(e, { logger: verbose, ...o });
      stops.push(c);
      return c;
    };
    try {
      const alice = await connect("alice");
      const bob = await connect("bob");
      const aliceCalls = await calls(alice, { verify: "require" });
      const bobCalls = await calls(bob, { verify: "require" });

      await t.step(
        "XEP-0215: server advertises extdisco; the call uses exactly its STUN server",
        async () => {
          const info = await queryDiscoInfo(alice.conn, server.domain);
          assert.ok(
            info.features.includes(NS_EXTDISCO),
            "mod_external_services advertises urn:xmpp:extdisco:2",
          );
          const before = stun.requests.length;
          const incoming = nextIncoming(bobCalls);
          const a = await aliceCalls.call(bob.conn.bareJid);
          const b = await incoming;
          await Promise.all([a.connected, b.connected]);
          await rtpBothWays(a, b);
          const expected = [{ urls: `stun:127.0.0.1:${stun.port}` }];
          assert.deepEqual(a.iceServers, expected);
          assert.deepEqual(b.iceServers, expected);
          await until(() => stun.requests.length > before, 3000, "a STUN binding request");
          assert.ok(stun.requests.every((r) => r.address === "127.0.0.1"));
          await a.hangup();
          await b.ended;
        },
      );

      await t.step(
        "normal hangup sends JMI <finish><success/></finish>; a received finish ends the call",
        async () => {
          const spy = jmiSpy(bob.conn);
          try {
            const incoming = nextIncoming(bobCalls);
            const a = await aliceCalls.call(bob.conn.bareJid);
            const b = await incoming;
            await Promise.all([a.connected, b.connected]);
            await a.hangup();
            assert.deepEqual(await b.ended, { reason: "success" });
            await until(
              () => spy.got.some((m) => m.a.action === "finish" && m.a.id === a.sid),
              3000,
              "finish",
            );
            const fin = spy.got.find((m) => m.a.action === "finish")!;
            assert.equal(fin.from, alice.conn.jid);
            assert.equal(fin.a.action === "finish" && fin.a.reason?.condition, "success");

            // Understood when received: a <finish/> from the peer ends a live call.
            const incoming2 = nextIncoming(aliceCalls);
            const c = await bobCalls.call(alice.conn.bareJid);
            const d = await incoming2;
            await Promise.all([c.connected, d.connected]);
            await bob.conn.send(
              buildJmiMessage({ action: "finish", id: c.sid, reason: { condition: "success" } }, {
                to: alice.conn.jid,
              }) as unknown as Element,
            );
            assert.deepEqual(await d.ended, { reason: "success" });
            await c.hangup();
          } finally {
            spy.off();
          }
        },
      );

      await t.step(
        "glare: both call each other at once → lower sid wins, exactly one call connects",
        async () => {
          const spyA = jmiSpy(alice.conn);
          const spyB = jmiSpy(bob.conn);
          const inA: Call[] = [];
          const inB: Call[] = [];
          const offA = aliceCalls.onIncoming((c) => inA.push(c));
          const offB = bobCalls.onIncoming((c) => inB.push(c));
          try {
            const [a, b] = await Promise.all([
              aliceCalls.call(bob.conn.bareJid),
              bobCalls.call(alice.conn.bareJid),
            ]);
            const [winner, loser] = a.sid < b.sid ? [a, b] : [b, a];
            const loserEp = loser === a ? alice : bob;
            const winnerEp = loser === a ? bob : alice;
            assert.deepEqual(await loser.ended, { reason: "expired", text: "Tie-Break" });
            await winner.connected;
            const loserIn = loser === a ? inA : inB;
            const winnerIn = loser === a ? inB : inA;
            assert.equal(loserIn.length, 1, "the loser answers the winner's call");
            assert.equal(loserIn[0]!.sid, winner.sid);
            assert.equal(winnerIn.length, 0, "the winner never rings");
            await loserIn[0]!.connected;
            await rtpBothWays(winner, loserIn[0]!);
            // The loser's propose was rejected with the tie-break reason, and the loser retracted it likewise.
            const loserSpy = loserEp === alice ? spyA : spyB;
            const winnerSpy = winnerEp === alice ? spyA : spyB;
            await until(
              () => loserSpy.got.some((m) => m.a.action === "reject" && m.a.id === loser.sid),
              3000,
              "rej",
            );
            const rej = loserSpy.got.find((m) => m.a.action === "reject" && m.a.id === loser.sid)!;
            assert.equal(rej.from, winnerEp.conn.jid);
            assert.ok(rej.a.action === "reject" && rej.a.tieBreak);
            assert.deepEqual(
              rej.a.action === "reject" && rej.a.reason && {
                c: rej.a.reason.condition,
                t: rej.a.reason.text,
              },
              { c: "expired", t: "Tie-Break" },
            );
            assert.ok(rej.raw.getChild("tie-break"), "<tie-break/> sibling of <reason/>");
            await until(
              () => winnerSpy.got.some((m) => m.a.action === "retract" && m.a.id === loser.sid),
              3000,
            );
            const ret = winnerSpy.got.find((m) => m.a.action === "retract" && m.a.id === loser.sid)!;
            assert.ok(ret.a.action === "retract" && ret.a.tieBreak);
            assert.equal(aliceCalls.calls.size, 1);
            assert.equal(bobCalls.calls.size, 1);
            await winner.hangup();
            await loserIn[0]!.ended;
          } finally {
            offA();
            offB();
            spyA.off();
            spyB.off();
          }
        },
      );

      await t.step(
        "direct session-initiate without JMI is answered and connects (OMEMO-verified)",
        async () => {
          const incoming = nextIncoming(bobCalls);
          const a = await aliceCalls.call(bob.conn.jid, { jmi: false });
          const b = await incoming;
          assert.equal(b.sid, a.sid);
          assert.equal(b.peerJid, alice.conn.jid);
          await Promise.all([a.connected, b.connected]);
          assert.equal(a.verification.omemo, true);
          assert.equal(b.verification.omemo, true);
          assert.equal(a.remoteInfo.ringing, true, "callee sent session-info <ringing/>");
          await rtpBothWays(a, b);
          await b.hangup();
          assert.equal((await a.ended).reason, "success");
        },
      );

      await t.step(
        "direct session-initiate declined by the accept callback → decline, no media",
        async () => {
          const dave = await connect("dave");
          const daveCalls = await calls(dave, { accept: () => false });
          const incoming = nextIncoming(daveCalls);
          const a = await aliceCalls.call(dave.conn.jid, { jmi: false });
          const b = await incoming;
          assert.equal((await a.ended).reason, "decline");
          assert.equal((await b.ended).reason, "decline");
          assert.equal(b.peer, undefined);
          await daveCalls.stop();
        },
      );

      await t.step(
        "session-info ringing/active/mute/unmute recorded; unknown payload → unsupported-info",
        async () => {
          const incoming = nextIncoming(bobCalls);
          const a = await aliceCalls.call(bob.conn.bareJid);
          const b = await incoming;
          await Promise.all([a.connected, b.connected]);
          assert.equal(b.remoteMuted, false);
          await a.sendInfo({ type: "mute", creator: "initiator", name: "0" });
          assert.equal(b.remoteMuted, true);
          assert.deepEqual(b.remoteInfo.muted, ["0"]);
          await a.sendInfo({ type: "unmute", creator: "initiator", name: "0" });
          assert.equal(b.remoteMuted, false);
          await b.sendInfo({ type: "active" });
          await b.sendInfo({ type: "ringing" });
          assert.equal(a.remoteInfo.active, true);
          assert.equal(a.remoteInfo.ringing, true);
          const iq = buildJingleIq({
            action: "session-info",
            sid: a.sid,
            contents: [],
            groups: [],
            infoUnknown: xml("knock", { xmlns: "urn:example:nope" }) as unknown as JingleElement,
          }, { to: bob.conn.jid, id: crypto.randomUUID() });
          await assert.rejects(alice.conn.iq(iq as unknown as Element), (e: unknown) => {
            assert.ok(e instanceof StanzaError);
            assert.equal(e.condition, "feature-not-implemented");
            assert.equal(e.application?.name, "unsupported-info");
            assert.equal(e.application?.attrs.xmlns, "urn:xmpp:jingle:errors:1");
            return true;
          });
          assert.equal(b.state, "active");
          await a.hangup();
          await b.ended;
        },
      );

      await t.step(
        "JMI from our other devices stops ringing ('answered elsewhere'); others' carbons ignored",
        async () => {
          const erin = await connect("erin");
          const erinCalls = await calls(erin, { accept: () => new Promise(() => {}) });
          const phone = await raw("erin", "phone");
          const mallory = await raw("mallory", "m");
          const propose = async (id: string) => {
            const incoming = nextIncoming(erinCalls);
            await mallory.send(
              buildJmiMessage({ action: "propose", id, media: ["audio"] }, {
                to: erin.conn.bareJid,
              }) as unknown as Element,
            );
            return await incoming;
          };
          const sendJmi = (c: XmppConnection, a: JmiAction, to: string) =>
            c.send(buildJmiMessage(a, { to }) as unknown as Element);

          // accept from our other resource to our bare JID
          let b = await propose("s-accept");
          await sendJmi(phone, { action: "accept", id: b.sid }, erin.conn.bareJid);
          assert.deepEqual(await b.ended, { reason: "cancel", text: "answered elsewhere" });

          // carbon of our other resource's proceed to the caller
          b = await propose("s-proceed");
          await sendJmi(phone, { action: "proceed", id: b.sid }, mallory.jid);
          assert.deepEqual(await b.ended, { reason: "cancel", text: "answered elsewhere" });

          // carbon of our other resource's reject
          b = await propose("s-reject");
          await sendJmi(phone, { action: "reject", id: b.sid }, mallory.jid);
          assert.deepEqual(await b.ended, { reason: "decline", text: "answered elsewhere" });

          // a carbon of someone else's JMI to our other resource is ignored; the same sent to us counts
          b = await propose("s-other");
          const spy = jmiSpy(erin.conn);
          await sendJmi(mallory, { action: "retract", id: b.sid }, phone.jid);
          await sendJmi(mallory, { action: "reject", id: b.sid }, phone.jid);
          await until(
            () => spy.got.filter((m) => m.carbon === "received" && m.from === mallory.jid).length === 2,
            3000,
            "the carbons of mallory's JMI to erin/phone",
          );
          spy.off();
          await sleep(100);
          assert.equal(b.state, "ringing");
          await sendJmi(mallory, { action: "retract", id: b.sid }, erin.conn.bareJid);
          assert.equal((await b.ended).reason, "cancel");
          assert.equal(b.peer, undefined);
        },
      );

      await t.step("propose from a stranger refused by accept → <reject>, no ICE gathering", async () => {
        const frank = await connect("frank");
        const frankCalls = await calls(frank, { accept: (peer) => peer === alice.conn.bareJid });
        const stranger = await raw("stranger", "s");
        const spy = jmiSpy(stranger);
        const stunBefore = stun.requests.length;
        const incoming = nextIncoming(frankCalls);
        await stranger.send(
          buildJmiMessage({ action: "propose", id: "strange-1", media: ["audio"] }, {
            to: frank.conn.bareJid,
          }) as unknown as Element,
        );
        const b = await incoming;
        assert.equal((await b.ended).reason, "decline");
        await until(
          () => spy.got.some((m) => m.a.action === "reject" && m.a.id === "strange-1"),
          3000,
          "reject",
        );
        assert.equal(b.peer, undefined, "no media plane (no ICE gathering) for a refused call");
        assert.deepEqual(b.iceServers, []);
        assert.equal(stun.requests.length, stunBefore, "no STUN traffic for a refused call");
        spy.off();
      });

      await t.step(
        "calling an account with no one online: the bounced propose ends the call at once",
        async () => {
          // The embedded Prosody keeps no offline messages: the propose comes back as service-unavailable.
          await server.createAccount("nobody-home", "pw");
          const a = await aliceCalls.call(`nobody-home@${server.domain}`);
          const end = await a.ended;
          assert.equal(end.reason, "connectivity-error");
          assert.match(end.text ?? "", /propose bounced \(service-unavailable\)/);
          assert.equal(a.phases.proceed, undefined);
        },
      );
    } finally {
      for (const c of stops) await c.stop().catch(() => {});
      for (const e of open) await e.close().catch(() => {});
      for (const c of raws) await c.close().catch(() => {});
      await server.stop();
      await stun.close();
      await Deno.remove(tmp, { recursive: true });
    }
  },
});
