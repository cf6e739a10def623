import assert from "node:assert/strict";
import dgram from "node:dgram";
import { fromValidatedPair, type IcePairsLike } from "../../media/webrtc.ts";
import {
  isDtlsRecord,
  isSrtcp,
  isSrtp,
  netTest,
  rtpPacket,
  rtpText,
  sleep,
  waitFor,
  withRelayedCall,
} from "./helpers.ts";

// An off-path attacker knows b's media port (same host, another port) and sends from its own
// socket. The call runs through a relay so the test can copy real DTLS/SRTP bytes off the wire.

netTest(
  "DTLS records from an address outside the ICE pairs are dropped and counted",
  () =>
    withRelayedCall(async ({ a, b, relay, offPath, rtpAtB, sendAToB }) => {
      const wire = [...relay.aToB, ...relay.bToA].filter(isDtlsRecord);
      const clientHello = wire.find((d) => d[0] === 22 && d[3] === 0 && d[4] === 0 && d[13] === 1);
      assert.ok(clientHello, "a ClientHello seen on the wire");
      const lastFlight = wire.at(-1)!; // holds the epoch-1 Finished
      const dropsBefore = b.stats().foreignSourceDrops;
      await offPath(clientHello);
      // plaintext alert: warning(1) close_notify(0)
      await offPath(new Uint8Array([21, 0xfe, 0xfd, 0, 0, 0, 0, 0, 0, 0, 99, 0, 2, 1, 0]));
      await offPath(lastFlight);
      await waitFor(() => b.stats().foreignSourceDrops >= dropsBefore + 3);
      assert.equal(b.stats().foreignSourceDrops, dropsBefore + 3);
      await sleep(100);
      assert.equal(b.state().dtls, "connected");
      assert.equal(b.remoteCertificateFingerprint(), a.localFingerprint());
      await sendAToB(1, "media still flows");
      assert.equal(rtpText(rtpAtB.at(-1)!), "media still flows");
    }),
);

netTest(
  "an authentic SRTP packet arriving from a foreign address is not delivered",
  () =>
    withRelayedCall(async ({ b, relay, offPath, rtpAtB, a }) => {
      // the relay keeps a's next SRTP packet back; the attacker has a copy and races it to b
      relay.holdAToB = (d) => isSrtp(d) && !isSrtcp(d);
      assert.ok(await a.sendRtp("audio", rtpPacket(5, new TextEncoder().encode("one"))));
      await waitFor(() => relay.heldAToB.length >= 1);
      assert.equal(relay.heldAToB.length, 1);
      const dropsBefore = b.stats().foreignSourceDrops;
      await offPath(relay.heldAToB[0]!);
      await waitFor(() => b.stats().foreignSourceDrops > dropsBefore || rtpAtB.length > 0);
      assert.equal(rtpAtB.length, 0, "the attacker's copy was not delivered");
      assert.equal(b.stats().foreignSourceDrops, dropsBefore + 1);
      // the genuine packet, from the validated address, is delivered once and is no replay
      await relay.releaseAToB();
      await waitFor(() => rtpAtB.length >= 1);
      assert.equal(rtpAtB.length, 1);
      assert.equal(rtpText(rtpAtB[0]!), "one");
      assert.equal(b.stats().srtpReplays, 0);
      assert.equal(b.stats().srtpAuthFailures, 0);
    }),
);

netTest(
  "forged SRTCP from a foreign address never reaches the SRTCP decoder",
  () =>
    withRelayedCall(async ({ b, offPath, sendAToB, rtpAtB }) => {
      const dropsBefore = b.stats().foreignSourceDrops;
      for (let i = 0; i < 4; i++) {
        const forged = crypto.getRandomValues(new Uint8Array(48));
        forged[0] = 0x80;
        forged[1] = 200; // sender report
        await offPath(forged);
      }
      const seen = () => b.stats().foreignSourceDrops + b.stats().srtpAuthFailures;
      await waitFor(() => seen() >= dropsBefore + 4);
      assert.equal(b.stats().srtpAuthFailures, 0, "nothing reached the SRTCP decoder");
      assert.equal(b.stats().foreignSourceDrops, dropsBefore + 4);
      await sendAToB(2, "ok");
      assert.equal(rtpAtB.length, 1);
    }),
);

