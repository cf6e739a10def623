import assert from "node:assert/strict";
import { xml } from "@xmpp/xml";
import {
  BadBundleSignatureError,
  bundleNode,
  decodeBundle,
  decodeDeviceList,
  decodeEncrypted,
  encodeBundle,
  encodeEncrypted,
  NODE_DEVICELIST,
  NotForThisDeviceError,
  OmemoDecryptionError,
  OmemoManager,
  OmemoProtocolError,
  OmemoStore,
  UntrustedDeviceError,
} from "../../omemo/mod.ts";
import { buildSessionWithoutOneTimePreKey } from "../../omemo/testing.ts";
import { FakePep, makeManager, readState } from "./helpers.ts";

const A = "alice@example.org", B = "bob@example.org";

Deno.test("publishOwn publishes bundle + device list with open access; merges existing devices", async () => {
  const pep = new FakePep();
  const t = pep.transportFor(A);
  await t.publish(
    NODE_DEVICELIST,
    xml("list", { xmlns: "eu.siacs.conversations.axolotl" }, xml("device", { id: "42" })),
    "current",
    {},
  );
  const { m, store } = await makeManager(pep, A);
  const list = decodeDeviceList(pep.items.get(`${A}|${NODE_DEVICELIST}`)!);
  assert.deepEqual(list.devices.sort(), [42, m.deviceId].sort());
  const bundle = decodeBundle(pep.items.get(`${A}|${bundleNode(m.deviceId)}`)!);
  assert.equal(bundle.preKeys.length, 100);
  const pubs = pep.publishes.filter((p) => p.options["pubsub#access_model"] === "open");
  assert.ok(pubs.some((p) => p.node === NODE_DEVICELIST && p.itemId === "current"));
  assert.ok(pubs.some((p) => p.node === bundleNode(m.deviceId)));
  assert.ok(m.deviceId >= 1 && m.deviceId <= 0x7fffffff);
  assert.match(await m.ownFingerprint(), /^([0-9a-f]{8} ){7}[0-9a-f]{8}$/);
  await store.close();
});

Deno.test("two managers exchange messages both ways; second own device decrypts; perf", async () => {
  const pep = new FakePep();
  const a = await makeManager(pep, A);
  const a2 = await makeManager(pep, A);
  const b = await makeManager(pep, B);
  // a learns its own second device via device list
  await a.m.handleDeviceList(A, pep.items.get(`${A}|${NODE_DEVICELIST}`)!);
  const t0 = performance.now();
  const enc = await a.m.encrypt([B], "hello bob");
  const dt = performance.now() - t0;
  console.log(`encrypt incl. 2 X3DH session builds: ${dt.toFixed(1)} ms`);
  assert.equal(enc.devices.length, 2);
  assert.ok(enc.devices.every((d) => d.preKey));
  const xmlText = enc.element.toString();
  assert.ok(xmlText.includes('prekey="true"'));
  const r = await b.m.decrypt(A, enc.element);
  assert.equal(r.plaintext, "hello bob");
  assert.equal(r.senderDeviceId, a.m.deviceId);
  assert.equal(r.trust, "blind");
  assert.equal(r.preKeyUsed, true);
  assert.equal(r.identityFingerprint, await a.m.ownFingerprint());
  const r2 = await a2.m.decrypt(A, enc.element);
  assert.equal(r2.plaintext, "hello bob");

  const back = await b.m.encrypt([A], "hi alice");
  assert.ok(back.devices.some((d) => d.deviceId === a.m.deviceId && !d.preKey));
  assert.equal((await a.m.decrypt(B, back.element)).plaintext, "hi alice");
  assert.equal((await a2.m.decrypt(B, back.element)).plaintext, "hi alice");
  // after the reply, alice's messages are plain SignalMessages
  const again = await a.m.encrypt([B], "second");
  assert.ok(again.devices.find((d) => d.jid === B)!.preKey === false);
  assert.equal((await b.m.decrypt(A, again.element)).plaintext, "second");
  for (let i = 0; i < 3; i++) {
    const e = await b.m.encrypt([A], `msg ${i} ✓`);
    assert.equal((await a.m.decrypt(B, e.element)).plaintext, `msg ${i} ✓`);
  }
  for (const x of [a, a2, b]) await x.store.close();
});

Deno.test("key transport to one exact device returns key+iv", async () => {
  const pep = new FakePep();
  const a = await makeManager(pep, A);
  const b = await makeManager(pep, B);
  const enc = await a.m.encrypt([B], null, { devices: [{ jid: B, deviceId: b.m.deviceId }] });
  const parsed = decodeEncrypted(enc.element);
  assert.equal(parsed.payload, undefined);
  assert.equal(parsed.keys.length, 1);
  assert.equal(enc.key.length, 16);
  assert.equal(enc.iv.length, 12);
  const r = await b.m.decrypt(A, enc.element);
  assert.equal(r.plaintext, null);
  assert.deepEqual(r.key, enc.key);
  assert.deepEqual(r.iv, enc.iv);
  for (const x of [a, b]) await x.store.close();
});

