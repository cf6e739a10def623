import assert from "node:assert/strict";
import {
  type Element,
  type Jingle,
  JingleProtocolError,
  NS_JINGLE,
  NS_JINGLE_ERRORS,
  outOfOrderError,
  parseIqError,
  parseJingle,
  parseJingleIq,
  parseXml,
  serializeJingle,
  tieBreakError,
  trickleTransportInfo,
  unknownSessionError,
  unsupportedInfoError,
} from "../../jingle/mod.ts";
import { captureFiles, FIXTURES, loadCapture, norm } from "./_helpers.ts";

function roundTrip(j: Jingle): void {
  const again = parseJingle(parseXml(serializeJingle(j).toString()));
  assert.deepEqual(norm(again), norm(j));
}

Deno.test("Jingle: every jingle iq in the Dino captures (calls + file transfer) parses and round-trips", () => {
  const actions = new Set<string>();
  let n = 0;
  for (const f of [...captureFiles("call-"), ...captureFiles("filetransfer-")]) {
    for (const { stanza } of loadCapture(f)) {
      if (stanza.name !== "iq") continue;
      const iq = parseJingleIq(stanza);
      if (!iq) continue;
      n++;
      const j = iq.jingle;
      actions.add(j.action);
      if (j.action === "session-terminate") assert.equal(j.reason?.condition, "success");
      if (f.startsWith("call-") && (j.action === "session-initiate" || j.action === "session-accept")) {
        const c = j.contents[0]!;
        assert.equal(c.name, "audio");
        assert.equal(c.creator, "initiator");
        assert.equal(c.senders, "both");
        assert.equal(c.description?.kind, "rtp");
        assert.equal(c.transport?.kind, "ice-udp");
        if (c.description?.kind === "rtp" && c.transport?.kind === "ice-udp") {
          assert.equal(c.description.rtcpMux, true);
          assert.equal(c.description.payloadTypes[0]?.name, "opus");
          assert.deepEqual(c.description.payloadTypes[0]?.parameters, [{ name: "useinbandfec", value: "1" }]);
          if (j.action === "session-accept") assert.equal(c.description.payloadTypes.length, 1);
          assert.ok(c.transport.ufrag && c.transport.pwd);
          assert.ok(c.transport.candidates.some((x) => x.component === 2));
          const fp = c.transport.fingerprint;
          assert.equal(fp?.kind, "omemo");
          if (fp?.kind === "omemo") {
            assert.equal(fp.hash, "sha-256");
            assert.ok(fp.encrypted.getChild("payload"));
            assert.equal(fp.setup, j.action === "session-initiate" ? "actpass" : "active");
          }
        }
      }
      if (f.startsWith("filetransfer-") && j.action === "session-initiate") {
        const c = j.contents[0]!;
        assert.equal(c.description?.kind, "unknown");
        assert.equal(c.transport?.kind, "unknown");
        assert.equal(c.extra?.[0]?.name, "security");
      }
      roundTrip(j);
    }
  }
  assert.ok(n >= 30, `only ${n} jingle iqs`);
  assert.deepEqual([...actions].sort(), [
    "session-accept",
    "session-initiate",
    "session-terminate",
    "transport-info",
  ]);
});

Deno.test("Jingle: Conversations-shaped session-initiate parses", () => {
  const iq = parseXml(Deno.readTextFileSync(new URL("conversations-session-initiate.xml", FIXTURES)));
  const j = parseJingleIq(iq)!.jingle;
  assert.equal(j.sid, "q2nMQSdYV1qmJZJ8bcF4Ag");
  assert.deepEqual(j.groups, [{ semantics: "BUNDLE", contents: ["0", "1"] }]);
  assert.deepEqual(j.contents.map((c) => [c.name, c.senders]), [["0", undefined], ["1", undefined]]);
  const v = j.contents[1]!.description;
  assert.ok(v?.kind === "rtp");
  assert.deepEqual(v.ssrcGroups, [{ semantics: "FID", ssrcs: [1186279133, 4047531474] }]);
  assert.deepEqual(v.sources[0]?.parameters[1], { name: "msid", value: "my-media-stream my-video-track" });
  assert.deepEqual(v.payloadTypes[0]?.rtcpFb[2], { type: "ccm", subtype: "fir" });
  const a = j.contents[0]!.description;
  assert.ok(a?.kind === "rtp" && a.extmapAllowMixed && a.headerExtensions.length === 4);
  const t = j.contents[0]!.transport;
  assert.ok(t?.kind === "ice-udp" && t.fingerprint?.kind === "plain" && t.fingerprint.setup === "actpass");
  assert.equal(t.candidates.length, 0);
  roundTrip(j);
  // source parameters are serialized without own xmlns (inherit ssma:0)
  assert.match(
    serializeJingle(j).toString(),
    /<source xmlns="urn:xmpp:jingle:apps:rtp:ssma:0" ssrc="2307826745"><parameter name="cname"/,
  );
});

