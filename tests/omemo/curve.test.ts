import assert from "node:assert/strict";
import { fastCurve, x25519Agree, x25519KeyPair, xeddsaSign, xeddsaVerify } from "../../omemo/curve.ts";
import { referenceCurve } from "../../omemo/testing.ts";

const ref = await referenceCurve();
const raw = (b: ArrayBuffer) => new Uint8Array(b).slice(1);
const rnd = (n: number) => crypto.getRandomValues(new Uint8Array(n));
const ab = (u: Uint8Array) => u.slice().buffer as ArrayBuffer;
const pk33 = (p: ArrayBuffer) => {
  const o = new Uint8Array(33);
  o[0] = 5;
  o.set(new Uint8Array(p), 1);
  return o.buffer;
};

Deno.test("fast curve: key pairs and agreement match asm curve", async () => {
  for (let i = 0; i < 5; i++) {
    const a = rnd(32), b = rnd(32);
    const fa = x25519KeyPair(a), fb = x25519KeyPair(b);
    const sa = await ref.keyPair(ab(a)), sb = await ref.keyPair(ab(b));
    assert.deepEqual(new Uint8Array(fa.pubKey), raw(sa.pubKey));
    assert.deepEqual(new Uint8Array(fa.privKey), new Uint8Array(sa.privKey));
    const s1 = new Uint8Array(await x25519Agree(fb.pubKey, fa.privKey));
    const s2 = new Uint8Array(await ref.agree(sa.pubKey, sb.privKey));
    assert.deepEqual(s1, s2);
  }
});

Deno.test("fast curve: XEdDSA signatures interoperate with asm curve both ways", async () => {
  for (let i = 0; i < 8; i++) {
    const kp = x25519KeyPair(rnd(32));
    const msg = rnd(33);
    const sig = await xeddsaSign(kp.privKey, msg);
    assert.equal(await ref.verify(pk33(kp.pubKey), ab(msg), sig), true, "asm accepts ours");
    assert.equal(await xeddsaVerify(kp.pubKey, msg, sig), true);
    const asmSig = await ref.sign(kp.privKey, ab(msg));
    assert.equal(await xeddsaVerify(kp.pubKey, msg, asmSig), true, "we accept asm's");
    assert.equal(await fastCurve.verify(kp.pubKey, ab(msg), asmSig), false);
    // 0x05-prefixed key accepted
    const pref = new Uint8Array(33);
    pref[0] = 5;
    pref.set(new Uint8Array(kp.pubKey), 1);
    assert.equal(await xeddsaVerify(pref, msg, sig), true);
    // tampering
    const bad = new Uint8Array(sig);
    bad[5]! ^= 1;
    assert.equal(await xeddsaVerify(kp.pubKey, msg, bad), false);
    const badMsg = new Uint8Array(msg);
    badMsg[0]! ^= 1;
    assert.equal(await xeddsaVerify(kp.pubKey, badMsg, sig), false);
    assert.equal(await ref.verify(pk33(kp.pubKey), ab(badMsg), sig), false);
  }
});

Deno.test("fast curve: spec XEdDSA (sign bit forced 0, python-xeddsa style) verifies", async () => {
  // Emulate python-xeddsa: if Edwards A has sign bit 1, negate scalar so that A' = -A has sign 0.
  const { ed25519 } = await import("@noble/curves/ed25519.js");
  const Pt = ed25519.Point, L = Pt.Fn.ORDER;
  const le = (b: Uint8Array) => b.reduceRight((n, x) => (n << 8n) | BigInt(x), 0n);
  const toLe = (n: bigint) => Uint8Array.from({ length: 32 }, (_, i) => Number((n >> BigInt(8 * i)) & 0xffn));
  let done = 0;
  while (done < 3) {
    const kp = x25519KeyPair(rnd(32));
    let a = le(new Uint8Array(kp.privKey)) % L;
    let A = Pt.BASE.multiply(a).toBytes();
    if (!(A[31]! & 0x80)) continue;
    a = (L - a) % L;
    A = Pt.BASE.multiply(a).toBytes();
    assert.equal(A[31]! & 0x80, 0);
    const msg = rnd(40);
    const r = le(rnd(64)) % L;
    const R = Pt.BASE.multiply(r).toBytes();
    const h =
      le(new Uint8Array(await crypto.subtle.digest("SHA-512", new Uint8Array([...R, ...A, ...msg])))) % L;
    const s = (r + h * a) % L;
    const sig = new Uint8Array([...R, ...toLe(s)]);
    assert.equal(await xeddsaVerify(kp.pubKey, msg, sig), true);
    assert.equal(await ref.verify(pk33(kp.pubKey), ab(msg), ab(sig)), true);
    done++;
  }
});

Deno.test("fast curve: perf", async () => {
  const kp = x25519KeyPair(rnd(32));
  const msg = rnd(33);
  let t = performance.now();
  for (let i = 0; i < 20; i++) await x25519Agree(kp.pubKey, kp.privKey);
  const ecdh = (performance.now() - t) / 20;
  t = performance.now();
  const sig = await xeddsaSign(kp.privKey, msg);
  for (let i = 0; i < 20; i++) await xeddsaVerify(kp.pubKey, msg, sig);
  const ver = (performance.now() - t) / 20;
  console.log(`fast curve: ecdh ${ecdh.toFixed(2)} ms, verify ${ver.toFixed(2)} ms`);
});
