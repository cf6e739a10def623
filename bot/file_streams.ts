/**
 * The byte-stream plumbing of Jingle file transfer (bot/files.ts): hashing and counting taps, the receiver's
 * exact-length view of a transport, an XEP-0047 sender, fault injection for tests, and the mapping of stream
 * errors to Jingle reasons. Web streams with backpressure throughout; nothing holds a whole file.
 *
 * @module
 */
import { createHash } from "node:crypto";
import { type Element, StanzaError, xml, type XmppConnection } from "../xmpp/mod.ts";
import type { ReasonCondition } from "../jingle/mod.ts";
import { GcmAuthError } from "../transfer/gcm.ts";
import { DownloadError, DownloadRefusedError } from "../transfer/download.ts";
import { buildIbbClose, buildIbbData, buildIbbOpen } from "../bytestreams/ibb.ts";

const message = (e: unknown) => e instanceof Error ? e.message : String(e);

/** A transfer failure with the Jingle reason to end the session with. */
export class TransferError extends Error {
  constructor(readonly condition: ReasonCondition, message: string) {
    super(message);
    this.name = "TransferError";
  }
}

/** Counts bytes and feeds a sha-256 as chunks pass; `expected` (when set) must match at the end. */
export function hashTap(onChunk: (n: number) => void, expected?: number) {
  const hash = createHash("sha256");
  let bytes = 0;
  let digest: string | undefined;
  const stream = new TransformStream<Uint8Array, Uint8Array>(
    {
      transform(chunk, ctrl) {
        hash.update(chunk);
        bytes += chunk.length;
        onChunk(chunk.length);
        ctrl.enqueue(chunk);
      },
      flush() {
        if (expected !== undefined && bytes !== expected) {
          throw new TransferError(
            "failed-application",
            `file changed while sending: ${bytes} bytes, offered ${expected}`,
          );
        }
        digest = hash.digest("hex");
      },
    },
    { highWaterMark: 1 },
    { highWaterMark: 0 },
  );
  return { stream, bytes: () => bytes, digest: () => digest };
}

/** Test hooks on the wire bytes: flip one bit, stop early. */
export function faultInjector(
  hooks: { flipByteAt?: number; stopAfter?: number },
): TransformStream<Uint8Array, Uint8Array> {
  let offset = 0;
  return new TransformStream({
    transform(chunk, ctrl) {
      let out = chunk;
      const flip = hooks.flipByteAt;
      if (flip !== undefined && flip >= offset && flip < offset + chunk.length) {
        out = chunk.slice();
        out[flip - offset]! ^= 0x01;
      }
      if (hooks.stopAfter !== undefined && offset + out.length >= hooks.stopAfter) {
        const keep = hooks.stopAfter - offset;
        if (keep > 0) ctrl.enqueue(out.subarray(0, keep));
        offset += out.length;
        ctrl.terminate();
        return;
      }
      offset += out.length;
      ctrl.enqueue(out);
    },
  });
}

/**
 * The receiving side's view of the transport: exactly `expected` bytes. Fewer (the stream ended early) is
 * `failed-transport`, more is `media-error`. `stopAtLimit` (SOCKS5) stops reading once all bytes are in,
 * since senders may keep the socket open until session-terminate; IBB is read to its `<close/>`.
 */
export function boundedSource(
  source: ReadableStream<Uint8Array>,
  expected: number,
  stopAtLimit: boolean,
  onChunk: (n: number) => void,
): ReadableStream<Uint8Array> {
  const reader = source.getReader();
  let got = 0;
  return new ReadableStream<Uint8Array>({
    async pull(ctrl) {
      let r: ReadableStreamReadResult<Uint8Array>;
      try {
        r = await reader.read();
      } catch (e) {
        throw new TransferError("failed-transport", `transport failed after ${got} bytes: ${message(e)}`);
      }
      if (r.done) {
        if (got < expected) {
          throw new TransferError("failed-transport", `stream ended after ${got} of ${expected} bytes`);
        }
        ctrl.close();
        return;
      }
      got += r.value.length;
      if (got > expected) {
        reader.cancel().catch(() => {});
        throw new TransferError("media-error", `more bytes than declared: over ${expected}`);
      }
      onChunk(r.value.length);
      ctrl.enqueue(r.value);
      if (got === expected && stopAtLimit) {
        ctrl.close();
        reader.cancel().catch(() => {});
      }
    },
    cancel(reason) {
      return reader.cancel(reason);
    },
  }, { highWaterMark: 0 });
}

