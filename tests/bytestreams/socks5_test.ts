import assert from "node:assert/strict";
import {
  activateProxy,
  classifyAddress,
  connectAnyS5b,
  connectS5b,
  discoverProxy,
  listenS5b,
  type S5bConnection,
  s5bDstAddr,
  S5bError,
} from "../../bytestreams/socks5.ts";
import { freePort, startProsody } from "../../scripts/prosody.ts";
import { StanzaError, type XmppConnection } from "../../xmpp/mod.ts";
import { connectionOn } from "../bot/_support.ts";
import { loadCapture } from "../jingle/_helpers.ts";
import { drain, randomSource, sleep } from "./_streams.ts";

const NS_S5B = "urn:xmpp:jingle:transports:s5b:1";

Deno.test("s5bDstAddr reproduces both dstaddrs of Dino's S5B file transfer", () => {
  const capture = loadCapture("filetransfer-jet-omemo-s5b-alice-to-bob.alice.xml");
  const jingles = capture.map((s) => s.stanza.getChild("jingle", "urn:xmpp:jingle:1")).filter((j) => j);
  const initiate = jingles.find((j) => j!.attrs.action === "session-initiate")!;
  const accept = jingles.find((j) => j!.attrs.action === "session-accept")!;
  const initiator = initiate.attrs.initiator!;
  const responder = initiate.parent!.attrs.to!;
  assert.equal(initiator, "alice@dino.test/dino-alice");
  assert.equal(responder, "bob@dino.test/dino-bob");
  const offered = initiate.getChild("content")!.getChild("transport", NS_S5B)!;
  const answered = accept.getChild("content")!.getChild("transport", NS_S5B)!;
  assert.equal(offered.attrs.sid, answered.attrs.sid);
  const sid = offered.attrs.sid!;
  assert.equal(s5bDstAddr(sid, initiator, responder), offered.attrs.dstaddr);
  assert.equal(s5bDstAddr(sid, responder, initiator), answered.attrs.dstaddr);
});

Deno.test("classifyAddress: loopback, private, public", () => {
  for (const ip of ["127.0.0.1", "127.9.9.9", "::1", "::ffff:127.0.0.1", "[::1]"]) {
    assert.equal(classifyAddress(ip), "loopback", ip);
  }
  for (
    const ip of [
      "10.0.0.1",
      "172.16.0.1",
      "172.31.255.255",
      "192.168.1.1",
      "169.254.1.1",
      "fd00::2",
      "fe80::1%eth0",
    ]
  ) {
    assert.equal(classifyAddress(ip), "private", ip);
  }
  for (const ip of ["192.0.2.2", "172.32.0.1", "8.8.8.8", "2001:db8::1"]) {
    assert.equal(classifyAddress(ip), "public", ip);
  }
});

/** Writes `source` into a connection and half-closes it. */
async function pump(source: ReadableStream<Uint8Array>, conn: S5bConnection): Promise<void> {
  await source.pipeTo(conn.writable);
}

async function expectS5bError(promise: Promise<unknown>, code: S5bError["code"], message?: RegExp) {
  await assert.rejects(promise, (err: unknown) => {
    assert.ok(err instanceof S5bError, `expected S5bError, got ${err}`);
    assert.equal(err.code, code, err.message);
    if (message) assert.match(err.message, message);
    return true;
  });
}

/** Resolves true when the server closes a raw TCP connection (read gives EOF or an error). */
async function closedByPeer(conn: Deno.TcpConn, guardMs = 10_000): Promise<boolean> {
  const buffer = new Uint8Array(64);
  const read = (async () => {
    try {
      while (true) {
        const n = await conn.read(buffer);
        if (n === null) return true;
      }
    } catch {
      return true;
    }
  })();
  // Guard only so a broken server cannot hang the test; the assertion is about being closed at all.
  const result = await Promise.race([read, sleep(guardMs).then(() => false)]);
  conn.close();
  return result;
}

