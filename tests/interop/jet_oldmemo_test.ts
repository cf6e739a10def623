/**
 * JET-OMEMO file transfer against an implementation that shares no code with this project:
 * tests/interop/jet_peer.py (python3-slixmpp for XMPP and XEP-0047, python3-oldmemo for the OMEMO key
 * transport, python3-cryptography for AES-128-GCM, its own SOCKS5), behaving like Dino 0.4.2 — content-level
 * `<security>` without `name`, `<size>` = plaintext size, ciphertext ‖ 16-byte tag on the wire, the receiver
 * sends the final session-terminate. On a real Prosody, both directions: IBB, SOCKS5 direct, and SOCKS5 failing
 * both ways then transport-replace to IBB; python's key transport for several devices of the bot's account; a
 * Dino-shaped offer without hash; a `../../` name; a flipped ciphertext bit / tag bit and a truncated stream fail
 * with security-error / failed-transport on the receiving side (either implementation) and leave no file.
 * A second test runs the python peer against itself, as a control: when it passes and the first fails, the bot
 * is at fault.
 */
import assert from "node:assert/strict";
import { createEndpoint, type Endpoint } from "../../bot/endpoint.ts";
import { bare } from "../../xmpp/mod.ts";
import { type FileTransfers, setupFileTransfer, type TransportKind } from "../../bot/files.ts";
import { type ProsodyServer, startProsody } from "../../scripts/prosody.ts";
import { endpointOn, quiet } from "../bot/_support.ts";
import { entries, nextIncoming, randomFile, sha256Of } from "../bot/_files_support.ts";
import { JsonLinePeer, type PeerEvent } from "./_peer.ts";

const KIB = 1024;
const SIZES: Array<[string, number]> = [["1 KiB", KIB], ["3 MiB", 3 * 1024 * KIB + 5]];
const TRANSPORTS: TransportKind[] = ["ibb", "s5b"];
/** Generous: two cores shared by several test runs. */
const TRANSFER_TIMEOUT_MS = 180_000;

function startJetPeer(server: ProsodyServer, jid: string, downloadDir: string): JsonLinePeer {
  return new JsonLinePeer("/usr/bin/python3", [
    "tests/interop/jet_peer.py",
    "--jid",
    jid,
    "--password",
    "pw",
    "--host",
    server.host,
    "--port",
    String(server.c2sPort),
    "--ca",
    server.certificatePath,
    "--download-dir",
    downloadDir,
  ]);
}

/** A loopback TCP port that was free a moment ago and is closed now. */
function freePort(): number {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (listener.addr as Deno.NetAddr).port;
  listener.close();
  return port;
}

const ended = (sid: string) => (e: PeerEvent) =>
  e.sid === sid && (e.event === "file_received" || e.event === "file_sent" || e.event === "file_failed");

