import assert from "node:assert/strict";
import {
  buildIbbClose,
  buildIbbData,
  buildIbbOpen,
  IbbError,
  IbbParseError,
  ibbReceive,
  ibbSend,
  NS_IBB,
  parseIbb,
} from "../../bytestreams/ibb.ts";
import { startProsody } from "../../scripts/prosody.ts";
import { type Element, StanzaError, xml, type XmppConnection } from "../../xmpp/mod.ts";
import { connectionOn } from "../bot/_support.ts";
import { drain, endlessSource, randomSource, sleep } from "./_streams.ts";

const b64 = (bytes: Uint8Array) => btoa(String.fromCharCode(...bytes));

Deno.test("IBB codec: open/data/close round trip, seq wraps, bad input refused", () => {
  assert.deepEqual(parseIbb(buildIbbOpen("s1", 4096)), {
    kind: "open",
    sid: "s1",
    blockSize: 4096,
    stanza: "iq",
  });
  assert.equal(buildIbbOpen("s1", 4096).attrs.stanza, "iq");
  const bytes = new Uint8Array([0, 1, 2, 250, 255]);
  assert.deepEqual(parseIbb(buildIbbData("s1", 7, bytes)), { kind: "data", sid: "s1", seq: 7, data: bytes });
  assert.equal(buildIbbData("s1", 65535, bytes).attrs.seq, "65535");
  assert.equal(buildIbbData("s1", 65536, bytes).attrs.seq, "0");
  assert.deepEqual(parseIbb(buildIbbClose("s1")), { kind: "close", sid: "s1" });
  // Peers omit stanza='iq' (it is the default).
  assert.equal(
    (parseIbb(xml("open", { xmlns: NS_IBB, sid: "x", "block-size": "8192" })) as { stanza: string }).stanza,
    "iq",
  );
  const bad: Element[] = [
    xml("data", { xmlns: NS_IBB, sid: "x", seq: "0" }, "!!!notbase64"),
    xml("data", { xmlns: NS_IBB, sid: "x", seq: "0" }, "QUJD="), // bad padding
    xml("data", { xmlns: NS_IBB, sid: "x", seq: "65536" }, "QUJD"),
    xml("data", { xmlns: NS_IBB, sid: "x", seq: "-1" }, "QUJD"),
    xml("data", { xmlns: NS_IBB, sid: "x" }, "QUJD"),
    xml("data", { xmlns: NS_IBB, seq: "0" }, "QUJD"),
    xml("open", { xmlns: NS_IBB, sid: "x", "block-size": "0" }),
    xml("open", { xmlns: NS_IBB, sid: "x", "block-size": "4k" }),
    xml("open", { xmlns: NS_IBB, sid: "x", "block-size": "4096", stanza: "presence" }),
    xml("close", { xmlns: "urn:other", sid: "x" }),
    xml("nonsense", { xmlns: NS_IBB, sid: "x" }),
  ];
  for (const el of bad) assert.throws(() => parseIbb(el), IbbParseError, el.toString());
  assert.throws(() => buildIbbOpen("s", 65536), RangeError);
  assert.throws(() => buildIbbOpen("s", 0), RangeError);
});

async function expectStanzaError(promise: Promise<unknown>, condition: string, type?: string): Promise<void> {
  await assert.rejects(promise, (err: unknown) => {
    assert.ok(err instanceof StanzaError, `expected a StanzaError, got ${err}`);
    assert.equal(err.condition, condition);
    if (type) assert.equal(err.type, type);
    return true;
  });
}

