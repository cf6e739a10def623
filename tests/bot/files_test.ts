import assert from "node:assert/strict";
import { endpointOn } from "./_support.ts";
import { assertDelivered, entries, filesLog, nextIncoming, randomFile, transfer } from "./_files_support.ts";
import type { Endpoint } from "../../bot/endpoint.ts";
import { type FileTransferOptions, type FileTransfers, setupFileTransfer } from "../../bot/files.ts";
import { startProsody } from "../../scripts/prosody.ts";
import { buildJingleIq, NS_JINGLE } from "../../jingle/mod.ts";
import { type Element, StanzaError, xml } from "../../xmpp/mod.ts";
import { loadCapture } from "../jingle/_helpers.ts";

const KIB = 1024;
const MIB = 1024 * KIB;

/** Rewrites outgoing Jingle IQs of `action` sent by `e` (to watch or tamper with the signalling). */
function watch(e: Endpoint, action: string, fn: (jingle: Element) => void): () => void {
  const conn = e.conn;
  const orig = conn.iq.bind(conn);
  conn.iq = (stanza, o) => {
    const j = stanza.getChild("jingle", NS_JINGLE);
    if (j?.attrs.action === action) fn(j);
    return orig(stanza, o);
  };
  return () => void (conn.iq = orig);
}

/** An `<iq type='set'>` to `to` carrying `payload`. */
function xmlIq(to: string, payload: Element): Element {
  return xml("iq", { type: "set", to, id: crypto.randomUUID() }, payload);
}

async function expectIqError(p: Promise<unknown>, condition: string, jingleCondition?: string) {
  await assert.rejects(p, (e: unknown) => {
    assert.ok(e instanceof StanzaError, String(e));
    assert.equal(e.condition, condition);
    if (jingleCondition) assert.equal(e.application?.name, jingleCondition);
    return true;
  });
}

