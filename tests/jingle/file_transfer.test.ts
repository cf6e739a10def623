import assert from "node:assert/strict";
import {
  buildChecksum,
  buildFileDescription,
  buildReceived,
  type FileOffer,
  isChecksum,
  isReceived,
  JingleProtocolError,
  NS_HASHES,
  NS_JFT,
  NS_JFT_3,
  NS_JFT_4,
  NS_JINGLE,
  parseChecksum,
  parseFileDescription,
  parseJingle,
  parseReceived,
  parseXml,
} from "../../jingle/mod.ts";
import { captureFiles, loadCapture } from "./_helpers.ts";

const desc = (file: string, ns = NS_JFT) =>
  parseXml(`<description xmlns='${ns}'><file>${file}</file></description>`);

function rejects(xml: string, pattern: RegExp): void {
  assert.throws(() => parseFileDescription(parseXml(xml)), (e: unknown) => {
    assert.ok(e instanceof JingleProtocolError, `expected JingleProtocolError, got ${e}`);
    assert.equal(e.condition, "bad-request");
    assert.match(e.message, pattern);
    return true;
  });
}

Deno.test("JFT: every file offer in the Dino captures parses to name + plaintext size", () => {
  const seen: FileOffer[] = [];
  for (const f of captureFiles("filetransfer-")) {
    for (const { stanza } of loadCapture(f)) {
      const jingle = stanza.getChild("jingle", NS_JINGLE);
      if (!jingle) continue;
      for (const content of jingle.getChildren("content")) {
        const d = content.getChildElements().find((c) => c.name === "description");
        if (!d) continue;
        const offer = parseFileDescription(d);
        seen.push(offer);
        assert.ok(offer.name === "testfile.bin" || offer.name === "payload.bin", f);
        assert.equal(offer.size, offer.name === "testfile.bin" ? 300000 : 200000);
        assert.deepEqual(offer.hashes, []);
        // Round trip through our builder gives the same model.
        assert.deepEqual(parseFileDescription(parseXml(buildFileDescription(offer).toString())), offer);
      }
    }
  }
  assert.equal(seen.length, 8, "session-initiate + session-accept in 4 captures");
});

Deno.test("JFT: build emits Conversations/Dino field order, omits absent fields, round-trips all fields", () => {
  const offer: FileOffer = {
    date: "2026-11-23T08:32:32Z",
    desc: "holiday <pics> & more",
    mediaType: "image/png",
    name: "../x.png",
    size: 123456789012,
    hashes: [{ algo: "sha-256", value: "47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=" }],
    range: { offset: 10 },
  };
  const xml = buildFileDescription(offer);
  assert.equal(xml.attrs.xmlns, NS_JFT);
  const names = xml.getChild("file")!.getChildElements().map((c) => c.name);
  assert.deepEqual(names, ["date", "desc", "media-type", "name", "size", "hash", "range"]);
  assert.equal(xml.getChild("file")!.getChild("hash")!.attrs.xmlns, NS_HASHES);
  const back = parseFileDescription(parseXml(xml.toString()));
  assert.deepEqual(back, offer);
  // The name is NOT normalised by the codec (download.ts does that).
  assert.equal(back.name, "../x.png");

  const minimal = buildFileDescription({ name: "a", hashes: [] });
  assert.deepEqual(minimal.getChild("file")!.getChildElements().map((c) => c.name), ["name"]);
  assert.deepEqual(parseFileDescription(minimal), { name: "a", hashes: [] });
});

Deno.test("JFT: older namespaces :4 and :3 are accepted; others are not", () => {
  for (const ns of [NS_JFT_4, NS_JFT_3]) {
    assert.deepEqual(parseFileDescription(desc("<name>n</name><size>5</size>", ns)), {
      name: "n",
      size: 5,
      hashes: [],
    });
    assert.equal(buildFileDescription({ size: 1, hashes: [] }, ns).attrs.xmlns, ns);
  }
  rejects(
    `<description xmlns='urn:xmpp:jingle:apps:file-transfer:6'><file/></description>`,
    /not a file-transfer/,
  );
  rejects(`<description xmlns='urn:xmpp:jingle:apps:rtp:1'><file/></description>`, /not a file-transfer/);
  assert.throws(() => buildFileDescription({ hashes: [] }, "urn:x"), JingleProtocolError);
});

Deno.test("JFT: garbage sizes, ranges, structure and hashes are refused with bad-request", () => {
  const ns = NS_JFT;
  for (
    const size of ["-1", "1.5", "1e9", "0x10", "", " ", "abc", "9007199254740992", "99999999999999999999"]
  ) {
    rejects(`<description xmlns='${ns}'><file><size>${size}</size></file></description>`, /size/);
  }
  rejects(`<description xmlns='${ns}'/>`, /without <file/);
  rejects(`<description xmlns='${ns}'><file/><file/></description>`, /2 <file/);
  rejects(`<description xmlns='${ns}'><file><size>1</size><size>2</size></file></description>`, /2 <size/);
  rejects(`<description xmlns='${ns}'><file><name>a</name><name>b</name></file></description>`, /2 <name/);
  rejects(`<description xmlns='${ns}'><file><range offset='-4'/></file></description>`, /range offset/);
  rejects(`<description xmlns='${ns}'><file><range length='1.0'/></file></description>`, /range length/);
  const h = (attrs: string, text: string) =>
    `<description xmlns='${ns}'><file><hash xmlns='${NS_HASHES}' ${attrs}>${text}</hash></file></description>`;
  rejects(h("", "AAAA"), /algo/);
  rejects(h("algo='sha 256'", "AAAA"), /algo/);
  rejects(h("algo='sha-256'", ""), /base64/);
  rejects(h("algo='sha-256'", "not base64!"), /base64/);
  rejects(h("algo='sha-256'", "AAA"), /base64/);
  // Edge values that ARE valid.
  assert.equal(parseFileDescription(desc("<size>0</size>")).size, 0);
  assert.equal(parseFileDescription(desc("<size> 9007199254740991 </size>")).size, Number.MAX_SAFE_INTEGER);
  // A hash in another namespace is ignored, not misread.
  assert.deepEqual(
    parseFileDescription(desc(`<hash xmlns='urn:xmpp:hashes:1' algo='md5'>x</hash>`)).hashes,
    [],
  );
  // Builder refuses what the parser would refuse.
  assert.throws(() => buildFileDescription({ size: -1, hashes: [] }), JingleProtocolError);
  assert.throws(() => buildFileDescription({ size: 2 ** 53, hashes: [] }), JingleProtocolError);
  assert.throws(
    () => buildFileDescription({ hashes: [{ algo: "sha-256", value: "@@" }] }),
    JingleProtocolError,
  );
});

