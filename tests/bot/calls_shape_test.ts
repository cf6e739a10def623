/**
 * Byte-level shape of what the call bot sends, checked against the interop pitfalls of Conversations and Dino
 * (docs/protocol.md §2.2–§2.4, §3.1, §3.3, §3.4). A raw XMPP connection on a real Prosody plays the other client:
 * Conversations (its captured session-initiate, content names `0`/`1`, BUNDLE), a Conversations-like callee with a
 * real werift media plane that answers with a single codec per content as Dino does, and Dino's unbundled offer
 * (content names `audio`/`video`, own ICE credentials per content, RTP+RTCP components with rtcp-mux). Every
 * stanza the bot sends to it is recorded as received and checked attribute by attribute.
 */
import assert from "node:assert/strict";
import dgram from "node:dgram";
import { connectionOn, endpointOn, quiet } from "./_support.ts";
import { rtpPacket, sleep } from "../media/helpers.ts";
import { FIXTURES, loadCapture } from "../jingle/_helpers.ts";
import type { Endpoint } from "../../bot/endpoint.ts";
import { type Call, type Calls, setupCalls } from "../../bot/calls.ts";
import { startProsody } from "../../scripts/prosody.ts";
import {
  buildJingleIq,
  buildJmiMessage,
  contentMapToSdp,
  type Element as JingleElement,
  type IceUdpTransport,
  type Jingle,
  type JingleContent,
  NS_DTLS,
  NS_GROUPING,
  NS_HINTS,
  NS_ICE_UDP,
  NS_JINGLE,
  NS_JMI,
  NS_OMEMO_DTLS,
  NS_RTP,
  parseJingle,
  parseXml,
  sdpToContentMap,
} from "../../jingle/mod.ts";
import { type Element, type XmppConnection } from "../../xmpp/mod.ts";
import { createPeer, type Peer } from "../../media/webrtc.ts";

const verbose = Deno.env.get("CALLS_DEBUG")
  ? {
    debug: (m: string, f?: unknown) => console.log("D", m, f ?? ""),
    info: (m: string, f?: unknown) => console.log("I", m, f ?? ""),
    warn: (m: string, f?: unknown) => console.log("W", m, f ?? ""),
    error: (m: string, f?: unknown) => console.log("E", m, f ?? ""),
  }
  : quiet;

const NS_RECEIPTS = "urn:xmpp:receipts";
const FP_PLAIN =
  "5F:0A:1B:2C:3D:4E:5F:60:71:82:93:A4:B5:C6:D7:E8:F9:0A:1B:2C:3D:4E:5F:60:71:82:93:A4:B5:C6:D7:9C";

/** A minimal STUN server on 127.0.0.1: Binding success with XOR-MAPPED-ADDRESS = the request's source. */
async function stunResponder() {
  const sock = dgram.createSocket("udp4");
  sock.on("message", (msg: Uint8Array, rinfo: { address: string; port: number }) => {
    if (msg.length < 20) return;
    const v = new DataView(msg.buffer, msg.byteOffset, msg.byteLength);
    if (v.getUint16(0) !== 0x0001 || v.getUint32(4) !== 0x2112a442) return;
    const out = new Uint8Array(32);
    const o = new DataView(out.buffer);
    o.setUint16(0, 0x0101);
    o.setUint16(2, 12);
    o.setUint32(4, 0x2112a442);
    out.set(msg.subarray(8, 20), 8);
    o.setUint16(20, 0x0020);
    o.setUint16(22, 8);
    o.setUint8(25, 0x01);
    o.setUint16(26, rinfo.port ^ 0x2112);
    const ip = rinfo.address.split(".").map(Number);
    o.setUint32(28, (((ip[0]! << 24) | (ip[1]! << 16) | (ip[2]! << 8) | ip[3]!) ^ 0x2112a442) >>> 0);
    sock.send(out, rinfo.port, rinfo.address);
  });
  await new Promise<void>((r) => sock.bind(0, "127.0.0.1", () => r()));
  return { port: sock.address().port, close: () => new Promise<void>((r) => sock.close(() => r())) };
}

async function until(cond: () => boolean, ms = 5000, what = "condition") {
  for (let t = 0; t < ms && !cond(); t += 20) await sleep(20);
  assert.ok(cond(), `timed out waiting for ${what}`);
}

/** A plain XMPP client that records every Jingle IQ and JMI / receipt message it receives (answering IQs with result). */
interface RawClient {
  conn: XmppConnection;
  jingles: { iq: Element; j: Jingle }[];
  messages: Element[];
}

function children(e: Element, name: string): Element[] {
  return e.getChildElements().filter((c) => c.name === name);
}

/** The `<transport/>` children of every `<content/>`. */
function transportsOf(jingle: Element): Element[] {
  return children(jingle, "content").flatMap((c) => children(c, "transport"));
}

