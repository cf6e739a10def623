/** Shared helpers of the file-transfer tests: files of random bytes, one transfer both sides, listings. */
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import type { Endpoint } from "../../bot/endpoint.ts";
import type { FileTransfers, SendOptions, Transfer, TransferRecord } from "../../bot/files.ts";

/** Logs to the console when FILES_DEBUG is set. */
export const filesLog = Deno.env.get("FILES_DEBUG")
  ? {
    debug: (m: string, f?: unknown) => console.log("D", m, JSON.stringify(f ?? "")),
    info: (m: string, f?: unknown) => console.log("I", m, JSON.stringify(f ?? "")),
    warn: (m: string, f?: unknown) => console.log("W", m, JSON.stringify(f ?? "")),
    error: (m: string, f?: unknown) => console.log("E", m, JSON.stringify(f ?? "")),
  }
  : { debug() {}, info() {}, warn() {}, error() {} };

/** Writes `size` pseudo-random bytes to `path` in 1 MiB pieces; returns the sha-256 (hex). */
export async function randomFile(path: string, size: number): Promise<string> {
  const hash = createHash("sha256");
  const file = await Deno.open(path, { write: true, create: true, truncate: true });
  const piece = new Uint8Array(1024 * 1024);
  for (let o = 0; o < piece.length; o += 65536) crypto.getRandomValues(piece.subarray(o, o + 65536));
  try {
    let left = size;
    let round = 0;
    while (left > 0) {
      // A different first 8 bytes per piece so no two MiB are equal.
      new DataView(piece.buffer).setFloat64(0, round++ + Math.random());
      const chunk = piece.subarray(0, Math.min(left, piece.length));
      let off = 0;
      while (off < chunk.length) off += await file.write(chunk.subarray(off));
      hash.update(chunk);
      left -= chunk.length;
    }
  } finally {
    file.close();
  }
  return hash.digest("hex");
}

/** sha-256 (hex) of a file. */
export async function sha256Of(path: string): Promise<string> {
  const hash = createHash("sha256");
  const file = await Deno.open(path);
  for await (const chunk of file.readable) hash.update(chunk);
  return hash.digest("hex");
}

/** Every entry (hidden ones too) of a directory. */
export async function entries(dir: string): Promise<string[]> {
  const out: string[] = [];
  for await (const e of Deno.readDir(dir)) out.push(e.name);
  return out.sort();
}

/** The next incoming transfer on `files`. */
export function nextIncoming(files: FileTransfers): Promise<Transfer> {
  return new Promise((resolve) => {
    const off = files.onIncoming((t) => {
      off();
      resolve(t);
    });
  });
}

/** Both records of one transfer from `sender` to `receiver`. */
export interface Both {
  sent: TransferRecord;
  received: TransferRecord;
}

/** Sends `path` from one side to the other and waits for both records. */
export async function transfer(
  from: FileTransfers,
  to: FileTransfers,
  toEndpoint: Endpoint,
  path: string,
  options: SendOptions = {},
): Promise<Both> {
  // Matched by sid: several transfers may be under way at once.
  const seen = new Map<string, Transfer>();
  let wake = () => {};
  const off = to.onIncoming((t) => {
    seen.set(t.sid, t);
    wake();
  });
  try {
    const t = await from.send(toEndpoint.conn.jid, path, options);
    while (!seen.has(t.sid)) await new Promise<void>((r) => wake = r);
    const r = seen.get(t.sid)!;
    const [sent, received] = await Promise.all([t.done, r.done]);
    return { sent, received };
  } finally {
    off();
  }
}

/** Asserts a successful transfer whose stored file has `sha256`, then deletes the stored file. */
export async function assertDelivered(both: Both, sha256: string, downloadDir: string, size: number) {
  const { sent, received } = both;
  assert.ok(sent.ok, `sender: ${JSON.stringify(sent.ended)}`);
  assert.ok(received.ok, `receiver: ${JSON.stringify(received.ended)}`);
  assert.equal(sent.file.sha256, sha256, "the sender hashed what it read");
  assert.equal(received.file.sha256, sha256, "the receiver hashed what it stored");
  assert.equal(received.bytes, size);
  assert.equal(sent.bytes, size);
  assert.ok(received.path, "stored");
  assert.ok(
    received.path!.startsWith(`${await Deno.realPath(downloadDir)}/`) ||
      received.path!.startsWith(`${downloadDir}/`),
  );
  assert.equal((await Deno.stat(received.path!)).size, size);
  assert.equal(await sha256Of(received.path!), sha256, "the stored file is the sent file");
  await Deno.remove(received.path!);
}