Deno.test({
  name:
    "file transfer: JET-OMEMO over IBB, SOCKS5 direct and proxy65, replace, policy and bad input (real Prosody)",
  sanitizeOps: false,
  sanitizeResources: false,
  async fn(t) {
    const server = await startProsody();
    const tmp = await Deno.makeTempDir({ prefix: "files-test-" });
    const open: Endpoint[] = [];
    const services: FileTransfers[] = [];
    const connect = async (user: string) => {
      const e = await endpointOn(server, user, `${tmp}/stores`);
      open.push(e);
      return e;
    };
    const files = async (e: Endpoint, name: string, o: FileTransferOptions = {}) => {
      const downloadDir = `${tmp}/down-${name}`;
      await Deno.mkdir(downloadDir, { recursive: true });
      const f = await setupFileTransfer(e, { logger: filesLog, downloadDir, ...o });
      services.push(f);
      return { files: f, downloadDir };
    };
    try {
      const src = `${tmp}/src`;
      await Deno.mkdir(src);
      const small = `${src}/small.bin`;
      const smallHash = await randomFile(small, 1 * KIB);
      const medium = `${src}/medium.bin`;
      const mediumHash = await randomFile(medium, 10 * MIB);

      const alice = await connect("alice");
      const bob = await connect("bob");
      const A = await files(alice, "alice");
      // Bob also accepts plain offers; his accept hook can hold an offer (for the wrong-state checks).
      let hold: Promise<void> | undefined;
      const B = await files(bob, "bob", {
        encryption: "prefer",
        accept: async () => {
          if (hold) await hold;
          return true;
        },
      });

      await t.step("disco advertises JET-OMEMO, the FT and transport namespaces", () => {
        for (
          const f of [
            "urn:xmpp:jingle:1",
            "urn:xmpp:jingle:apps:file-transfer:5",
            "urn:xmpp:jingle:jet:0",
            "urn:xmpp:jingle:jet-omemo:0",
            "urn:xmpp:jingle:transports:s5b:1",
            "urn:xmpp:jingle:transports:ibb:1",
            "http://jabber.org/protocol/ibb",
            "http://jabber.org/protocol/bytestreams",
          ]
        ) {
          assert.ok(alice.disco.features().includes(f), f);
        }
      });

      await t.step(
        "IBB, encrypted, 1 KiB and 10 MiB both directions; security inside <content>",
        async () => {
          let initiate: Element | undefined;
          const undo = watch(alice, "session-initiate", (j) => initiate = j);
          const one = await transfer(A.files, B.files, bob, small, { transport: "ibb" });
          undo();
          await assertDelivered(one, smallHash, B.downloadDir, 1 * KIB);
          assert.equal(one.sent.transport.kind, "ibb");
          assert.equal(one.sent.encrypted, true);
          assert.equal(one.received.encrypted, true);
          assert.equal(one.received.omemo?.deviceIds[0], alice.deviceId);
          assert.ok(one.sent.omemo?.deviceIds.includes(bob.deviceId));
          // Dino's shape: <security> in <content>, <size> the plaintext size, no plaintext hash anywhere.
          const content = initiate!.getChild("content")!;
          const security = content.getChild("security", "urn:xmpp:jingle:jet:0")!;
          assert.equal(security.attrs.cipher, "urn:xmpp:ciphers:aes-128-gcm-nopadding");
          assert.equal(security.attrs.type, "eu.siacs.conversations.axolotl");
          const file = content.getChild("description")!.getChild("file")!;
          assert.equal(file.getChildText("size"), String(1 * KIB));
          assert.equal(file.getChildren("hash").length, 0, "no plaintext hash in an encrypted offer");

          for (const [from, to, toE, dir] of [[A, B, bob, B], [B, A, alice, A]] as const) {
            const both = await transfer(from.files, to.files, toE, medium, { transport: "ibb" });
            await assertDelivered(both, mediumHash, dir.downloadDir, 10 * MIB);
            assert.equal(both.received.transport.blockSize, 8192);
          }
          const back = await transfer(B.files, A.files, alice, small, { transport: "ibb" });
          await assertDelivered(back, smallHash, A.downloadDir, 1 * KIB);
        },
      );

      await t.step("SOCKS5 direct, encrypted, 1 KiB and 10 MiB both directions", async () => {
        for (const [path, hash, size] of [[small, smallHash, KIB], [medium, mediumHash, 10 * MIB]] as const) {
          const ab = await transfer(A.files, B.files, bob, path, { transport: "s5b" });
          await assertDelivered(ab, hash, B.downloadDir, size);
          assert.equal(ab.sent.transport.kind, "s5b");
          assert.equal(ab.sent.transport.proxy, false);
          assert.equal(ab.received.transport.proxy, false);
          const ba = await transfer(B.files, A.files, alice, path, { transport: "s5b" });
          await assertDelivered(ba, hash, A.downloadDir, size);
          assert.equal(ba.received.transport.kind, "s5b");
        }
      });

      await t.step("SOCKS5 through Prosody's proxy65 only, both directions", async () => {
        const carol = await connect("carol");
        const dave = await connect("dave");
        const C = await files(carol, "carol", { s5b: { direct: false } });
        const D = await files(dave, "dave", { s5b: { direct: false } });
        let offered: Element | undefined;
        const undo = watch(carol, "session-initiate", (j) => offered = j);
        for (const [path, hash, size] of [[small, smallHash, KIB], [medium, mediumHash, 10 * MIB]] as const) {
          const cd = await transfer(C.files, D.files, dave, path, { transport: "s5b" });
          await assertDelivered(cd, hash, D.downloadDir, size);
          assert.equal(cd.sent.transport.proxy, true);
          assert.equal(cd.received.transport.proxy, true);
          const dc = await transfer(D.files, C.files, carol, path, { transport: "s5b" });
          await assertDelivered(dc, hash, C.downloadDir, size);
          assert.equal(dc.sent.transport.proxy, true);
        }
        undo();
        const candidates = offered!.getChild("content")!.getChild("transport")!.getChildren("candidate");
        assert.deepEqual(candidates.map((c) => [c.attrs.type, c.attrs.jid]), [["proxy", server.proxyJid]]);
      });

      await t.step(
        "SOCKS5 failing both ways (closed port) is replaced by IBB; one way only: that pair",
        async () => {
          const closed = Deno.listen({ hostname: "127.0.0.1", port: 0 });
          const port = (closed.addr as Deno.NetAddr).port;
          closed.close();
          const broken: FileTransferOptions["s5b"] = {
            proxy: false,
            rewriteCandidates: (cs) => cs.map((c) => ({ ...c, port })),
          };
          const erin = await connect("erin");
          const frank = await connect("frank");
          const E = await files(erin, "erin", { s5b: broken });
          const F = await files(frank, "frank", { s5b: broken });
          let replaced = 0;
          const undo = watch(erin, "transport-replace", () => replaced++);
          const both = await transfer(E.files, F.files, frank, medium, { transport: "s5b" });
          undo();
          await assertDelivered(both, mediumHash, F.downloadDir, 10 * MIB);
          assert.equal(replaced, 1);
          assert.equal(both.sent.transport.kind, "ibb");
          assert.equal(both.sent.transport.replaced, true);
          assert.equal(both.received.transport.replaced, true);
          assert.equal(both.received.transport.kind, "ibb");

          // Asymmetric: only Bob's candidates work. Whichever side initiates, the one pair that connected is
          // used (candidate-used one way, candidate-error the other), no replace.
          for (const [from, to, toE, dir] of [[E, B, bob, B], [B, E, erin, E]] as const) {
            const errors: string[] = [];
            const offWatch = [erin, bob].map((e) =>
              watch(e, "transport-info", (j) => {
                const tr = j.getChild("content")?.getChild("transport");
                if (tr?.getChild("candidate-error")) errors.push(e.conn.bareJid);
              })
            );
            const one = await transfer(from.files, to.files, toE, small, { transport: "s5b" });
            for (const off of offWatch) off();
            await assertDelivered(one, smallHash, dir.downloadDir, KIB);
            assert.equal(one.sent.transport.kind, "s5b");
            assert.equal(one.sent.transport.replaced, false);
            assert.deepEqual(errors, [bob.conn.bareJid], "Bob cannot reach Erin's candidates");
          }
        },
      );

      await t.step(
        "plain transfer: accepted by a 'prefer' receiver (hash in the offer), refused by 'require'",
        async () => {
          let initiate: Element | undefined;
          const undo = watch(alice, "session-initiate", (j) => initiate = j);
          const plain = await transfer(A.files, B.files, bob, small, { encrypted: false, transport: "ibb" });
          undo();
          await assertDelivered(plain, smallHash, B.downloadDir, KIB);
          assert.equal(plain.received.encrypted, false);
          const hash = initiate!.getChild("content")!.getChild("description")!.getChild("file")!.getChild(
            "hash",
          )!;
          assert.equal(hash.attrs.algo, "sha-256");
          assert.equal(initiate!.getChild("content")!.getChild("security"), undefined);

          // Alice requires encryption (the default): Bob's plain offer is declined, nothing stored.
          const before = await entries(A.downloadDir);
          const refused = await transfer(B.files, A.files, alice, small, {
            encrypted: false,
            transport: "ibb",
          });
          assert.equal(refused.received.ok, false);
          assert.equal(refused.received.ended.reason, "decline");
          assert.match(refused.received.ended.text ?? "", /unencrypted/);
          assert.equal(refused.sent.ended.reason, "decline");
          assert.equal(refused.sent.ended.by, "remote");
          assert.deepEqual(await entries(A.downloadDir), before);
        },
      );

      await t.step(
        "F4: a flipped ciphertext bit fails the GCM tag: security-error, no file left",
        async () => {
          for (const transport of ["ibb", "s5b"] as const) {
            const before = await entries(B.downloadDir);
            const both = await transfer(A.files, B.files, bob, medium, {
              transport,
              testHooks: { flipByteAt: 5 * MIB },
            });
            assert.equal(both.received.ok, false);
            assert.equal(both.received.ended.reason, "security-error");
            assert.match(both.received.ended.text ?? "", /GCM/);
            assert.equal(both.sent.ended.reason, "security-error");
            assert.equal(both.sent.ended.by, "remote");
            assert.equal(both.received.path, undefined);
            assert.deepEqual(await entries(B.downloadDir), before, `${transport}: no partial or temp file`);
          }
        },
      );

      await t.step("F3: a truncated stream fails with failed-transport, no file left", async () => {
        for (const transport of ["ibb", "s5b"] as const) {
          const before = await entries(B.downloadDir);
          const both = await transfer(A.files, B.files, bob, medium, {
            transport,
            testHooks: { stopAfter: 3 * MIB + 5 },
          });
          assert.equal(both.received.ok, false);
          assert.equal(both.received.ended.reason, "failed-transport", JSON.stringify(both.received.ended));
          assert.match(both.received.ended.text ?? "", /ended after/);
          assert.equal(both.sent.ok, false);
          assert.deepEqual(await entries(B.downloadDir), before, `${transport}: no partial or temp file`);
        }
        // Plain too: the size check catches what no tag would.
        const before = await entries(B.downloadDir);
        const plain = await transfer(A.files, B.files, bob, medium, {
          transport: "ibb",
          encrypted: false,
          testHooks: { stopAfter: MIB },
        });
        assert.equal(plain.received.ended.reason, "failed-transport");
        assert.deepEqual(await entries(B.downloadDir), before);
      });

      await t.step(
        "F5: a plain file whose sha-256 differs from the offer's is rejected (media-error)",
        async () => {
          const before = await entries(B.downloadDir);
          const both = await transfer(A.files, B.files, bob, small, {
            transport: "ibb",
            encrypted: false,
            testHooks: { offerSha256: btoa("x".repeat(32)) },
          });
          assert.equal(both.received.ended.reason, "media-error");
          assert.match(both.received.ended.text ?? "", /sha-256/);
          assert.equal(both.sent.ended.reason, "media-error");
          assert.deepEqual(await entries(B.downloadDir), before);
        },
      );

      await t.step("F1: a name like ../../x is stored inside the download dir", async () => {
        for (const name of ["../../x", "/etc/passwd", "..\\..\\y", ".hidden"]) {
          const both = await transfer(A.files, B.files, bob, small, { transport: "ibb", name });
          assert.ok(both.received.ok, JSON.stringify(both.received.ended));
          const stored = both.received.path!;
          const dir = await Deno.realPath(B.downloadDir);
          assert.ok((await Deno.realPath(stored)).startsWith(`${dir}/`), `${name} → ${stored}`);
          assert.ok(!stored.slice(dir.length + 1).includes("/"), `${name} → ${stored}`);
          await Deno.remove(stored);
        }
        await assert.rejects(Deno.stat(`${tmp}/x`));
      });

      await t.step(
        "F6: a key transport not for the receiver's device is refused with security-error",
        async () => {
          const carol = open.find((e) => e.conn.bareJid.startsWith("carol@"))!;
          const before = await entries(B.downloadDir);
          const both = await transfer(A.files, B.files, bob, small, {
            transport: "ibb",
            testHooks: { keyDevices: [{ jid: carol.conn.bareJid, deviceId: carol.deviceId }] },
          });
          assert.equal(both.received.ended.reason, "security-error");
          assert.match(both.received.ended.text ?? "", /NotForThisDevice/);
          assert.equal(both.sent.ended.reason, "security-error");
          assert.deepEqual(await entries(B.downloadDir), before);
        },
      );

      await t.step("two transfers at once (IBB and SOCKS5) both complete, then one back", async () => {
        const runs = await Promise.all([
          transfer(A.files, B.files, bob, medium, { transport: "ibb" }),
          transfer(A.files, B.files, bob, medium, { transport: "s5b", name: "second.bin" }),
        ]);
        const back = await transfer(B.files, A.files, alice, small, { transport: "s5b" });
        for (const both of runs) await assertDelivered(both, mediumHash, B.downloadDir, 10 * MIB);
        await assertDelivered(back, smallHash, A.downloadDir, KIB);
        assert.notEqual(runs[0].sent.sid, runs[1].sent.sid);
      });

      await t.step("F2: an offer bigger than the limit is declined before any byte", async () => {
        const gina = await connect("gina");
        const G = await files(gina, "gina", { maxFileSize: 1 * MIB, ibb: { maxBlockSize: 4096 } });
        const both = await transfer(A.files, G.files, gina, medium, { transport: "ibb" });
        assert.equal(both.received.ended.reason, "decline");
        assert.match(both.received.ended.text ?? "", /too large/);
        assert.equal(both.sent.ended.reason, "decline");
        assert.equal(both.sent.bytes, 0);
        assert.deepEqual(await entries(G.downloadDir), []);

        // The same receiver takes a small file, negotiating IBB's block size down to its 4096.
        const fits = await transfer(A.files, G.files, gina, small, { transport: "ibb" });
        await assertDelivered(fits, smallHash, G.downloadDir, KIB);
        assert.equal(fits.sent.transport.blockSize, 4096);
        assert.equal(fits.received.transport.blockSize, 4096);
      });

      await t.step(
        "wrong sender, unknown sid, wrong state → IQ errors; the transfer still completes",
        async () => {
          let release!: () => void;
          hold = new Promise((r) => release = r);
          const incoming = nextIncoming(B.files);
          const sending = await A.files.send(bob.conn.jid, small, { transport: "ibb" });
          const pending = await incoming;
          assert.equal(pending.state, "pending");
          const carol = open.find((e) => e.conn.bareJid.startsWith("carol@"))!;
          const iq = (from: Endpoint, action: string, sid: string) =>
            from.conn.iq(
              buildJingleIq(
                { action, sid, contents: [], groups: [], reason: { condition: "cancel" } } as never,
                {
                  to: bob.conn.jid,
                  id: crypto.randomUUID(),
                },
              ) as unknown as Element,
            );
          await expectIqError(
            iq(carol, "session-terminate", pending.sid),
            "item-not-found",
            "unknown-session",
          );
          await expectIqError(
            iq(alice, "session-terminate", "no-such-sid"),
            "item-not-found",
            "unknown-session",
          );
          await expectIqError(iq(alice, "session-accept", pending.sid), "unexpected-request", "out-of-order");
          await expectIqError(
            iq(alice, "transport-accept", pending.sid),
            "unexpected-request",
            "out-of-order",
          );
          await expectIqError(iq(alice, "content-add", pending.sid), "feature-not-implemented");
          assert.equal(pending.state, "pending", "untouched");
          hold = undefined;
          release();
          const [sent, received] = await Promise.all([sending.done, pending.done]);
          assert.ok(sent.ok && received.ok, JSON.stringify([sent.ended, received.ended]));
          await Deno.remove(received.path!);
        },
      );

      await t.step("cancel by the sender ends both sides with cancel", async () => {
        const incoming = nextIncoming(B.files);
        const sending = await A.files.send(bob.conn.jid, medium, {
          transport: "ibb",
          onProgress: (bytes) => {
            if (bytes > MIB) void sending.cancel("test");
          },
        });
        const r = await incoming;
        const [sent, received] = await Promise.all([sending.done, r.done]);
        assert.equal(sent.ended.reason, "cancel");
        assert.equal(sent.ended.by, "local");
        assert.equal(received.ended.reason, "cancel");
        assert.equal(received.ended.by, "remote");
        assert.equal(received.path, undefined);
      });

      await t.step(
        "a Dino 0.4.2 offer (capture) is parsed; its key transport is not for us → security-error",
        async () => {
          // Replayed from another account: <security> in <content> without name, IPv6 and link-local candidates.
          const dino = await connect("dino");
          const terminated = new Promise<Element>((resolve) => {
            dino.conn.handleIq("set", "jingle", NS_JINGLE, (j) => {
              if (j.attrs.action === "session-terminate") resolve(j);
            });
          });
          const iq = loadCapture("filetransfer-jet-omemo-s5b-alice-to-bob.alice.xml")[0]!.stanza;
          const jingle = iq.getChild("jingle", NS_JINGLE)!;
          jingle.attrs.initiator = dino.conn.jid;
          const incoming = nextIncoming(B.files);
          await dino.conn.iq(xmlIq(bob.conn.jid, jingle as unknown as Element));
          const offer = await incoming;
          assert.equal(offer.file.name, "testfile.bin");
          assert.equal(offer.file.size, 300000);
          assert.equal(offer.encrypted, true);
          const record = await offer.done;
          assert.equal(record.ended.reason, "security-error");
          assert.match(record.ended.text ?? "", /NotForThisDevice/);
          const reason = (await terminated).getChild("reason")!;
          assert.ok(reason.getChild("security-error"));
        },
      );

      await t.step("refusals before any offer: bare JID, peer without JET", async () => {
        await assert.rejects(A.files.send(bob.conn.bareJid, small), /full JID/);
        // Hank runs no file transfer: no JET / JFT features.
        const hank = await connect("hank");
        await assert.rejects(A.files.send(hank.conn.jid, small), /does not support Jingle file transfer/);
      });
    } finally {
      for (const f of services) await f.stop().catch(() => {});
      for (const e of open) await e.close().catch(() => {});
      await server.stop();
      await Deno.remove(tmp, { recursive: true }).catch(() => {});
    }
  },
});
