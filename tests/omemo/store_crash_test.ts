import assert from "node:assert/strict";
import { OmemoStore, OmemoStoreCorruptError, OmemoStoreLockedError } from "../../omemo/store.ts";
import { preKey, record, SESSION } from "./_store_writer.ts";

const WRITER = new URL("./_store_writer.ts", import.meta.url).pathname;

interface Child {
  process: Deno.ChildProcess;
  /** Lines printed so far. */
  lines: string[];
  /** Resolves with the first line matching. */
  line(predicate: (l: string) => boolean, ms?: number): Promise<string>;
  done: Promise<void>;
}

function spawnWriter(mode: "write" | "hold", dir: string): Child {
  const process = new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", "--no-check", WRITER, mode, dir],
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const lines: string[] = [];
  const waiters = new Set<() => void>();
  const done = (async () => {
    let buf = "";
    for await (const chunk of process.stdout.pipeThrough(new TextDecoderStream())) {
      buf += chunk;
      const parts = buf.split("\n");
      buf = parts.pop()!;
      lines.push(...parts);
      for (const w of waiters) w();
    }
  })();
  const stderr = (async () => {
    let s = "";
    for await (const chunk of process.stderr.pipeThrough(new TextDecoderStream())) s += chunk;
    return s;
  })();
  const line = (predicate: (l: string) => boolean, ms = 15_000) =>
    new Promise<string>((resolve, reject) => {
      const check = () => {
        const hit = lines.find(predicate);
        if (hit === undefined) return;
        clearTimeout(timer);
        waiters.delete(check);
        resolve(hit);
      };
      const timer = setTimeout(async () => {
        waiters.delete(check);
        reject(new Error(`child printed no matching line within ${ms} ms; stderr: ${await stderr}`));
      }, ms);
      waiters.add(check);
      check();
    });
  return { process, lines, line, done: Promise.all([done, stderr]).then(() => {}) };
}

