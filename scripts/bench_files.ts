/**
 * `deno task bench:files [RUNS] [MIB]`: throughput of JET-OMEMO file transfer on a real Prosody (started here on
 * loopback) — AES-128-GCM streaming alone (encrypt and decrypt, 256 MiB), then whole transfers (offer to the
 * receiver's confirmation, file read to file committed) over IBB, SOCKS5 direct and SOCKS5 via proxy65.
 * Prints median and p95 MB/s (10^6 bytes/s of plaintext) over RUNS runs (default 5) of MIB MiB (default 64;
 * IBB uses a quarter of it) and exits. `BENCH_PROSODY_NAGLE=1` runs Prosody with Nagle on (its own default;
 * scripts/prosody.ts switches it off), to compare.
 *
 * @module
 */
import { createGcmDecryptStream, createGcmEncryptStream } from "../transfer/gcm.ts";
import { startProsody } from "./prosody.ts";
import { createEndpoint, type Endpoint } from "../bot/endpoint.ts";
import {
  type FileTransferOptions,
  type FileTransfers,
  setupFileTransfer,
  type TransferRecord,
} from "../bot/files.ts";

const MIB = 1024 * 1024;
const runs = Number(Deno.args[0] ?? 5);
const fileMib = Number(Deno.args[1] ?? 64);
const quiet = { debug() {}, info() {}, warn() {}, error() {} };

function stats(values: number[]): { median: number; p95: number; min: number; max: number } {
  const s = [...values].sort((a, b) => a - b);
  const at = (q: number) => s[Math.min(s.length - 1, Math.max(0, Math.ceil(q * s.length) - 1))]!;
  return { median: at(0.5), p95: at(0.05), min: s[0]!, max: s[s.length - 1]! };
}

/** A stream of `total` bytes in 64 KiB chunks of one random buffer (no disk, no allocation per chunk). */
function memorySource(total: number): ReadableStream<Uint8Array> {
  const chunk = new Uint8Array(64 * 1024);
  crypto.getRandomValues(chunk);
  let left = total;
  return new ReadableStream({
    pull(ctrl) {
      if (left <= 0) return ctrl.close();
      const n = Math.min(left, chunk.length);
      left -= n;
      ctrl.enqueue(chunk.slice(0, n));
    },
  }, { highWaterMark: 4 });
}

async function drain(stream: ReadableStream<Uint8Array>): Promise<number> {
  let n = 0;
  for await (const c of stream) n += c.length;
  return n;
}

async function gcmRuns(): Promise<{ encrypt: number[]; decrypt: number[] }> {
  const size = 256 * MIB;
  const key = crypto.getRandomValues(new Uint8Array(16));
  const iv = crypto.getRandomValues(new Uint8Array(12));
  const encrypt: number[] = [];
  const decrypt: number[] = [];
  for (let i = 0; i < runs; i++) {
    let t = performance.now();
    await drain(memorySource(size).pipeThrough(createGcmEncryptStream(key, iv)));
    encrypt.push(size / 1e6 / ((performance.now() - t) / 1000));
    // Decrypting garbage runs the same code path; the tag check at the end fails, which is expected here.
    t = performance.now();
    await drain(memorySource(size + 16).pipeThrough(createGcmDecryptStream(key, iv))).catch(() => {});
    decrypt.push(size / 1e6 / ((performance.now() - t) / 1000));
  }
  return { encrypt, decrypt };
}

async function randomFile(path: string, size: number) {
  const file = await Deno.open(path, { write: true, create: true, truncate: true });
  await memorySource(size).pipeTo(file.writable);
}

