/**
 * `deno task trust`: OMEMO trust decisions on a real key store, run as the command a user types (a subprocess),
 * and its argument parser.
 */
import assert from "node:assert/strict";
import { parseTrustArgs, TrustUsageError } from "../../bot/trust.ts";
import { formatFingerprint, OmemoStore } from "../../omemo/mod.ts";

const TOOL = new URL("../../bot/trust.ts", import.meta.url).pathname;
const PEER = "peer@example.org";

async function trust(...args: string[]): Promise<{ code: number; out: string; err: string }> {
  const r = await new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", TOOL, ...args],
    stdout: "piped",
    stderr: "piped",
  })
    .output();
  const dec = new TextDecoder();
  return { code: r.code, out: dec.decode(r.stdout), err: dec.decode(r.stderr) };
}

function identityKey(): Uint8Array {
  const k = crypto.getRandomValues(new Uint8Array(33));
  k[0] = 5;
  return k;
}

Deno.test("trust: argument parsing", () => {
  assert.deepEqual(parseTrustArgs(["--store", "/s", "own"]), { kind: "own", storeDir: "/s" });
  assert.deepEqual(parseTrustArgs(["--jid", "Bot@Example.org/x", "list", "a@b.c/r"]), {
    kind: "list",
    storeDir: "./.callbot/bot@example.org",
    jid: "a@b.c",
  });
  const fp = "0123abcd".repeat(8);
  assert.deepEqual(parseTrustArgs(["--store=/s", "verify", PEER, ...fp.toUpperCase().match(/.{8}/g)!]), {
    kind: "set",
    storeDir: "/s",
    jid: PEER,
    fingerprint: fp,
    trust: "verified",
  });
  for (
    const bad of [
      ["own"], // no store
      ["--store", "/s"], // no command
      ["--store", "/s", "trust", PEER],
      ["--store", "/s", "list"],
      ["--store", "/s", "verify", PEER, "abc"],
      ["--store", "/s", "--bogus", "own"],
      ["--store"],
    ]
  ) assert.throws(() => parseTrustArgs(bad), TrustUsageError, bad.join(" "));
});

Deno.test({
  name: "trust: list, verify and distrust a peer's devices in the bot's store; errors change nothing",
  // the subprocesses are awaited; Deno.Command's own bookkeeping trips the sanitizers
  sanitizeResources: false,
  sanitizeOps: false,
  async fn() {
    const dir = await Deno.makeTempDir({ prefix: "trust-test-" });
    try {
      const k1 = identityKey(), k2 = identityKey(), own = identityKey();
      let store = await OmemoStore.open(dir);
      await store.setIdentity({ pubKey: own.buffer as ArrayBuffer, privKey: new ArrayBuffer(32) }, 77, 4711);
      await store.rememberIdentity(PEER, 11, k1);
      await store.rememberIdentity(PEER, 12, k2);
      await store.close();

      let r = await trust("--store", dir, "own");
      assert.equal(r.code, 0, r.err);
      assert.equal(r.out.trim(), `device 4711  ${formatFingerprint(own)}`);

      r = await trust("--store", dir, "list", PEER);
      assert.equal(r.code, 0, r.err);
      assert.match(r.out, new RegExp(`device 11  ${formatFingerprint(k1)}  blind`));
      assert.match(r.out, new RegExp(`device 12  ${formatFingerprint(k2)}  blind`));

      // As pasted from a client: groups of 8, upper case.
      r = await trust("--store", dir, "verify", PEER, ...formatFingerprint(k1).toUpperCase().split(" "));
      assert.equal(r.code, 0, r.err);
      assert.match(r.out, /device 11: blind → verified/);
      r = await trust("--store", dir, "distrust", `${PEER}/phone`, formatFingerprint(k2).replaceAll(" ", ""));
      assert.equal(r.code, 0, r.err);

      store = await OmemoStore.open(dir);
      assert.equal(store.getIdentity(PEER, 11)?.trust, "verified");
      assert.equal(store.getIdentity(PEER, 12)?.trust, "untrusted");

      // While the bot (here: this process) holds the store: refused, nothing changed.
      r = await trust("--store", dir, "verify", PEER, formatFingerprint(k2));
      assert.equal(r.code, 1);
      assert.match(r.err, /in use \(stop the bot first\)/);
      await store.close();

      r = await trust("--store", dir, "verify", PEER, formatFingerprint(identityKey()));
      assert.equal(r.code, 1);
      assert.match(r.err, /no device of peer@example\.org with that fingerprint \(2 seen/);
      r = await trust("--store", dir, "verify", PEER, "xyz");
      assert.equal(r.code, 2);
      assert.match(r.err, /64-hex-digit/);
      r = await trust("--store", `${dir}/nothing-here`, "own");
      assert.equal(r.code, 1);
      assert.match(r.err, /no OMEMO store in/);

      store = await OmemoStore.open(dir);
      assert.equal(store.getIdentity(PEER, 11)?.trust, "verified");
      assert.equal(store.getIdentity(PEER, 12)?.trust, "untrusted");
      await store.close();
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
});
