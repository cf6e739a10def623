import assert from "node:assert/strict";
import { syncSubtle } from "../../omemo/sync_crypto.ts";

const rnd = (n: number) => crypto.getRandomValues(new Uint8Array(n));

Deno.test("sync crypto: HMAC-SHA256 equals WebCrypto's, for ArrayBuffer and view inputs", async () => {
  for (const [kl, dl] of [[32, 0], [32, 33], [16, 100], [64, 1000]] as const) {
    const key = rnd(kl), data = rnd(dl);
    const ref = await crypto.subtle.sign(
      "HMAC",
      await crypto.subtle.importKey("raw", key, { name: "HMAC", hash: "SHA-256" }, false, ["sign"]),
      data,
    );
    const k = await syncSubtle.importKey(
      "raw",
      key.buffer,
      { name: "HMAC", hash: { name: "SHA-256" } },
      false,
      [
        "sign",
      ],
    );
    assert.deepEqual(
      new Uint8Array(await syncSubtle.sign({ name: "HMAC", hash: "SHA-256" }, k, data)),
      new Uint8Array(ref),
    );
    assert.deepEqual(new Uint8Array(await syncSubtle.sign("HMAC", k, data.buffer)), new Uint8Array(ref));
  }
});

Deno.test("sync crypto: AES-256-CBC round trip equals WebCrypto's (PKCS#7), bad padding and bad key refused", async () => {
  const key = rnd(32), iv = rnd(16);
  for (const n of [0, 15, 16, 17, 100]) {
    const data = rnd(n);
    const wk = await crypto.subtle.importKey("raw", key, { name: "AES-CBC" }, false, ["encrypt", "decrypt"]);
    const ref = new Uint8Array(await crypto.subtle.encrypt({ name: "AES-CBC", iv }, wk, data));
    const k = await syncSubtle.importKey("raw", key.buffer, { name: "AES-CBC" }, false, ["encrypt"]);
    const ct = new Uint8Array(
      await syncSubtle.encrypt({ name: "AES-CBC", iv: new Uint8Array(iv) }, k, data.buffer),
    );
    assert.deepEqual(ct, ref);
    assert.deepEqual(new Uint8Array(await syncSubtle.decrypt({ name: "AES-CBC", iv }, k, ref)), data);
  }
  const k = await syncSubtle.importKey("raw", key, { name: "AES-CBC" }, false, ["decrypt"]);
  const garbage = rnd(32);
  // a wrong key almost never yields valid PKCS#7 padding: tried with several garbage blocks
  let refused = 0;
  for (let i = 0; i < 8; i++) {
    await syncSubtle.decrypt({ name: "AES-CBC", iv }, k, rnd(32)).then(() => {}, () => refused++);
  }
  assert.ok(refused >= 6, `bad padding refused ${refused}/8`);
  await assert.rejects(syncSubtle.decrypt({ name: "AES-CBC", iv }, k, garbage.subarray(0, 17)));
  await assert.rejects(syncSubtle.decrypt({ name: "AES-CBC", iv: rnd(8) }, k, garbage));
  const hmacKey = await syncSubtle.importKey("raw", key, { name: "HMAC", hash: "SHA-256" }, false, ["sign"]);
  await assert.rejects(syncSubtle.encrypt({ name: "AES-CBC", iv }, hmacKey, garbage), /not usable/);
  await assert.rejects(syncSubtle.sign({ name: "HMAC" }, k, garbage), /not usable/);
});

Deno.test("sync crypto: SHA-512 equals WebCrypto's; other algorithms go to WebCrypto", async () => {
  const data = rnd(77);
  assert.deepEqual(
    new Uint8Array(await syncSubtle.digest({ name: "SHA-512" }, data)),
    new Uint8Array(await crypto.subtle.digest("SHA-512", data)),
  );
  assert.deepEqual(
    new Uint8Array(await syncSubtle.digest("SHA-256", data)),
    new Uint8Array(await crypto.subtle.digest("SHA-256", data)),
  );
  const k = await syncSubtle.importKey("raw", rnd(32), { name: "HMAC", hash: "SHA-512" }, false, ["sign"]);
  assert.ok(k instanceof CryptoKey, "HMAC-SHA-512 keys are WebCrypto's");
});

Deno.test("native X25519: agreement matches @noble/curves; low-order public keys refused", async () => {
  const { x25519 } = await import("@noble/curves/ed25519.js");
  const { x25519Agree, x25519KeyPair } = await import("../../omemo/curve.ts");
  const a = x25519KeyPair(rnd(32)), b = x25519KeyPair(rnd(32));
  const pa = new Uint8Array(a.privKey), pb = new Uint8Array(b.pubKey);
  assert.deepEqual(new Uint8Array(a.pubKey), x25519.getPublicKey(pa));
  assert.deepEqual(new Uint8Array(await x25519Agree(b.pubKey, a.privKey)), x25519.getSharedSecret(pa, pb));
  const prefixed = new Uint8Array(33);
  prefixed[0] = 5;
  prefixed.set(pb, 1);
  assert.deepEqual(new Uint8Array(await x25519Agree(prefixed, a.privKey)), x25519.getSharedSecret(pa, pb));
  for (const u of [0, 1]) {
    const low = new Uint8Array(32);
    low[0] = u;
    await assert.rejects(x25519Agree(low, a.privKey));
  }
  await assert.rejects(x25519Agree(pb, new Uint8Array(31)), /private key length/);
});