async function main() {
  console.error(`bench:files: ${runs} runs, ${fileMib} MiB files (IBB ${fileMib / 4} MiB)`);
  const rows: [string, number[]][] = [];
  const gcm = await gcmRuns();
  rows.push(["AES-128-GCM encrypt (stream, 256 MiB)", gcm.encrypt]);
  rows.push(["AES-128-GCM decrypt (stream, 256 MiB)", gcm.decrypt]);

  const server = await startProsody({ nagle: Deno.env.get("BENCH_PROSODY_NAGLE") === "1" });
  const tmp = await Deno.makeTempDir({ prefix: "bench-files-" });
  const endpoints: Endpoint[] = [];
  const services: FileTransfers[] = [];
  try {
    const side = async (user: string, o: FileTransferOptions = {}) => {
      await server.createAccount(user, "pw");
      const e = await createEndpoint({
        jid: `${user}@${server.domain}/bench`,
        password: "pw",
        server: { host: server.host, port: server.c2sPort },
        caPem: server.certificatePem,
        storeDir: `${tmp}/stores/${user}`,
        logger: quiet,
      });
      endpoints.push(e);
      const downloadDir = `${tmp}/down-${user}`;
      await Deno.mkdir(downloadDir, { recursive: true });
      const files = await setupFileTransfer(e, {
        logger: quiet,
        downloadDir,
        maxFileSize: 4 * fileMib * MIB,
        encryption: "prefer", // the plain row needs a receiver that takes plain offers
        ...o,
      });
      services.push(files);
      return { e, files };
    };
    const alice = await side("alice");
    const bob = await side("bob");
    const carol = await side("carol", { s5b: { direct: false } });
    const dave = await side("dave", { s5b: { direct: false } });
    const big = `${tmp}/big.bin`;
    const small = `${tmp}/small.bin`;
    await randomFile(big, fileMib * MIB);
    await randomFile(small, (fileMib / 4) * MIB);

    const once = async (
      from: Awaited<ReturnType<typeof side>>,
      to: Awaited<ReturnType<typeof side>>,
      path: string,
      transport: "s5b" | "ibb",
      encrypted = true,
    ): Promise<TransferRecord> => {
      const incoming = new Promise<TransferRecord>((resolve) => {
        const off = to.files.onIncoming((t) => {
          off();
          resolve(t.done);
        });
      });
      const t0 = performance.now();
      const t = await from.files.send(to.e.conn.jid, path, { transport, encrypted });
      const [sent, received] = await Promise.all([t.done, incoming]);
      if (!sent.ok || !received.ok) {
        throw new Error(`transfer failed: ${JSON.stringify(sent.ended)} / ${JSON.stringify(received.ended)}`);
      }
      await Deno.remove(received.path!);
      return { ...received, mbPerSecond: received.bytes / 1e6 / ((performance.now() - t0) / 1000) };
    };
    // Warm-up: OMEMO sessions and JIT.
    await once(alice, bob, small, "s5b");
    await once(carol, dave, small, "s5b");
    await once(alice, bob, small, "ibb");

    const cases: [string, () => Promise<TransferRecord>][] = [
      [`SOCKS5 direct, JET (${fileMib} MiB)`, () => once(alice, bob, big, "s5b")],
      [`SOCKS5 direct, plain (${fileMib} MiB)`, () => once(alice, bob, big, "s5b", false)],
      [`SOCKS5 proxy65, JET (${fileMib} MiB)`, () => once(carol, dave, big, "s5b")],
      [`IBB 8 KiB blocks, JET (${fileMib / 4} MiB)`, () => once(alice, bob, small, "ibb")],
    ];
    for (const [label, run] of cases) {
      const values: number[] = [];
      for (let i = 0; i < runs; i++) values.push((await run()).mbPerSecond!);
      rows.push([label, values]);
      console.error(`  ${label}: done`);
    }
  } finally {
    for (const f of services) await f.stop().catch(() => {});
    for (const e of endpoints) await e.close().catch(() => {});
    await server.stop();
    await Deno.remove(tmp, { recursive: true }).catch(() => {});
  }

  const width = Math.max(...rows.map(([l]) => l.length));
  console.log(`${"".padEnd(width)}  median MB/s   p95 MB/s    min     max   (runs: ${runs})`);
  for (const [label, values] of rows) {
    const s = stats(values);
    console.log(
      `${label.padEnd(width)}  ${s.median.toFixed(1).padStart(10)} ${s.p95.toFixed(1).padStart(10)} ${
        s.min.toFixed(1).padStart(7)
      } ${s.max.toFixed(1).padStart(7)}`,
    );
  }
  console.log(
    "(p95 = the rate 95% of runs reached or beat; whole transfers: offer to receiver's confirmation)",
  );
}

if (import.meta.main) {
  try {
    await main();
    Deno.exit(0);
  } catch (e) {
    console.error(`bench:files failed: ${e instanceof Error ? e.stack : e}`);
    Deno.exit(1);
  }
}