Deno.test({
  name:
    "JET-OMEMO file transfer interoperates with an independent python3 peer (slixmpp + oldmemo + cryptography)",
  sanitizeOps: false,
  sanitizeResources: false,
  async fn(t) {
    // Prosody keeps Nagle on by default: every IBB block (an IQ round trip through the server) would wait out
    // Nagle + delayed ACK (~40 ms). Only a speed matter; the stanzas are the same.
    const server = await startProsody({ extraConfig: "network_settings = { nagle = false }\n" });
    const tmp = await Deno.makeTempDir({ prefix: "interop-jet-" });
    let bot: Endpoint | undefined;
    let files: FileTransfers | undefined;
    let peer: JsonLinePeer | undefined;
    try {
      const botDownloads = `${tmp}/bot-downloads`;
      const pyDownloads = `${tmp}/py-downloads`;
      await Deno.mkdir(botDownloads);
      await Deno.mkdir(pyDownloads);
      const pyBare = await server.createAccount("py", "pw");
      const pyJid = `${pyBare}/jet`;
      peer = startJetPeer(server, pyJid, pyDownloads);
      const ready = await peer.next((e) => e.event === "ready" || e.event === "error", 60_000);
      assert.equal(ready.event, "ready", JSON.stringify(ready));
      const pyDevice = Number(ready.device_id);

      bot = await endpointOn(server, "bot", tmp);
      // When set, the bot's direct SOCKS5 candidates point at a port nobody listens on.
      let breakBotS5b = false;
      const closedPort = freePort();
      files = await setupFileTransfer(bot, {
        downloadDir: botDownloads,
        encryption: "require",
        logger: quiet,
        s5b: {
          rewriteCandidates: (cs) =>
            breakBotS5b
              ? cs.map((c) => c.type === "direct" ? { ...c, host: "127.0.0.1", port: closedPort } : c)
              : cs,
        },
      });
      const botJid = bot.conn.jid;
      const botDevice = bot.deviceId;
      const p = peer;
      const f = files;

      const sources: Array<[string, string, string, number]> = [];
      for (const [label, size] of SIZES) {
        const path = `${tmp}/source-${size}.bin`;
        sources.push([label, path, await randomFile(path, size), size]);
      }

      for (const transport of TRANSPORTS) {
        for (const [label, path, sha256, size] of sources) {
          await t.step(
            `${label} bot → python over ${transport}: python decrypts (its AES-GCM) and the hash matches`,
            async () => {
              const transfer = await f.send(pyJid, path, { transport });
              const [record, offer, got] = await Promise.all([
                transfer.done,
                p.next((e) => e.event === "file_incoming" && e.sid === transfer.sid, TRANSFER_TIMEOUT_MS),
                p.next(ended(transfer.sid), TRANSFER_TIMEOUT_MS),
              ]);
              assert.equal(
                offer.security_in,
                "content",
                "<security> in <content>, where Dino and Conversations 2.12 look",
              );
              assert.equal(offer.size, size, "<size> is the plaintext size");
              assert.equal(got.event, "file_received", JSON.stringify(got));
              assert.equal(got.encrypted, true, "JET-OMEMO was used");
              assert.equal(got.sender_device, botDevice, "the key came from the bot's OMEMO device");
              assert.equal(got.transport, transport);
              assert.equal(got.bytes, size);
              assert.equal(got.sha256, sha256);
              assert.equal(
                await sha256Of(String(got.path)),
                sha256,
                "the file python stored is the one sent",
              );
              assert.ok(String(got.path).startsWith(`${pyDownloads}/`));
              assert.ok(record.ok, JSON.stringify(record.ended));
              assert.equal(record.encrypted, true);
              assert.equal(record.transport.kind, transport);
              assert.equal(record.transport.replaced, false);
              assert.equal(record.transport.proxy, false, "a direct connection, not the server's proxy");
              assert.deepEqual(record.omemo?.deviceIds, [pyDevice]);
              assert.equal(record.ended.by, "remote", "the receiver ends the session, as in Dino's flow");
              await Deno.remove(String(got.path));
            },
          );

          await t.step(
            `${label} python → bot over ${transport}: the bot decrypts and the hash matches`,
            async () => {
              const incoming = nextIncoming(f);
              await p.send({ cmd: "send_file", to: botJid, path, transport, encrypted: true });
              const transfer = await incoming;
              assert.deepEqual(
                transfer.file.hashes.map((h) => h.algo),
                ["sha-256"],
                "checked against the hash too",
              );
              const [record, sent] = await Promise.all([
                transfer.done,
                p.next((e) => e.event === "file_sent" || e.event === "file_failed", TRANSFER_TIMEOUT_MS),
              ]);
              assert.equal(sent.event, "file_sent", JSON.stringify(sent));
              assert.equal(sent.sid, transfer.sid);
              assert.equal(sent.terminated_by, "peer", "the bot, as receiver, sent session-terminate");
              assert.equal(sent.wire_bytes, size + 16, "ciphertext followed by the 16-byte tag");
              assert.deepEqual(
                sent.devices,
                [botDevice],
                "key transport for every device of the bot's account",
              );
              assert.ok(record.ok, JSON.stringify(record.ended));
              assert.equal(record.encrypted, true);
              assert.equal(record.transport.kind, transport);
              assert.equal(record.omemo?.deviceIds[0], pyDevice);
              assert.equal(record.bytes, size);
              assert.equal(record.file.sha256, sha256);
              assert.ok(record.path);
              assert.equal(
                await sha256Of(record.path!),
                sha256,
                "the file the bot stored is the one python sent",
              );
              await Deno.remove(record.path!);
            },
          );
        }
      }

      const small = sources[0]![1];
      await t.step("SOCKS5 fails both ways: transport-replace to IBB works in both directions", async () => {
        breakBotS5b = true;
        await p.send({ cmd: "configure", s5b_unreachable: true });
        await p.next((e) => e.event === "configured");
        try {
          const [, path, sha256] = sources[1]!;
          // bot initiates: the bot sends transport-replace, python answers transport-accept.
          const transfer = await f.send(pyJid, path, { transport: "s5b" });
          const [record, got] = await Promise.all([
            transfer.done,
            p.next(ended(transfer.sid), TRANSFER_TIMEOUT_MS),
          ]);
          assert.equal(got.event, "file_received", JSON.stringify(got));
          assert.equal(got.replaced, true);
          assert.equal(got.transport, "ibb");
          assert.equal(got.sha256, sha256);
          assert.ok(record.ok, JSON.stringify(record.ended));
          assert.deepEqual([record.transport.kind, record.transport.replaced], ["ibb", true]);
          await Deno.remove(String(got.path));

          // python initiates: python sends transport-replace, the bot answers transport-accept.
          const incoming = nextIncoming(f);
          await p.send({ cmd: "send_file", to: botJid, path, transport: "s5b" });
          const back = await incoming;
          const [record2, sent] = await Promise.all([
            back.done,
            p.next((e) => e.event === "file_sent" || e.event === "file_failed", TRANSFER_TIMEOUT_MS),
          ]);
          assert.equal(sent.event, "file_sent", JSON.stringify(sent));
          assert.equal(sent.replaced, true);
          assert.ok(record2.ok, JSON.stringify(record2.ended));
          assert.deepEqual([record2.transport.kind, record2.transport.replaced], ["ibb", true]);
          assert.equal(await sha256Of(record2.path!), sha256);
          await Deno.remove(record2.path!);
        } finally {
          breakBotS5b = false;
          await p.send({ cmd: "configure", s5b_unreachable: false });
          await p.next((e) => e.event === "configured");
        }
      });

      await t.step(
        "python's key transport covers every device of the bot's account; the bot uses its own key",
        async () => {
          const second = await createEndpoint({
            jid: `${bare(botJid)}/second-device`,
            password: "pw",
            server: { host: server.host, port: server.c2sPort },
            caPem: server.certificatePem,
            storeDir: `${tmp}/bot-second-device`,
            logger: quiet,
          });
          try {
            const incoming = nextIncoming(f);
            await p.send({ cmd: "send_file", to: botJid, path: small, transport: "ibb" });
            const transfer = await incoming;
            const [record, sent] = await Promise.all([
              transfer.done,
              p.next((e) => e.event === "file_sent" || e.event === "file_failed", TRANSFER_TIMEOUT_MS),
            ]);
            assert.equal(sent.event, "file_sent", JSON.stringify(sent));
            assert.deepEqual(sent.devices, [botDevice, second.deviceId].sort((a, b) => a - b));
            assert.ok(record.ok, JSON.stringify(record.ended));
            await Deno.remove(record.path!);
          } finally {
            await second.close();
          }
        },
      );

      await t.step(
        "python offers the name ../../escape.bin: the bot stores it inside its download dir",
        async () => {
          const incoming = nextIncoming(f);
          await p.send({
            cmd: "send_file",
            to: botJid,
            path: small,
            transport: "ibb",
            name: "../../escape.bin",
          });
          const transfer = await incoming;
          const [record, sent] = await Promise.all([
            transfer.done,
            p.next((e) => e.event === "file_sent" || e.event === "file_failed", TRANSFER_TIMEOUT_MS),
          ]);
          assert.equal(sent.event, "file_sent", JSON.stringify(sent));
          assert.ok(record.ok, JSON.stringify(record.ended));
          const dir = await Deno.realPath(botDownloads);
          assert.equal(await Deno.realPath(record.path!), `${dir}/escape.bin`);
          assert.deepEqual(
            await entries(tmp).then((e) => e.includes("escape.bin")),
            false,
            "nothing outside",
          );
          await Deno.remove(record.path!);
        },
      );

      await t.step(
        "python offers exactly like Dino 0.4.2 (no hash, only name and size): the bot takes it",
        async () => {
          const [, path, sha256, size] = sources[1]!;
          const incoming = nextIncoming(f);
          await p.send({
            cmd: "send_file",
            to: botJid,
            path,
            transport: "s5b",
            encrypted: true,
            hash: false,
          });
          const transfer = await incoming;
          assert.equal(transfer.file.hashes.length, 0, "the offer carried no hash");
          const [record, sent] = await Promise.all([
            transfer.done,
            p.next((e) => e.event === "file_sent" || e.event === "file_failed", TRANSFER_TIMEOUT_MS),
          ]);
          assert.equal(sent.event, "file_sent", JSON.stringify(sent));
          assert.ok(record.ok, JSON.stringify(record.ended));
          assert.equal(record.bytes, size);
          assert.equal(
            await sha256Of(record.path!),
            sha256,
            "only the GCM tag vouched for it, and it is right",
          );
          await Deno.remove(record.path!);
        },
      );

      await t.step(
        "bot sends a stream with one flipped ciphertext bit: python's AES-GCM rejects it, keeps no file",
        async () => {
          const before = await entries(pyDownloads);
          const transfer = await f.send(pyJid, small, { transport: "ibb", testHooks: { flipByteAt: 100 } });
          const [record, got] = await Promise.all([
            transfer.done,
            p.next(ended(transfer.sid), TRANSFER_TIMEOUT_MS),
          ]);
          assert.equal(got.event, "file_failed", JSON.stringify(got));
          assert.equal(got.reason, "security-error");
          assert.match(String(got.text), /tag/);
          assert.equal(record.ok, false);
          assert.equal(record.ended.reason, "security-error", "the bot hears why in session-terminate");
          assert.deepEqual(await entries(pyDownloads), before, "python left no partial file");
        },
      );

      for (
        const [corrupt, reason] of [["tag", "security-error"], ["truncate", "failed-transport"]] as const
      ) {
        await t.step(
          `python sends a stream with a ${
            corrupt === "tag" ? "flipped tag bit" : "missing end"
          }: the bot fails it with ${reason} and keeps no file`,
          async () => {
            const before = await entries(botDownloads);
            const incoming = nextIncoming(f);
            await p.send({
              cmd: "send_file",
              to: botJid,
              path: small,
              transport: "ibb",
              encrypted: true,
              corrupt,
            });
            const transfer = await incoming;
            const [record, sent] = await Promise.all([
              transfer.done,
              p.next((e) => e.event === "file_sent" || e.event === "file_failed", TRANSFER_TIMEOUT_MS),
            ]);
            assert.equal(record.ok, false);
            assert.equal(record.ended.reason, reason, JSON.stringify(record.ended));
            assert.ok(record.ended.text, "a reason text says what went wrong");
            assert.equal(record.path, undefined);
            assert.equal(sent.event, "file_failed", JSON.stringify(sent));
            assert.equal(sent.reason, reason, "python hears the same reason in session-terminate");
            assert.deepEqual(await entries(botDownloads), before, "no partial or temporary file left");
          },
        );
      }
    } finally {
      await peer?.close();
      await files?.stop().catch(() => {});
      await bot?.close().catch(() => {});
      await server.stop();
      await Deno.remove(tmp, { recursive: true }).catch(() => {});
    }
  },
});

