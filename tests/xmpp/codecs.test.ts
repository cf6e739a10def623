import assert from "node:assert/strict";
import {
  capsVerificationString,
  computeCapsVer,
  ScramSha1Client,
  unwrapCarbon,
  xml,
} from "../../xmpp/mod.ts";

Deno.test("XEP-0115 §5.2 caps ver test vector", async () => {
  const info = {
    identities: [{ category: "client", type: "pc", name: "Exodus 0.9.1" }],
    // Deliberately unsorted: the algorithm must sort.
    features: [
      "http://jabber.org/protocol/muc",
      "http://jabber.org/protocol/disco#info",
      "http://jabber.org/protocol/caps",
      "http://jabber.org/protocol/disco#items",
    ],
    forms: [],
  };
  assert.equal(
    capsVerificationString(info),
    "client/pc//Exodus 0.9.1<http://jabber.org/protocol/caps<http://jabber.org/protocol/disco#info<" +
      "http://jabber.org/protocol/disco#items<http://jabber.org/protocol/muc<",
  );
  assert.equal(await computeCapsVer(info), "QgayPKawpkPSDYmwT/WM94uAlu0=");
});

Deno.test("XEP-0115 §5.3 complex example (identities with lang, extended form)", async () => {
  const info = {
    identities: [
      { category: "client", type: "pc", lang: "en", name: "Psi 0.11" },
      { category: "client", type: "pc", lang: "el", name: "Ψ 0.11" },
    ],
    features: [
      "http://jabber.org/protocol/caps",
      "http://jabber.org/protocol/disco#info",
      "http://jabber.org/protocol/disco#items",
      "http://jabber.org/protocol/muc",
    ],
    forms: [{
      formType: "urn:xmpp:dataforms:softwareinfo",
      fields: {
        ip_version: ["ipv4", "ipv6"],
        os: ["Mac"],
        os_version: ["10.5.1"],
        software: ["Psi"],
        software_version: ["0.11"],
      },
    }],
  };
  assert.equal(await computeCapsVer(info), "q07IKJEyjvHSyhy//CH0CxmKi8w=");
});

Deno.test("SCRAM-SHA-1 RFC 5802 §5 example", async () => {
  const scram = new ScramSha1Client("user", "pencil", "fyko+d2lbbFgONRv9qkxdawL");
  assert.equal(scram.clientFirst(), "n,,n=user,r=fyko+d2lbbFgONRv9qkxdawL");
  const final = await scram.clientFinal(
    "r=fyko+d2lbbFgONRv9qkxdawL3rfcNHYJY1ZVvWVs7j,s=QSXCR+Q6sek8bf92,i=4096",
  );
  assert.equal(final, "c=biws,r=fyko+d2lbbFgONRv9qkxdawL3rfcNHYJY1ZVvWVs7j,p=v0X8v3Bz2T0CJGbJQyF0X+HI4Ts=");
  scram.verifyServerFinal("v=rmF9pqV8S7suAoZWja4dJRkFsKQ=");
  assert.throws(() => scram.verifyServerFinal("v=AAAAAAAAAAAAAAAAAAAAAAAAAAA="), /signature mismatch/);
});

Deno.test("SCRAM-SHA-1 rejects foreign nonce and weak iteration counts", async () => {
  const a = new ScramSha1Client("user", "pencil", "abc");
  a.clientFirst();
  await assert.rejects(a.clientFinal("r=xyz123,s=QSXCR+Q6sek8bf92,i=4096"), /nonce/);
  const b = new ScramSha1Client("user", "pencil", "abc");
  b.clientFirst();
  await assert.rejects(b.clientFinal("r=abc123,s=QSXCR+Q6sek8bf92,i=1"), /iteration/);
});

Deno.test("unwrapCarbon accepts only our bare JID as sender (CVE-2017-5589)", () => {
  const carbon = (from: string | undefined) =>
    xml(
      "message",
      { from, to: "me@example.org/a" },
      xml(
        "received",
        { xmlns: "urn:xmpp:carbons:2" },
        xml(
          "forwarded",
          { xmlns: "urn:xmpp:forward:0" },
          xml("message", { from: "x@y/z" }, xml("body", {}, "hi")),
        ),
      ),
    );
  const ok = unwrapCarbon(carbon("Me@example.org"), "me@example.org");
  assert.ok(ok.ok && ok.direction === "received" && ok.message.attrs.from === "x@y/z");
  assert.equal(unwrapCarbon(carbon("evil@example.org"), "me@example.org").ok, false);
  assert.equal(unwrapCarbon(carbon("me@example.org/other"), "me@example.org").ok, false);
  assert.equal(unwrapCarbon(carbon(undefined), "me@example.org").ok, false);
});