Deno.test({
  name: "SOCKS5 direct candidates on loopback: round trip, wrong dstaddr, slowloris, refused, timeout, SSRF",
  sanitizeOps: false,
  sanitizeResources: false,
  async fn(t) {
    const dstaddr = s5bDstAddr("sid-1", "alice@localhost/a", "bob@localhost/b");

    await t.step("10 MiB one way and a reply the other way, sha-256 equal", async () => {
      const listener = await listenS5b({ dstaddr, hostnames: ["127.0.0.1"] });
      try {
        assert.equal(listener.candidates.length, 1);
        const { host, port } = listener.candidates[0]!;
        assert.equal(host, "127.0.0.1");
        const [client, served] = await Promise.all([connectS5b(host, port, dstaddr), listener.accept()]);
        assert.equal(served.local, `127.0.0.1:${port}`);
        assert.equal(client.remote, `127.0.0.1:${port}`);
        const source = randomSource(10 * 1024 * 1024);
        const reply = randomSource(1000);
        const [, received, , replied] = await Promise.all([
          pump(source.stream, client),
          drain(served.readable),
          pump(reply.stream, served),
          drain(client.readable),
        ]);
        assert.equal(received.error, undefined);
        assert.equal(received.bytes, 10 * 1024 * 1024);
        assert.equal(received.sha256, source.digest());
        assert.equal(replied.bytes, 1000);
        assert.equal(replied.sha256, reply.digest());
        client.close();
        served.close();
      } finally {
        listener.close();
      }
    });

    await t.step("the default hostnames include loopback, each with a candidate", async () => {
      const listener = await listenS5b({ dstaddr });
      try {
        assert.equal(listener.candidates[0]!.host, "127.0.0.1");
        assert.ok(listener.candidates.every((c) => c.port > 0));
        const conn = await connectS5b("127.0.0.1", listener.candidates[0]!.port, dstaddr);
        const served = await listener.accept();
        conn.close();
        served.close();
      } finally {
        listener.close();
      }
    });

    await t.step("wrong dstaddr → SOCKS5 failure reply, never accepted", async () => {
      const listener = await listenS5b({ dstaddr, hostnames: ["127.0.0.1"] });
      try {
        const { host, port } = listener.candidates[0]!;
        const other = s5bDstAddr("sid-2", "alice@localhost/a", "bob@localhost/b");
        await expectS5bError(connectS5b(host, port, other), "refused", /failure reply 2/);
        assert.equal(listener.ready.length, 0);
        // The right one still works afterwards.
        const conn = await connectS5b(host, port, dstaddr);
        assert.equal((await listener.accept()).remote, conn.local);
        conn.close();
      } finally {
        listener.close();
      }
    });

    await t.step("slow or silent clients are dropped after the handshake timeout", async () => {
      const listener = await listenS5b({ dstaddr, hostnames: ["127.0.0.1"], handshakeTimeoutMs: 200 });
      try {
        const { port } = listener.candidates[0]!;
        const silent = await Deno.connect({ hostname: "127.0.0.1", port });
        assert.ok(await closedByPeer(silent), "silent client must be closed");
        const partial = await Deno.connect({ hostname: "127.0.0.1", port });
        await partial.write(new Uint8Array([5, 1])); // greeting without its method list
        assert.ok(await closedByPeer(partial), "half-greeting client must be closed");
        const notSocks = await Deno.connect({ hostname: "127.0.0.1", port });
        await notSocks.write(new TextEncoder().encode("GET / HTTP/1.1\r\n\r\n"));
        assert.ok(await closedByPeer(notSocks), "non-SOCKS client must be closed");
        assert.equal(listener.ready.length, 0);
      } finally {
        listener.close();
      }
    });

    await t.step(
      "accept() can be aborted; close() drops connections not taken and ends accepts",
      async () => {
        const listener = await listenS5b({ dstaddr, hostnames: ["127.0.0.1"] });
        const controller = new AbortController();
        const waiting = listener.accept(controller.signal);
        controller.abort();
        await expectS5bError(waiting, "aborted");
        const client = await connectS5b("127.0.0.1", listener.candidates[0]!.port, dstaddr);
        while (listener.ready.length === 0) await sleep(10);
        listener.close();
        const result = await drain(client.readable);
        assert.equal(result.bytes, 0);
        client.close();
        await expectS5bError(listener.accept(), "aborted");
        const other = await listenS5b({ dstaddr, hostnames: ["127.0.0.1"] });
        const pending = other.accept();
        other.close();
        await expectS5bError(pending, "aborted", /listener closed/);
      },
    );

    await t.step("connection refused → clear error", async () => {
      await expectS5bError(connectS5b("127.0.0.1", freePort(), dstaddr), "refused", /refused/);
    });

    await t.step("a server that never answers the greeting → timeout", async () => {
      const mute = Deno.listen({ hostname: "127.0.0.1", port: 0 });
      const held: Deno.Conn[] = [];
      (async () => {
        for await (const c of mute) held.push(c);
      })().catch(() => {});
      try {
        await expectS5bError(
          connectS5b("127.0.0.1", (mute.addr as Deno.NetAddr).port, dstaddr, { timeoutMs: 200 }),
          "timeout",
        );
        const controller = new AbortController();
        const connecting = connectS5b("127.0.0.1", (mute.addr as Deno.NetAddr).port, dstaddr, {
          signal: controller.signal,
        });
        await sleep(50);
        controller.abort();
        await expectS5bError(connecting, "aborted");
      } finally {
        mute.close();
        for (const c of held) c.close();
      }
    });

    await t.step("connectAnyS5b: skips failing candidates, reports all failures", async () => {
      const good = await listenS5b({ dstaddr, hostnames: ["127.0.0.1"] });
      const wrong = await listenS5b({
        dstaddr: s5bDstAddr("other", "a@localhost/a", "b@localhost/b"),
        hostnames: ["127.0.0.1"],
      });
      try {
        const refused = { host: "127.0.0.1", port: freePort() };
        const { index, connection } = await connectAnyS5b(
          [refused, wrong.candidates[0]!, good.candidates[0]!],
          dstaddr,
          { concurrency: 1 },
        );
        assert.equal(index, 2);
        assert.equal((await good.accept()).remote, connection.local);
        connection.close();
        await expectS5bError(
          connectAnyS5b([refused, wrong.candidates[0]!], dstaddr),
          "refused",
          /no candidate worked: .*refused.*failure reply 2/,
        );
        await expectS5bError(connectAnyS5b([], dstaddr), "refused");
      } finally {
        good.close();
        wrong.close();
      }
    });

    await t.step("connectAnyS5b never has more than `concurrency` connections open", async () => {
      const mute = Deno.listen({ hostname: "127.0.0.1", port: 0 });
      const held: Deno.Conn[] = [];
      (async () => {
        for await (const c of mute) held.push(c);
      })().catch(() => {});
      const candidate = { host: "127.0.0.1", port: (mute.addr as Deno.NetAddr).port };
      const controller = new AbortController();
      try {
        const connecting = connectAnyS5b([candidate, candidate, candidate, candidate, candidate], dstaddr, {
          concurrency: 2,
          timeoutMs: 60_000,
          signal: controller.signal,
        });
        while (held.length < 2) await sleep(10);
        await sleep(300);
        assert.equal(held.length, 2);
        controller.abort();
        await expectS5bError(connecting, "aborted");
      } finally {
        mute.close();
        for (const c of held) c.close();
      }
    });

    await t.step("allowLoopback/allowPrivate false refuse such candidates before connecting", async () => {
      const listener = await listenS5b({ dstaddr, hostnames: ["127.0.0.1"] });
      try {
        const { port } = listener.candidates[0]!;
        await expectS5bError(connectS5b("127.0.0.1", port, dstaddr, { allowLoopback: false }), "forbidden");
        await expectS5bError(connectS5b("localhost", port, dstaddr, { allowLoopback: false }), "forbidden");
        await expectS5bError(connectS5b("::1", port, dstaddr, { allowLoopback: false }), "forbidden");
        await expectS5bError(connectS5b("192.168.0.10", port, dstaddr, { allowPrivate: false }), "forbidden");
        assert.equal(listener.ready.length, 0);
      } finally {
        listener.close();
      }
    });
  },
});

