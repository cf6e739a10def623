/**
 * The byte-stream plumbing of Jingle file transfer (bot/files.ts): hashing and counting taps, the receiver's
 * exact-length view of a transport, an XEP-0047 sender, fault injection for tests, and the mapping of stream
 * errors to Jingle reasons. Web streams with backpressure throughout; nothing holds a whole file.
 *
 * @module
 */
import { createHash } from "node:crypto";
import { StanzaError } from "../xmpp/mod.ts";
import type { ReasonCondition } from "../jingle/mod.ts";
import { GcmAuthError } from "../transfer/gcm.ts";
import { DownloadError, DownloadRefusedError } from "../transfer/download.ts";

const message = (e: unknown) => e instanceof Error ? e.message : String(e);

/** A transfer failure with the Jingle reason to end the session with. */
export class TransferError extends Error {
  /**
   * Creates the error.
   * @param condition the Jingle reason condition to terminate the session with
   * @param message what went wrong, for logs and the record
   */
  constructor(readonly condition: ReasonCondition, message: string) {
    super(message);
    this.name = "TransferError";
  }
}

/** Hash algorithms (XEP-0300 names) a {@link hashTap} can compute besides sha-256. */
export type ExtraHashAlgo = "sha-1";

/**
 * Counts bytes and feeds a sha-256 as chunks pass; `expected` (when set) must match at the end. `extra`
 * algorithms are computed alongside (the receiver adds sha-1: Conversations' checksum uses it).
 */
export function hashTap(onChunk: (n: number) => void, expected?: number, extra: ExtraHashAlgo[] = []) {
  const hash = createHash("sha256");
  const others = extra.map((algo) => ({ algo, hash: createHash(algo === "sha-1" ? "sha1" : algo) }));
  let bytes = 0;
  let digest: string | undefined;
  const digests = new Map<string, string>();
  const stream = new TransformStream<Uint8Array, Uint8Array>(
    {
      transform(chunk, ctrl) {
        hash.update(chunk);
        for (const o of others) o.hash.update(chunk);
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
        digests.set("sha-256", digest);
        for (const o of others) digests.set(o.algo, o.hash.digest("hex"));
      },
    },
    { highWaterMark: 1 },
    { highWaterMark: 0 },
  );
  return {
    stream,
    bytes: () => bytes,
    /** sha-256 (hex) once the stream has ended. */
    digest: () => digest,
    /** Every computed digest (hex) by XEP-0300 name (`sha-256`, `sha-1`), once the stream has ended. */
    digests: (): ReadonlyMap<string, string> => digests,
  };
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