async function killHard(child: Child): Promise<void> {
  try {
    child.process.kill("SIGKILL");
  } catch {
    // already gone
  }
  await child.process.status;
  await child.done;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const b64 = (b: ArrayBuffer) => btoa(String.fromCharCode(...new Uint8Array(b)));

/** Counter held by the store, after checking that session and prekey are the same, untorn, step. */
async function readCounter(store: OmemoStore): Promise<number> {
  const raw = await store.loadSession(SESSION);
  if (raw === undefined) {
    assert.equal(await store.loadPreKey(1), undefined, "prekey without session: torn transaction");
    return 0;
  }
  const n = (JSON.parse(raw) as { n: number }).n;
  assert.equal(raw, record(n), `session record of ${n} is intact`);
  const pk = await store.loadPreKey(1);
  assert.ok(pk, "prekey present with the session");
  const want = preKey(n);
  assert.equal(b64(pk.pubKey), b64(want.pubKey), `prekey belongs to counter ${n}`);
  assert.equal(b64(pk.privKey), b64(want.privKey), `prekey belongs to counter ${n}`);
  return n;
}

Deno.test({
  name: "OmemoStore survives SIGKILL during writes: never torn, identity kept",
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    const dir = await Deno.makeTempDir({ prefix: "store-crash-" });
    try {
      const ik = {
        pubKey: crypto.getRandomValues(new Uint8Array(33)).buffer,
        privKey: crypto.getRandomValues(new Uint8Array(32)).buffer,
      };
      const first = await OmemoStore.open(dir);
      await first.setIdentity(ik, 4242, 31337);
      await first.close();

      let counter = 0;
      let progressed = 0;
      for (let round = 0; round < 20; round++) {
        const child = spawnWriter("write", dir);
        const ready = await child.line((l) => l.startsWith("ready"));
        assert.equal(ready, `ready ${counter}`, "the child sees the last verified counter");
        await sleep(5 + Math.floor(Math.random() * 76));
        await killHard(child);
        const printed = child.lines.filter((l) => /^\d+$/.test(l)).map(Number);
        const lastPrinted = printed.at(-1) ?? counter;

        const store = await OmemoStore.open(dir);
        try {
          assert.equal(store.getDeviceId(), 31337);
          assert.equal(await store.getLocalRegistrationId(), 4242);
          const kp = (await store.getIdentityKeyPair())!;
          assert.equal(b64(kp.pubKey), b64(ik.pubKey), "identity key unchanged");
          assert.equal(b64(kp.privKey), b64(ik.privKey), "identity key unchanged");
          const n = await readCounter(store);
          // Committed-and-printed, or committed with the print lost to the kill: never older, never torn.
          assert.ok(
            n === lastPrinted || n === lastPrinted + 1,
            `counter ${n} after last printed ${lastPrinted}`,
          );
          const leftovers = [...Deno.readDirSync(dir)].filter((e) => e.name.endsWith(".tmp"));
          assert.deepEqual(leftovers, [], "temp files of interrupted writes are cleaned up on open");
          if (n > counter) progressed++;
          counter = n;
        } finally {
          await store.close();
        }
      }
      assert.ok(progressed > 0, "the writer committed something before being killed");
      const st = await Deno.stat(`${dir}/state.json`);
      assert.equal(st.mode! & 0o777, 0o600);
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
});

Deno.test({
  name: "OmemoStore: truncated or empty file is an OmemoStoreCorruptError, never a fresh identity",
  async fn() {
    const dir = await Deno.makeTempDir({ prefix: "store-corrupt-" });
    try {
      const s = await OmemoStore.open(dir);
      await s.setIdentity(
        { pubKey: new Uint8Array(33).fill(5).buffer, privKey: new Uint8Array(32).fill(1).buffer },
        7,
        8,
      );
      await s.storeSession(SESSION, record(3));
      await s.close();
      const good = await Deno.readFile(`${dir}/state.json`);
      const cases: [string, Uint8Array][] = [
        ["truncated to half", good.subarray(0, good.length >> 1)],
        ["truncated by one byte", good.subarray(0, good.length - 1)],
        ["zero bytes", new Uint8Array()],
        ["valid JSON, not a store", new TextEncoder().encode("{}")],
      ];
      for (const [what, bytes] of cases) {
        await Deno.writeFile(`${dir}/state.json`, bytes);
        await assert.rejects(OmemoStore.open(dir), OmemoStoreCorruptError, what);
        assert.deepEqual(await Deno.readFile(`${dir}/state.json`), bytes, `${what}: file left alone`);
        // The failed open released its lock.
        await assert.rejects(Deno.stat(`${dir}/lock`), Deno.errors.NotFound);
      }
      await Deno.writeFile(`${dir}/state.json`, good);
      const again = await OmemoStore.open(dir);
      assert.equal(again.getDeviceId(), 8);
      await again.close();
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
});

Deno.test({
  name: "OmemoStore: a second process (or instance) is locked out; modes 0600/0700",
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    const parent = await Deno.makeTempDir({ prefix: "store-lock-" });
    const dir = `${parent}/store`;
    try {
      // A pre-existing, too-open directory is tightened.
      await Deno.mkdir(dir, { mode: 0o755 });
      await Deno.chmod(dir, 0o755);
      const child = spawnWriter("hold", dir);
      try {
        await child.line((l) => l === "ready");
        await assert.rejects(OmemoStore.open(dir), (e: unknown) => {
          assert.ok(e instanceof OmemoStoreLockedError, String(e));
          assert.match(e.message, new RegExp(`locked by pid ${child.process.pid}`));
          return true;
        });
        assert.equal((await Deno.stat(dir)).mode! & 0o777, 0o700);
        assert.equal((await Deno.stat(`${dir}/state.json`)).mode! & 0o777, 0o600);
        assert.equal((await Deno.stat(`${dir}/lock`)).mode! & 0o777, 0o600);
      } finally {
        await killHard(child);
      }
      // The dead holder's lock is stale and taken over; a second instance in this process is refused.
      const store = await OmemoStore.open(dir);
      try {
        await assert.rejects(OmemoStore.open(dir), OmemoStoreLockedError);
        await store.storeSession(SESSION, record(1));
        for (const entry of Deno.readDirSync(dir)) {
          const mode = Deno.statSync(`${dir}/${entry.name}`).mode! & 0o777;
          assert.equal(mode, 0o600, `${entry.name} is 0600`);
        }
        assert.equal((await Deno.stat(dir)).mode! & 0o777, 0o700);
      } finally {
        await store.close();
      }
    } finally {
      await Deno.remove(parent, { recursive: true });
    }
  },
});
