/**
 * File transfer interop details on a real Prosody (docs/protocol.md §5.2–5.3), with a hand-driven
 * Conversations-like sender: an OMEMO endpoint without the file-transfer service whose Jingle stanzas are
 * written here, and whose bytes go through the real IBB sender and GCM stream.
 *
 * - Conversations' `<checksum>` session-info with sha-1, right and wrong, before and after the last byte;
 * - the legacy `<file><encrypted>` offer (`<size>` = ciphertext + tag);
 * - `<security>` directly under `<jingle>` (newer Conversations), and the shape we send;
 * - send to a bare JID.
 */
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { connectionOn, endpointOn } from "./_support.ts";
import { entries, filesLog, nextIncoming, randomFile, sha256Of } from "./_files_support.ts";
import type { Endpoint } from "../../bot/endpoint.ts";
import { type FileTransfers, setupFileTransfer, type TransferRecord } from "../../bot/files.ts";
import { startProsody } from "../../scripts/prosody.ts";
import { NS_JINGLE } from "../../jingle/mod.ts";
import { type Element, xml, type XmppConnection } from "../../xmpp/mod.ts";
import { ibbSend } from "../../bytestreams/ibb.ts";
import { createGcmEncryptStream } from "../../transfer/gcm.ts";

const KIB = 1024;
const NS_JFT = "urn:xmpp:jingle:apps:file-transfer:5";
const NS_JET = "urn:xmpp:jingle:jet:0";
const NS_IBB_T = "urn:xmpp:jingle:transports:ibb:1";
const NS_HASHES = "urn:xmpp:hashes:2";
const CIPHER = "urn:xmpp:ciphers:aes-128-gcm-nopadding";
const AXOLOTL = "eu.siacs.conversations.axolotl";

const sha1B64 = (bytes: Uint8Array) => createHash("sha1").update(bytes).digest("base64");

/** How the crafted sender encrypts (if at all) and where it puts the key transport. */
type Mode = "plain" | "legacy" | "jet-under-jingle";

interface CraftedSend {
  mode: Mode;
  bytes: Uint8Array;
  /** Hashes in the offer's `<file>`. */
  offerHashes?: { algo: string; value: string }[];
  /** A `<checksum>` session-info, sent before the first byte or after the IBB `<close/>`. */
  checksum?: { algo: string; value: string; when: "before-bytes" | "after-bytes" };
}

/**
 * A Conversations-like sender on an OMEMO endpoint: offers `bytes` to `to` over IBB the way `mode` says,
 * sends them, optionally a checksum, and returns the reason of the receiver's session-terminate.
 */
