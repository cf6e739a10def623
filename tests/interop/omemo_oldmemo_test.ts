/**
 * Interop with an independent OMEMO 0.3 implementation: python3-oldmemo/python3-omemo on
 * python3-slixmpp (tests/interop/omemo_peer.py), on the same real Prosody.
 */
import assert from "node:assert/strict";
import { type ChatMessage, createEndpoint, type Endpoint, type KeyTransport } from "../../bot/endpoint.ts";
import { startProsody } from "../../scripts/prosody.ts";
import { fromBase64, toBase64 } from "../../omemo/mod.ts";
import { parseXml } from "../../jingle/mod.ts";
import { JsonLinePeer } from "./_peer.ts";

const quiet = { debug() {}, info() {}, warn() {}, error() {} };

function waitFor<T>(subscribe: (h: (v: T) => void) => () => void, match: (v: T) => boolean): Promise<T> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      off();
      reject(new Error("timed out after 15 s"));
    }, 15_000);
    const off = subscribe((v) => {
      if (!match(v)) return;
      clearTimeout(timer);
      off();
      resolve(v);
    });
  });
}

Deno.test({
  name: "OMEMO 0.3 interoperates with python3-oldmemo both ways, including key transport",
  sanitizeOps: false,
  sanitizeResources: false,
  async fn(t) {
    const server = await startProsody();
    const tmp = await Deno.makeTempDir({ prefix: "interop-omemo-" });
    let alice: Endpoint | undefined;
    let peer: JsonLinePeer | undefined;
    try {
      const aliceJid = await server.createAccount("alice", "pw");
      const pyJid = await server.createAccount("py", "pw");
      peer = new JsonLinePeer("/usr/bin/python3", [
        "tests/interop/omemo_peer.py",
        "--jid",
        `${pyJid}/oldmemo`,
        "--password",
        "pw",
        "--host",
        server.host,
        "--port",
        String(server.c2sPort),
        "--ca",
        server.certificatePath,
      ]);
      const ready = await peer.next((e) => e.event === "ready" || e.event === "error", 30_000);
      assert.equal(ready.event, "ready", JSON.stringify(ready));
      const pyDevice = Number(ready.device_id);
      alice = await createEndpoint({
        jid: `${aliceJid}/bot`,
        password: "pw",
        server: { host: server.host, port: server.c2sPort },
        caPem: server.certificatePem,
        storeDir: `${tmp}/alice`,
        logger: quiet,
      });
      const a = alice;
      const p = peer;

      await t.step("this project encrypts, python3-oldmemo decrypts", async () => {
        await a.sendChat(pyJid, "hello from Deno ✓");
        const got = await p.next((e) => e.event === "message");
        assert.equal(got.body, "hello from Deno ✓");
        assert.equal(got.sender_device, a.deviceId);
      });

      await t.step("python3-oldmemo encrypts, this project decrypts", async () => {
        const got = waitFor<ChatMessage>((h) => a.onChat(h), (m) => m.body === "hello from oldmemo");
        await p.send({ cmd: "send", to: aliceJid, body: "hello from oldmemo" });
        const m = await got;
        assert.equal(m.senderDeviceId, pyDevice);
        assert.equal(m.identityFingerprint.replaceAll(" ", ""), String(ready.fingerprint).toLowerCase());
      });

      await t.step("key transport from this project is decrypted by python3-oldmemo", async () => {
        const sent = await a.sendKeyTransport(pyJid);
        const keyB64 = toBase64(sent.key);
        const got = await p.next((e) => e.event === "key_transport" && e.key === keyB64);
        assert.equal(got.iv, toBase64(sent.iv));
      });

      await t.step("key transport from python3-oldmemo is decrypted by this project", async () => {
        const expect = p.next((e) => e.event === "key_transport_sent");
        const pending: KeyTransport[] = [];
        const off = a.onKeyTransport((k) => pending.push(k));
        await p.send({ cmd: "key_transport", to: aliceJid });
        const sent = await expect;
        const deadline = Date.now() + 10_000;
        let match: KeyTransport | undefined;
        while (!match && Date.now() < deadline) {
          match = pending.find((k) => toBase64(k.key) === sent.key);
          if (!match) await new Promise((r) => setTimeout(r, 20));
        }
        off();
        assert.ok(match, "key transport received");
        assert.deepEqual(match.iv, fromBase64(String(sent.iv)));
        assert.equal(match.senderDeviceId, pyDevice);
      });

      await t.step("single-device elements (the DTLS-verification shape) both ways", async () => {
        const fingerprint = "5F:0A:9C:" + "AB:".repeat(28) + "01";
        const mine = await a.omemo.encrypt([pyJid], fingerprint, {
          devices: [{ jid: pyJid, deviceId: pyDevice }],
        });
        assert.equal(mine.devices.length, 1);
        await p.send({ cmd: "decrypt_element", from: aliceJid, xml: mine.element.toString() });
        const decrypted = await p.next((e) => e.event === "decrypted" || e.event === "error");
        assert.equal(decrypted.plaintext, fingerprint, JSON.stringify(decrypted));

        await p.send({ cmd: "encrypt_element", to: aliceJid, device: a.deviceId, plaintext: fingerprint });
        const theirs = await p.next((e) => e.event === "encrypted_element");
        const result = await a.omemo.decrypt(aliceJid.replace("alice", "py"), parseXml(String(theirs.xml)));
        assert.equal(result.plaintext, fingerprint);
        assert.equal(result.senderDeviceId, pyDevice);
      });
    } finally {
      await peer?.close();
      await alice?.close().catch(() => {});
      await server.stop();
      await Deno.remove(tmp, { recursive: true });
    }
  },
});
