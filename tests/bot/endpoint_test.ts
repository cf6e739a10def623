import assert from "node:assert/strict";
import { type ChatMessage, createEndpoint, type Endpoint, type EndpointOptions } from "../../bot/endpoint.ts";
import { startProsody } from "../../scripts/prosody.ts";
import { decodeBundle, NODE_BUNDLES_PREFIX } from "../../omemo/mod.ts";
import { retrieveItems } from "../../xmpp/mod.ts";

const quiet = { debug() {}, info() {}, warn() {}, error() {} };

function nextChat(
  endpoint: Endpoint,
  predicate: (m: ChatMessage) => boolean = () => true,
): Promise<ChatMessage> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      off();
      reject(new Error("no chat message within 10 s"));
    }, 10_000);
    const off = endpoint.onChat((m) => {
      if (!predicate(m)) return;
      clearTimeout(timer);
      off();
      resolve(m);
    });
  });
}

Deno.test({
  name: "createEndpoint() exchanges OMEMO chat on a real Prosody: both ways, carbons, restart, prekey refill",
  sanitizeOps: false,
  sanitizeResources: false,
  async fn(t) {
    const server = await startProsody();
    const tmp = await Deno.makeTempDir({ prefix: "endpoint-test-" });
    const open: Endpoint[] = [];
    const connect = async (user: string, resource: string, storeName: string) => {
      const options: EndpointOptions = {
        jid: `${user}@${server.domain}/${resource}`,
        password: "pw",
        server: { host: server.host, port: server.c2sPort },
        caPem: server.certificatePem,
        storeDir: `${tmp}/${storeName}`,
        logger: quiet,
      };
      const endpoint = await createEndpoint(options);
      open.push(endpoint);
      return endpoint;
    };
    try {
      await server.createAccount("alice", "pw");
      await server.createAccount("bob", "pw");
      const alice = await connect("alice", "phone", "alice-phone");
      const alice2 = await connect("alice", "laptop", "alice-laptop");
      let bob = await connect("bob", "bot", "bob");

      await t.step("alice → bob and bob → alice", async () => {
        const got = nextChat(bob);
        await alice.sendChat(`bob@${server.domain}`, "hello bob ✓");
        const m = await got;
        assert.equal(m.body, "hello bob ✓");
        assert.equal(m.peer, `alice@${server.domain}`);
        assert.equal(m.senderDeviceId, alice.deviceId);
        assert.equal(m.trust, "blind");
        const back = nextChat(alice);
        await bob.sendChat(`alice@${server.domain}`, "hi alice");
        assert.equal((await back).body, "hi alice");
      });

      await t.step("alice's second device decrypts the carbon of her own message", async () => {
        const carbon = nextChat(alice2, (m) => m.carbon === "sent");
        await alice.sendChat(`bob@${server.domain}`, "seen on my laptop too");
        const m = await carbon;
        assert.equal(m.body, "seen on my laptop too");
        assert.equal(m.peer, `bob@${server.domain}`);
      });

      await t.step("a consumed prekey is replaced in the published bundle", async () => {
        const before = await retrieveItems(
          alice.conn,
          `bob@${server.domain}`,
          `${NODE_BUNDLES_PREFIX}${bob.deviceId}`,
        );
        const ids = (b: typeof before) => new Set(decodeBundle(b[0]!.payload!).preKeys.map((p) => p.id));
        const idsBefore = ids(before);
        const carol = await (async () => {
          await server.createAccount("carol", "pw");
          return await connect("carol", "x", "carol");
        })();
        const got = nextChat(bob);
        await carol.sendChat(`bob@${server.domain}`, "first contact");
        await got;
        let after = idsBefore;
        for (
          let i = 0;
          i < 50 && after.size === idsBefore.size && [...idsBefore].every((id) => after.has(id));
          i++
        ) {
          await new Promise((r) => setTimeout(r, 50));
          after = ids(
            await retrieveItems(alice.conn, `bob@${server.domain}`, `${NODE_BUNDLES_PREFIX}${bob.deviceId}`),
          );
        }
        assert.equal(after.size, 100);
        const removed = [...idsBefore].filter((id) => !after.has(id));
        assert.equal(removed.length, 1, "exactly the consumed prekey left the bundle");
      });

      await t.step("a restarted client continues its sessions from disk", async () => {
        const deviceId = bob.deviceId;
        await bob.close();
        open.splice(open.indexOf(bob), 1);
        bob = await connect("bob", "bot", "bob");
        assert.equal(bob.deviceId, deviceId);
        const got = nextChat(bob);
        await alice.sendChat(`bob@${server.domain}`, "after restart");
        assert.equal((await got).body, "after restart");
        const back = nextChat(alice, (m) => m.body === "still here");
        await bob.sendChat(`alice@${server.domain}`, "still here");
        await back;
      });
    } finally {
      for (const endpoint of open) await endpoint.close().catch(() => {});
      await server.stop();
      await Deno.remove(tmp, { recursive: true });
    }
  },
});
