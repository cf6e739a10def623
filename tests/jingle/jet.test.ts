import assert from "node:assert/strict";
import { Buffer } from "node:buffer";
import {
  buildJetSecurity,
  type Element,
  findJetSecurity,
  JET_CIPHER_AES128GCM,
  JingleProtocolError,
  NS_JET,
  NS_JET_OMEMO,
  NS_JINGLE,
  NS_OMEMO_AXOLOTL,
  parseXml,
} from "../../jingle/mod.ts";
import { captureFiles, loadCapture } from "./_helpers.ts";

const ENCRYPTED = `<encrypted xmlns='${NS_OMEMO_AXOLOTL}'><header sid='42'><iv>JkkEBfKl5YPhPCBB</iv>` +
  `<key rid='7'>MwohBWy4</key></header></encrypted>`;

function jingle(inner: string): Element {
  return parseXml(`<jingle xmlns='${NS_JINGLE}' action='session-initiate' sid='s'>${inner}</jingle>`);
}
function security(attrs: string, body = ENCRYPTED): string {
  return `<security xmlns='${NS_JET}' ${attrs}>${body}</security>`;
}
const content = (name: string, inner: string) =>
  `<content creator='initiator' name='${name}'>${inner}</content>`;
const FULL = `cipher='${JET_CIPHER_AES128GCM}' type='${NS_OMEMO_AXOLOTL}'`;

Deno.test("JET: namespaces and cipher are byte-exact", () => {
  assert.equal(NS_JET, "urn:xmpp:jingle:jet:0");
  assert.equal(NS_JET_OMEMO, "urn:xmpp:jingle:jet-omemo:0");
  assert.equal(JET_CIPHER_AES128GCM, "urn:xmpp:ciphers:aes-128-gcm-nopadding");
});

Deno.test("JET: Dino 0.4.2 session-initiates carry a content-level security without name", () => {
  let n = 0;
  for (const f of captureFiles("filetransfer-")) {
    for (const { stanza } of loadCapture(f)) {
      const j = stanza.getChild("jingle", NS_JINGLE);
      if (!j) continue;
      const sec = findJetSecurity(j, "a-file-offer");
      if (j.attrs.action !== "session-initiate") {
        assert.equal(sec, undefined, `${f}: ${j.attrs.action}`);
        continue;
      }
      n++;
      assert.ok(sec, f);
      assert.equal(sec.name, undefined);
      assert.equal(sec.cipher, JET_CIPHER_AES128GCM);
      assert.equal(sec.type, NS_OMEMO_AXOLOTL);
      assert.equal(sec.encrypted.name, "encrypted");
      assert.equal(sec.encrypted.getNS(), NS_OMEMO_AXOLOTL);
      assert.equal(sec.encrypted.parent, null, "detached copy");
      const iv = sec.encrypted.getChild("header")!.getChildText("iv");
      assert.equal(Buffer.from(iv!, "base64").length, 12);
      // Another content name finds nothing.
      assert.equal(findJetSecurity(j, "other"), undefined);
    }
  }
  assert.equal(n, 4);
});

Deno.test("JET: Conversations 2.12 (content, with name) and newer Conversations (<jingle> level) are found", () => {
  const c212 = findJetSecurity(jingle(content("f1", security(`name='f1' ${FULL}`))), "f1");
  assert.equal(c212?.name, "f1");
  assert.equal(c212?.cipher, JET_CIPHER_AES128GCM);

  const cnew = jingle(content("f1", "") + security(`name='f1' ${FULL}`));
  assert.equal(findJetSecurity(cnew, "f1")?.name, "f1");
  // At <jingle> level a different name belongs to another content.
  assert.equal(findJetSecurity(cnew, "f2"), undefined);
  // Two contents, two named securities at <jingle> level: each finds its own.
  const two = jingle(
    content("a", "") + content("b", "") + security(`name='a' ${FULL}`) +
      security(`name='b' cipher='x' type='${NS_OMEMO_AXOLOTL}'`),
  );
  assert.equal(findJetSecurity(two, "a")?.cipher, JET_CIPHER_AES128GCM);
  assert.equal(findJetSecurity(two, "b")?.cipher, "x");
  // Content-level wins over <jingle>-level.
  const both = jingle(
    content("f", security(`cipher='inner' type='t'`)) + security(`name='f' cipher='outer' type='t'`),
  );
  assert.equal(findJetSecurity(both, "f")?.cipher, "inner");
  // Unknown cipher is reported verbatim; deciding is the caller's job.
  assert.equal(
    findJetSecurity(jingle(content("f", security(`cipher='urn:evil' type='t'`))), "f")?.cipher,
    "urn:evil",
  );
  // No security at all: an unencrypted offer.
  assert.equal(findJetSecurity(jingle(content("f", "")), "f"), undefined);
  // A security-named element in another namespace is not JET.
  assert.equal(findJetSecurity(jingle(content("f", `<security xmlns='urn:x' ${FULL}/>`)), "f"), undefined);
});

