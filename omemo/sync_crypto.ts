/**
 * libsignal-protocol-typescript's symmetric crypto on node:crypto: HMAC-SHA256 (its HKDF and MACs), AES-CBC (the
 * message bodies) and SHA-512, the same algorithms as the WebCrypto it uses by default, computed synchronously and
 * handed back as settled promises. Every WebCrypto call is an asynchronous operation (~40 in one decryption with a
 * ratchet step, each ~0.07 ms on Deno, against ~0.02 ms here); this matters on the call-setup path, where a DTLS
 * fingerprint is decrypted and encrypted on each side. Anything else is passed to WebCrypto unchanged.
 *
 * @module
 */
import { createCipheriv, createDecipheriv, createHash, createHmac } from "node:crypto";
import { setWebCrypto } from "@privacyresearch/libsignal-protocol-typescript";

/** A key "imported" for this shim: the raw bytes and what it is for. */
interface RawKey {
  readonly shimRaw: Uint8Array;
  readonly algorithm: "HMAC" | "AES-CBC";
}

type Bytes = ArrayBuffer | ArrayBufferView<ArrayBuffer>;

function bytes(d: Bytes): Uint8Array {
  return d instanceof ArrayBuffer ? new Uint8Array(d) : new Uint8Array(d.buffer, d.byteOffset, d.byteLength);
}

function toArrayBuffer(b: Uint8Array): ArrayBuffer {
  return b.buffer.slice(b.byteOffset, b.byteOffset + b.byteLength) as ArrayBuffer;
}

function algName(a: unknown): string | undefined {
  return typeof a === "string" ? a : (a as { name?: string } | undefined)?.name;
}

function hashName(a: unknown): string | undefined {
  const h = (a as { hash?: unknown } | undefined)?.hash;
  return algName(h)?.toUpperCase();
}

function isRawKey(k: unknown): k is RawKey {
  return typeof k === "object" && k !== null && "shimRaw" in k;
}

function aesCbc(encrypt: boolean, key: Uint8Array, iv: Uint8Array, data: Uint8Array): ArrayBuffer {
  if (key.length !== 16 && key.length !== 24 && key.length !== 32) throw new Error("AES-CBC: bad key length");
  if (iv.length !== 16) throw new Error("AES-CBC: bad IV length");
  const mode = `aes-${key.length * 8}-cbc`;
  // PKCS#7 padding, as WebCrypto's AES-CBC; a bad padding on decryption throws, as there.
  const c = encrypt ? createCipheriv(mode, key, iv) : createDecipheriv(mode, key, iv);
  const head = c.update(data);
  const tail = c.final();
  const out = new Uint8Array(head.length + tail.length);
  out.set(head);
  out.set(tail, head.length);
  return out.buffer;
}

/** The WebCrypto subset libsignal-protocol-typescript calls, synchronous where it matters. */
export const syncSubtle = {
  importKey(format: string, keyData: Bytes, algorithm: unknown, extractable: boolean, usages: string[]) {
    const name = algName(algorithm)?.toUpperCase();
    if (format === "raw" && ((name === "HMAC" && hashName(algorithm) === "SHA-256") || name === "AES-CBC")) {
      const key: RawKey = {
        shimRaw: bytes(keyData).slice(),
        algorithm: name === "HMAC" ? "HMAC" : "AES-CBC",
      };
      return Promise.resolve(key);
    }
    return crypto.subtle.importKey(
      format as "raw",
      keyData,
      algorithm as AlgorithmIdentifier,
      extractable,
      usages as KeyUsage[],
    );
  },
  sign(algorithm: unknown, key: unknown, data: Bytes) {
    if (isRawKey(key)) {
      if (key.algorithm !== "HMAC" || algName(algorithm)?.toUpperCase() !== "HMAC") {
        return Promise.reject(new Error("key not usable for this signature"));
      }
      const mac = createHmac("sha256", key.shimRaw).update(bytes(data)).digest();
      return Promise.resolve(toArrayBuffer(mac));
    }
    return crypto.subtle.sign(algorithm as AlgorithmIdentifier, key as CryptoKey, data);
  },
  encrypt(algorithm: unknown, key: unknown, data: Bytes) {
    if (isRawKey(key)) return shimCbc(true, algorithm, key, data);
    return crypto.subtle.encrypt(algorithm as AlgorithmIdentifier, key as CryptoKey, data);
  },
  decrypt(algorithm: unknown, key: unknown, data: Bytes) {
    if (isRawKey(key)) return shimCbc(false, algorithm, key, data);
    return crypto.subtle.decrypt(algorithm as AlgorithmIdentifier, key as CryptoKey, data);
  },
  digest(algorithm: unknown, data: Bytes) {
    if (algName(algorithm)?.toUpperCase() === "SHA-512") {
      return Promise.resolve(toArrayBuffer(createHash("sha512").update(bytes(data)).digest()));
    }
    return crypto.subtle.digest(algorithm as AlgorithmIdentifier, data);
  },
};

function shimCbc(encrypt: boolean, algorithm: unknown, key: RawKey, data: Bytes): Promise<ArrayBuffer> {
  try {
    if (key.algorithm !== "AES-CBC" || algName(algorithm)?.toUpperCase() !== "AES-CBC") {
      throw new Error("key not usable for AES-CBC");
    }
    const iv = (algorithm as { iv?: Bytes }).iv;
    if (!iv) throw new Error("AES-CBC: no IV");
    return Promise.resolve(aesCbc(encrypt, key.shimRaw, bytes(iv), bytes(data)));
  } catch (e) {
    return Promise.reject(e);
  }
}

let installed = false;

/** Makes libsignal-protocol-typescript use {@link syncSubtle} (process-wide, idempotent). */
export function installSyncCrypto(): void {
  if (installed) return;
  const shim = {
    getRandomValues: <T extends ArrayBufferView>(a: T) => crypto.getRandomValues(a),
    subtle: syncSubtle,
  };
  setWebCrypto(shim as unknown as Crypto);
  installed = true;
}