Deno.test({
  name:
    "control: jet_peer.py transfers to another jet_peer.py (IBB and SOCKS5), so a failure above is the bot's",
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    const server = await startProsody({ extraConfig: "network_settings = { nagle = false }\n" });
    const tmp = await Deno.makeTempDir({ prefix: "interop-jet-control-" });
    const peers: JsonLinePeer[] = [];
    try {
      for (const user of ["pya", "pyb"]) {
        await server.createAccount(user, "pw");
        await Deno.mkdir(`${tmp}/${user}`);
        peers.push(startJetPeer(server, `${user}@${server.domain}/jet`, `${tmp}/${user}`));
      }
      for (const p of peers) {
        const ready = await p.next((e) => e.event === "ready" || e.event === "error", 60_000);
        assert.equal(ready.event, "ready", JSON.stringify(ready));
      }
      const [a, b] = peers as [JsonLinePeer, JsonLinePeer];
      const path = `${tmp}/source.bin`;
      const sha256 = await randomFile(path, 100 * KIB + 3);
      for (const transport of TRANSPORTS) {
        await a.send({ cmd: "send_file", to: `pyb@${server.domain}/jet`, path, transport });
        const sent = await a.next(
          (e) => e.event === "file_sent" || e.event === "file_failed",
          TRANSFER_TIMEOUT_MS,
        );
        const got = await b.next(
          (e) => e.event === "file_received" || e.event === "file_failed",
          TRANSFER_TIMEOUT_MS,
        );
        assert.equal(sent.event, "file_sent", JSON.stringify(sent));
        assert.equal(got.event, "file_received", JSON.stringify(got));
        assert.equal(got.sha256, sha256);
        assert.equal(await sha256Of(String(got.path)), sha256);
        await Deno.remove(String(got.path));
      }
    } finally {
      for (const p of peers) await p.close();
      await server.stop();
      await Deno.remove(tmp, { recursive: true }).catch(() => {});
    }
  },
});
