/** DTLS that arrives before we can take it: the early-record replay (media/webrtc.ts seam 2g; the replay itself
 * is tested against a real aiortc DTLS client in tests/interop/webrtc_aiortc_test.ts) and datagrams held
 * until their ICE pair is validated (seam 5). */
import assert from "node:assert/strict";
import {
  countInitialClientHellos,
  HELD_DATAGRAMS_MAX,
  holdUntilValidated,
  type IcePairsLike,
  releaseHeld,
} from "../../media/webrtc.ts";
import { makePair } from "./helpers.ts";

const [FROZEN, WAITING, IN_PROGRESS, SUCCEEDED, FAILED] = [0, 1, 2, 3, 4];

/** One DTLS 1.2 plaintext record holding a ClientHello (or its fragment) with the given cookie. */
function clientHelloRecord(
  cookie: number[],
  o: { epoch?: number; fragmentOffset?: number; type?: number } = {},
) {
  const body = [0xfe, 0xfd, ...new Array(32).fill(7), 0, cookie.length, ...cookie, 0, 2, 0xc0, 0x2b, 1, 0];
  const hs = [
    o.type ?? 1,
    0,
    0,
    body.length,
    0,
    0,
    0,
    0,
    o.fragmentOffset ?? 0,
    0,
    0,
    body.length,
    ...body,
  ];
  const epoch = o.epoch ?? 0;
  return [
    22,
    0xfe,
    0xfd,
    epoch >> 8,
    epoch & 0xff,
    0,
    0,
    0,
    0,
    0,
    1,
    hs.length >> 8,
    hs.length & 0xff,
    ...hs,
  ];
}

Deno.test("countInitialClientHellos counts ClientHellos without a cookie (a client's flight 1) only", () => {
  assert.equal(countInitialClientHellos(new Uint8Array(clientHelloRecord([]))), 1);
  assert.equal(
    countInitialClientHellos(new Uint8Array(clientHelloRecord([1, 2, 3, 4]))),
    0,
    "cookie: flight 3",
  );
  assert.equal(countInitialClientHellos(new Uint8Array(clientHelloRecord([], { epoch: 1 }))), 0, "encrypted");
  assert.equal(countInitialClientHellos(new Uint8Array(clientHelloRecord([], { fragmentOffset: 5 }))), 0);
  assert.equal(
    countInitialClientHellos(new Uint8Array(clientHelloRecord([], { type: 2 }))),
    0,
    "ServerHello",
  );
  const two = [...clientHelloRecord([]), ...clientHelloRecord([9])];
  assert.equal(countInitialClientHellos(new Uint8Array(two)), 1, "two records in one datagram");
  assert.equal(
    countInitialClientHellos(new Uint8Array([...clientHelloRecord([]), ...clientHelloRecord([])])),
    2,
  );
});

Deno.test("countInitialClientHellos survives truncated and garbage datagrams", () => {
  const rec = clientHelloRecord([]);
  for (let n = 0; n < rec.length; n++) {
    assert.equal(countInitialClientHellos(new Uint8Array(rec.slice(0, n))), 0);
  }
  assert.equal(countInitialClientHellos(new Uint8Array(0)), 0);
  assert.equal(countInitialClientHellos(new Uint8Array(200).fill(0xff)), 0);
  // a session_id length pointing past the record end
  const bad = [...rec];
  bad[13 + 12 + 34] = 250;
  assert.equal(countInitialClientHellos(new Uint8Array(bad)), 0);
});

type Pair = IcePairsLike["checkList"][number] & { state: number };
const udp = { name: "udp" };
const pair = (host: string, port: number, state: number, type = "host"): Pair => ({
  protocol: udp,
  remoteAddr: [host, port] as const,
  state,
  remoteCandidate: { type },
});

Deno.test("held datagrams: kept while their pair is checked, delivered once it succeeded, dropped if it failed", () => {
  const v4 = pair("192.0.2.2", 5000, IN_PROGRESS);
  const v6 = pair("fd00::2", 5002, WAITING);
  const conn: IcePairsLike = { checkList: [pair("fd00::1", 4000, SUCCEEDED), v4, v6] };
  conn.nominated = conn.checkList[0];
  const delivered: string[] = [];
  const hold = (p: Pair, tag: string) =>
    holdUntilValidated(conn, udp, p.remoteAddr, () => delivered.push(tag));
  assert.equal(hold(v4, "v4-a"), true);
  assert.equal(hold(v4, "v4-b"), true);
  assert.equal(hold(v6, "v6"), true);
  releaseHeld(conn); // nothing decided yet
  assert.deepEqual(delivered, []);
  v4.state = SUCCEEDED;
  releaseHeld(conn);
  assert.deepEqual(delivered, ["v4-a", "v4-b"], "in arrival order, once the pair succeeded");
  v6.state = FAILED;
  releaseHeld(conn);
  // handed back to the filter, which drops and counts it (the pair failed: not validated)
  assert.deepEqual(delivered, ["v4-a", "v4-b", "v6"]);
  releaseHeld(conn);
  assert.equal(delivered.length, 3, "each held datagram goes on once");
});

Deno.test("held datagrams: nothing from unknown, peer-reflexive, decided pairs or other protocols; bounded", () => {
  const conn: IcePairsLike = {
    checkList: [
      pair("192.0.2.9", 9, IN_PROGRESS, "prflx"),
      pair("192.0.2.3", 3, SUCCEEDED),
      pair("192.0.2.4", 4, FAILED),
      pair("192.0.2.5", 5, FROZEN),
    ],
  };
  const nop = () => {};
  assert.equal(
    holdUntilValidated(conn, udp, ["198.51.100.1", 1], nop),
    false,
    "address outside the check list",
  );
  assert.equal(holdUntilValidated(conn, udp, ["192.0.2.9", 9], nop), false, "peer-reflexive pair");
  assert.equal(
    holdUntilValidated(conn, udp, ["192.0.2.3", 3], nop),
    false,
    "succeeded: the filter lets it in",
  );
  assert.equal(holdUntilValidated(conn, udp, ["192.0.2.4", 4], nop), false, "failed pair");
  assert.equal(holdUntilValidated(conn, { name: "tcp" }, ["192.0.2.5", 5], nop), false, "another protocol");
  for (let i = 0; i < HELD_DATAGRAMS_MAX; i++) {
    assert.equal(holdUntilValidated(conn, udp, ["192.0.2.5", 5], nop), true);
  }
  assert.equal(holdUntilValidated(conn, udp, ["192.0.2.5", 5], nop), false, "bounded");
});

// With IPv4 and IPv6 host candidates werift's aggressive nomination often leaves the two sides on different
// pairs, and the DTLS client's first flight arrives while the server's check of that pair is in progress: it
// must be held and delivered, not dropped (which cost the client a retransmission).
Deno.test({
  name:
    "loopback pairs with IPv4 and IPv6 candidates: nothing the peer sends is dropped by the source filter",
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    for (let i = 0; i < 5; i++) {
      const { a, b } = await makePair({ ipv6: true });
      try {
        await Promise.all([a.waitConnected(10_000), b.waitConnected(10_000)]);
        assert.equal(a.stats().foreignSourceDrops, 0, "initiator dropped nothing");
        assert.equal(b.stats().foreignSourceDrops, 0, "responder dropped nothing");
        assert.equal(a.remoteCertificateFingerprint(), b.localFingerprint());
        assert.equal(b.remoteCertificateFingerprint(), a.localFingerprint());
      } finally {
        await Promise.all([a.close(), b.close()]);
      }
    }
  },
});