netTest(
  "STUN from a foreign address still reaches ICE, and does not validate that address",
  () =>
    withRelayedCall(async ({ b, relay, offPath }) => {
      const listener = dgram.createSocket("udp4");
      try {
        // the off-path socket is write-only in the lab; bind one that can hear b's answer
        await new Promise<void>((r) => listener.bind(0, () => r()));
        const answers: Uint8Array[] = [];
        listener.on("message", (m: Uint8Array) => answers.push(Uint8Array.from(m)));
        const request = bindingRequest("x:y");
        await new Promise<void>((r) =>
          listener.send(request, relay.real.b!.port, relay.real.b!.host, () => r())
        );
        await waitFor(() => answers.some((m) => m[0] === 0x01 && m[1] === 0x01));
        assert.ok(answers.some((m) => m[0] === 0x01 && m[1] === 0x01), "binding success response received");
        // a check we answered is no proof the sender knows the ICE password: data is still dropped
        const dropsBefore = b.stats().foreignSourceDrops;
        const copy = relay.aToB.filter(isSrtp).at(-1) ?? new Uint8Array([0x80, 111, ...new Uint8Array(30)]);
        await new Promise<void>((r) =>
          listener.send(copy, relay.real.b!.port, relay.real.b!.host, () => r())
        );
        await offPath(copy);
        await waitFor(() => b.stats().foreignSourceDrops >= dropsBefore + 2);
        assert.equal(b.stats().foreignSourceDrops, dropsBefore + 2);
        assert.equal(b.state().ice, "connected");
      } finally {
        listener.close();
      }
    }),
);

Deno.test("fromValidatedPair: nominated or succeeded pair of the same protocol only", () => {
  const udp = { name: "udp" };
  const other = { name: "tcp" };
  const pair = (host: string, port: number, state: number, protocol: object = udp) => ({
    protocol,
    remoteAddr: [host, port] as const,
    state,
  });
  const [WAITING, IN_PROGRESS, SUCCEEDED, FAILED] = [1, 2, 3, 4];
  const nominated = pair("192.0.2.2", 5000, SUCCEEDED);
  const conn: IcePairsLike = {
    nominated,
    checkList: [
      nominated,
      pair("192.0.2.7", 6000, SUCCEEDED), // a valid pair ICE may switch to
      pair("192.0.2.8", 6000, IN_PROGRESS),
      pair("192.0.2.9", 6000, FAILED),
      pair("192.0.2.10", 6000, WAITING),
      pair("192.0.2.11", 6000, SUCCEEDED, other),
    ],
  };
  assert.ok(fromValidatedPair(conn, udp, ["192.0.2.2", 5000]));
  assert.ok(fromValidatedPair(conn, udp, ["192.0.2.7", 6000]));
  assert.ok(!fromValidatedPair(conn, udp, ["192.0.2.2", 5001]), "same host, other port");
  assert.ok(!fromValidatedPair(conn, udp, ["192.0.2.8", 6000]), "check still running");
  assert.ok(!fromValidatedPair(conn, udp, ["192.0.2.9", 6000]), "failed pair");
  assert.ok(!fromValidatedPair(conn, udp, ["192.0.2.10", 6000]), "not checked yet");
  assert.ok(!fromValidatedPair(conn, udp, ["192.0.2.11", 6000]), "valid on another protocol only");
  assert.ok(!fromValidatedPair({ checkList: [] }, udp, ["192.0.2.2", 5000]), "before ICE");
  assert.ok(
    fromValidatedPair({ nominated, checkList: [] }, udp, ["192.0.2.2", 5000]),
    "the nominated pair on its own",
  );
});

/** A STUN Binding request (RFC 5389) with only a USERNAME attribute. */
function bindingRequest(username: string): Uint8Array {
  const name = new TextEncoder().encode(username);
  const padded = (name.length + 3) & ~3;
  const out = new Uint8Array(20 + 4 + padded);
  const v = new DataView(out.buffer);
  v.setUint16(0, 0x0001); // Binding request
  v.setUint16(2, 4 + padded);
  v.setUint32(4, 0x2112a442); // magic cookie
  crypto.getRandomValues(out.subarray(8, 20)); // transaction id
  v.setUint16(20, 0x0006); // USERNAME
  v.setUint16(22, name.length);
  out.set(name, 24);
  return out;
}
