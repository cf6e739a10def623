/** Against a real Prosody 0.12 (scripts/prosody.ts): STARTTLS, SCRAM, disco, PEP, carbons. */
import assert from "node:assert/strict";
import { startProsody } from "../../scripts/prosody.ts";
import {
  AuthError,
  computeCapsVer,
  connectXmpp,
  type Element,
  type Logger,
  NS_CAPS,
  publish,
  queryDiscoInfo,
  retrieveItems,
  setupCarbons,
  setupDisco,
  StanzaError,
  xml,
  type XmppConnection,
} from "../../xmpp/mod.ts";

const quietLogger: Logger = { debug() {}, info() {}, warn() {}, error() {} };
const NS_TEST = "urn:test:payload";

function waitFor<T>(register: (resolve: (v: T) => void) => void, ms = 5000): Promise<T> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error("timed out waiting")), ms);
    register((v) => {
      clearTimeout(timer);
      resolve(v);
    });
  });
}

Deno.test({
  name: "xmpp client against Prosody",
  sanitizeOps: false,
  sanitizeResources: false,
  async fn(t) {
    const server = await startProsody();
    const conns: XmppConnection[] = [];
    const warnings: string[] = [];
    const connect = async (jid: string, password: string, resource: string, log = quietLogger) => {
      const c = await connectXmpp({
        jid,
        password,
        resource,
        server: { host: server.host, port: server.c2sPort },
        caPem: server.certificatePem,
        logger: log,
      });
      conns.push(c);
      return c;
    };
    try {
      const alice = await server.createAccount("alice", "alice-pw");
      const bob = await server.createAccount("bob", "bob-pw");
      const mallory = await server.createAccount("mallory", "mallory-pw");

      let a1!: XmppConnection;
      await t.step("login over STARTTLS with SCRAM-SHA-1", async () => {
        const t0 = performance.now();
        a1 = await connect(alice, "alice-pw", "a1");
        const ms = performance.now() - t0;
        console.log(`login: ${ms.toFixed(1)} ms`);
        assert.equal(a1.state, "online");
        assert.equal(a1.jid, "alice@localhost/a1");
        assert.ok(ms < 2000);
      });

      await t.step("wrong password gives AuthError", async () => {
        const err = await connect(alice, "wrong", "x").catch((e) => e);
        assert.ok(err instanceof AuthError, String(err));
        assert.equal(err.condition, "not-authorized");
        assert.ok(!String(err).includes("wrong"));
      });

      await t.step("untrusted certificate is refused without caPem", async () => {
        const err = await connectXmpp({
          jid: alice,
          password: "alice-pw",
          server: { host: server.host, port: server.c2sPort },
          logger: quietLogger,
          connectTimeoutMs: 5000,
        }).catch((e) => e);
        assert.ok(err instanceof Error);
        assert.ok(!(err instanceof AuthError));
      });

      await t.step("ping round trip is fast (TCP_NODELAY)", async () => {
        const times: number[] = [];
        for (let i = 0; i < 20; i++) {
          const t0 = performance.now();
          await a1.iq(xml("iq", { type: "get", to: "localhost" }, xml("ping", { xmlns: "urn:xmpp:ping" })));
          times.push(performance.now() - t0);
        }
        times.sort((x, y) => x - y);
        const median = times[10]!;
        console.log(`ping median: ${median.toFixed(2)} ms`);
        assert.ok(median < 10, `median ${median} ms`);
      });

      const b1 = await connect(bob, "bob-pw", "b1");

      await t.step("disco#info with registered features and caps ver", async () => {
        const disco = await setupDisco(a1, { capsNode: "urn:test:bot" });
        await disco.addFeatures("urn:xmpp:jingle:1", "urn:test:feature");
        const info = await queryDiscoInfo(b1, a1.jid);
        assert.deepEqual(info.identities.map((i) => `${i.category}/${i.type}`), ["client/bot"]);
        for (const f of ["urn:xmpp:jingle:1", "urn:test:feature", "http://jabber.org/protocol/disco#info"]) {
          assert.ok(info.features.includes(f), f);
        }
        assert.equal(await computeCapsVer(info), disco.ver());
        const viaNode = await queryDiscoInfo(b1, a1.jid, `urn:test:bot#${disco.ver()}`);
        assert.equal(await computeCapsVer(viaNode), disco.ver());
        const err = await queryDiscoInfo(b1, a1.jid, "urn:test:bot#bogus").catch((e) => e);
        assert.ok(err instanceof StanzaError && err.condition === "item-not-found");
        const c = disco.capsElement();
        assert.ok(c.is("c", NS_CAPS) && c.attrs.ver === disco.ver() && c.attrs.hash === "sha-1");
      });

      await t.step(
        "unknown IQ gets service-unavailable; throwing handler internal-server-error",
        async () => {
          const err = await b1.iq(
            xml("iq", { type: "get", to: a1.jid }, xml("nope", { xmlns: "urn:test:unknown" })),
          )
            .catch((e) => e);
          assert.ok(err instanceof StanzaError, String(err));
          assert.equal(err.condition, "service-unavailable");
          a1.handleIq("set", "boom", "urn:test:boom", () => {
            throw new Error("kaboom");
          });
          a1.handleIq(
            "get",
            "echo",
            "urn:test:echo",
            (q, ctx) => xml("echo", { xmlns: "urn:test:echo", from: ctx.from }, q.text()),
          );
          const err2 = await b1.iq(
            xml("iq", { type: "set", to: a1.jid }, xml("boom", { xmlns: "urn:test:boom" })),
          )
            .catch((e) => e);
          assert.ok(err2 instanceof StanzaError && err2.condition === "internal-server-error");
          const res = await b1.iq(
            xml("iq", { type: "get", to: a1.jid }, xml("echo", { xmlns: "urn:test:echo" }, "hi")),
          );
          const echo = res.getChild("echo", "urn:test:echo");
          assert.equal(echo?.text(), "hi");
          assert.equal(echo?.attrs.from, b1.jid);
        },
      );

      await t.step("PEP publish with access_model=open, retrieved by another account", async () => {
        const node = "urn:test:pep";
        // First publish with a restrictive model, then 'open': exercises precondition-not-met recovery.
        await publish(a1, node, xml("data", { xmlns: NS_TEST }, "v1"), {
          id: "current",
          publishOptions: { "pubsub#access_model": "presence" },
        });
        const denied = await retrieveItems(b1, alice, node).catch((e) => e);
        assert.ok(denied instanceof StanzaError, "presence-model node must not be readable by a stranger");
        const id = await publish(a1, node, xml("data", { xmlns: NS_TEST }, "v2"), {
          id: "current",
          publishOptions: { "pubsub#access_model": "open", "pubsub#max_items": "max" },
        });
        assert.equal(id, "current");
        const items = await retrieveItems(b1, alice, node, { max: 1 });
        assert.equal(items.length, 1);
        assert.equal(items[0]!.payload?.text(), "v2");
        const byId = await retrieveItems(b1, alice, node, { ids: ["current"] });
        assert.equal(byId[0]?.id, "current");
      });

      await t.step("carbons are unwrapped; forged carbons are dropped", async () => {
        const a2 = await connect(alice, "alice-pw", "a2", {
          ...quietLogger,
          warn: (m: string, d?: Record<string, unknown>) => void warnings.push(`${m} ${JSON.stringify(d)}`),
        });
        const m1 = await connect(mallory, "mallory-pw", "m1");
        setupCarbons(a1);
        setupCarbons(a2);
        await a1.sendPresence();
        await a2.sendPresence();
        // onOnline hooks run asynchronously; make sure carbons are enabled before sending.
        await new Promise((r) => setTimeout(r, 200));
        const got: Array<{ text: string; carbon?: string; from: string }> = [];
        a2.onMessage(NS_TEST, (payload: Element, ctx) => {
          got.push({ text: payload.text(), carbon: ctx.carbon, from: ctx.from });
        });
        const received = waitFor<void>((resolve) => {
          a2.onMessage(NS_TEST, (p) => {
            if (p.text() === "real") resolve();
          });
        });
        await b1.send(
          xml(
            "message",
            { to: a1.jid, type: "chat" },
            xml("body", {}, "hello"),
            xml("test", { xmlns: NS_TEST }, "real"),
          ),
        );
        await received;
        assert.deepEqual(got, [{ text: "real", carbon: "received", from: b1.jid }]);

        // Mallory forges a carbon claiming bob wrote to alice.
        await m1.send(xml(
          "message",
          { to: a2.jid, type: "chat" },
          xml(
            "received",
            { xmlns: "urn:xmpp:carbons:2" },
            xml(
              "forwarded",
              { xmlns: "urn:xmpp:forward:0" },
              xml(
                "message",
                { from: b1.jid, to: a2.jid, type: "chat" },
                xml("test", { xmlns: NS_TEST }, "forged"),
              ),
            ),
          ),
        ));
        // A direct message afterwards acts as a barrier (same route, in order).
        const barrier = waitFor<void>((resolve) => {
          a2.onMessage(NS_TEST, (p) => {
            if (p.text() === "barrier") resolve();
          });
        });
        await m1.send(
          xml("message", { to: a2.jid, type: "chat" }, xml("test", { xmlns: NS_TEST }, "barrier")),
        );
        await barrier;
        assert.ok(!got.some((g) => g.text === "forged"));
        assert.ok(warnings.some((w) => w.includes("dropping carbon")), warnings.join("\n"));
      });
    } catch (err) {
      console.error(await server.log());
      throw err;
    } finally {
      for (const c of conns) await c.close();
      await server.stop();
    }
  },
});
