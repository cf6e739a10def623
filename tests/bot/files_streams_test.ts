/** The stream plumbing of file transfer (bot/file_streams.ts), without a server. */
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { boundedSource, classify, faultInjector, hashTap, TransferError } from "../../bot/file_streams.ts";
import { GcmAuthError } from "../../transfer/gcm.ts";
import { DownloadError } from "../../transfer/download.ts";
import { StanzaError } from "../../xmpp/mod.ts";

function source(chunks: Uint8Array[], error?: Error): ReadableStream<Uint8Array> {
  let i = 0;
  return new ReadableStream({
    pull(ctrl) {
      if (i < chunks.length) ctrl.enqueue(chunks[i++]!);
      else if (error) ctrl.error(error);
      else ctrl.close();
    },
  });
}

async function collect(stream: ReadableStream<Uint8Array>): Promise<Uint8Array> {
  const parts: Uint8Array[] = [];
  for await (const c of stream) parts.push(c);
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let o = 0;
  for (const p of parts) {
    out.set(p, o);
    o += p.length;
  }
  return out;
}

const bytes = (n: number, v = 7) => new Uint8Array(n).fill(v);

Deno.test("boundedSource: exactly the expected bytes pass", async () => {
  const got: number[] = [];
  const out = await collect(boundedSource(source([bytes(3), bytes(4)]), 7, false, (n) => got.push(n)));
  assert.equal(out.length, 7);
  assert.deepEqual(got, [3, 4]);
});

Deno.test("boundedSource: an early end is failed-transport, more bytes media-error, errors failed-transport", async () => {
  await assert.rejects(collect(boundedSource(source([bytes(3)]), 7, false, () => {})), (e: unknown) => {
    assert.ok(e instanceof TransferError);
    assert.equal(e.condition, "failed-transport");
    assert.match(e.message, /ended after 3 of 7 bytes/);
    return true;
  });
  await assert.rejects(
    collect(boundedSource(source([bytes(5), bytes(5)]), 7, false, () => {})),
    (e: unknown) => {
      assert.ok(e instanceof TransferError);
      assert.equal(e.condition, "media-error");
      return true;
    },
  );
  await assert.rejects(
    collect(boundedSource(source([bytes(2)], new Error("reset")), 7, false, () => {})),
    (e: unknown) =>
      e instanceof TransferError && e.condition === "failed-transport" && /reset/.test(e.message),
  );
});

Deno.test("boundedSource: stopAtLimit stops at the declared size without waiting for the end", async () => {
  let cancelled = false;
  const endless = new ReadableStream<Uint8Array>({
    pull(ctrl) {
      ctrl.enqueue(bytes(4));
    },
    cancel() {
      cancelled = true;
    },
  });
  const out = await collect(boundedSource(endless, 8, true, () => {}));
  assert.equal(out.length, 8);
  assert.ok(cancelled, "the transport is released");
});

Deno.test("hashTap: sha-256 and count; a size mismatch at the end fails", async () => {
  const data = [bytes(10, 1), bytes(5, 2)];
  const tap = hashTap(() => {}, 15);
  await collect(source(data).pipeThrough(tap.stream));
  const h = createHash("sha256");
  for (const d of data) h.update(d);
  assert.equal(tap.digest(), h.digest("hex"));
  assert.equal(tap.bytes(), 15);
  const short = hashTap(() => {}, 16);
  await assert.rejects(collect(source(data).pipeThrough(short.stream)), /file changed while sending/);
  // The receiver also computes sha-1 (Conversations' checksum), keyed by the XEP-0300 name.
  const both = hashTap(() => {}, undefined, ["sha-1"]);
  await collect(source(data).pipeThrough(both.stream));
  const h1 = createHash("sha1");
  for (const d of data) h1.update(d);
  assert.equal(both.digests().get("sha-1"), h1.digest("hex"));
  assert.equal(both.digests().get("sha-256"), both.digest());
  assert.equal(tap.digests().get("sha-1"), undefined, "only when asked");
});

Deno.test("faultInjector: flips one bit at the offset; stops after N bytes", async () => {
  const flipped = await collect(
    source([bytes(4, 0), bytes(4, 0)]).pipeThrough(faultInjector({ flipByteAt: 5 })),
  );
  assert.deepEqual([...flipped], [0, 0, 0, 0, 0, 1, 0, 0]);
  const cut = await collect(
    source([bytes(4), bytes(4), bytes(4)]).pipeThrough(faultInjector({ stopAfter: 6 })),
  );
  assert.equal(cut.length, 6);
});

Deno.test("classify: stream errors map to Jingle reasons", () => {
  assert.equal(classify(new GcmAuthError("tag"), "receive").condition, "security-error");
  assert.equal(classify(new DownloadError("oversize", "x"), "receive").condition, "media-error");
  assert.equal(classify(new DownloadError("incomplete", "x"), "receive").condition, "failed-transport");
  assert.equal(classify(new DownloadError("write-failed", "x"), "receive").condition, "failed-application");
  assert.equal(classify(new StanzaError("item-not-found"), "send").condition, "failed-transport");
  assert.equal(classify(new Error("ENOSPC: no space left"), "receive").condition, "failed-application");
  assert.match(classify(new Error("ENOSPC: no space left"), "receive").message, /disk full/);
  const own = new TransferError("timeout", "slow");
  assert.equal(classify(own, "send"), own);
});