const noSpace = (what: string, v: string | undefined) => {
  assert.ok(v !== undefined && v.length > 0, `${what} present`);
  assert.doesNotMatch(v, /\s/, `${what} has no whitespace`);
};

/**
 * What Conversations needs to turn a transport into SDP (SessionDescription.java / IceUdpTransportInfo): ufrag and
 * pwd without whitespace, `setup` on the fingerprint, only UDP candidates with the required attributes.
 */
function assertTransportShape(
  t: Element,
  opts: { fingerprint: "required" | "forbidden"; setups?: string[] },
) {
  assert.equal(t.attrs.xmlns, NS_ICE_UDP);
  noSpace("ufrag", t.attrs.ufrag);
  noSpace("pwd", t.attrs.pwd);
  const fps = children(t, "fingerprint");
  if (opts.fingerprint === "forbidden") assert.equal(fps.length, 0, "no fingerprint");
  else {
    assert.equal(fps.length, 1, "one fingerprint");
    const fp = fps[0]!;
    assert.equal(fp.attrs.xmlns, NS_DTLS);
    assert.equal(fp.attrs.hash, "sha-256");
    assert.ok(opts.setups!.includes(fp.attrs.setup!), `setup '${fp.attrs.setup}' in ${opts.setups}`);
    assert.match(fp.text(), /^([0-9A-F]{2}:){31}[0-9A-F]{2}$/);
  }
  for (const c of children(t, "candidate")) {
    assert.equal(c.attrs.protocol, "udp", "only UDP candidates");
    for (const a of ["foundation", "component", "priority", "ip", "port", "type"]) {
      noSpace(`candidate ${a}`, c.attrs[a]);
    }
    assert.match(c.attrs.component!, /^\d+$/);
    assert.match(c.attrs.priority!, /^\d+$/);
    assert.match(c.attrs.port!, /^\d+$/);
  }
}

/** Numeric payload-type ids, codec names and fmtp parameters without whitespace. */
function assertDescriptionShape(d: Element, media: string) {
  assert.equal(d.attrs.xmlns, NS_RTP);
  assert.equal(d.attrs.media, media);
  const pts = children(d, "payload-type");
  assert.ok(pts.length > 0, "at least one payload-type");
  for (const p of pts) {
    assert.match(p.attrs.id!, /^\d+$/, "numeric payload-type id");
    assert.ok(Number(p.attrs.id) <= 127);
    noSpace("codec name", p.attrs.name);
    assert.match(p.attrs.clockrate!, /^\d+$/);
    for (const par of children(p, "parameter")) {
      noSpace("fmtp parameter name", par.attrs.name);
      noSpace("fmtp parameter value", par.attrs.value);
    }
  }
}

/** The JMI envelope every client relies on: type chat and a store hint (XEP-0353 §2.4, XEP-0334). */
function assertJmiEnvelope(m: Element) {
  assert.equal(m.attrs.type, "chat", "JMI message type='chat'");
  assert.ok(m.getChild("store", NS_HINTS), "JMI message carries <store xmlns='urn:xmpp:hints'/>");
}

/** Records every Jingle IQ (answered with a result) and JMI / receipt message `conn` receives. */
function record(conn: XmppConnection): RawClient {
  const r: RawClient = { conn, jingles: [], messages: [] };
  conn.handleIq("set", "jingle", NS_JINGLE, (p, ctx) => {
    r.jingles.push({ iq: ctx.stanza, j: parseJingle(p as unknown as JingleElement) });
    return null;
  });
  conn.onMessage(NS_JMI, (_p, ctx) => void (!ctx.carbon && r.messages.push(ctx.stanza)));
  conn.onMessage(NS_RECEIPTS, (_p, ctx) => void (!ctx.carbon && r.messages.push(ctx.stanza)));
  return r;
}

const jmiOf = (m: Element) => m.getChildElements().find((c) => c.attrs.xmlns === NS_JMI);

