import assert from "node:assert/strict";
import { Buffer } from "node:buffer";
import { randomBytes } from "node:crypto";
import { createGcmDecryptStream, createGcmEncryptStream, GcmAuthError } from "../../transfer/gcm.ts";

const KEY = Uint8Array.from({ length: 16 }, (_, i) => i + 1);
const IV = Uint8Array.from({ length: 12 }, (_, i) => 0xa0 + i);

/** Deterministic PRNG so that a failing chunking can be replayed. */
function mulberry32(seed: number): () => number {
  return () => {
    seed = (seed + 0x6d2b79f5) | 0;
    let t = Math.imul(seed ^ (seed >>> 15), 1 | seed);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** Split into random chunks of 0..maxChunk bytes (zero-length chunks included on purpose). */
function randomChunks(data: Uint8Array, rnd: () => number, maxChunk: number): Uint8Array[] {
  const out: Uint8Array[] = [];
  let off = 0;
  while (off < data.length) {
    const n = Math.floor(rnd() * (maxChunk + 1));
    out.push(data.subarray(off, Math.min(data.length, off + n)));
    off += n;
  }
  if (rnd() < 0.5) out.push(new Uint8Array(0));
  return out;
}

function concat(parts: Uint8Array[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let off = 0;
  for (const p of parts) {
    out.set(p, off);
    off += p.length;
  }
  return out;
}

async function run(ts: TransformStream<Uint8Array, Uint8Array>, chunks: Uint8Array[]): Promise<Uint8Array> {
  const reader = ReadableStream.from(chunks).pipeThrough(ts).getReader();
  const parts: Uint8Array[] = [];
  for (;;) {
    const { done, value } = await reader.read();
    if (done) return concat(parts);
    parts.push(value);
  }
}

const encrypt = (pt: Uint8Array, chunks: Uint8Array[] = [pt]) => run(createGcmEncryptStream(KEY, IV), chunks);
const decrypt = (ct: Uint8Array, chunks: Uint8Array[] = [ct]) => run(createGcmDecryptStream(KEY, IV), chunks);

/** AESGCM from python3-cryptography (OpenSSL), an implementation independent of ours. */
async function python(op: "encrypt" | "decrypt", data: Uint8Array): Promise<Uint8Array> {
  const script = [
    "import sys",
    "from cryptography.hazmat.primitives.ciphers.aead import AESGCM",
    "key, iv, op = bytes.fromhex(sys.argv[1]), bytes.fromhex(sys.argv[2]), sys.argv[3]",
    "data = sys.stdin.buffer.read()",
    "a = AESGCM(key)",
    "sys.stdout.buffer.write(a.encrypt(iv, data, None) if op == 'encrypt' else a.decrypt(iv, data, None))",
  ].join("\n");
  const hex = (b: Uint8Array) => Array.from(b, (x) => x.toString(16).padStart(2, "0")).join("");
  const child = new Deno.Command("/usr/bin/python3", {
    args: ["-c", script, hex(KEY), hex(IV), op],
    stdin: "piped",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const w = child.stdin.getWriter();
  await w.write(data);
  await w.close();
  const out = await child.output();
  assert.equal(out.code, 0, new TextDecoder().decode(out.stderr));
  return out.stdout;
}

async function assertAuthError(p: Promise<unknown>, pattern: RegExp): Promise<void> {
  await assert.rejects(p, (e: unknown) => {
    assert.ok(e instanceof GcmAuthError, `expected GcmAuthError, got ${e}`);
    assert.match(e.message, pattern);
    return true;
  });
}

Deno.test("GCM: round trip at 0, 1, 15, 16, 17 bytes and 1 MiB with random chunking both ways", async () => {
  const seed = 0x5eed;
  const rnd = mulberry32(seed);
  for (const size of [0, 1, 15, 16, 17, 31, 32, 33, 1024 * 1024]) {
    const pt = randomBytes(size);
    for (let round = 0; round < (size > 1000 ? 2 : 6); round++) {
      const maxChunk = round % 2 === 0 ? 7 : 70_000;
      const ct = await encrypt(pt, randomChunks(pt, rnd, maxChunk));
      assert.equal(ct.length, size + 16, `ciphertext ‖ tag for ${size} bytes`);
      const back = await decrypt(ct, randomChunks(ct, rnd, round % 3 === 0 ? 16 : maxChunk));
      assert.ok(Buffer.from(back).equals(pt), `size ${size} round ${round} seed ${seed}`);
    }
  }
});

Deno.test("GCM: ciphertext ‖ tag matches python3-cryptography's AESGCM, and we decrypt what it made", async () => {
  const vector = new TextEncoder().encode(
    "JET-OMEMO: whole stream, one GCM operation, tag at the end. ".repeat(3),
  );
  const ours = await encrypt(vector, randomChunks(vector, mulberry32(1), 9));
  assert.deepEqual(ours, await python("encrypt", vector));
  // Empty file: the stream is just the tag.
  assert.deepEqual(await encrypt(new Uint8Array(0), []), await python("encrypt", new Uint8Array(0)));
  // Their ciphertext, our decryption (odd sizes, chunked across the tag boundary).
  const big = randomBytes(300_001);
  const theirs = await python("encrypt", big);
  assert.ok(Buffer.from(await decrypt(theirs, randomChunks(theirs, mulberry32(2), 4099))).equals(big));
  // Our ciphertext, their decryption.
  assert.ok(Buffer.from(await python("decrypt", await encrypt(big))).equals(big));
});

Deno.test("GCM: a flipped bit in ciphertext or tag, a wrong key, extra bytes → GcmAuthError", async () => {
  const pt = randomBytes(5000);
  const ct = await encrypt(pt);
  for (const pos of [0, 2500, ct.length - 17, ct.length - 16, ct.length - 1]) {
    const bad = ct.slice();
    bad[pos]! ^= 0x01;
    await assertAuthError(decrypt(bad, randomChunks(bad, mulberry32(pos), 1000)), /tag mismatch/);
  }
  const otherKey = KEY.slice();
  otherKey[0]! ^= 0x80;
  await assertAuthError(run(createGcmDecryptStream(otherKey, IV), [ct]), /tag mismatch/);
  const otherIv = IV.slice();
  otherIv[11]! ^= 0x80;
  await assertAuthError(run(createGcmDecryptStream(KEY, otherIv), [ct]), /tag mismatch/);
  await assertAuthError(decrypt(concat([ct, new Uint8Array([0])])), /tag mismatch/);
});

Deno.test("GCM: truncated streams (last byte missing, tag shorter than 16, nothing at all) → GcmAuthError", async () => {
  const pt = randomBytes(1000);
  const ct = await encrypt(pt);
  await assertAuthError(decrypt(ct.subarray(0, ct.length - 1)), /tag mismatch/);
  await assertAuthError(decrypt(ct.subarray(0, pt.length)), /tag mismatch/); // tag dropped entirely
  await assertAuthError(decrypt(ct.subarray(0, 15)), /tag missing/);
  await assertAuthError(decrypt(new Uint8Array(0), []), /tag missing/);
  const emptyFile = await encrypt(new Uint8Array(0));
  await assertAuthError(
    decrypt(emptyFile.subarray(0, 10), [emptyFile.subarray(0, 4), emptyFile.subarray(4, 10)]),
    /tag missing/,
  );
});

Deno.test("GCM: streaming — decrypt releases all but the last 16 bytes after every chunk, encrypt holds nothing", async () => {
  const pt = randomBytes(200_000);
  const ct = await encrypt(pt);
  for (
    const [label, ts, input, heldBack] of [
      ["decrypt", createGcmDecryptStream(KEY, IV), ct, 16],
      ["encrypt", createGcmEncryptStream(KEY, IV), pt, 0],
    ] as const
  ) {
    let released = 0;
    const done = ts.readable.pipeTo(new WritableStream({ write: (c) => void (released += c.length) }));
    const writer = ts.writable.getWriter();
    let written = 0;
    for (const chunk of randomChunks(input, mulberry32(3), 20_000)) {
      await writer.write(chunk);
      written += chunk.length;
      // Let the pipe forward what the transform enqueued (a macrotask turn, not a timed wait).
      await new Promise((r) => setTimeout(r, 0));
      assert.equal(released, Math.max(0, written - heldBack), `${label} after ${written} bytes`);
    }
    await writer.close();
    await done;
    assert.equal(released, label === "decrypt" ? pt.length : ct.length);
  }
});

Deno.test("GCM: key and IV lengths are checked up front", () => {
  assert.throws(() => createGcmEncryptStream(new Uint8Array(32), IV), RangeError);
  assert.throws(() => createGcmDecryptStream(KEY, new Uint8Array(16)), RangeError);
  assert.throws(() => createGcmDecryptStream(new Uint8Array(0), IV), RangeError);
});
