/**
 * 200 MiB JET-OMEMO transfers over SOCKS5 direct, through proxy65 and over IBB, each in both directions, on a
 * real Prosody, with the process RSS measured around each after a 32 MiB warm-up on the same path: memory
 * must stay flat with the file size.
 * FILES_LARGE_MIB overrides the size (e.g. for a quick run).
 */
import assert from "node:assert/strict";
import { endpointOn } from "./_support.ts";
import { assertDelivered, filesLog, randomFile, transfer } from "./_files_support.ts";
import type { Endpoint } from "../../bot/endpoint.ts";
import { type FileTransferOptions, type FileTransfers, setupFileTransfer } from "../../bot/files.ts";
import { startProsody } from "../../scripts/prosody.ts";

const MIB = 1024 * 1024;
const SIZE = Number(Deno.env.get("FILES_LARGE_MIB") ?? 200) * MIB;
/** RSS may grow by this much at most during one transfer (both ends run in this process). */
const RSS_LIMIT = 64 * MIB;

Deno.test({
  name: `file transfer: ${SIZE / MIB} MiB over SOCKS5 direct, proxy65 and IBB (both ways) with flat memory`,
  sanitizeOps: false,
  sanitizeResources: false,
  async fn(t) {
    const server = await startProsody();
    const tmp = await Deno.makeTempDir({ prefix: "files-large-" });
    const open: Endpoint[] = [];
    const services: FileTransfers[] = [];
    const side = async (user: string, o: FileTransferOptions = {}) => {
      const e = await endpointOn(server, user, `${tmp}/stores`);
      open.push(e);
      const downloadDir = `${tmp}/down-${user}`;
      await Deno.mkdir(downloadDir);
      // Bot to bot: IBB blocks larger than Conversations' 8 KiB (XEP-0047 allows up to 65535).
      const files = await setupFileTransfer(e, {
        logger: filesLog,
        downloadDir,
        maxFileSize: 2 * SIZE,
        ibb: { blockSize: 49152, window: 16 },
        ...o,
      });
      services.push(files);
      return { e, files, downloadDir };
    };
    try {
      const path = `${tmp}/big.bin`;
      const hash = await randomFile(path, SIZE);
      const alice = await side("alice");
      const bob = await side("bob");
      const carol = await side("carol", { s5b: { direct: false } });
      const dave = await side("dave", { s5b: { direct: false } });
      const cases = [
        ["SOCKS5 direct", alice, bob, "s5b", false],
        ["SOCKS5 direct", bob, alice, "s5b", false],
        ["SOCKS5 proxy65", carol, dave, "s5b", true],
        ["SOCKS5 proxy65", dave, carol, "s5b", true],
        ["IBB", alice, bob, "ibb", false],
        ["IBB", bob, alice, "ibb", false],
      ] as const;
      // Warm up every path with 32 MiB (OMEMO sessions, JIT, the V8 heap and allocator reaching their
      // working size), so the measurement shows whether memory grows with the file size.
      const warm = `${tmp}/warm.bin`;
      const warmHash = await randomFile(warm, 32 * MIB);
      for (const [, from, to, transport] of cases) {
        await assertDelivered(
          await transfer(from.files, to.files, to.e, warm, { transport }),
          warmHash,
          to.downloadDir,
          32 * MIB,
        );
      }

      for (const [label, from, to, transport, proxy] of cases) {
        const who = `${from.e.conn.bareJid.split("@")[0]} → ${to.e.conn.bareJid.split("@")[0]}`;
        await t.step(`${label} ${who}`, async () => {
          const before = Deno.memoryUsage().rss;
          let peak = before;
          const sampler = setInterval(() => peak = Math.max(peak, Deno.memoryUsage().rss), 50);
          let both;
          try {
            both = await transfer(from.files, to.files, to.e, path, { transport });
          } finally {
            clearInterval(sampler);
          }
          const after = Deno.memoryUsage().rss;
          peak = Math.max(peak, after);
          await assertDelivered(both, hash, to.downloadDir, SIZE);
          assert.equal(both.sent.transport.kind, transport);
          assert.equal(both.sent.transport.proxy, proxy);
          assert.ok(
            peak - before < RSS_LIMIT,
            `RSS grew by ${((peak - before) / MIB).toFixed(1)} MiB during a ${SIZE / MIB} MiB transfer`,
          );
          console.log(
            `    ${label} ${who}: ${both.received.mbPerSecond} MB/s, RSS +${
              ((peak - before) / MIB).toFixed(1)
            } MiB (peak ${(peak / MIB).toFixed(0)} MiB)`,
          );
        });
      }
    } finally {
      for (const f of services) await f.stop().catch(() => {});
      for (const e of open) await e.close().catch(() => {});
      await server.stop();
      await Deno.remove(tmp, { recursive: true }).catch(() => {});
    }
  },
});