Deno.test("JET: malformed or ambiguous security elements are refused with bad-request", () => {
  const bad = (j: Element, pattern: RegExp) =>
    assert.throws(() => findJetSecurity(j, "f"), (e: unknown) => {
      assert.ok(e instanceof JingleProtocolError);
      assert.equal(e.condition, "bad-request");
      assert.match(e.message, pattern);
      return true;
    });
  bad(jingle(content("f", security(`type='${NS_OMEMO_AXOLOTL}'`))), /lacks cipher/);
  bad(jingle(content("f", security(`cipher='${JET_CIPHER_AES128GCM}'`))), /lacks type/);
  bad(jingle(content("f", security(FULL, ""))), /lacks the <encrypted/);
  bad(jingle(content("f", security(FULL, "<payload/>"))), /lacks the <encrypted/);
  bad(jingle(content("f", security(FULL, ENCRYPTED + ENCRYPTED))), /several <encrypted/);
  bad(jingle(content("f", security(FULL) + security(FULL))), /several JET/);
  bad(jingle(content("f", security(`name='g' ${FULL}`))), /security name='g'.*inside content 'f'/);
  bad(jingle(content("f", "") + security(FULL) + security(`name='f' ${FULL}`)), /several JET/);
  bad(jingle(content("f", "") + security(`name='f' type='t'`)), /lacks cipher/);
  bad(jingle(content("f", "") + content("f", "")), /several <content/);
  assert.throws(() => findJetSecurity(parseXml("<jingle xmlns='urn:x'/>"), "f"), JingleProtocolError);
});

Deno.test("JET: build puts name, cipher, type and a copy of the envelope; it parses back", () => {
  const enc = parseXml(ENCRYPTED);
  const s = buildJetSecurity("a-file-offer", enc);
  assert.equal(s.attrs.xmlns, NS_JET);
  assert.equal(s.attrs.name, "a-file-offer");
  assert.equal(s.attrs.cipher, JET_CIPHER_AES128GCM);
  assert.equal(s.attrs.type, NS_OMEMO_AXOLOTL);
  assert.equal(enc.parent, null, "the caller's envelope is not moved");
  const j = jingle(content("a-file-offer", s.toString()));
  const back = findJetSecurity(j, "a-file-offer")!;
  assert.equal(back.name, "a-file-offer");
  assert.equal(back.encrypted.toString(), enc.toString());
  // Also accepted when the integrator copies it under <jingle>.
  assert.equal(
    findJetSecurity(jingle(content("a-file-offer", "") + s.toString()), "a-file-offer")?.type,
    NS_OMEMO_AXOLOTL,
  );
  assert.throws(() => buildJetSecurity("", enc), JingleProtocolError);
  assert.throws(() => buildJetSecurity("x", parseXml("<payload/>")), JingleProtocolError);
});

Deno.test("JET: the shape we send (inside <content> and a copy under <jingle>) reads as one security", () => {
  const other = ENCRYPTED.replace("sid='42'", "sid='43'");
  const j = jingle(
    content("f", security(`name='f' ${FULL}`)) + security(`name='f' ${FULL}`, other),
  );
  const sec = findJetSecurity(j, "f")!;
  // The <content> one wins: that is where XEP-0391, Dino and Conversations 2.12 put it.
  assert.equal(sec.encrypted.getChild("header")!.attrs.sid, "42");
  assert.equal(sec.name, "f");
  // A Dino-style reader sees only <content> children; the copy under <jingle> alone serves newer Conversations.
  assert.equal(findJetSecurity(jingle(content("f", "") + security(`name='f' ${FULL}`)), "f")?.name, "f");
});