Deno.test("JFT: checksum session-info as Conversations sends it; build/parse round trip; garbage refused", () => {
  const conv = parseXml(
    `<checksum xmlns='${NS_JFT}' creator='initiator' name='a-file-offer'><file>` +
      `<hash xmlns='${NS_HASHES}' algo='sha-1'>2jmj7l5rSw0yVb/vlWAYkK/YBwk=</hash></file></checksum>`,
  );
  assert.ok(isChecksum(conv));
  assert.deepEqual(parseChecksum(conv), {
    creator: "initiator",
    name: "a-file-offer",
    hashes: [{ algo: "sha-1", value: "2jmj7l5rSw0yVb/vlWAYkK/YBwk=" }],
  });
  const hashes = [{ algo: "sha-256", value: "47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=" }];
  const built = buildChecksum("c1", hashes);
  assert.equal(built.toString().includes(`creator="initiator"`), true);
  assert.deepEqual(parseChecksum(parseXml(built.toString())), { creator: "initiator", name: "c1", hashes });
  assert.deepEqual(parseChecksum(buildChecksum("c1", hashes, "responder")).creator, "responder");

  const bad = (x: string) => assert.throws(() => parseChecksum(parseXml(x)), JingleProtocolError);
  bad(
    `<checksum xmlns='${NS_JFT}' creator='initiator'><file><hash xmlns='${NS_HASHES}' algo='a'>AA==</hash></file></checksum>`,
  );
  bad(`<checksum xmlns='${NS_JFT}' name='c' creator='nobody'><file/></checksum>`);
  bad(`<checksum xmlns='${NS_JFT}' name='c'><file/></checksum>`);
  bad(`<checksum xmlns='${NS_JFT}' name='c'/>`);
  bad(`<checksum xmlns='urn:other' name='c'><file/></checksum>`);
  assert.throws(() => buildChecksum("c", []), JingleProtocolError);
});

Deno.test("JFT: received session-info build/parse", () => {
  const r = buildReceived("a-file-offer");
  assert.ok(isReceived(r));
  assert.ok(!isChecksum(r));
  assert.deepEqual(parseReceived(parseXml(r.toString())), { creator: "initiator", name: "a-file-offer" });
  assert.throws(() => parseReceived(parseXml(`<received xmlns='${NS_JFT}'/>`)), JingleProtocolError);
  assert.throws(() => parseReceived(parseXml(`<received xmlns='urn:x' name='a'/>`)), JingleProtocolError);
});

Deno.test("JFT: parseJingle keeps checksum session-info as an unknown payload instead of throwing", () => {
  const j = parseJingle(parseXml(
    `<jingle xmlns='${NS_JINGLE}' action='session-info' sid='s1'>${
      buildChecksum("a-file-offer", [{
        algo: "sha-256",
        value: "AAAA",
      }])
    }</jingle>`,
  ));
  assert.ok(j.infoUnknown && isChecksum(j.infoUnknown));
  assert.equal(parseChecksum(j.infoUnknown).name, "a-file-offer");
});

Deno.test("JFT: Conversations' legacy <file><encrypted> is kept (detached), never built; other <encrypted> ignored", () => {
  const key = "<header sid='7'><key rid='9'>AAAA</key><iv>AAAAAAAAAAAAAAAA</iv></header>";
  const offer = parseFileDescription(desc(
    `<name>a.jpg</name><size>1040</size><encrypted xmlns='eu.siacs.conversations.axolotl'>${key}</encrypted>`,
  ));
  assert.equal(offer.size, 1040, "<size/> as sent (the caller knows it counts the tag)");
  assert.equal(offer.legacyEncrypted?.name, "encrypted");
  assert.equal(offer.legacyEncrypted?.getNS(), "eu.siacs.conversations.axolotl");
  assert.equal(offer.legacyEncrypted?.getChild("header")?.attrs.sid, "7");
  assert.equal(offer.legacyEncrypted?.parent, null, "a detached copy");
  // We never send the legacy form.
  assert.ok(!buildFileDescription(offer).toString().includes("encrypted"));
  // An <encrypted/> in another namespace is not a key transport.
  assert.equal(
    parseFileDescription(desc("<size>3</size><encrypted xmlns='urn:x'/>")).legacyEncrypted,
    undefined,
  );
  rejects(
    `<description xmlns='${NS_JFT}'><file><encrypted xmlns='eu.siacs.conversations.axolotl'/>` +
      `<encrypted xmlns='eu.siacs.conversations.axolotl'/></file></description>`,
    /2 <encrypted\/>/,
  );
});
