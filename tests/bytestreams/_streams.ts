/** Stream helpers shared by the bytestream tests. */
import { createHash } from "node:crypto";

/**
 * A source of `total` random bytes in chunks of varying size (so senders must re-block them);
 * `digest()` gives the SHA-256 of what was produced once the stream was fully read.
 */
export function randomSource(total: number): { stream: ReadableStream<Uint8Array>; digest(): string } {
  const hash = createHash("sha256");
  let produced = 0;
  const sizes = [65536, 1000, 30000, 7, 8192, 12345];
  let turn = 0;
  const stream = new ReadableStream<Uint8Array>({
    pull(controller) {
      if (produced >= total) {
        controller.close();
        return;
      }
      const size = Math.min(sizes[turn++ % sizes.length]!, total - produced);
      const chunk = new Uint8Array(size);
      for (let offset = 0; offset < size; offset += 65536) {
        crypto.getRandomValues(chunk.subarray(offset, Math.min(size, offset + 65536)));
      }
      hash.update(chunk);
      produced += size;
      controller.enqueue(chunk);
    },
  }, { highWaterMark: 0 });
  return { stream, digest: () => hash.digest("hex") };
}

/** A source that never ends (for abort tests); counts what it produced. */
export function endlessSource(): { stream: ReadableStream<Uint8Array>; produced(): number } {
  let produced = 0;
  const stream = new ReadableStream<Uint8Array>({
    pull(controller) {
      const chunk = new Uint8Array(16384);
      produced += chunk.byteLength;
      controller.enqueue(chunk);
    },
  }, { highWaterMark: 0 });
  return { stream, produced: () => produced };
}

/** Reads a stream to its end: byte count and SHA-256; `error` when it failed instead of ending. */
export async function drain(
  stream: ReadableStream<Uint8Array>,
): Promise<{ bytes: number; sha256: string; error?: Error }> {
  const hash = createHash("sha256");
  let bytes = 0;
  const reader = stream.getReader();
  try {
    while (true) {
      const { value, done } = await reader.read();
      if (done) break;
      hash.update(value);
      bytes += value.byteLength;
    }
  } catch (err) {
    return { bytes, sha256: hash.digest("hex"), error: err as Error };
  } finally {
    reader.releaseLock();
  }
  return { bytes, sha256: hash.digest("hex") };
}

/** Resolves after `ms`. */
export const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));