Deno.test({
  name: "IBB over a real Prosody: round trips, protocol violations, early close, abort, backpressure",
  sanitizeOps: false,
  sanitizeResources: false,
  async fn(t) {
    const server = await startProsody();
    const conns: XmppConnection[] = [];
    const login = async (user: string) => {
      const conn = await connectionOn(server, user, "ibb");
      conns.push(conn);
      return conn;
    };
    try {
      const alice = await login("alice");
      const bob = await login("bob");
      const carol = await login("carol");
      const set = (from: XmppConnection, payload: Element) =>
        from.iq(xml("iq", { type: "set", to: bob.jid }, payload));

      for (const [size, blockSize] of [[1024, 4096], [10 * 1024 * 1024, 8192]] as const) {
        await t.step(`${size} bytes alice → bob, block-size ${blockSize}, sha-256 equal`, async () => {
          const sid = `rt-${size}`;
          const reception = ibbReceive(bob, { from: alice.jid, sid });
          const source = randomSource(size);
          let progress = 0;
          const [sent, received] = await Promise.all([
            ibbSend(alice, {
              to: bob.jid,
              sid,
              blockSize,
              source: source.stream,
              onProgress: (b) => progress = b,
            }),
            drain(reception.readable),
          ]);
          await reception.opened;
          assert.equal(received.error, undefined);
          assert.equal(sent.bytes, size);
          assert.equal(progress, size);
          assert.equal(received.bytes, size);
          assert.equal(received.sha256, source.digest());
        });
      }

      await t.step("seq wraps 65535 → 0 (65541 one-byte blocks), bytes intact", async () => {
        const size = 65536 + 5;
        const reception = ibbReceive(bob, { from: alice.jid, sid: "s-wrap" });
        const source = randomSource(size);
        const [sent, received] = await Promise.all([
          ibbSend(alice, { to: bob.jid, sid: "s-wrap", blockSize: 1, window: 64, source: source.stream }),
          drain(reception.readable),
        ]);
        assert.equal(received.error, undefined);
        assert.equal(sent.bytes, size);
        assert.equal(received.bytes, size);
        assert.equal(received.sha256, source.digest());
      });

      await t.step("wrong sender and unknown sid → item-not-found, the stream still opens", async () => {
        const reception = ibbReceive(bob, { from: alice.jid, sid: "s-sender" });
        await expectStanzaError(set(carol, buildIbbOpen("s-sender", 4096)), "item-not-found");
        await expectStanzaError(set(alice, buildIbbOpen("s-unknown", 4096)), "item-not-found");
        await expectStanzaError(
          set(alice, buildIbbData("s-unknown", 0, new Uint8Array(3))),
          "item-not-found",
        );
        await set(alice, buildIbbOpen("s-sender", 4096));
        await reception.opened;
        await expectStanzaError(set(carol, buildIbbData("s-sender", 0, new Uint8Array(3))), "item-not-found");
        await expectStanzaError(set(carol, buildIbbClose("s-sender")), "item-not-found");
        await set(alice, buildIbbData("s-sender", 0, new Uint8Array([1, 2, 3])));
        await set(alice, buildIbbClose("s-sender"));
        const result = await drain(reception.readable);
        assert.equal(result.error, undefined);
        assert.equal(result.bytes, 3);
      });

      await t.step(
        "block-size above the limit → resource-constraint; a smaller one is then accepted",
        async () => {
          const reception = ibbReceive(bob, { from: alice.jid, sid: "s-big", maxBlockSize: 8192 });
          await expectStanzaError(set(alice, buildIbbOpen("s-big", 8193)), "resource-constraint", "modify");
          await expectStanzaError(
            set(alice, xml("open", { xmlns: NS_IBB, sid: "s-big", "block-size": "70000", stanza: "iq" })),
            "resource-constraint",
            "modify",
          );
          await set(alice, buildIbbOpen("s-big", 8192));
          await reception.opened;
          await expectStanzaError(set(alice, buildIbbOpen("s-big", 8192)), "unexpected-request");
          reception.cancel("done");
          const result = await drain(reception.readable);
          assert.ok(result.error instanceof IbbError);
        },
      );

      const violation = async (
        name: string,
        sid: string,
        payloads: Element[],
        condition: string,
        bytesBefore: number,
      ) => {
        await t.step(name, async () => {
          const reception = ibbReceive(bob, { from: alice.jid, sid });
          const reading = drain(reception.readable);
          await set(alice, buildIbbOpen(sid, 16));
          const last = payloads.pop()!;
          for (const payload of payloads) await set(alice, payload);
          await expectStanzaError(set(alice, last), condition);
          const result = await reading;
          assert.ok(result.error instanceof IbbError, `stream should fail, got ${result.error}`);
          assert.equal((result.error as IbbError).condition, condition);
          assert.equal(result.bytes, bytesBefore);
          // The stream is gone: more data is refused.
          await expectStanzaError(set(alice, buildIbbData(sid, 1, new Uint8Array(1))), "item-not-found");
        });
      };
      const four = new Uint8Array([1, 2, 3, 4]);
      await violation(
        "seq out of order → unexpected-request, stream fails",
        "s-order",
        [
          buildIbbData("s-order", 0, four),
          buildIbbData("s-order", 2, four),
        ],
        "unexpected-request",
        4,
      );
      await violation(
        "seq duplicated → unexpected-request, stream fails",
        "s-dup",
        [
          buildIbbData("s-dup", 0, four),
          buildIbbData("s-dup", 1, four),
          buildIbbData("s-dup", 1, four),
        ],
        "unexpected-request",
        8,
      );
      await violation(
        "first seq not 0 → unexpected-request",
        "s-first",
        [
          buildIbbData("s-first", 1, four),
        ],
        "unexpected-request",
        0,
      );
      await violation(
        "base64 garbage → bad-request, stream fails",
        "s-b64",
        [
          buildIbbData("s-b64", 0, four),
          xml("data", { xmlns: NS_IBB, sid: "s-b64", seq: "1" }, "%%% not base64 %%%"),
        ],
        "bad-request",
        4,
      );
      await violation(
        "chunk larger than block-size → bad-request, stream fails",
        "s-chunk",
        [
          xml("data", { xmlns: NS_IBB, sid: "s-chunk", seq: "0" }, b64(new Uint8Array(17))),
        ],
        "bad-request",
        0,
      );

      await t.step("early close ends the readable with the bytes so far", async () => {
        const reception = ibbReceive(bob, { from: alice.jid, sid: "s-early" });
        await set(alice, buildIbbOpen("s-early", 4096));
        await set(alice, buildIbbData("s-early", 0, new Uint8Array(100)));
        await set(alice, buildIbbClose("s-early"));
        const result = await drain(reception.readable);
        assert.equal(result.error, undefined);
        assert.equal(result.bytes, 100);
      });

      await t.step("close before open: opened rejects, readable ends", async () => {
        const reception = ibbReceive(bob, { from: alice.jid, sid: "s-noopen" });
        await set(alice, buildIbbClose("s-noopen"));
        await assert.rejects(reception.opened, IbbError);
        assert.equal((await drain(reception.readable)).bytes, 0);
      });

      await t.step("no open in time → reception fails", async () => {
        const reception = ibbReceive(bob, { from: alice.jid, sid: "s-late", openTimeoutMs: 100 });
        await assert.rejects(reception.opened, /no IBB <open\/>/);
        assert.ok((await drain(reception.readable)).error instanceof IbbError);
        await expectStanzaError(set(alice, buildIbbOpen("s-late", 4096)), "item-not-found");
      });

      await t.step("a second reception for the same sid is refused", () => {
        const reception = ibbReceive(bob, { from: alice.jid, sid: "s-twice" });
        assert.throws(() => ibbReceive(bob, { from: carol.jid, sid: "s-twice" }), /already registered/);
        reception.cancel();
      });

      await t.step("sender abort: ibbSend rejects, receiver sees the close", async () => {
        const reception = ibbReceive(bob, { from: alice.jid, sid: "s-abort" });
        const controller = new AbortController();
        const source = endlessSource();
        const sending = ibbSend(alice, {
          to: bob.jid,
          sid: "s-abort",
          blockSize: 4096,
          source: source.stream,
          signal: controller.signal,
          onProgress: (bytes) => {
            if (bytes >= 100_000) controller.abort(new Error("user abort"));
          },
        });
        const [sent, received] = await Promise.allSettled([sending, drain(reception.readable)]);
        assert.equal(sent.status, "rejected");
        assert.match(String((sent as PromiseRejectedResult).reason), /user abort/);
        assert.equal(received.status, "fulfilled");
        const result = (received as PromiseFulfilledResult<Awaited<ReturnType<typeof drain>>>).value;
        assert.equal(result.error, undefined, "the sender's <close/> ends the stream");
        assert.ok(result.bytes >= 100_000 && result.bytes < source.produced() + 1);
      });

      await t.step("receiver cancel: the sender gets an error", async () => {
        const reception = ibbReceive(bob, { from: alice.jid, sid: "s-cancel" });
        const source = endlessSource();
        const reader = reception.readable.getReader();
        const sending = ibbSend(alice, {
          to: bob.jid,
          sid: "s-cancel",
          blockSize: 4096,
          source: source.stream,
        });
        await reader.read();
        reception.cancel("disk full");
        await assert.rejects(reader.read(), /disk full/);
        await assert.rejects(sending, (err: unknown) => err instanceof StanzaError);
      });

      await t.step("a consumer that does not read holds the sender back", async () => {
        const bufferBytes = 16 * 1024;
        const blockSize = 4096;
        const window = 4;
        const reception = ibbReceive(bob, { from: alice.jid, sid: "s-slow", bufferBytes });
        const source = endlessSource();
        let acked = 0;
        const controller = new AbortController();
        const sending = ibbSend(alice, {
          to: bob.jid,
          sid: "s-slow",
          blockSize,
          window,
          source: source.stream,
          signal: controller.signal,
          onProgress: (bytes) => acked = bytes,
        });
        sending.catch(() => {});
        await reception.opened;
        await sleep(1500);
        // Nothing read: at most the queue plus one block held per unanswered IQ can have been accepted.
        assert.ok(acked <= bufferBytes + blockSize, `acked ${acked}`);
        assert.ok(source.produced() <= bufferBytes + blockSize * (window + 1) + 2 * 16384);
        // Reading resumes the flow.
        const reader = reception.readable.getReader();
        let read = 0;
        while (read < 200_000) read += (await reader.read()).value!.byteLength;
        assert.ok(acked > bufferBytes);
        controller.abort();
        await assert.rejects(sending);
        reader.releaseLock();
      });
    } finally {
      for (const conn of conns) await conn.close();
      await server.stop();
    }
  },
});