async function craftedSend(sender: Endpoint, to: string, o: CraftedSend): Promise<Element> {
  const conn = sender.conn;
  const sid = crypto.randomUUID();
  const ibbSid = crypto.randomUUID();
  // Conversations names the content randomly (Dino: a-file-offer).
  const contentName = `c${crypto.randomUUID().slice(0, 8)}`;
  let accepted!: () => void;
  const acceptedP = new Promise<void>((r) => accepted = r);
  let terminated!: (e: Element) => void;
  const terminatedP = new Promise<Element>((r) => terminated = r);
  const off = conn.handleIq("set", "jingle", NS_JINGLE, (j) => {
    if (j.attrs.sid !== sid) return null;
    if (j.attrs.action === "session-accept") accepted();
    if (j.attrs.action === "session-terminate") terminated(j.getChild("reason")!);
    return null;
  });
  try {
    let key: Uint8Array | undefined;
    let iv: Uint8Array | undefined;
    let envelope: Element | undefined;
    if (o.mode !== "plain") {
      const enc = await sender.omemo.encrypt([to.split("/")[0]!], null);
      key = enc.key;
      iv = enc.iv;
      envelope = enc.element as unknown as Element;
    }
    // Legacy: <size> counts the 16-byte tag; JET: the plaintext size.
    const size = o.bytes.length + (o.mode === "legacy" ? 16 : 0);
    const file = xml(
      "file",
      {},
      xml("name", {}, "from-conversations.bin"),
      xml("size", {}, String(size)),
      ...(o.offerHashes ?? []).map((h) => xml("hash", { xmlns: NS_HASHES, algo: h.algo }, h.value)),
      ...(o.mode === "legacy" ? [envelope!] : []),
    );
    const jingle = xml(
      "jingle",
      { xmlns: NS_JINGLE, action: "session-initiate", sid, initiator: conn.jid },
      xml(
        "content",
        { creator: "initiator", name: contentName, senders: "initiator" },
        xml("description", { xmlns: NS_JFT }, file),
        xml("transport", { xmlns: NS_IBB_T, sid: ibbSid, "block-size": "8192" }),
      ),
      ...(o.mode === "jet-under-jingle"
        ? [xml("security", { xmlns: NS_JET, name: contentName, cipher: CIPHER, type: AXOLOTL }, envelope!)]
        : []),
    );
    const checksum = () =>
      conn.iq(xml(
        "iq",
        { type: "set", to, id: crypto.randomUUID() },
        xml(
          "jingle",
          { xmlns: NS_JINGLE, action: "session-info", sid, initiator: conn.jid },
          xml(
            "checksum",
            { xmlns: NS_JFT, creator: "initiator", name: contentName },
            xml("file", {}, xml("hash", { xmlns: NS_HASHES, algo: o.checksum!.algo }, o.checksum!.value)),
          ),
        ),
      ));
    await conn.iq(xml("iq", { type: "set", to, id: crypto.randomUUID() }, jingle));
    await acceptedP;
    if (o.checksum?.when === "before-bytes") await checksum();
    let source = new ReadableStream<Uint8Array>({
      start(ctrl) {
        ctrl.enqueue(o.bytes);
        ctrl.close();
      },
    });
    if (key) source = source.pipeThrough(createGcmEncryptStream(key, iv!));
    await ibbSend(conn, { to, sid: ibbSid, blockSize: 8192, source });
    if (o.checksum?.when === "after-bytes") await checksum();
    return await terminatedP;
  } finally {
    off();
  }
}

/** Both ends of one crafted transfer: the receiver's record and the terminate reason the sender got. */
async function run(
  sender: Endpoint,
  receiver: { e: Endpoint; files: FileTransfers },
  o: CraftedSend,
): Promise<{ record: TransferRecord; reason: string; text?: string }> {
  const incoming = nextIncoming(receiver.files);
  const reasonEl = await craftedSend(sender, receiver.e.conn.jid, o);
  const record = await (await incoming).done;
  const condition = reasonEl.getChildElements().find((c) => c.name !== "text")!.name;
  return { record, reason: condition, text: reasonEl.getChildText("text") ?? undefined };
}

