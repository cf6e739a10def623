import assert from "node:assert/strict";
import {
  type ChatFailure,
  type ChatMessage,
  createEndpoint,
  type Endpoint,
  type EndpointOptions,
} from "../../bot/endpoint.ts";
import { startProsody } from "../../scripts/prosody.ts";
import {
  BadBundleSignatureError,
  bundleNode,
  decodeBundle,
  decodeEncrypted,
  encodeBundle,
  encodeDeviceList,
  encodeEncrypted,
  NODE_DEVICELIST,
  NotForThisDeviceError,
  NS_OMEMO,
  OmemoDecryptionError,
} from "../../omemo/mod.ts";
import {
  connectXmpp,
  type Element,
  type Logger,
  NS_CARBONS,
  NS_FORWARD,
  NS_PUBSUB,
  NS_PUBSUB_EVENT,
  publish,
  StanzaError,
  xml,
  type XmppConnection,
} from "../../xmpp/mod.ts";

const quiet: Logger = { debug() {}, info() {}, warn() {}, error() {} };

interface LogEntry {
  level: string;
  msg: string;
  data?: Record<string, unknown>;
}

function capturingLogger(entries: LogEntry[]): Logger {
  const at = (level: string) => (msg: string, data?: Record<string, unknown>) => {
    entries.push({ level, msg, ...(data ? { data } : {}) });
  };
  return { debug: at("debug"), info: at("info"), warn: at("warn"), error: at("error") };
}

function waitFor<T>(
  subscribe: (handler: (value: T) => void) => () => void,
  predicate: (value: T) => boolean = () => true,
  what = "event",
  ms = 10_000,
): Promise<T> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      off();
      reject(new Error(`no ${what} within ${ms} ms`));
    }, ms);
    const off = subscribe((value) => {
      if (!predicate(value)) return;
      clearTimeout(timer);
      off();
      resolve(value);
    });
  });
}

const nextChat = (e: Endpoint, p?: (m: ChatMessage) => boolean) =>
  waitFor<ChatMessage>((h) => e.onChat(h), p, "chat message");
const nextFailure = (e: Endpoint, p?: (f: ChatFailure) => boolean) =>
  waitFor<ChatFailure>((h) => e.onChatFailure(h), p, "chat failure");

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function until(cond: () => boolean | Promise<boolean>, what: string, ms = 10_000): Promise<void> {
  const end = Date.now() + ms;
  while (!(await cond())) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await sleep(25);
  }
}

/** A chat stanza around an `<encrypted/>` element, as a client would send it. */
function chatStanza(to: string, encrypted: Element, id: string = crypto.randomUUID()): Element {
  return xml("message", { to, type: "chat", id }, xml("body", {}, "OMEMO"), encrypted);
}

function flip(bytes: Uint8Array, index: number): Uint8Array {
  const out = bytes.slice();
  const i = index < 0 ? out.length + index : index;
  out[i] = out[i]! ^ 0x01;
  return out;
}

