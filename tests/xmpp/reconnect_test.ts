import assert from "node:assert/strict";
import { type ConnectionState, connectXmpp, xml } from "../../xmpp/mod.ts";
import { freePort, startProsody } from "../../scripts/prosody.ts";
import { createEndpoint, type Endpoint } from "../../bot/endpoint.ts";

const quiet = { debug() {}, info() {}, warn() {}, error() {} };

function waitForState(
  subscribe: (l: (s: ConnectionState) => void) => () => void,
  wanted: ConnectionState,
  timeoutMs = 15_000,
): Promise<void> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      off();
      reject(new Error(`state ${wanted} not reached in ${timeoutMs} ms`));
    }, timeoutMs);
    const off = subscribe((s) => {
      if (s !== wanted) return;
      clearTimeout(timer);
      off();
      resolve();
    });
  });
}

Deno.test("connectXmpp() fails with a clear error when no server listens", async () => {
  const port = freePort();
  const started = performance.now();
  await assert.rejects(
    connectXmpp({
      jid: "nobody@localhost",
      password: "x",
      server: { host: "127.0.0.1", port },
      reconnect: false,
      connectTimeoutMs: 5000,
      logger: quiet,
    }),
    (err: Error) => {
      assert.match(err.message, /ECONNREFUSED|refused|connect/i);
      return true;
    },
  );
  assert.ok(performance.now() - started < 5000, "fails fast instead of hanging");
});

Deno.test({
  name: "an endpoint survives a Prosody restart: reconnects, re-announces, and OMEMO chat continues",
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    const server = await startProsody();
    const tmp = await Deno.makeTempDir({ prefix: "reconnect-test-" });
    const endpoints: Endpoint[] = [];
    try {
      for (const user of ["alice", "bob"]) await server.createAccount(user, "pw");
      const connect = async (user: string) => {
        const endpoint = await createEndpoint({
          jid: `${user}@${server.domain}/r`,
          password: "pw",
          server: { host: server.host, port: server.c2sPort },
          caPem: server.certificatePem,
          storeDir: `${tmp}/${user}`,
          logger: quiet,
          reconnect: { initialDelayMs: 100, maxDelayMs: 500 },
        });
        endpoints.push(endpoint);
        return endpoint;
      };
      const alice = await connect("alice");
      const bob = await connect("bob");
      const states: ConnectionState[] = [];
      alice.conn.onStateChange((s) => states.push(s));
      const aliceBack = waitForState((l) => alice.conn.onStateChange(l), "online");
      const bobBack = waitForState((l) => bob.conn.onStateChange(l), "online");
      await server.kill();
      await new Promise((r) => setTimeout(r, 300));
      await server.restart();
      await Promise.all([aliceBack, bobBack]);
      assert.ok(states.includes("reconnecting"), `went through reconnecting: ${states.join(",")}`);
      // The session works again: an IQ round trip and an OMEMO message.
      await alice.conn.iq(
        xml("iq", { type: "get", to: server.domain }, xml("ping", { xmlns: "urn:xmpp:ping" })),
      );
      const got = new Promise<string>((resolve) => bob.onChat((m) => resolve(m.body)));
      await alice.sendChat(`bob@${server.domain}`, "after the server came back");
      assert.equal(await got, "after the server came back");
    } finally {
      for (const endpoint of endpoints) await endpoint.close().catch(() => {});
      await server.stop();
      await Deno.remove(tmp, { recursive: true });
    }
  },
});