Deno.test("Jingle: reasons, session-info, round trip", () => {
  const cases: Jingle[] = [
    {
      action: "session-terminate",
      sid: "s",
      contents: [],
      groups: [],
      reason: { condition: "busy", text: "x" },
    },
    {
      action: "session-terminate",
      sid: "s",
      contents: [],
      groups: [],
      reason: { condition: "alternative-session", alternativeSid: "s2" },
    },
    { action: "session-info", sid: "s", contents: [], groups: [], info: { type: "ringing" } },
    { action: "session-info", sid: "s", contents: [], groups: [], info: { type: "active" } },
    { action: "session-info", sid: "s", contents: [], groups: [], info: { type: "hold" } },
    {
      action: "session-info",
      sid: "s",
      contents: [],
      groups: [],
      info: { type: "mute", creator: "initiator", name: "audio" },
    },
    { action: "session-info", sid: "s", contents: [], groups: [], info: { type: "unmute", name: "video" } },
    { action: "session-info", sid: "s", contents: [], groups: [] },
  ];
  for (const c of cases) roundTrip(c);
  const tb = parseJingle(
    parseXml(
      `<jingle xmlns="${NS_JINGLE}" action="session-terminate" sid="s"><reason><expired/><text>Tie-Break</text><tie-break xmlns="${NS_JINGLE_ERRORS}"/></reason></jingle>`,
    ),
  );
  assert.equal(tb.reason?.condition, "expired");
  assert.equal(tb.reason?.extra?.[0]?.name, "tie-break");
  roundTrip(tb);
  const unk = parseJingle(
    parseXml(`<jingle xmlns="${NS_JINGLE}" action="session-info" sid="s"><foo xmlns="urn:x"/></jingle>`),
  );
  assert.equal(unk.infoUnknown?.name, "foo");
});

Deno.test("Jingle: malformed input rejected", () => {
  const bad = [
    `<jingle xmlns="${NS_JINGLE}" action="session-terminate"/>`,
    `<jingle xmlns="${NS_JINGLE}" sid="s"/>`,
    `<jingle xmlns="${NS_JINGLE}" action="dance" sid="s"/>`,
    `<jingle xmlns="${NS_JINGLE}" action="session-initiate" sid="s"/>`,
    `<jingle xmlns="${NS_JINGLE}" action="session-accept" sid="s"><content name="a"/></jingle>`,
    `<jingle xmlns="${NS_JINGLE}" action="session-accept" sid="s"><content creator="initiator"/></jingle>`,
    `<jingle xmlns="${NS_JINGLE}" action="session-terminate" sid="s"><reason><nope/></reason></jingle>`,
    // transport without valid candidate attrs
    `<jingle xmlns="${NS_JINGLE}" action="transport-info" sid="s"><content creator="initiator" name="0"><transport xmlns="urn:xmpp:jingle:transports:ice-udp:1" ufrag="a" pwd="b"><candidate component="1" foundation="1" ip="1.2.3.4" port="5" protocol="udp" type="host"/></transport></content></jingle>`,
    `<jingle xmlns="${NS_JINGLE}" action="transport-info" sid="s"><content creator="initiator" name="0"><transport xmlns="urn:xmpp:jingle:transports:ice-udp:1" ufrag="a b" pwd="b"/></content></jingle>`,
    `<jingle xmlns="${NS_JINGLE}" action="session-accept" sid="s"><content creator="initiator" name="0"><description xmlns="urn:xmpp:jingle:apps:rtp:1" media="audio"><payload-type id="x1" name="opus"/></description></content></jingle>`,
  ];
  for (const b of bad) assert.throws(() => parseJingle(parseXml(b)), JingleProtocolError, b);
});

Deno.test("Jingle: error stanza helpers", () => {
  const req = parseXml(`<iq type="set" id="i1" from="a@x/r" to="b@y/s"><jingle xmlns="${NS_JINGLE}"/></iq>`);
  const check = (e: Element, cond: string, jc: string, type: string) => {
    const back = parseXml(e.toString());
    assert.equal(back.attrs.type, "error");
    assert.equal(back.attrs.id, "i1");
    assert.equal(back.attrs.to, "a@x/r");
    assert.deepEqual(parseIqError(back), { type, condition: cond, jingleCondition: jc });
  };
  check(unknownSessionError(req), "item-not-found", "unknown-session", "cancel");
  check(outOfOrderError(req), "unexpected-request", "out-of-order", "wait");
  check(tieBreakError(req), "conflict", "tie-break", "cancel");
  check(unsupportedInfoError(req), "feature-not-implemented", "unsupported-info", "modify");
});

Deno.test("Jingle: a trickled candidate is one content, ufrag/pwd and one candidate, never a fingerprint", () => {
  const cand = {
    component: 1,
    foundation: "3",
    generation: 0,
    ip: "192.0.2.7",
    port: 50000,
    priority: 1686052607,
    protocol: "udp",
    type: "srflx" as const,
    relAddr: "10.0.0.2",
    relPort: 50000,
  };
  const j = trickleTransportInfo(
    "s1",
    { name: "1", senders: "both" },
    { ufrag: "Ab1x", pwd: "p".repeat(22) },
    cand,
  );
  const xml = serializeJingle(j).toString();
  assert.equal(
    xml,
    `<jingle xmlns="${NS_JINGLE}" action="transport-info" sid="s1"><content creator="initiator" name="1">` +
      `<transport xmlns="urn:xmpp:jingle:transports:ice-udp:1" ufrag="Ab1x" pwd="${"p".repeat(22)}">` +
      `<candidate component="1" foundation="3" generation="0" ip="192.0.2.7" port="50000" priority="1686052607" ` +
      `protocol="udp" rel-addr="10.0.0.2" rel-port="50000" type="srflx"/></transport></content></jingle>`,
  );
  assert.deepEqual(parseJingle(parseXml(xml)), j);
  // Dino's senders (one side only) are kept; whitespace in ICE credentials is refused before anything is sent.
  const dino = trickleTransportInfo(
    "s1",
    { name: "video", senders: "responder" },
    { ufrag: "u", pwd: "x" },
    cand,
  );
  assert.equal(dino.contents[0]!.senders, "responder");
  const bad = trickleTransportInfo("s1", { name: "0" }, { ufrag: "a b", pwd: "p".repeat(22) }, cand);
  assert.throws(() => serializeJingle(bad), JingleProtocolError);
});
