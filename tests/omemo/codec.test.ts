import assert from "node:assert/strict";
import { xml } from "@xmpp/xml";
import parse from "@xmpp/xml/lib/parse.js";
import {
  decodeBundle,
  decodeDeviceList,
  decodeEncrypted,
  encodeBundle,
  encodeDeviceList,
  encodeEncrypted,
  formatFingerprint,
  NS_OMEMO,
  OmemoCodecError,
} from "../../omemo/mod.ts";

const rnd = (n: number) => crypto.getRandomValues(new Uint8Array(n));
const key33 = () => {
  const k = rnd(33);
  k[0] = 5;
  return k;
};

Deno.test("codec: device list round trip, garbage skipped", () => {
  const el = encodeDeviceList([1, 2147483647, 42, 42]);
  const back = decodeDeviceList(parse(el.toString()));
  assert.deepEqual(back, { devices: [1, 2147483647, 42], skipped: [] });
  const garbage = parse(
    `<list xmlns='${NS_OMEMO}'><device id='0'/><device id='x'/><device/><device id='2147483648'/>` +
      `<device id='12'/><device id=' 13 '/><other/></list>`,
  );
  const r = decodeDeviceList(garbage);
  assert.deepEqual(r.devices, [12, 13]);
  assert.equal(r.skipped.length, 5);
  // wrapped in <item/>
  assert.deepEqual(decodeDeviceList(xml("item", { id: "current" }, encodeDeviceList([7]))).devices, [7]);
  assert.throws(() => decodeDeviceList(xml("list", { xmlns: "urn:other" })), OmemoCodecError);
  assert.throws(() => encodeDeviceList([0]), OmemoCodecError);
});

Deno.test("codec: bundle round trip and malformed input", () => {
  const b = {
    signedPreKeyId: 5,
    signedPreKeyPublic: key33(),
    signedPreKeySignature: rnd(64),
    identityKey: key33(),
    preKeys: [{ id: 1, publicKey: key33() }, { id: 2, publicKey: key33() }],
  };
  const back = decodeBundle(parse(encodeBundle(b).toString()));
  assert.deepEqual(back, b);
  const s = encodeBundle(b).toString();
  assert.ok(s.includes('signedPreKeyPublic signedPreKeyId="5"'));
  assert.ok(s.includes('preKeyPublic preKeyId="1"'));
  // garbage prekey skipped
  const el = parse(s.replace(/(<preKeyPublic preKeyId="2">)[^<]*/, "$1!!notbase64!!"));
  assert.equal(decodeBundle(el).preKeys.length, 1);
  // missing identity key
  assert.throws(
    () => decodeBundle(parse(s.replace(/<identityKey>[^<]*<\/identityKey>/, ""))),
    OmemoCodecError,
  );
  // bad signature length
  assert.throws(
    () => decodeBundle(parse(s.replace(/<signedPreKeySignature>[^<]*</, "<signedPreKeySignature>AAAA<"))),
    OmemoCodecError,
  );
  assert.throws(() => decodeBundle(xml("bundle", { xmlns: "x" })), OmemoCodecError);
});

Deno.test("codec: encrypted round trip; Conversations and Dino order; errors", () => {
  const m = {
    sid: 123,
    keys: [{ rid: 5, preKey: true, data: rnd(100) }, { rid: 6, preKey: false, data: rnd(50) }],
    iv: rnd(12),
    payload: rnd(20),
  };
  const el = encodeEncrypted(m);
  const s = el.toString();
  assert.ok(s.indexOf("<key") < s.indexOf("<iv>"), "keys then iv");
  assert.deepEqual(decodeEncrypted(parse(s)), m);
  const noPayload = { ...m, payload: undefined };
  const kt = decodeEncrypted(parse(encodeEncrypted(noPayload).toString()));
  assert.equal(kt.payload, undefined);
  // Dino: iv first, prekey='1'
  const b64 = (u: Uint8Array) => btoa(String.fromCharCode(...u));
  const iv16 = rnd(16);
  const dino = parse(
    `<encrypted xmlns='${NS_OMEMO}'><header sid='9'><iv>${b64(iv16)}</iv>` +
      `<key prekey='1' rid='3'>${b64(rnd(8))}</key><key rid='4'>${b64(rnd(8))}</key></header></encrypted>`,
  );
  const d = decodeEncrypted(dino);
  assert.deepEqual(d.iv, iv16);
  assert.deepEqual(d.keys.map((k) => [k.rid, k.preKey]), [[3, true], [4, false]]);
  const bad = [
    `<encrypted xmlns='urn:x'/>`,
    `<encrypted xmlns='${NS_OMEMO}'/>`,
    `<encrypted xmlns='${NS_OMEMO}'><header sid='0'><iv>${b64(rnd(12))}</iv></header></encrypted>`,
    `<encrypted xmlns='${NS_OMEMO}'><header sid='1'></header></encrypted>`,
    `<encrypted xmlns='${NS_OMEMO}'><header sid='1'><iv>${b64(rnd(8))}</iv></header></encrypted>`,
    `<encrypted xmlns='${NS_OMEMO}'><header sid='1'><iv>${
      b64(rnd(12))
    }</iv><key rid='x'>AA==</key></header></encrypted>`,
    `<encrypted xmlns='${NS_OMEMO}'><header sid='1'><iv>${
      b64(rnd(12))
    }</iv><key rid='2'>%%%</key></header></encrypted>`,
    `<encrypted xmlns='${NS_OMEMO}'><header sid='1'><iv>${
      b64(rnd(12))
    }</iv></header><payload>*</payload></encrypted>`,
  ];
  for (const x of bad) assert.throws(() => decodeEncrypted(parse(x)), OmemoCodecError, x);
});

Deno.test("codec: fingerprint format", () => {
  const k = new Uint8Array(33);
  k[0] = 5;
  for (let i = 1; i < 33; i++) k[i] = i;
  const fp = formatFingerprint(k);
  assert.equal(fp, "01020304 05060708 090a0b0c 0d0e0f10 11121314 15161718 191a1b1c 1d1e1f20");
  assert.equal(formatFingerprint(k.subarray(1)), fp);
});