Deno.test("16-byte IV, legacy tag-in-payload and Dino element order accepted", async () => {
  const pep = new FakePep();
  const a = await makeManager(pep, A);
  const b = await makeManager(pep, B);
  // key transport carries a 16-byte key; add a payload (ct||tag, legacy layout) with a 16-byte IV
  const kt = await a.m.encrypt([B], null);
  const iv = crypto.getRandomValues(new Uint8Array(16));
  const k = await crypto.subtle.importKey("raw", new Uint8Array(kt.key), "AES-GCM", false, ["encrypt"]);
  const ct = new Uint8Array(
    await crypto.subtle.encrypt({ name: "AES-GCM", iv }, k, new TextEncoder().encode("iv16")),
  );
  const parsed = decodeEncrypted(kt.element);
  const b64 = (u: Uint8Array) => btoa(String.fromCharCode(...u));
  const dino = xml(
    "encrypted",
    { xmlns: "eu.siacs.conversations.axolotl" },
    xml(
      "header",
      { sid: String(parsed.sid) },
      xml("iv", {}, b64(iv)),
      ...parsed.keys.map((x) =>
        xml("key", x.preKey ? { rid: String(x.rid), prekey: "1" } : { rid: String(x.rid) }, b64(x.data))
      ),
    ),
    xml("payload", {}, b64(ct)),
  );
  const r = await b.m.decrypt(A, dino);
  assert.equal(r.plaintext, "iv16");
  assert.equal(r.iv.length, 16);
  for (const x of [a, b]) await x.store.close();
});

Deno.test("store reload from disk continues sessions", async () => {
  const pep = new FakePep();
  const a = await makeManager(pep, A);
  const b = await makeManager(pep, B);
  const e1 = await a.m.encrypt([B], "one");
  await b.m.decrypt(A, e1.element);
  const aId = a.m.deviceId, bId = b.m.deviceId;
  const fpB = await b.m.ownFingerprint();
  await a.store.close();
  await b.store.close();
  const a2 = await makeManager(pep, A, a.dir);
  const b2 = await makeManager(pep, B, b.dir);
  assert.equal(a2.m.deviceId, aId);
  assert.equal(b2.m.deviceId, bId);
  assert.equal(await b2.m.ownFingerprint(), fpB);
  const e2 = await b2.m.encrypt([A], "two");
  assert.equal(e2.devices[0]!.preKey, false);
  assert.equal((await a2.m.decrypt(B, e2.element)).plaintext, "two");
  const st = await Deno.stat(`${a.dir}/state.json`);
  assert.equal(st.mode! & 0o777, 0o600);
  assert.equal((await Deno.stat(a.dir)).mode! & 0o777, 0o700);
  for (const x of [a2, b2]) await x.store.close();
});

Deno.test("consumed prekey is removed, replaced and bundle republished", async () => {
  const pep = new FakePep();
  const a = await makeManager(pep, A);
  const b = await makeManager(pep, B);
  const before = decodeBundle(pep.items.get(`${B}|${bundleNode(b.m.deviceId)}`)!).preKeys.map((p) => p.id);
  const e = await a.m.encrypt([B], "x");
  const r = await b.m.decrypt(A, e.element);
  assert.equal(r.preKeyUsed, true);
  await b.m.bundlePublished();
  const after = decodeBundle(pep.items.get(`${B}|${bundleNode(b.m.deviceId)}`)!).preKeys.map((p) => p.id);
  assert.equal(after.length, 100);
  const removed = before.filter((id) => !after.includes(id));
  assert.equal(removed.length, 1);
  assert.equal(b.store.isPreKeyPublished(removed[0]!), false);
  assert.ok(await b.store.loadPreKey(removed[0]!), "kept a while for a second sender that picked it too");
  assert.equal(after.filter((id) => !before.includes(id)).length, 1);
  for (const x of [a, b]) await x.store.close();
});

