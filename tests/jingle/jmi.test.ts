import assert from "node:assert/strict";
import {
  buildJmiMessage,
  JingleProtocolError,
  type JmiAction,
  NS_HINTS,
  NS_JMI,
  parseJmiElement,
  parseJmiMessage,
  parseXml,
  serializeJmiElement,
  tieBreakReject,
} from "../../jingle/mod.ts";
import { captureFiles, loadCapture } from "./_helpers.ts";

Deno.test("JMI: every JMI message in the Dino call captures parses", () => {
  const seen = new Set<string>();
  for (const f of captureFiles("call-")) {
    for (const { stanza } of loadCapture(f)) {
      if (stanza.name !== "message") continue;
      const m = parseJmiMessage(stanza);
      if (!m) continue;
      seen.add(m.jmi.action);
      assert.ok(m.jmi.id.length > 0);
      if (m.jmi.action === "propose") assert.deepEqual(m.jmi.media, ["audio"]);
      if (m.jmi.action === "proceed") assert.equal(typeof m.jmi.deviceId, "number");
      // round trip
      assert.deepEqual(parseJmiElement(parseXml(serializeJmiElement(m.jmi).toString())), m.jmi);
    }
  }
  assert.deepEqual([...seen].sort(), ["accept", "proceed", "propose", "reject"]);
});

Deno.test("JMI: Dino proceed carries the OMEMO device id", () => {
  const s = loadCapture("call-omemo-verified-alice-calls-bob.bob.xml").map((x) => x.stanza);
  const proceed = s.map((x) => x.name === "message" ? parseJmiMessage(x) : undefined).find((m) =>
    m?.jmi.action === "proceed"
  );
  assert.deepEqual(proceed?.jmi, {
    action: "proceed",
    id: "a825a604-4659-4f86-b078-3a860703cdf7",
    deviceId: 1131748585,
  });
  assert.equal(proceed?.to, "alice@dino.test/dino-alice");
});

Deno.test("JMI: declined call", () => {
  const msgs = loadCapture("call-declined-bob-calls-alice.alice.xml").map((x) =>
    parseJmiMessage(x.stanza)?.jmi
  );
  assert.deepEqual(msgs.map((m) => m?.action), ["propose", "reject", "reject", "reject"]);
});

Deno.test("JMI: build + round trip of all actions", () => {
  const actions: JmiAction[] = [
    { action: "propose", id: "s1", media: ["audio", "video"] },
    { action: "ringing", id: "s1" },
    { action: "proceed", id: "s1", deviceId: 7654321 },
    { action: "proceed", id: "s1" },
    { action: "accept", id: "s1" },
    { action: "reject", id: "s1" },
    { action: "reject", id: "s1", reason: { condition: "busy", text: "sorry" } },
    tieBreakReject("s1"),
    { action: "retract", id: "s1", reason: { condition: "cancel" } },
    { action: "finish", id: "s1", reason: { condition: "success" } },
    { action: "finish", id: "s1", reason: { condition: "expired" }, migratedTo: "s2" },
  ];
  for (const a of actions) {
    const msg = buildJmiMessage(a, { to: "juliet@example.com", id: `jm-${a.action}-s1` });
    const back = parseXml(msg.toString());
    assert.equal(back.attrs.type, "chat");
    assert.ok(back.getChild("store", NS_HINTS));
    assert.deepEqual(parseJmiMessage(back)?.jmi, a);
  }
  const tb = serializeJmiElement(tieBreakReject("x")).toString();
  assert.match(
    tb,
    /<reason xmlns="urn:xmpp:jingle:1"><expired\/><text>Tie-Break<\/text><\/reason><tie-break\/>/,
  );
});

Deno.test("JMI: <finish/> with <migrated to/> (XEP-0353 v0.8 existing-session rule)", () => {
  const el = serializeJmiElement({
    action: "finish",
    id: "old",
    reason: { condition: "expired" },
    migratedTo: "new",
  }).toString();
  assert.equal(
    el,
    `<finish xmlns="${NS_JMI}" id="old"><reason xmlns="urn:xmpp:jingle:1"><expired/></reason><migrated to="new"/></finish>`,
  );
  // As received from another implementation (reason text, explicit namespace on <migrated/>).
  const got = parseJmiElement(parseXml(
    `<finish xmlns="${NS_JMI}" id="a"><reason xmlns="urn:xmpp:jingle:1"><success/><text>Success</text></reason>` +
      `<migrated xmlns="${NS_JMI}" to="b"/></finish>`,
  ));
  assert.deepEqual(got, {
    action: "finish",
    id: "a",
    reason: { condition: "success", text: "Success" },
    migratedTo: "b",
  });
  // <migrated/> without 'to' is malformed; one in a foreign namespace is not the JMI element (ignored).
  assert.throws(
    () => parseJmiElement(parseXml(`<finish xmlns="${NS_JMI}" id="a"><migrated/></finish>`)),
    JingleProtocolError,
  );
  assert.throws(
    () => parseJmiElement(parseXml(`<finish xmlns="${NS_JMI}" id="a"><migrated to=""/></finish>`)),
    JingleProtocolError,
  );
  assert.deepEqual(
    parseJmiElement(
      parseXml(`<finish xmlns="${NS_JMI}" id="a"><migrated xmlns="urn:example" to="b"/></finish>`),
    ),
    { action: "finish", id: "a" },
  );
});

Deno.test("JMI: tolerate description child in retract/reject and non-JMI messages", () => {
  const m = parseXml(
    `<message type="chat"><retract xmlns="${NS_JMI}" id="x"><description xmlns="urn:xmpp:jingle:apps:rtp:1"/></retract></message>`,
  );
  assert.deepEqual(parseJmiMessage(m)?.jmi, { action: "retract", id: "x" });
  assert.equal(parseJmiMessage(parseXml(`<message><body>hi</body></message>`)), undefined);
});

Deno.test("JMI: malformed input rejected", () => {
  const bad = [
    `<propose xmlns="${NS_JMI}"><description xmlns="urn:xmpp:jingle:apps:rtp:1" media="audio"/></propose>`,
    `<propose xmlns="${NS_JMI}" id="x"><description xmlns="urn:xmpp:jingle:apps:rtp:1" media="text"/></propose>`,
    `<propose xmlns="${NS_JMI}" id="x"/>`,
    `<propose xmlns="${NS_JMI}" id="x"><description xmlns="urn:xmpp:jingle:apps:rtp:1" media="audio"/><description xmlns="urn:xmpp:jingle:apps:rtp:1" media="video"/><description xmlns="urn:xmpp:jingle:apps:rtp:1" media="video"/></propose>`,
    `<propose xmlns="${NS_JMI}" id="x"><description xmlns="urn:xmpp:jingle:apps:file-transfer:5"/></propose>`,
    `<proceed xmlns="${NS_JMI}" id="x"><device xmlns="http://gultsch.de/xmpp/drafts/omemo/dlts-srtp-verification" id="abc"/></proceed>`,
    `<finish xmlns="${NS_JMI}" id="x"><reason xmlns="urn:xmpp:jingle:1"><bogus/></reason></finish>`,
  ];
  for (const b of bad) {
    assert.throws(() => parseJmiElement(parseXml(b)), JingleProtocolError, b);
  }
  const e = (() => {
    try {
      parseJmiElement(parseXml(bad[1]!));
    } catch (e) {
      return e as JingleProtocolError;
    }
  })();
  assert.equal(e?.condition, "feature-not-implemented");
});