Deno.test({
  name: "SOCKS5 through Prosody's mod_proxy65: discovery, activation, 10 MiB, refused activations",
  sanitizeOps: false,
  sanitizeResources: false,
  async fn(t) {
    const server = await startProsody();
    const conns: XmppConnection[] = [];
    const login = async (user: string) => {
      const conn = await connectionOn(server, user, "s5b");
      conns.push(conn);
      return conn;
    };
    try {
      const alice = await login("alice");
      const bob = await login("bob");
      const carol = await login("carol");

      const proxy = await discoverProxy(alice);
      await t.step("discoverProxy finds proxy.<domain> with its address", () => {
        assert.deepEqual(proxy, { jid: server.proxyJid, host: "127.0.0.1", port: server.proxy65Port });
      });
      assert.ok(proxy);

      await t.step(
        "alice (requester) → bob (target): both connect, alice activates, 10 MiB flow",
        async () => {
          const sid = "proxy-sid-1";
          const dstaddr = s5bDstAddr(sid, alice.jid, bob.jid);
          const target = await connectS5b(proxy.host, proxy.port, dstaddr);
          const requester = await connectS5b(proxy.host, proxy.port, dstaddr);
          await activateProxy(alice, proxy.jid, sid, bob.jid);
          const source = randomSource(10 * 1024 * 1024);
          const [, received] = await Promise.all([pump(source.stream, requester), drain(target.readable)]);
          assert.equal(received.error, undefined);
          assert.equal(received.bytes, 10 * 1024 * 1024);
          assert.equal(received.sha256, source.digest());
          requester.close();
          target.close();
        },
      );

      await t.step(
        "activation with a wrong sid, by a third party, or too early → stanza errors",
        async () => {
          const sid = "proxy-sid-2";
          const dstaddr = s5bDstAddr(sid, alice.jid, bob.jid);
          const target = await connectS5b(proxy.host, proxy.port, dstaddr);
          // Only one side connected: the proxy refuses.
          await assert.rejects(activateProxy(alice, proxy.jid, sid, bob.jid), (err: unknown) => {
            assert.ok(err instanceof StanzaError);
            assert.equal(err.condition, "not-allowed");
            return true;
          });
          const requester = await connectS5b(proxy.host, proxy.port, dstaddr);
          for (
            const [who, asSid] of [[alice, "proxy-sid-wrong"], [carol, sid], [bob, sid]] as const
          ) {
            await assert.rejects(activateProxy(who, proxy.jid, asSid, bob.jid), (err: unknown) => {
              assert.ok(err instanceof StanzaError);
              assert.equal(err.condition, "item-not-found");
              return true;
            });
          }
          await activateProxy(alice, proxy.jid, sid, bob.jid);
          const writer = requester.writable.getWriter();
          await writer.write(new TextEncoder().encode("hello"));
          await writer.close();
          const received = await drain(target.readable);
          assert.equal(received.bytes, 5);
          requester.close();
          target.close();
        },
      );
    } finally {
      for (const conn of conns) await conn.close();
      await server.stop();
    }
  },
});