Deno.test("two senders that picked the same one-time prekey from the bundle both get through", async () => {
  const pep = new FakePep();
  const C = "carol@example.org";
  const a = await makeManager(pep, A);
  const b = await makeManager(pep, B);
  const c = await makeManager(pep, C);
  // Both fetch a bundle with a single one-time prekey (as two senders picking the same one of 100 at random).
  const key = `${B}|${bundleNode(b.m.deviceId)}`;
  const full = decodeBundle(pep.items.get(key)!);
  pep.items.set(key, encodeBundle({ ...full, preKeys: full.preKeys.slice(0, 1) }));
  const fromA = await a.m.encrypt([B], "from alice");
  const fromC = await c.m.encrypt([B], "from carol");
  assert.equal((await b.m.decrypt(A, fromA.element)).plaintext, "from alice");
  // The prekey is spent by now (no longer published): carol's session still opens (was "Bad MAC").
  const r = await b.m.decrypt(C, fromC.element);
  assert.equal(r.plaintext, "from carol");
  assert.equal(r.preKeyUsed, false, "already replaced after alice's message");
  await b.m.bundlePublished();
  const republished = decodeBundle(pep.items.get(key)!).preKeys.map((p) => p.id);
  assert.ok(!republished.includes(full.preKeys[0]!.id), "the used prekey is no longer published");
  // Both sessions work onwards.
  assert.equal((await a.m.decrypt(B, (await b.m.encrypt([A], "to alice")).element)).plaintext, "to alice");
  assert.equal((await c.m.decrypt(B, (await b.m.encrypt([C], "to carol")).element)).plaintext, "to carol");
  for (const x of [a, b, c]) await x.store.close();
});

Deno.test("tampered payload/tag → typed error, store unchanged", async () => {
  const pep = new FakePep();
  const a = await makeManager(pep, A);
  const b = await makeManager(pep, B);
  const e = await a.m.encrypt([B], "secret");
  const p = decodeEncrypted(e.element);
  p.payload![0]! ^= 1;
  const snap = await readState(b.dir);
  await assert.rejects(b.m.decrypt(A, encodeEncrypted(p)), OmemoDecryptionError);
  assert.equal(await readState(b.dir), snap);
  // tampered ratchet blob
  const p2 = decodeEncrypted(e.element);
  const k = p2.keys.find((x) => x.rid === b.m.deviceId)!;
  k.data[k.data.length - 3]! ^= 1;
  await assert.rejects(b.m.decrypt(A, encodeEncrypted(p2)), OmemoDecryptionError);
  assert.equal(await readState(b.dir), snap);
  // original still decrypts
  assert.equal((await b.m.decrypt(A, e.element)).plaintext, "secret");
  for (const x of [a, b]) await x.store.close();
});

Deno.test("message for another device → NotForThisDeviceError", async () => {
  const pep = new FakePep();
  const a = await makeManager(pep, A);
  const b = await makeManager(pep, B);
  const c = await makeManager(pep, "carol@example.org");
  const e = await a.m.encrypt([B], "not for carol");
  await assert.rejects(c.m.decrypt(A, e.element), NotForThisDeviceError);
  for (const x of [a, b, c]) await x.store.close();
});

Deno.test("replayed PreKeySignalMessage fails and leaves store unchanged", async () => {
  const pep = new FakePep();
  const a = await makeManager(pep, A);
  const b = await makeManager(pep, B);
  const e = await a.m.encrypt([B], "once");
  assert.equal((await b.m.decrypt(A, e.element)).plaintext, "once");
  const snap = await readState(b.dir);
  await assert.rejects(b.m.decrypt(A, e.element), OmemoDecryptionError);
  assert.equal(await readState(b.dir), snap);
  for (const x of [a, b]) await x.store.close();
});

Deno.test("PreKeySignalMessage without one-time prekey id is refused", async () => {
  const pep = new FakePep();
  const a = await makeManager(pep, A);
  const b = await makeManager(pep, B);
  // strip prekeys from bob's bundle => alice can't build; so build a session without OPK by hand
  const node = `${B}|${bundleNode(b.m.deviceId)}`;
  const bundle = decodeBundle(pep.items.get(node)!);
  await buildSessionWithoutOneTimePreKey(a.store, B, b.m.deviceId, bundle);
  const e = await a.m.encrypt([B], "no opk", { devices: [{ jid: B, deviceId: b.m.deviceId }] });
  await assert.rejects(b.m.decrypt(A, e.element), OmemoProtocolError);
  for (const x of [a, b]) await x.store.close();
});

Deno.test("bundle with bad signature is refused", async () => {
  const pep = new FakePep();
  const a = await makeManager(pep, A);
  const b = await makeManager(pep, B);
  const node = `${B}|${bundleNode(b.m.deviceId)}`;
  const bundle = decodeBundle(pep.items.get(node)!);
  bundle.signedPreKeySignature[10]! ^= 0x40;
  pep.items.set(node, encodeBundle(bundle));
  await assert.rejects(a.m.buildSession(B, b.m.deviceId), BadBundleSignatureError);
  await assert.rejects(
    a.m.encrypt([B], "x", { devices: [{ jid: B, deviceId: b.m.deviceId }] }),
    BadBundleSignatureError,
  );
  for (const x of [a, b]) await x.store.close();
});