/**
 * XEP-0047 sender: `<open/>`, `<data/>` IQs of `blockSize` bytes with up to `window` awaiting their result,
 * `<close/>`. Reads the source only as fast as the receiver answers.
 *
 * Why not `ibbSend` from bytestreams/ibb.ts: it races every `reader.read()` against one never-settling abort
 * promise; each race leaves a reaction on that promise that keeps the read chunk reachable, so a transfer
 * holds the whole file in memory until it ends (measured: +68 MiB external for 60 MiB). Here the abort
 * cancels the reader instead.
 */
export async function sendIbb(
  conn: XmppConnection,
  opts: {
    to: string;
    sid: string;
    blockSize: number;
    source: ReadableStream<Uint8Array>;
    window: number;
    signal: AbortSignal;
  },
): Promise<void> {
  const { to, sid, blockSize, signal } = opts;
  const set = (payload: Element) => conn.iq(xml("iq", { type: "set", to }, payload), { timeoutMs: 30_000 });
  const reader = opts.source.getReader();
  const onAbort = () => void reader.cancel(signal.reason).catch(() => {});
  signal.addEventListener("abort", onAbort, { once: true });
  const inFlight: Promise<unknown>[] = [];
  let opened = false;
  let seq = 0;
  const push = async (bytes: Uint8Array) => {
    if (inFlight.length >= opts.window) await inFlight.shift();
    const sent = set(buildIbbData(sid, seq, bytes) as unknown as Element);
    sent.catch(() => {}); // awaited in turn
    inFlight.push(sent);
    seq = (seq + 1) % 65536;
  };
  try {
    if (signal.aborted) throw signal.reason;
    await set(buildIbbOpen(sid, blockSize) as unknown as Element);
    opened = true;
    let block = new Uint8Array(blockSize);
    let filled = 0;
    while (true) {
      const { value, done } = await reader.read();
      if (signal.aborted) throw signal.reason;
      if (done) break;
      let offset = 0;
      while (offset < value.length) {
        const take = Math.min(blockSize - filled, value.length - offset);
        block.set(value.subarray(offset, offset + take), filled);
        filled += take;
        offset += take;
        if (filled === blockSize) {
          await push(block);
          block = new Uint8Array(blockSize);
          filled = 0;
        }
      }
    }
    if (filled > 0) await push(block.subarray(0, filled));
    while (inFlight.length) await inFlight.shift();
    await set(buildIbbClose(sid) as unknown as Element);
  } catch (e) {
    reader.cancel(e).catch(() => {});
    if (opened) set(buildIbbClose(sid) as unknown as Element).catch(() => {});
    throw e;
  } finally {
    signal.removeEventListener("abort", onAbort);
  }
}

/** Classifies an error met while moving or storing bytes. */
export function classify(e: unknown, stage: "send" | "receive"): TransferError {
  if (e instanceof TransferError) return e;
  if (e instanceof GcmAuthError) {
    return new TransferError("security-error", `GCM authentication failed: ${message(e)}`);
  }
  if (e instanceof DownloadRefusedError) return new TransferError("failed-application", message(e));
  if (e instanceof DownloadError) {
    const condition = e.code === "oversize"
      ? "media-error"
      : e.code === "incomplete"
      ? "failed-transport"
      : "failed-application";
    return new TransferError(condition, `download: ${message(e)}`);
  }
  if (stage === "receive" && /ENOSPC|no space/i.test(message(e))) {
    return new TransferError("failed-application", `disk full: ${message(e)}`);
  }
  if (e instanceof StanzaError) return new TransferError("failed-transport", `transport: ${message(e)}`);
  return new TransferError(stage === "send" ? "failed-transport" : "failed-application", message(e));
}

/** sha-256 (hex) of a file, streamed. */
export async function sha256File(path: string): Promise<string> {
  const hash = createHash("sha256");
  const file = await Deno.open(path, { read: true });
  for await (const chunk of file.readable) hash.update(chunk);
  return hash.digest("hex");
}