Deno.test({
  name: "an endpoint survives hostile and malformed OMEMO/XMPP input on a real Prosody",
  sanitizeOps: false,
  sanitizeResources: false,
  async fn(t) {
    const server = await startProsody();
    const tmp = await Deno.makeTempDir({ prefix: "bad-input-test-" });
    const endpoints: Endpoint[] = [];
    const raws: XmppConnection[] = [];
    const base = (user: string, resource: string) => ({
      jid: `${user}@${server.domain}/${resource}`,
      password: "pw",
      server: { host: server.host, port: server.c2sPort },
      caPem: server.certificatePem,
    });
    const endpoint = async (user: string, resource: string, logger: Logger = quiet) => {
      const options: EndpointOptions = { ...base(user, resource), storeDir: `${tmp}/${user}`, logger };
      const e = await createEndpoint(options);
      endpoints.push(e);
      return e;
    };
    const raw = async (user: string) => {
      const c = await connectXmpp({ ...base(user, "raw"), logger: quiet });
      raws.push(c);
      await c.sendPresence();
      return c;
    };
    try {
      for (const u of ["bob", "mallory", "carol"]) await server.createAccount(u, "pw");
      const bobJid = `bob@${server.domain}`;
      const malloryJid = `mallory@${server.domain}`;
      const carolJid = `carol@${server.domain}`;
      const bobLog: LogEntry[] = [];
      const bob = await endpoint("bob", "bot", capturingLogger(bobLog));
      const mallory = await endpoint("mallory", "omemo");
      const attacker = await raw("mallory");
      const bobState = () => Deno.readTextFile(`${tmp}/bob/state.json`);
      const warned = (pattern: RegExp) => bobLog.some((e) => e.level === "warn" && pattern.test(e.msg));

      // Every chat bob ever sees, to prove nothing forged or replayed slips through.
      const chats: ChatMessage[] = [];
      const failures: ChatFailure[] = [];
      bob.onChat((m) => chats.push(m));
      bob.onChatFailure((f) => failures.push(f));

      /** A legitimate message from `from` must still decrypt at bob. */
      const legit = async (from: Endpoint, body: string) => {
        const got = nextChat(bob, (m) => m.body === body);
        await from.sendChat(bobJid, body);
        const m = await got;
        assert.equal(m.senderDeviceId, from.deviceId);
      };
      /** Encrypts a real message from mallory's OMEMO device for bob (not sent). */
      const malloryEncrypted = async (body: string) =>
        decodeEncrypted((await mallory.omemo.encrypt([bobJid], body)).element);

      // Establish the session both ways so later messages are plain SignalMessages.
      await legit(mallory, "hello bob");
      const back = waitFor<ChatMessage>((h) => mallory.onChat(h), (m) => m.body === "hi mallory");
      await bob.sendChat(malloryJid, "hi mallory");
      await back;

      const expectFailure = async (
        stanza: Element,
        check: (f: ChatFailure) => void,
        options: { storeUnchanged?: boolean } = {},
      ) => {
        const before = await bobState();
        const chatsBefore = chats.length;
        const failed = nextFailure(bob);
        await attacker.send(stanza);
        const f = await failed;
        assert.equal(f.from.split("/")[0], malloryJid);
        check(f);
        assert.equal(chats.length, chatsBefore, "no chat event for a message that failed");
        if (options.storeUnchanged ?? true) assert.equal(await bobState(), before, "store unchanged");
        assert.ok(warned(/cannot decrypt OMEMO message/), "the failure is logged");
      };

      await t.step("(a) a tampered payload fails authentication; the session survives", async () => {
        const m = await malloryEncrypted("tampered payload");
        const bad = encodeEncrypted({ ...m, payload: flip(m.payload!, 0) });
        await expectFailure(chatStanza(bobJid, bad), (f) => {
          assert.ok(f.error instanceof OmemoDecryptionError, String(f.error));
          assert.match(f.error.message, /payload authentication failed/);
        });
        await legit(mallory, "after tampered payload");
      });

      await t.step("(b) a tampered key blob (ciphertext or MAC) fails in the ratchet", async () => {
        for (const where of ["ciphertext", "mac"] as const) {
          const m = await malloryEncrypted(`tampered key ${where}`);
          const keys = m.keys.map((k) =>
            k.rid === bob.deviceId ? { ...k, data: flip(k.data, where === "mac" ? -1 : 8) } : k
          );
          await expectFailure(chatStanza(bobJid, encodeEncrypted({ ...m, keys })), (f) => {
            assert.ok(f.error instanceof OmemoDecryptionError, String(f.error));
            assert.match(f.error.message, /cannot decrypt SignalMessage/);
          });
          await legit(mallory, `after tampered key ${where}`);
        }
      });

      await t.step("(c) keys only for another device id → NotForThisDeviceError", async () => {
        const m = await malloryEncrypted("not for you");
        const other = bob.deviceId === 1 ? 2 : bob.deviceId - 1;
        const keys = m.keys.map((k) => ({ ...k, rid: other }));
        await expectFailure(chatStanza(bobJid, encodeEncrypted({ ...m, keys })), (f) => {
          assert.ok(f.error instanceof NotForThisDeviceError, String(f.error));
          assert.match(f.error.message, new RegExp(`no key for device ${bob.deviceId}`));
        });
        await legit(mallory, "after wrong device");
      });

      // Bob subscribes explicitly to mallory's device list, so her PEP service notifies him.
      await bob.conn.iq(xml(
        "iq",
        { type: "set", to: malloryJid },
        xml("pubsub", { xmlns: NS_PUBSUB }, xml("subscribe", { node: NODE_DEVICELIST, jid: bob.conn.jid })),
      ));

      const garbageList = (extra: number[]) =>
        xml(
          "list",
          { xmlns: NS_OMEMO },
          xml("device", { id: "abc" }),
          xml("device", { id: "-1" }),
          xml("device", { id: "99999999999" }),
          xml("device", { id: "42" }),
          ...extra.map((id) => xml("device", { id: String(id) })),
        );
      const pepEvent = (to: string, list: Element) =>
        xml(
          "message",
          { to, type: "headline", id: crypto.randomUUID() },
          xml(
            "event",
            { xmlns: NS_PUBSUB_EVENT },
            xml("items", { node: NODE_DEVICELIST }, xml("item", { id: "current" }, list)),
          ),
        );

      await t.step("(d) a device list with garbage entries: garbage skipped, valid ids kept", async () => {
        // Hand-crafted headline from the attacker's own connection (a full JID: not a PEP service).
        await attacker.send(pepEvent(bobJid, garbageList([mallory.deviceId])));
        await until(
          () => warned(/dropping pubsub event from unexpected sender/),
          "drop of the full-JID event",
        );
        assert.deepEqual(bob.omemo.store.getDeviceList(malloryJid), [mallory.deviceId]);

        // The same list published for real on mallory's PEP node arrives from her bare JID.
        await publish(attacker, NODE_DEVICELIST, garbageList([mallory.deviceId]), {
          id: "current",
          publishOptions: { "pubsub#access_model": "open" },
        });
        await until(
          () => bob.omemo.store.getDeviceList(malloryJid).includes(42),
          "bob to process the published list",
        );
        assert.deepEqual(bob.omemo.store.getDeviceList(malloryJid), [42, mallory.deviceId]);
        assert.deepEqual(await bob.omemo.getDevices(malloryJid), [42, mallory.deviceId]);
        const skipped = bobLog.find((e) => e.msg === "omemo: skipped device list entries");
        assert.ok(skipped, "the skipped entries are logged");
        assert.equal((skipped.data?.skipped as string[]).length, 3);
        await legit(mallory, "after garbage device list");
      });

      await t.step("(e) a forged carbon from a stranger is dropped without a chat event", async () => {
        const m = await malloryEncrypted("forged carbon");
        const chatsBefore = chats.length, failuresBefore = failures.length;
        const forged = xml(
          "message",
          { to: bobJid, type: "chat", id: crypto.randomUUID() },
          xml(
            "received",
            { xmlns: NS_CARBONS },
            xml(
              "forwarded",
              { xmlns: NS_FORWARD },
              xml(
                "message",
                { from: `${bobJid}/other`, to: bobJid, type: "chat", id: "forged" },
                xml("body", {}, "OMEMO"),
                encodeEncrypted(m),
              ),
            ),
          ),
        );
        await attacker.send(forged);
        await until(() => warned(/dropping carbon/), "the forged carbon to be dropped");
        const entry = bobLog.find((e) => e.msg === "dropping carbon")!;
        assert.match(String(entry.data?.reason), /not from our bare JID/);
        await legit(mallory, "after forged carbon");
        assert.equal(chats.length, chatsBefore + 1, "only the legitimate message arrived");
        assert.equal(failures.length, failuresBefore);
      });

      await t.step(
        "(f) a forged device-list event for bob's own node from a stranger is ignored",
        async () => {
          const own = bob.omemo.store.getDeviceList(bobJid);
          assert.deepEqual(own, [bob.deviceId]);
          const drops = bobLog.filter((e) => /dropping pubsub event/.test(e.msg)).length;
          // A `from` claiming to be bob is overwritten by the server with the attacker's full JID.
          const forged = pepEvent(bobJid, encodeDeviceList([1234]));
          forged.attrs.from = bobJid;
          await attacker.send(forged);
          await until(
            () => bobLog.filter((e) => /dropping pubsub event/.test(e.msg)).length > drops,
            "the forged event to be dropped",
          );
          assert.deepEqual(bob.omemo.store.getDeviceList(bobJid), own);
          assert.deepEqual(bob.omemo.store.getDeviceList(malloryJid), [42, mallory.deviceId]);
          await legit(mallory, "after forged own device list");
        },
      );

      await t.step("(g) a replayed message fails the second time, no duplicate chat event", async () => {
        const m = await malloryEncrypted("say it once");
        const stanza = chatStanza(bobJid, encodeEncrypted(m), "replayed-id");
        const got = nextChat(bob, (c) => c.body === "say it once");
        await attacker.send(stanza);
        await got;
        await expectFailure(stanza, (f) => {
          assert.ok(f.error instanceof OmemoDecryptionError, String(f.error));
        });
        await legit(mallory, "after replay");
        assert.equal(chats.filter((c) => c.body === "say it once").length, 1);
      });

      await t.step("(h) a replayed first-contact PreKeySignalMessage fails cleanly", async () => {
        const carol = await endpoint("carol", "omemo");
        const carolRaw = await raw("carol");
        const m = decodeEncrypted((await carol.omemo.encrypt([bobJid], "first contact")).element);
        assert.ok(
          m.keys.find((k) => k.rid === bob.deviceId)?.preKey,
          "first contact is a PreKeySignalMessage",
        );
        const first = chatStanza(bobJid, encodeEncrypted(m), "first-contact");
        const got = nextChat(bob, (c) => c.body === "first contact");
        await carolRaw.send(first);
        await got;
        // The session moves on: bob answers, carol answers back with a plain SignalMessage.
        const answer = waitFor<ChatMessage>((h) => carol.onChat(h), (c) => c.body === "hello carol");
        await bob.sendChat(carolJid, "hello carol");
        await answer;
        const second = nextChat(bob, (c) => c.body === "carol again");
        await carol.sendChat(bobJid, "carol again");
        await second;

        const before = await bobState();
        const chatsBefore = chats.length;
        const failed = nextFailure(bob, (f) => f.from.startsWith(carolJid));
        await carolRaw.send(first);
        const f = await failed;
        assert.ok(f.error instanceof OmemoDecryptionError, String(f.error));
        assert.match(f.error.message, /PreKeySignalMessage/);
        assert.equal(chats.length, chatsBefore);
        assert.equal(await bobState(), before, "store unchanged");
        await legit(carol, "carol after prekey replay");
        await legit(mallory, "mallory after prekey replay");
      });

      await t.step("(i) a bundle with a bad signature is skipped with a reason", async () => {
        const fake = 777_777;
        const bundle = decodeBundle(await mallory.omemo.ownBundle());
        const tampered = encodeBundle({
          ...bundle,
          signedPreKeySignature: flip(bundle.signedPreKeySignature, 5),
        });
        await publish(attacker, bundleNode(fake), tampered, {
          id: "current",
          publishOptions: { "pubsub#access_model": "open" },
        });
        await publish(attacker, NODE_DEVICELIST, encodeDeviceList([mallory.deviceId, fake]), {
          id: "current",
          publishOptions: { "pubsub#access_model": "open" },
        });
        await until(
          () => bob.omemo.store.getDeviceList(malloryJid).includes(fake),
          "bob to learn the fake device",
        );
        const result = await bob.omemo.encrypt([malloryJid], "probe");
        assert.deepEqual(result.devices.map((d) => d.deviceId), [mallory.deviceId]);
        const skip = result.skipped.find((s) => s.deviceId === fake);
        assert.ok(skip, "the fake device is skipped");
        assert.match(skip.reason, /bundle signature of .* does not verify/);
        assert.ok(bobLog.some((e) => e.msg === "omemo: skipping device" && e.data?.deviceId === fake));
        assert.equal(bob.omemo.store.hasSession(malloryJid, fake), false);
        // The probe advanced bob's chain without being sent; the real message still gets through.
        const got = waitFor<ChatMessage>(
          (h) => mallory.onChat(h),
          (c) => c.body === "despite the fake device",
        );
        const sent = await bob.sendChat(malloryJid, "despite the fake device");
        assert.equal(sent.devices, 1);
        await got;
        // Explicitly targeting only the bad device errors clearly.
        await assert.rejects(
          bob.omemo.encrypt([malloryJid], "x", { devices: [{ jid: malloryJid, deviceId: fake }] }),
          BadBundleSignatureError,
        );
        await legit(mallory, "after bad bundle");
      });

      await t.step("(j) an unknown IQ get is answered with service-unavailable", async () => {
        await assert.rejects(
          attacker.iq(
            xml("iq", { type: "get", to: bob.conn.jid }, xml("query", { xmlns: "urn:example:nope" })),
          ),
          (e: unknown) => {
            assert.ok(e instanceof StanzaError, String(e));
            assert.equal(e.condition, "service-unavailable");
            return true;
          },
        );
        await legit(mallory, "after unknown iq");
        assert.equal(bob.conn.state, "online");
      });
    } finally {
      for (const e of endpoints) await e.close().catch(() => {});
      for (const c of raws) await c.close().catch(() => {});
      await server.stop();
      await Deno.remove(tmp, { recursive: true });
    }
  },
});
