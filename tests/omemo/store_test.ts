/**
 * OmemoStore writes: deferred (write-behind) changes, their coalescing with the next write, flush/close, and writes
 * that never overlap. Real files in a temp directory.
 */
import assert from "node:assert/strict";
import { DEFERRED_WRITE_MS, OmemoStore } from "../../omemo/store.ts";

const onDisk = async (
  dir: string,
): Promise<{ sessions: Record<string, string>; deviceLists: Record<string, number[]> }> =>
  JSON.parse(await Deno.readTextFile(`${dir}/state.json`));

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function withStore(fn: (store: OmemoStore, dir: string) => Promise<void>): Promise<void> {
  const dir = await Deno.makeTempDir({ prefix: "store-test-" });
  const store = await OmemoStore.open(dir);
  try {
    await fn(store, dir);
  } finally {
    await store.close();
    await Deno.remove(dir, { recursive: true });
  }
}

Deno.test("OmemoStore: a durable transaction is on disk when it returns", async () => {
  await withStore(async (store, dir) => {
    await store.transaction(() => store.storeSession("a@example.org.1", "durable"));
    assert.equal((await onDisk(dir)).sessions["a@example.org.1"], "durable");
  });
});

Deno.test("OmemoStore: a deferred change goes to disk by itself, within DEFERRED_WRITE_MS", async () => {
  await withStore(async (store, dir) => {
    await store.transaction(() => store.storeSession("a@example.org.1", "deferred"), {
      deferWrite: () => true,
    });
    assert.equal(await store.loadSession("a@example.org.1"), "deferred", "visible in memory at once");
    assert.equal((await onDisk(dir)).sessions["a@example.org.1"], undefined, "not written yet");
    await sleep(DEFERRED_WRITE_MS + 150);
    assert.equal((await onDisk(dir)).sessions["a@example.org.1"], "deferred");
  });
});

Deno.test("OmemoStore: the next durable write carries a deferred change along (one write, not two)", async () => {
  await withStore(async (store, dir) => {
    await store.transaction(() => store.storeSession("a@example.org.1", "deferred"), {
      deferWrite: () => true,
    });
    await store.transaction(() => store.storeSession("b@example.org.2", "durable"));
    const disk = await onDisk(dir);
    assert.equal(disk.sessions["a@example.org.1"], "deferred");
    assert.equal(disk.sessions["b@example.org.2"], "durable");
    // Nothing left pending: the timer was cancelled, so no further write rewrites the file.
    const before = (await Deno.stat(`${dir}/state.json`)).mtime!.getTime();
    const inode = (await Deno.stat(`${dir}/state.json`)).ino;
    await sleep(DEFERRED_WRITE_MS + 150);
    const after = await Deno.stat(`${dir}/state.json`);
    assert.equal(after.ino, inode, "no later rewrite (each write renames a new file into place)");
    assert.equal(after.mtime!.getTime(), before);
  });
});

Deno.test("OmemoStore: flush() and close() write a deferred change at once", async () => {
  const dir = await Deno.makeTempDir({ prefix: "store-test-" });
  try {
    let store = await OmemoStore.open(dir);
    await store.transaction(() => store.storeSession("a@example.org.1", "one"), { deferWrite: () => true });
    await store.flush();
    assert.equal((await onDisk(dir)).sessions["a@example.org.1"], "one");
    await store.transaction(() => store.storeSession("a@example.org.1", "two"), { deferWrite: () => true });
    await store.close();
    assert.equal((await onDisk(dir)).sessions["a@example.org.1"], "two", "close() saved the deferred change");
    store = await OmemoStore.open(dir);
    assert.equal(await store.loadSession("a@example.org.1"), "two");
    await store.close();
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("OmemoStore: a failed transaction writes nothing and keeps a pending deferred change", async () => {
  await withStore(async (store, dir) => {
    await store.transaction(() => store.storeSession("a@example.org.1", "deferred"), {
      deferWrite: () => true,
    });
    await assert.rejects(
      store.transaction(async () => {
        await store.storeSession("b@example.org.2", "rolled back");
        throw new Error("boom");
      }),
      /boom/,
    );
    assert.equal(await store.loadSession("b@example.org.2"), undefined);
    assert.equal(await store.loadSession("a@example.org.1"), "deferred");
    await store.flush();
    const disk = await onDisk(dir);
    assert.equal(disk.sessions["a@example.org.1"], "deferred");
    assert.equal(disk.sessions["b@example.org.2"], undefined);
  });
});

Deno.test("OmemoStore: writes never overlap, the file ends with the newest state", async () => {
  await withStore(async (store, dir) => {
    // Outside a transaction every change writes; fired together, an older write renamed after a newer one would
    // leave stale state on disk.
    await Promise.all(Array.from({ length: 30 }, (_, i) => store.setDeviceList("c@example.org", [i + 1])));
    assert.deepEqual((await onDisk(dir)).deviceLists["c@example.org"], [30]);
    const leftovers = [...Deno.readDirSync(dir)].filter((e) => e.name.endsWith(".tmp"));
    assert.deepEqual(leftovers, []);
  });
});