Deno.test({
  name:
    "calls: the stanzas the bot sends have the shape Conversations and Dino need (real Prosody, raw peers)",
  sanitizeOps: false,
  sanitizeResources: false,
  async fn(t) {
    // A STUN server announced through XEP-0215: its server-reflexive candidates arrive after the offer/answer was
    // built, so the bot trickles them (transport-info) and their shape can be checked.
    const stun = await stunResponder();
    const server = await startProsody({
      externalServices: [{ type: "stun", host: "127.0.0.1", port: stun.port, transport: "udp" }],
    });
    const tmp = await Deno.makeTempDir({ prefix: "calls-shape-test-" });
    const raws: XmppConnection[] = [];
    const peers: Peer[] = [];
    let bot: Endpoint | undefined;
    const opened: Endpoint[] = [];
    let botCalls: Calls | undefined;
    const raw = async (user: string, resource: string): Promise<RawClient> => {
      const conn = await connectionOn(server, user, resource);
      raws.push(conn);
      const r = record(conn);
      // Available before anyone sends to the bare JID (else Prosody stores the message offline): wait for the
      // server's echo of our own presence.
      const online = new Promise<void>((resolve) => {
        const off = conn.onPresence((_p, from) => {
          if (from === conn.jid) {
            off();
            resolve();
          }
        });
      });
      await conn.sendPresence();
      await online;
      return r;
    };
    const jmiFrom = (r: RawClient, action: string, id: string) =>
      r.messages.find((m) => jmiOf(m)?.name === action && jmiOf(m)?.attrs.id === id);
    const jingleFrom = (r: RawClient, action: string, sid: string) =>
      r.jingles.find((x) => x.j.action === action && x.j.sid === sid);
    const nextIncoming = (calls: Calls) =>
      new Promise<Call>((resolve) => {
        const off = calls.onIncoming((c) => {
          off();
          resolve(c);
        });
      });
    try {
      bot = await endpointOn(server, "bot", tmp);
      botCalls = await setupCalls(bot, { logger: verbose, connectTimeoutMs: 8_000 });
      const botJid = bot.conn.jid;

      /** A raw caller proposes `sid`; returns once the bot proceeded (checks the JMI answers on the way). */
      const proposeAndProceed = async (r: RawClient, sid: string, media: ("audio" | "video")[]) => {
        const incoming = nextIncoming(botCalls!);
        await r.conn.send(
          buildJmiMessage({ action: "propose", id: sid, media }, {
            to: bot!.conn.bareJid,
            id: `jm-propose-${sid}`,
            requestReceipt: true,
          }) as unknown as Element,
        );
        const call = await incoming;
        await until(() => !!jmiFrom(r, "proceed", sid), 5000, "proceed");
        for (const action of ["ringing", "proceed"]) {
          const m = jmiFrom(r, action, sid)!;
          assert.ok(m, action);
          assertJmiEnvelope(m);
          assert.equal(m.attrs.to, r.conn.jid, `${action} goes to the caller's full JID`);
          assert.equal(m.attrs.from, botJid);
        }
        assert.equal(jmiFrom(r, "proceed", sid)!.attrs.id, `jm-proceed-${sid}`);
        const receipt = r.messages.find((m) => m.getChild("received", NS_RECEIPTS));
        assert.equal(
          receipt?.getChild("received", NS_RECEIPTS)?.attrs.id,
          `jm-propose-${sid}`,
          "receipt for propose",
        );
        return call;
      };

      await t.step(
        "Conversations' captured session-initiate (names 0/1, BUNDLE) → session-accept shape",
        async () => {
          const romeo = await raw("romeo", "Conversations.abcd");
          const iq = parseXml(Deno.readTextFileSync(new URL("conversations-session-initiate.xml", FIXTURES)));
          const sid = iq.getChild("jingle", NS_JINGLE)!.attrs.sid!;
          const call = await proposeAndProceed(romeo, sid, ["audio", "video"]);
          const jingle = iq.getChild("jingle", NS_JINGLE)!;
          jingle.attrs.initiator = romeo.conn.jid;
          iq.attrs.to = botJid;
          delete iq.attrs.from;
          await romeo.conn.iq(iq as unknown as Element);
          await until(() => !!jingleFrom(romeo, "session-accept", sid), 8000, "session-accept");
          const { iq: acc, j } = jingleFrom(romeo, "session-accept", sid)!;
          assert.equal(acc.attrs.from, botJid);
          assert.equal(acc.attrs.to, romeo.conn.jid);
          const el = acc.getChild("jingle", NS_JINGLE)!;
          assert.equal(el.attrs.responder, botJid);
          // Content names and BUNDLE group exactly as offered (SDP mids "0"/"1").
          assert.deepEqual(children(el, "content").map((c) => [c.attrs.name, c.attrs.creator]), [
            ["0", "initiator"],
            ["1", "initiator"],
          ]);
          const group = el.getChild("group", NS_GROUPING);
          assert.equal(group?.attrs.semantics, "BUNDLE");
          assert.deepEqual(children(group!, "content").map((c) => c.attrs.name), ["0", "1"]);
          for (const [i, c] of children(el, "content").entries()) {
            assertDescriptionShape(children(c, "description")[0]!, i === 0 ? "audio" : "video");
          }
          for (const tr of transportsOf(el)) {
            assertTransportShape(tr, { fingerprint: "required", setups: ["active", "passive"] });
          }
          // Conversations as caller drops trickled candidates that arrive before it processed the accept: ours are in it.
          const n = transportsOf(el).reduce((k, tr) => k + children(tr, "candidate").length, 0);
          assert.ok(n > 0, "session-accept carries candidates");
          assert.equal(j.contents.length, 2);
          // Nothing was trickled before the session-accept.
          const first = romeo.jingles.findIndex((x) => x.j.sid === sid);
          assert.equal(romeo.jingles[first]!.j.action, "session-accept");
          await romeo.conn.iq(buildJingleIq(
            { action: "session-terminate", sid, contents: [], groups: [], reason: { condition: "success" } },
            { to: botJid, id: crypto.randomUUID() },
          ) as unknown as Element);
          assert.equal((await call.ended).reason, "success");
        },
      );

      await t.step(
        "bot calls: propose to the bare JID, session-initiate to the full JID that proceeded; Dino-style single-codec answer connects",
        async () => {
          const juliet = await raw("juliet", "phone");
          const media = await createPeer({ role: "responder", audio: true, video: false });
          peers.push(media);
          const callP = botCalls!.call(juliet.conn.bareJid);
          await until(() => juliet.messages.some((m) => jmiOf(m)?.name === "propose"), 5000, "propose");
          const propose = juliet.messages.find((m) => jmiOf(m)?.name === "propose")!;
          const sid = jmiOf(propose)!.attrs.id!;
          assertJmiEnvelope(propose);
          assert.equal(propose.attrs.to, juliet.conn.bareJid, "propose goes to the bare JID");
          assert.equal(propose.attrs.id, `jm-propose-${sid}`);
          assert.ok(propose.getChild("request", NS_RECEIPTS));
          assert.deepEqual(
            children(jmiOf(propose)!, "description").map((d) => [d.attrs.xmlns, d.attrs.media]),
            [[
              NS_RTP,
              "audio",
            ]],
          );
          const a = await callP;
          await juliet.conn.send(
            buildJmiMessage({ action: "proceed", id: sid }, {
              to: propose.attrs.from!,
            }) as unknown as Element,
          );
          await until(() => !!jingleFrom(juliet, "session-initiate", sid), 8000, "session-initiate");
          const { iq: init, j } = jingleFrom(juliet, "session-initiate", sid)!;
          assert.equal(
            init.attrs.to,
            juliet.conn.jid,
            "session-initiate goes to the full JID that proceeded",
          );
          assert.equal(init.attrs.from, botJid);
          const el = init.getChild("jingle", NS_JINGLE)!;
          assert.equal(el.attrs.initiator, botJid);
          assert.deepEqual(children(el, "content").map((c) => c.attrs.name), ["0"]);
          assertDescriptionShape(children(children(el, "content")[0]!, "description")[0]!, "audio");
          for (const tr of transportsOf(el)) {
            assertTransportShape(tr, { fingerprint: "required", setups: ["actpass"] });
          }
          assert.equal(el.getChild("group", NS_GROUPING)?.attrs.semantics, "BUNDLE");
          // The server-reflexive candidate (from the XEP-0215 STUN server) names its base as rel-addr/rel-port.
          const srflx = transportsOf(el).flatMap((tr) => children(tr, "candidate")).filter((c) =>
            c.attrs.type === "srflx"
          );
          assert.ok(srflx.length > 0, "a srflx candidate from the announced STUN server");
          for (const c of srflx) {
            noSpace("rel-addr", c.attrs["rel-addr"]);
            assert.match(c.attrs["rel-port"]!, /^\d+$/);
          }

          // Answer as Dino does: exactly one payload-type per content.
          await media.setRemoteDescription(
            "offer",
            contentMapToSdp({ contents: j.contents, groups: j.groups }, { author: "initiator" }),
          );
          const answer = sdpToContentMap(await media.createAnswer(), { author: "responder" });
          for (const c of answer.contents) {
            if (c.description?.kind === "rtp") c.description.payloadTypes.splice(1);
          }
          assert.equal(
            answer.contents[0]!.description?.kind === "rtp" &&
              answer.contents[0]!.description.payloadTypes.length,
            1,
          );
          await juliet.conn.iq(buildJingleIq({
            action: "session-accept",
            sid,
            responder: juliet.conn.jid,
            contents: answer.contents,
            groups: answer.groups,
          }, { to: botJid, id: crypto.randomUUID() }) as unknown as Element);
          await a.connected;
          await media.waitConnected(8000);
          // RTP both ways over the single negotiated codec.
          let atRaw = 0, atBot = 0;
          const off1 = media.onRtp((e) => e.kind === "audio" && atRaw++);
          const off2 = a.peer!.onRtp((e) => e.kind === "audio" && atBot++);
          for (let i = 0; i < 5; i++) {
            await a.peer!.sendRtp("audio", rtpPacket(100 + i, new Uint8Array(20)));
            await media.sendRtp("audio", rtpPacket(100 + i, new Uint8Array(20)));
          }
          await until(() => atRaw === 5 && atBot === 5, 5000, "RTP both ways");
          off1();
          off2();

          // Trickled candidates (if any were gathered late): ufrag/pwd, one UDP candidate, never a fingerprint.
          for (const x of juliet.jingles.filter((x) => x.j.action === "transport-info" && x.j.sid === sid)) {
            const ti = x.iq.getChild("jingle", NS_JINGLE)!;
            for (const tr of transportsOf(ti)) {
              assertTransportShape(tr, { fingerprint: "forbidden" });
              assert.equal(children(tr, "candidate").length, 1);
            }
          }

          await a.hangup();
          await until(
            () => !!jingleFrom(juliet, "session-terminate", sid) && !!jmiFrom(juliet, "finish", sid),
            5000,
            "terminate + finish",
          );
          const term = jingleFrom(juliet, "session-terminate", sid)!;
          assert.equal(term.j.reason?.condition, "success");
          const fin = jmiFrom(juliet, "finish", sid)!;
          assertJmiEnvelope(fin);
          assert.equal(fin.attrs.to, juliet.conn.jid, "finish goes to the full JID");
          assert.ok(jmiOf(fin)!.getChild("reason", NS_JINGLE)?.getChild("success"));
        },
      );

      await t.step(
        "a call given up while ringing is retracted: to the bare JID, type chat, store hint",
        async () => {
          const romeo = await raw("romeo", "retract");
          const a = await botCalls!.call(romeo.conn.bareJid);
          await until(() => !!jmiFrom(romeo, "propose", a.sid), 5000, "propose");
          await a.hangup();
          assert.equal((await a.ended).reason, "cancel");
          await until(() => !!jmiFrom(romeo, "retract", a.sid), 5000, "retract");
          const m = jmiFrom(romeo, "retract", a.sid)!;
          assertJmiEnvelope(m);
          assert.equal(m.attrs.to, romeo.conn.bareJid, "retract goes to the bare JID, like the propose");
          assert.ok(jmiOf(m)!.getChild("reason", NS_JINGLE)?.getChild("cancel"));
          assert.equal(
            romeo.jingles.filter((x) => x.j.sid === a.sid).length,
            0,
            "no Jingle before a proceed",
          );
        },
      );

      await t.step(
        "Dino's unbundled offer (names audio/video, own transport per content, components 1+2, rtcp-mux) → matching answer",
        async () => {
          const dino = await raw("dino", "dino-alice");
          // Dino's captured audio content (its OMEMO fingerprint replaced by the plain one Dino sends without OMEMO)
          // plus a video content built the same way with its own ICE credentials, and no BUNDLE group.
          const cap = loadCapture("call-omemo-verified-alice-calls-bob.bob.xml").map((s) => s.stanza)
            .find((s) => s.getChild("jingle", NS_JINGLE)?.attrs.action === "session-initiate")!;
          const captured = parseJingle(cap.getChild("jingle", NS_JINGLE)!);
          const audio = captured.contents[0]!;
          assert.equal(audio.name, "audio");
          const fp = { kind: "plain" as const, hash: "sha-256", setup: "actpass" as const, value: FP_PLAIN };
          const at = audio.transport!.kind === "ice-udp" ? audio.transport : undefined;
          assert.ok(
            at && at.candidates.some((c) => c.component === 2),
            "the capture has RTCP (component 2) candidates",
          );
          const video = {
            creator: "initiator" as const,
            name: "video",
            senders: "both" as const,
            description: {
              kind: "rtp" as const,
              media: "video",
              payloadTypes: [
                {
                  id: 98,
                  name: "VP8",
                  clockrate: 90000,
                  parameters: [],
                  rtcpFb: [{ type: "nack" }, { type: "nack", subtype: "pli" }],
                },
              ],
              rtcpFb: [],
              headerExtensions: [{ id: 1, uri: "urn:3gpp:video-orientation" }],
              extmapAllowMixed: false,
              sources: [],
              ssrcGroups: [],
              rtcpMux: true,
            },
            transport: {
              kind: "ice-udp" as const,
              ufrag: "Vx9q",
              pwd: "Hk3v0b7QnS2cW9xZp4LmTa",
              fingerprint: fp,
              candidates: at.candidates.map((c) => ({ ...c, port: c.port + 1 })),
            },
          };
          const sid = crypto.randomUUID();
          const call = await proposeAndProceed(dino, sid, ["audio", "video"]);
          await dino.conn.iq(buildJingleIq({
            action: "session-initiate",
            sid,
            initiator: dino.conn.jid,
            contents: [{ ...audio, transport: { ...at, fingerprint: fp } }, video],
            groups: [],
          }, { to: botJid, id: crypto.randomUUID() }) as unknown as Element);
          await until(() => !!jingleFrom(dino, "session-accept", sid), 8000, "session-accept");
          const el = jingleFrom(dino, "session-accept", sid)!.iq.getChild("jingle", NS_JINGLE)!;
          assert.deepEqual(
            children(el, "content").map((c) => c.attrs.name),
            ["audio", "video"],
            "Dino's names kept",
          );
          assert.equal(
            el.getChild("group", NS_GROUPING),
            undefined,
            "no BUNDLE group in the answer to an unbundled offer",
          );
          const trs = transportsOf(el);
          for (const tr of trs) {
            assertTransportShape(tr, { fingerprint: "required", setups: ["active", "passive"] });
          }
          // One ICE transport per content: each with its own candidates (ports). werift gives the transports of one
          // peer the same ufrag/pwd, which SDP allows (a session-level ice-ufrag applies to every m-line).
          const ports = trs.map((tr) => new Set(children(tr, "candidate").map((c) => c.attrs.port)));
          assert.ok([...ports[0]!].every((p) => !ports[1]!.has(p)), "one ICE transport per content");
          for (const tr of trs) {
            assert.ok(children(tr, "candidate").length > 0, "candidates in the accept");
            assert.ok(
              children(tr, "candidate").every((c) => c.attrs.component === "1"),
              "RTP component only (rtcp-mux)",
            );
          }
          for (const [i, c] of children(el, "content").entries()) {
            const d = children(c, "description")[0]!;
            assertDescriptionShape(d, i === 0 ? "audio" : "video");
            assert.ok(d.getChild("rtcp-mux"), "rtcp-mux answered");
          }
          await dino.conn.iq(buildJingleIq(
            { action: "session-terminate", sid, contents: [], groups: [], reason: { condition: "success" } },
            { to: botJid, id: crypto.randomUUID() },
          ) as unknown as Element);
          assert.equal((await call.ended).reason, "success");
        },
      );

      await t.step(
        "a real unbundled Dino-style caller (names audio/video, one transport per content) connects, RTP on both",
        async () => {
          const dino = await raw("dino", "dino-real");
          const media = await createPeer({ role: "initiator", audio: true, video: true, bundle: false });
          peers.push(media);
          const offer = sdpToContentMap(await media.createOffer(), { author: "initiator" });
          // werift names its m-lines 0/1; Dino calls them audio/video. Rename on the way out and back.
          const toDino: Record<string, string> = { "0": "audio", "1": "video" };
          const fromDino: Record<string, string> = { audio: "0", video: "1" };
          assert.equal(offer.groups.length, 0, "an unbundled offer");
          // werift reuses one ICE ufrag for both transports (Dino has one per content); the ports differ.
          const ports = offer.contents.map((c) =>
            c.transport?.kind === "ice-udp" ? c.transport.candidates.map((x) => x.port).join() : ""
          );
          assert.notEqual(ports[0], ports[1], "one ICE transport per content");
          const sid = crypto.randomUUID();
          const call = await proposeAndProceed(dino, sid, ["audio", "video"]);
          await dino.conn.iq(buildJingleIq({
            action: "session-initiate",
            sid,
            initiator: dino.conn.jid,
            contents: offer.contents.map((c) => ({ ...c, name: toDino[c.name]!, senders: "both" })),
            groups: [],
          }, { to: botJid, id: crypto.randomUUID() }) as unknown as Element);
          await until(() => !!jingleFrom(dino, "session-accept", sid), 8000, "session-accept");
          const acc = jingleFrom(dino, "session-accept", sid)!.j;
          assert.deepEqual(acc.contents.map((c) => c.name), ["audio", "video"]);
          await media.setRemoteDescription(
            "answer",
            contentMapToSdp({
              contents: acc.contents.map((c) => ({ ...c, name: fromDino[c.name]! })),
              groups: [],
            }, { author: "responder" }),
          );
          // Candidates the bot trickles later name Dino's contents too.
          for (const x of dino.jingles.filter((x) => x.j.action === "transport-info" && x.j.sid === sid)) {
            for (const c of x.j.contents) assert.ok(c.name === "audio" || c.name === "video");
          }
          await call.connected;
          await media.waitConnected(8000);
          for (const kind of ["audio", "video"] as const) {
            let atDino = 0, atBot = 0;
            const off1 = media.onRtp((e) => e.kind === kind && atDino++);
            const off2 = call.peer!.onRtp((e) => e.kind === kind && atBot++);
            for (let i = 0; i < 5 && (atDino < 3 || atBot < 3); i++) {
              for (let k = 0; k < 3; k++) {
                await call.peer!.sendRtp(kind, rtpPacket(1000 + i * 3 + k, new Uint8Array(20)));
                await media.sendRtp(kind, rtpPacket(1000 + i * 3 + k, new Uint8Array(20)));
              }
              await sleep(100);
            }
            await until(() => atDino >= 3 && atBot >= 3, 5000, `${kind} RTP both ways`);
            off1();
            off2();
          }
          await call.hangup();
          await until(() => !!jingleFrom(dino, "session-terminate", sid), 5000, "session-terminate");
        },
      );

      await t.step(
        "Dino-style video upgrade of an unbundled audio call: content-add with its own transport → content-accept, video both ways",
        async () => {
          const dino = await raw("dino", "dino-upgrade");
          const media = await createPeer({ role: "initiator", audio: true, video: false, bundle: false });
          peers.push(media);
          const offer = sdpToContentMap(await media.createOffer(), { author: "initiator" });
          const sid = crypto.randomUUID();
          const call = await proposeAndProceed(dino, sid, ["audio"]);
          await dino.conn.iq(buildJingleIq({
            action: "session-initiate",
            sid,
            initiator: dino.conn.jid,
            contents: offer.contents.map((c) => ({ ...c, name: "audio", senders: "both" })),
            groups: [],
          }, { to: botJid, id: crypto.randomUUID() }) as unknown as Element);
          await until(() => !!jingleFrom(dino, "session-accept", sid), 8000, "session-accept");
          const accepted = jingleFrom(dino, "session-accept", sid)!.j.contents;
          const asWerift = (cs: typeof accepted) =>
            cs.map((c) => ({ ...c, name: c.name === "audio" ? "0" : c.name === "video" ? "1" : c.name }));
          await media.setRemoteDescription(
            "answer",
            contentMapToSdp({ contents: asWerift(accepted), groups: [] }, { author: "responder" }),
          );
          await call.connected;
          await media.waitConnected(8000);

          // Dino adds video: a new content with its own ICE transport, fingerprint and candidates.
          media.enableMedia("video", true);
          const reoffer = sdpToContentMap(await media.createOffer(), { author: "initiator" });
          const v = reoffer.contents.find((c) => c.name === "1")!;
          assert.ok(
            v.transport?.kind === "ice-udp" && v.transport.ufrag && v.transport.candidates.length > 0,
          );
          await dino.conn.iq(buildJingleIq({
            action: "content-add",
            sid,
            contents: [{ ...v, name: "video", senders: "both" }],
            groups: [],
          }, { to: botJid, id: crypto.randomUUID() }) as unknown as Element);
          await until(() => !!jingleFrom(dino, "content-accept", sid), 8000, "content-accept");
          const { iq, j } = jingleFrom(dino, "content-accept", sid)!;
          const el = iq.getChild("jingle", NS_JINGLE)!;
          assert.deepEqual(children(el, "content").map((c) => c.attrs.name), ["video"]);
          assertDescriptionShape(children(children(el, "content")[0]!, "description")[0]!, "video");
          // Unbundled: the answer names the bot's own transport for the new content, with candidates.
          for (const tr of transportsOf(el)) {
            assertTransportShape(tr, { fingerprint: "required", setups: ["active", "passive"] });
            assert.ok(children(tr, "candidate").length > 0, "candidates in the content-accept");
          }
          await media.setRemoteDescription(
            "answer",
            contentMapToSdp({ contents: asWerift([...accepted, ...j.contents]), groups: [] }, {
              author: "responder",
            }),
          );
          await until(() => call.media.includes("video"), 3000, "the bot's call has video");
          let atDino = 0, atBot = 0;
          const off1 = media.onRtp((e) => e.kind === "video" && atDino++);
          const off2 = call.peer!.onRtp((e) => e.kind === "video" && atBot++);
          for (let i = 0; i < 20 && (atDino < 3 || atBot < 3); i++) {
            await call.peer!.sendRtp("video", rtpPacket(2000 + i, new Uint8Array(20)));
            await media.sendRtp("video", rtpPacket(2000 + i, new Uint8Array(20)));
            await sleep(100);
          }
          await until(() => atDino >= 3 && atBot >= 3, 5000, "video RTP both ways after the upgrade");
          off1();
          off2();
          assert.equal(call.state, "active");
          await call.hangup();
        },
      );

      await t.step(
        "OMEMO-verified Dino-style upgrade: the new transport's fingerprint is decrypted, the content-accept's encrypted",
        async () => {
          // A full OMEMO endpoint plays Dino: it encrypts every DTLS fingerprint to the device named in the proceed.
          const dinoE = await endpointOn(server, "dinoomemo", tmp);
          opened.push(dinoE);
          const dino = record(dinoE.conn);
          const botBare = bot!.conn.bareJid;
          const media = await createPeer({ role: "initiator", audio: true, video: false, bundle: false });
          peers.push(media);
          const sid = crypto.randomUUID();
          const call = await proposeAndProceed(dino, sid, ["audio"]);
          const device = Number(
            jmiOf(jmiFrom(dino, "proceed", sid)!)!.getChild("device", NS_OMEMO_DTLS)?.attrs.id,
          );
          assert.equal(device, bot!.deviceId, "the proceed names the bot's OMEMO device");
          const encryptFp = async (c: JingleContent): Promise<JingleContent> => {
            const t = c.transport as IceUdpTransport;
            const fp = t.fingerprint!;
            assert.equal(fp.kind, "plain");
            const enc = await dinoE.omemo.encrypt([botBare], fp.kind === "plain" ? fp.value : "", {
              devices: [{ jid: botBare, deviceId: device }],
            });
            return {
              ...c,
              transport: {
                ...t,
                fingerprint: {
                  kind: "omemo",
                  hash: fp.hash,
                  setup: fp.setup,
                  encrypted: enc.element as unknown as JingleElement,
                },
              },
            };
          };
          const decryptFp = async (c: JingleContent): Promise<JingleContent> => {
            const t = c.transport as IceUdpTransport;
            const fp = t.fingerprint!;
            assert.equal(fp.kind, "omemo", `content '${c.name}' carries an OMEMO-encrypted fingerprint`);
            if (fp.kind !== "omemo") throw new Error("unreachable");
            const r = await dinoE.omemo.decrypt(botBare, fp.encrypted as unknown as Element);
            assert.equal(r.senderDeviceId, bot!.deviceId);
            return {
              ...c,
              transport: {
                ...t,
                fingerprint: { kind: "plain", hash: fp.hash, setup: fp.setup, value: r.plaintext! },
              },
            };
          };
          const offer = sdpToContentMap(await media.createOffer(), { author: "initiator" });
          await dino.conn.iq(buildJingleIq({
            action: "session-initiate",
            sid,
            initiator: dino.conn.jid,
            contents: [await encryptFp({ ...offer.contents[0]!, name: "audio", senders: "both" })],
            groups: [],
          }, { to: botJid, id: crypto.randomUUID() }) as unknown as Element);
          await until(() => !!jingleFrom(dino, "session-accept", sid), 8000, "session-accept");
          const accepted = await Promise.all(
            jingleFrom(dino, "session-accept", sid)!.j.contents.map(decryptFp),
          );
          const asWerift = (cs: JingleContent[]) =>
            cs.map((c) => ({ ...c, name: c.name === "audio" ? "0" : "1" }));
          await media.setRemoteDescription(
            "answer",
            contentMapToSdp({ contents: asWerift(accepted), groups: [] }, { author: "responder" }),
          );
          await call.connected;
          assert.equal(call.verification.omemo, true);
          assert.equal(call.verification.deviceId, dinoE.deviceId);

          media.enableMedia("video", true);
          const v = sdpToContentMap(await media.createOffer(), { author: "initiator" }).contents.find((c) =>
            c.name === "1"
          )!;
          // With a plain fingerprint in this verified call, the content-add is refused (content-reject + reason).
          await dino.conn.iq(buildJingleIq({
            action: "content-add",
            sid,
            contents: [{ ...v, name: "video", senders: "both" }],
            groups: [],
          }, { to: botJid, id: crypto.randomUUID() }) as unknown as Element);
          await until(() => !!jingleFrom(dino, "content-reject", sid), 5000, "content-reject");
          assert.match(jingleFrom(dino, "content-reject", sid)!.j.reason?.text ?? "", /plain fingerprint/);
          assert.deepEqual(call.media, ["audio"]);

          await dino.conn.iq(buildJingleIq({
            action: "content-add",
            sid,
            contents: [await encryptFp({ ...v, name: "video", senders: "both" })],
            groups: [],
          }, { to: botJid, id: crypto.randomUUID() }) as unknown as Element);
          await until(() => !!jingleFrom(dino, "content-accept", sid), 8000, "content-accept");
          const added = await Promise.all(jingleFrom(dino, "content-accept", sid)!.j.contents.map(decryptFp));
          await media.setRemoteDescription(
            "answer",
            contentMapToSdp({ contents: asWerift([...accepted, ...added]), groups: [] }, {
              author: "responder",
            }),
          );
          let atDino = 0, atBot = 0;
          const off1 = media.onRtp((e) => e.kind === "video" && atDino++);
          const off2 = call.peer!.onRtp((e) => e.kind === "video" && atBot++);
          for (let i = 0; i < 20 && (atDino < 3 || atBot < 3); i++) {
            await call.peer!.sendRtp("video", rtpPacket(3000 + i, new Uint8Array(20)));
            await media.sendRtp("video", rtpPacket(3000 + i, new Uint8Array(20)));
            await sleep(100);
          }
          await until(
            () => atDino >= 3 && atBot >= 3,
            5000,
            "video RTP both ways after the verified upgrade",
          );
          off1();
          off2();

          assert.equal(call.state, "active");
          await call.hangup();
        },
      );
    } finally {
      await botCalls?.stop().catch(() => {});
      for (const p of peers) await p.close().catch(() => {});
      await bot?.close().catch(() => {});
      for (const e of opened) await e.close().catch(() => {});
      for (const c of raws) await c.close().catch(() => {});
      await server.stop();
      await stun.close();
      await Deno.remove(tmp, { recursive: true });
    }
  },
});