Deno.test("garbage device list entries are skipped", async () => {
  const pep = new FakePep();
  const a = await makeManager(pep, A);
  const b = await makeManager(pep, B);
  const list = xml(
    "list",
    { xmlns: "eu.siacs.conversations.axolotl" },
    xml("device", { id: "0" }),
    xml("device", { id: "-5" }),
    xml("device", { id: "abc" }),
    xml("device", { id: "2147483648" }),
    xml("device", {}),
    xml("foo", {}),
    xml("device", { id: String(b.m.deviceId) }),
    xml("device", { id: String(b.m.deviceId) }),
    xml("device", { id: "777" }), // no bundle -> skipped on encrypt
  );
  const r = await a.m.handleDeviceList(B, list);
  assert.deepEqual(r.devices, [b.m.deviceId, 777]);
  assert.equal(r.skipped.length, 7);
  const e = await a.m.encrypt([B], "hi");
  assert.deepEqual(e.devices.map((d) => d.deviceId), [b.m.deviceId]);
  assert.equal(e.skipped[0]!.deviceId, 777);
  assert.equal((await b.m.decrypt(A, e.element)).plaintext, "hi");
  for (const x of [a, b]) await x.store.close();
});

Deno.test("trust: BTBV, setTrust, requireTrusted", async () => {
  const pep = new FakePep();
  const a = await makeManager(pep, A, undefined, { requireTrusted: true });
  const b = await makeManager(pep, B);
  const e = await b.m.encrypt([A], "hey");
  const r = await a.m.decrypt(B, e.element);
  assert.equal(r.trust, "blind");
  await a.m.setTrust(B, r.identityFingerprint.toUpperCase(), "verified");
  assert.equal(a.m.listDevices(B)[0]!.trust, "verified");
  // a new device of bob is now untrusted (BTBV)
  const b2 = await makeManager(pep, B);
  await a.m.handleDeviceList(B, pep.items.get(`${B}|${NODE_DEVICELIST}`)!);
  const e2 = await a.m.encrypt([B], "to bob");
  assert.deepEqual(e2.devices.map((d) => d.deviceId), [b.m.deviceId]);
  assert.equal(a.m.listDevices(B).find((d) => d.deviceId === b2.m.deviceId)!.trust, "untrusted");
  await assert.rejects(
    a.m.encrypt([B], "x", { devices: [{ jid: B, deviceId: b2.m.deviceId }] }),
    UntrustedDeviceError,
  );
  // message from the untrusted device is refused under requireTrusted
  await b2.m.handleDeviceList(A, pep.items.get(`${A}|${NODE_DEVICELIST}`)!);
  const e3 = await b2.m.encrypt([A], "from b2");
  await assert.rejects(a.m.decrypt(B, e3.element), UntrustedDeviceError);
  for (const x of [a, b, b2]) await x.store.close();
});

Deno.test("store lock and corruption", async () => {
  const pep = new FakePep();
  const a = await makeManager(pep, A);
  await assert.rejects(OmemoStore.open(a.dir), /locked|already open/);
  await a.store.close();
  await Deno.writeTextFile(`${a.dir}/state.json`, "{ not json");
  await assert.rejects(OmemoStore.open(a.dir), (e: Error) => e.name === "OmemoStoreCorruptError");
  // lock released after failed open
  await Deno.writeTextFile(`${a.dir}/state.json`, JSON.stringify({ version: 1 }));
  await assert.rejects(OmemoStore.open(a.dir), (e: Error) => e.name === "OmemoStoreCorruptError");
  // stale lock from dead pid is taken over
  await Deno.remove(`${a.dir}/state.json`);
  await Deno.writeTextFile(`${a.dir}/lock`, "999999999\n");
  const s = await OmemoStore.open(a.dir);
  await s.close();
  const m = await OmemoManager.create({ store: s, transport: pep.transportFor(A), ownJid: A });
  assert.ok(m);
});

Deno.test("perf: X3DH session build with fast curve", async () => {
  const pep = new FakePep();
  const a = await makeManager(pep, A);
  const bs = [];
  for (let i = 0; i < 5; i++) bs.push(await makeManager(pep, `b${i}@example.org`));
  const t0 = performance.now();
  for (const b of bs) {
    await a.m.buildSession(b.m.deviceId ? `b${bs.indexOf(b)}@example.org` : "", b.m.deviceId);
  }
  const per = (performance.now() - t0) / bs.length;
  console.log(`X3DH session build (fetch+verify+X3DH+persist): ${per.toFixed(2)} ms per device`);
  assert.ok(per < 30, `session build too slow: ${per} ms`);
  for (const x of [a, ...bs]) await x.store.close();
});
