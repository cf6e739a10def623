/**
 * The JET stream cipher exactly as Conversations and Dino use it: the whole file is ONE AES-128-GCM operation
 * (16-byte key, 12-byte IV, no AAD) and the 16-byte tag is appended after the last ciphertext byte. No
 * framing, no chunk tags. Both directions stream through `node:crypto` (incremental `update()`), so memory
 * stays at one chunk plus the 16 held-back bytes whatever the file size.
 *
 * Decryption necessarily releases plaintext before the tag — at the very end — is verified: consumers must
 * treat the output as untrusted until the stream closes without error (transfer/download.ts writes to a
 * temp file and publishes only after that).
 * @module
 */
import { createCipheriv, createDecipheriv } from "node:crypto";

/** AES-128 key length. */
export const GCM_KEY_BYTES = 16;
/** IV length used by every JET implementation. */
export const GCM_IV_BYTES = 12;
/** Tag length, appended to the ciphertext stream. */
export const GCM_TAG_BYTES = 16;

/** The stream's authentication failed: wrong key/IV, modified bytes, or a missing/truncated tag. */
export class GcmAuthError extends Error {
  /** Creates the error; `options.cause` keeps the underlying error. */
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = "GcmAuthError";
  }
}

function checkKeyIv(key: Uint8Array, iv: Uint8Array): void {
  if (key.length !== GCM_KEY_BYTES) {
    throw new RangeError(`AES-128-GCM key must be 16 bytes, got ${key.length}`);
  }
  if (iv.length !== GCM_IV_BYTES) throw new RangeError(`AES-128-GCM IV must be 12 bytes, got ${iv.length}`);
}

/** Plain Uint8Array view of a node Buffer (callers should not see Buffer-specific behaviour). */
function view(b: Uint8Array): Uint8Array {
  return new Uint8Array(b.buffer, b.byteOffset, b.byteLength);
}

/** Encrypts a plaintext stream into `ciphertext ‖ tag(16)`. */
export function createGcmEncryptStream(
  key: Uint8Array,
  iv: Uint8Array,
): TransformStream<Uint8Array, Uint8Array> {
  checkKeyIv(key, iv);
  const cipher = createCipheriv("aes-128-gcm", key, iv);
  return new TransformStream<Uint8Array, Uint8Array>({
    transform(chunk, controller) {
      const out = cipher.update(chunk);
      if (out.length > 0) controller.enqueue(view(out));
    },
    flush(controller) {
      const rest = cipher.final();
      if (rest.length > 0) controller.enqueue(view(rest));
      controller.enqueue(view(cipher.getAuthTag()));
    },
  });
}

/**
 * Decrypts `ciphertext ‖ tag(16)`. The last 16 bytes seen are held back as the candidate tag; everything
 * before them is decrypted and released at once. At the end the tag is verified; a wrong, missing or short
 * tag errors the stream with {@link GcmAuthError}.
 */
export function createGcmDecryptStream(
  key: Uint8Array,
  iv: Uint8Array,
): TransformStream<Uint8Array, Uint8Array> {
  checkKeyIv(key, iv);
  const decipher = createDecipheriv("aes-128-gcm", key, iv);
  let held = new Uint8Array(0); // the last ≤ 16 bytes received: maybe the tag
  const release = (bytes: Uint8Array, controller: TransformStreamDefaultController<Uint8Array>) => {
    if (bytes.length === 0) return;
    const out = decipher.update(bytes);
    if (out.length > 0) controller.enqueue(view(out));
  };
  return new TransformStream<Uint8Array, Uint8Array>({
    transform(chunk, controller) {
      if (chunk.length >= GCM_TAG_BYTES) {
        // Everything held is now certainly ciphertext; keep only the chunk's last 16 bytes (no big copies).
        release(held, controller);
        release(chunk.subarray(0, chunk.length - GCM_TAG_BYTES), controller);
        held = chunk.slice(chunk.length - GCM_TAG_BYTES);
      } else {
        const joined = new Uint8Array(held.length + chunk.length);
        joined.set(held);
        joined.set(chunk, held.length);
        const cut = Math.max(0, joined.length - GCM_TAG_BYTES);
        release(joined.subarray(0, cut), controller);
        held = joined.slice(cut);
      }
    },
    flush(controller) {
      if (held.length < GCM_TAG_BYTES) {
        throw new GcmAuthError(`stream ended after ${held.length} tag bytes: authentication tag missing`);
      }
      decipher.setAuthTag(held);
      let rest: Uint8Array;
      try {
        rest = decipher.final();
      } catch (e) {
        throw new GcmAuthError("authentication tag mismatch: the file was modified or the key is wrong", {
          cause: e,
        });
      }
      if (rest.length > 0) controller.enqueue(view(rest));
    },
  });
}
