/**
 * Child process for store_crash_test.ts (not a test itself).
 *
 * `deno run -A _store_writer.ts write <dir>`: opens the store, continues the counter kept in it and
 * commits counter-derived session + prekey records forever, printing each committed counter.
 * `deno run -A _store_writer.ts hold <dir>`: opens the store, prints "ready" and waits.
 *
 * @module
 */
import { OmemoStore } from "../../omemo/store.ts";

export const SESSION = "peer@example.org.7";

/** The session record of counter `n`: self-describing and growing/shrinking in size. */
export function record(n: number): string {
  return JSON.stringify({ n, pad: "x".repeat(200 + (n % 37) * 3000) });
}

/** The prekey of counter `n` (pub/priv derived from `n`). */
export function preKey(n: number): { pubKey: ArrayBuffer; privKey: ArrayBuffer } {
  const pub = new Uint8Array(33).fill(n & 0xff);
  pub[0] = 5;
  new DataView(pub.buffer).setUint32(1, n);
  const priv = new Uint8Array(32).fill((n * 7) & 0xff);
  new DataView(priv.buffer).setUint32(0, n);
  return { pubKey: pub.buffer, privKey: priv.buffer };
}

if (import.meta.main) {
  const [mode, dir] = Deno.args;
  if (!dir) throw new Error("usage: _store_writer.ts write|hold <dir>");
  const store = await OmemoStore.open(dir);
  if (mode === "hold") {
    console.log("ready");
    await new Promise(() => {});
  }
  const current = await store.loadSession(SESSION);
  let n = current === undefined ? 0 : (JSON.parse(current) as { n: number }).n;
  console.log(`ready ${n}`);
  for (;;) {
    n++;
    await store.transaction(async () => {
      await store.storeSession(SESSION, record(n));
      await store.storePreKey(1, preKey(n));
    });
    console.log(String(n));
  }
}