Deno.test({
  name:
    "file transfer interop: sha-1 checksums, legacy <file><encrypted>, <security> under <jingle>, bare JID",
  sanitizeOps: false,
  sanitizeResources: false,
  async fn(t) {
    const server = await startProsody();
    const tmp = await Deno.makeTempDir({ prefix: "files-interop-" });
    const open: Endpoint[] = [];
    const conns: XmppConnection[] = [];
    const services: FileTransfers[] = [];
    try {
      const connect = async (user: string) => {
        const e = await endpointOn(server, user, `${tmp}/stores`);
        open.push(e);
        return e;
      };
      const conv = await connect("conv");
      const bob = await connect("bob");
      const downloadDir = `${tmp}/down-bob`;
      await Deno.mkdir(downloadDir);
      // Bob takes plain offers too, and holds encrypted files for a late checksum (the default does not).
      const B = await setupFileTransfer(bob, {
        logger: filesLog,
        downloadDir,
        encryption: "prefer",
        checksum: { waitMs: 5000, waitEncryptedMs: 5000 },
      });
      services.push(B);
      const receiver = { e: bob, files: B };
      const bytes = new Uint8Array(100 * KIB + 7);
      for (let o = 0; o < bytes.length; o += 65536) crypto.getRandomValues(bytes.subarray(o, o + 65536));
      const rightSha1 = sha1B64(bytes);
      const wrongSha1 = sha1B64(new TextEncoder().encode("something else"));
      const bytesSha256 = createHash("sha256").update(bytes).digest("hex");

      const assertStored = async (record: TransferRecord) => {
        assert.ok(record.ok, JSON.stringify(record.ended));
        assert.equal(record.bytes, bytes.length);
        assert.equal(record.file.size, bytes.length, "the plaintext size");
        assert.equal(await sha256Of(record.path!), bytesSha256);
        await Deno.remove(record.path!);
      };

      await t.step(
        "plain, sha-1 checksum after the last byte: held until it comes, then verified",
        async () => {
          const r = await run(conv, receiver, {
            mode: "plain",
            bytes,
            // An algorithm we do not compute is ignored: it does not stop the wait for the checksum.
            offerHashes: [{ algo: "blake2b-256", value: btoa("y".repeat(32)) }],
            checksum: { algo: "sha-1", value: rightSha1, when: "after-bytes" },
          });
          assert.equal(r.reason, "success");
          assert.deepEqual(r.record.hashesVerified, ["sha-1"]);
          await assertStored(r.record);
        },
      );

      await t.step("plain, wrong sha-1 checksum after the bytes: media-error, nothing stored", async () => {
        const before = await entries(downloadDir);
        const r = await run(conv, receiver, {
          mode: "plain",
          bytes,
          checksum: { algo: "sha-1", value: wrongSha1, when: "after-bytes" },
        });
        assert.equal(r.reason, "media-error");
        assert.match(r.text ?? "", /sha-1/);
        assert.equal(r.record.ok, false);
        assert.equal(r.record.ended.reason, "media-error");
        assert.equal(r.record.path, undefined);
        assert.deepEqual(await entries(downloadDir), before, "no file, no temp file");
      });

      await t.step("plain, sha-1 in the offer: verified", async () => {
        const r = await run(conv, receiver, {
          mode: "plain",
          bytes,
          offerHashes: [{ algo: "sha-1", value: rightSha1 }],
        });
        assert.deepEqual(r.record.hashesVerified, ["sha-1"]);
        await assertStored(r.record);
        const bad = await run(conv, receiver, {
          mode: "plain",
          bytes,
          offerHashes: [{ algo: "sha-1", value: wrongSha1 }],
        });
        assert.equal(bad.reason, "media-error");
      });

      await t.step(
        "legacy <file><encrypted> (size = plaintext + 16) with a late sha-1 checksum: decrypted, verified",
        async () => {
          const r = await run(conv, receiver, {
            mode: "legacy",
            bytes,
            checksum: { algo: "sha-1", value: rightSha1, when: "after-bytes" },
          });
          assert.equal(r.reason, "success");
          assert.equal(r.record.encrypted, true);
          assert.equal(r.record.legacyEncryption, true);
          assert.equal(r.record.omemo?.deviceIds[0], conv.deviceId);
          assert.deepEqual(r.record.hashesVerified, ["sha-1"]);
          await assertStored(r.record);

          const before = await entries(downloadDir);
          const bad = await run(conv, receiver, {
            mode: "legacy",
            bytes,
            checksum: { algo: "sha-1", value: wrongSha1, when: "after-bytes" },
          });
          assert.equal(bad.reason, "media-error");
          assert.deepEqual(await entries(downloadDir), before);
        },
      );

      await t.step(
        "<security> only under <jingle> (newer Conversations), checksum before the bytes: verified",
        async () => {
          const r = await run(conv, receiver, {
            mode: "jet-under-jingle",
            bytes,
            checksum: { algo: "sha-1", value: rightSha1, when: "before-bytes" },
          });
          assert.equal(r.reason, "success");
          assert.equal(r.record.encrypted, true);
          assert.equal(r.record.legacyEncryption, undefined);
          assert.deepEqual(r.record.hashesVerified, ["sha-1"]);
          await assertStored(r.record);
        },
      );

      // From here on Bob runs the defaults (no wait for a checksum on encrypted transfers).
      await B.stop();
      services.splice(services.indexOf(B), 1);
      const B2 = await setupFileTransfer(bob, { logger: filesLog, downloadDir });
      services.push(B2);
      const alice = await connect("alice");
      const A = await setupFileTransfer(alice, { logger: filesLog, downloadDir: `${tmp}` });
      services.push(A);
      const small = `${tmp}/small.bin`;
      const smallHash = await randomFile(small, KIB);

      await t.step(
        "we send <security> inside <content> and the same copy under <jingle>; the receiver takes it",
        async () => {
          let initiate: Element | undefined;
          const orig = alice.conn.iq.bind(alice.conn);
          alice.conn.iq = (stanza, o) => {
            const j = stanza.getChild("jingle", NS_JINGLE);
            if (j?.attrs.action === "session-initiate") initiate = j;
            return orig(stanza, o);
          };
          const incoming = nextIncoming(B2);
          const sent = await A.send(bob.conn.jid, small, { transport: "ibb" });
          const [s, r] = await Promise.all([sent.done, (await incoming).done]);
          alice.conn.iq = orig;
          assert.ok(s.ok && r.ok, JSON.stringify([s.ended, r.ended]));
          assert.equal(await sha256Of(r.path!), smallHash);
          await Deno.remove(r.path!);
          const content = initiate!.getChild("content")!;
          const inner = content.getChild("security", NS_JET)!;
          const top = initiate!.getChild("security", NS_JET)!;
          assert.ok(inner && top, "both places");
          for (const sec of [inner, top]) {
            assert.equal(sec.attrs.name, content.attrs.name);
            assert.equal(sec.attrs.cipher, CIPHER);
            assert.equal(sec.attrs.type, AXOLOTL);
          }
          assert.equal(top.getChild("encrypted")!.toString(), inner.getChild("encrypted")!.toString());
          // Dino reads only the <content> children of a session-initiate: exactly one <content>.
          assert.equal(initiate!.getChildren("content").length, 1);
        },
      );

      await t.step("send to a bare JID: the available resource with file transfer, by priority", async () => {
        // Not subscribed to Bob's presence: the server tells us nothing, so a clear error.
        await assert.rejects(A.send(bob.conn.bareJid, small), /no available resource.*full JID/s);

        // Bob pre-approves, Alice subscribes: Alice now sees Bob's resources (both, before sending).
        const seen = new Set<string>();
        let bothSeen!: () => void;
        const bothSeenP = new Promise<void>((r) => bothSeen = r);
        const offSeen = alice.conn.onPresence((p, from) => {
          if (p.attrs.type !== undefined) return;
          if (from === bob.conn.jid || p.getChildText("priority") === "50") seen.add(from);
          if (seen.size === 2) bothSeen();
        });
        await bob.conn.sendPresence({ type: "subscribed", to: alice.conn.bareJid });
        await alice.conn.sendPresence({ type: "subscribe", to: bob.conn.bareJid });
        // A second resource of Bob's with a higher priority but no file transfer.
        const phone = await connectionOn(server, "bob", "phone");
        conns.push(phone);
        await phone.sendPresence({ priority: 50 });
        await bothSeenP;
        offSeen();
        const incoming = nextIncoming(B2);
        const sent = await A.send(bob.conn.bareJid, small, { transport: "ibb" });
        assert.equal(sent.peer, bob.conn.jid, "the resource that runs file transfer");
        const [s, r] = await Promise.all([sent.done, (await incoming).done]);
        assert.ok(s.ok && r.ok, JSON.stringify([s.ended, r.ended]));
        await Deno.remove(r.path!);

        // Only the phone left: no resource can take it.
        await B2.stop();
        services.splice(services.indexOf(B2), 1);
        await bob.close();
        open.splice(open.indexOf(bob), 1);
        await assert.rejects(A.send(`bob@${server.domain}`, small), /no resource of bob@.*phone/s);
      });
    } finally {
      for (const f of services) await f.stop().catch(() => {});
      for (const c of conns) await c.close().catch(() => {});
      for (const e of open) await e.close().catch(() => {});
      await server.stop();
      await Deno.remove(tmp, { recursive: true }).catch(() => {});
    }
  },
});
