/** Unbundled sessions (Dino's shape: one ICE+DTLS transport per m-line): media of a kind is gated by the
 * authentication of its own transport, the reported DTLS state aggregates every transport, and the security
 * counters are summed over all of them (media/webrtc.ts). Real werift peers over real loopback UDP. */
import assert from "node:assert/strict";
import dgram from "node:dgram";
import {
  aggregateDtlsState,
  createPeer,
  guardTesting,
  type Peer,
  type RemoteCandidate,
  type StateChange,
} from "../../media/webrtc.ts";
import { netTest, rtpPacket, sleep, waitFor } from "./helpers.ts";

/** One m-section of an SDP: its kind, mid and the candidate lines it carries. */
interface Section {
  kind: string;
  mid: string;
  index: number;
  candidates: string[];
}

function sectionsOf(sdp: string): Section[] {
  const out: Section[] = [];
  for (const line of sdp.split("\r\n")) {
    if (line.startsWith("m=")) {
      out.push({ kind: line.slice(2).split(" ")[0]!, mid: "", index: out.length, candidates: [] });
    } else if (out.length > 0 && line.startsWith("a=mid:")) out.at(-1)!.mid = line.slice(6);
    else if (out.length > 0 && line.startsWith("a=candidate:")) out.at(-1)!.candidates.push(line.slice(2));
  }
  return out;
}

/** The SDP without the candidates (and end-of-candidates) of the m-section of `kind`. */
function withoutCandidatesOf(sdp: string, kind: string): string {
  let current = "";
  return sdp.split("\r\n").filter((line) => {
    if (line.startsWith("m=")) current = line.slice(2).split(" ")[0]!;
    return current !== kind || !(line.startsWith("a=candidate:") || line === "a=end-of-candidates");
  }).join("\r\n");
}

/** The IPv4 UDP host addresses of candidate lines ("candidate:…"). */
function udp4Addresses(candidates: string[]): { host: string; port: number }[] {
  return candidates.flatMap((c) => {
    const f = c.split(" ");
    return f[2]?.toLowerCase() === "udp" && /^\d+\.\d+\.\d+\.\d+$/.test(f[4] ?? "")
      ? [{ host: f[4]!, port: Number(f[5]) }]
      : [];
  });
}

interface Logged {
  dtls: StateChange["dtls"];
  /** how many transports had an authenticated peer when the state was reported */
  authenticatedTransports: number;
}

interface TestPair {
  a: Peer;
  b: Peer;
  /** every state change each side reported, in order */
  log: { a: Logged[]; b: Logged[] };
  /** local candidate lines of each side per m-line kind (from its SDP and trickled) */
  local: { a: Map<string, string[]>; b: Map<string, string[]> };
  /** hands the held video candidates over (both ways); from then on they are trickled at once */
  releaseVideo(): Promise<void>;
  close(): Promise<void>;
}

/**
 * An initiator/responder audio+video pair exchanging SDP and trickled candidates in-process. With `holdVideo` the
 * candidates of the video m-line are kept back on both sides until `releaseVideo()`: its ICE connection waits
 * for them (no end-of-candidates is signalled), so the audio transport connects while the video one has not
 * started — an ordering the test controls instead of hoping for it.
 */
async function pair(o: { bundle: boolean; holdVideo?: boolean }): Promise<TestPair> {
  const base = { audio: true, video: true, ipv6: false, bundle: o.bundle };
  const a = await createPeer({ ...base, role: "initiator" });
  const b = await createPeer({ ...base, role: "responder" });
  const log = { a: [] as Logged[], b: [] as Logged[] };
  for (const [p, l] of [[a, log.a], [b, log.b]] as const) {
    p.onStateChange((s) =>
      l.push({ dtls: s.dtls, authenticatedTransports: p.remoteCertificateFingerprints().length })
    );
  }
  const local = { a: new Map<string, string[]>(), b: new Map<string, string[]>() };
  let sections: Section[] = [];
  const kindOf = (c: RemoteCandidate) =>
    sections.find((s) => s.mid === c.sdpMid || (c.sdpMid === undefined && s.index === c.sdpMLineIndex))
      ?.kind ??
      "?";
  const note = (side: Map<string, string[]>, kind: string, candidate: string) =>
    side.set(kind, [...(side.get(kind) ?? []), candidate]);

  let holding = o.holdVideo ?? false;
  const held: { to: Peer; c: RemoteCandidate }[] = [];
  const deliver = (to: Peer, c: RemoteCandidate) => {
    if (holding && kindOf(c) === "video") held.push({ to, c });
    else void to.addRemoteCandidate(c).catch(() => {});
  };
  // Candidates are told apart by the m-lines of the offer: those gathered before it is out wait for it.
  let offerOut = false;
  const early: { from: Map<string, string[]>; to: Peer; c: RemoteCandidate }[] = [];
  const trickle = (from: Map<string, string[]>, to: Peer, c: RemoteCandidate) => {
    if (!offerOut) return void early.push({ from, to, c });
    note(from, kindOf(c), c.candidate);
    deliver(to, c);
  };
  a.onLocalCandidate((c) => void (c && trickle(local.a, b, c)));
  b.onLocalCandidate((c) => void (c && trickle(local.b, a, c)));

  /** The SDP as the other side gets it; held video candidates of the SDP are queued for later. */
  const signal = (sdp: string, from: Map<string, string[]>, to: Peer) => {
    sections = sectionsOf(sdp);
    for (const s of sections) for (const c of s.candidates) note(from, s.kind, c);
    if (!holding) return sdp;
    for (const s of sections.filter((x) => x.kind === "video")) {
      for (const c of s.candidates) {
        held.push({ to, c: { candidate: c, sdpMid: s.mid, sdpMLineIndex: s.index } });
      }
    }
    return withoutCandidatesOf(sdp, "video");
  };
  await b.setRemoteDescription("offer", signal(await a.createOffer(), local.a, b));
  offerOut = true;
  for (const e of early.splice(0)) trickle(e.from, e.to, e.c);
  await a.setRemoteDescription("answer", signal(await b.createAnswer(), local.b, a));
  return {
    a,
    b,
    log,
    local,
    async releaseVideo() {
      holding = false;
      for (const { to, c } of held.splice(0)) await to.addRemoteCandidate(c);
    },
    async close() {
      await a.close();
      await b.close();
    },
  };
}

/** Sends `kind` RTP both ways until each side has received some (or ~2 s passed). */
async function rtpBothWays(a: Peer, b: Peer, kind: "audio" | "video") {
  const pt = kind === "audio" ? 111 : 96;
  for (
    let i = 0;
    i < 20 && (a.stats()[kind].packetsReceived === 0 || b.stats()[kind].packetsReceived === 0);
    i++
  ) {
    assert.ok(await a.sendRtp(kind, rtpPacket(100 + i, new Uint8Array(40), pt)), `a refused to send ${kind}`);
    assert.ok(await b.sendRtp(kind, rtpPacket(100 + i, new Uint8Array(40), pt)), `b refused to send ${kind}`);
    await sleep(100);
  }
}

/** Sends one non-STUN datagram (an RTP-looking one) from a socket of its own to `to`. */
async function foreignDatagram(to: { host: string; port: number }) {
  const s = dgram.createSocket("udp4");
  await new Promise<void>((r) => s.bind(0, () => r()));
  const d = rtpPacket(1, new Uint8Array(20));
  await new Promise<void>((r) => s.send(d, to.port, to.host, () => r()));
  s.close();
}

Deno.test("aggregateDtlsState: failed if any failed, connected only when all are, new before any started", () => {
  assert.equal(aggregateDtlsState([]), "new");
  assert.equal(aggregateDtlsState(["new", "new"]), "new");
  assert.equal(aggregateDtlsState(["connected", "new"]), "checking");
  assert.equal(aggregateDtlsState(["connected", "checking"]), "checking");
  assert.equal(aggregateDtlsState(["checking", "connected"]), "checking");
  assert.equal(aggregateDtlsState(["connected", "connected"]), "connected");
  assert.equal(aggregateDtlsState(["connected", "closed"]), "connected");
  assert.equal(aggregateDtlsState(["connected", "failed"]), "failed");
  assert.equal(aggregateDtlsState(["failed", "checking"]), "failed");
  assert.equal(aggregateDtlsState(["closed", "closed"]), "closed");
  assert.equal(aggregateDtlsState(["new", "closed"]), "new");
});

netTest(
  "unbundled: the audio transport connected alone does not make the peer connected nor open video; both do",
  async () => {
    const p = await pair({ bundle: false, holdVideo: true });
    const { a, b } = p;
    try {
      await waitFor(
        () =>
          a.remoteCertificateFingerprints().length === 1 && b.remoteCertificateFingerprints().length === 1,
        400,
      );
      for (const [name, peer] of [["a", a], ["b", b]] as const) {
        assert.equal(
          peer.remoteCertificateFingerprints().length,
          1,
          `${name}: the audio transport connected`,
        );
        assert.notEqual(peer.state().dtls, "connected", `${name}: the video transport has not connected`);
        assert.equal(
          await peer.sendRtp("video", rtpPacket(1, new Uint8Array(20), 96)),
          false,
          `${name} video`,
        );
        assert.equal(await peer.sendRtp("audio", rtpPacket(1, new Uint8Array(20))), true, `${name} audio`);
      }
      assert.deepEqual(p.log.a.filter((s) => s.dtls === "connected"), [], "a reported connected too early");
      assert.deepEqual(p.log.b.filter((s) => s.dtls === "connected"), [], "b reported connected too early");

      await p.releaseVideo();
      await Promise.all([a.waitConnected(), b.waitConnected()]);
      assert.deepEqual(a.remoteCertificateFingerprints(), [b.localFingerprint(), b.localFingerprint()]);
      assert.deepEqual(b.remoteCertificateFingerprints(), [a.localFingerprint(), a.localFingerprint()]);
      for (const [name, log] of [["a", p.log.a], ["b", p.log.b]] as const) {
        const connected = log.filter((s) => s.dtls === "connected");
        assert.ok(connected.length > 0, `${name} reported connected`);
        for (const s of connected) {
          assert.equal(s.authenticatedTransports, 2, `${name}: connected reported with one transport up`);
        }
        assert.equal(log.at(-1)?.dtls, "connected", `${name}: the last state`);
      }
      await rtpBothWays(a, b, "video");
      assert.ok(a.stats().video.packetsReceived > 0 && b.stats().video.packetsReceived > 0);
    } finally {
      await p.close();
    }
  },
);

netTest(
  "unbundled: video RTP both ways, and a foreign datagram on the video transport is dropped and counted",
  async () => {
    const p = await pair({ bundle: false });
    const { a, b } = p;
    try {
      await Promise.all([a.waitConnected(), b.waitConnected()]);
      assert.equal(a.state().dtls, "connected");
      assert.equal(b.remoteCertificateFingerprints().length, 2, "two transports");
      await rtpBothWays(a, b, "audio");
      await rtpBothWays(a, b, "video");
      for (const s of [a.stats(), b.stats()]) {
        assert.ok(s.audio.packetsReceived > 0, "audio received");
        assert.ok(s.video.packetsReceived > 0, "video received");
      }

      const audioPorts = udp4Addresses(p.local.b.get("audio") ?? []).map((x) => x.port);
      const video = udp4Addresses(p.local.b.get("video") ?? []);
      assert.ok(video.length > 0, "b's video m-line has IPv4 candidates");
      assert.ok(!audioPorts.includes(video[0]!.port), "the video transport has a port of its own");
      const before = b.stats().foreignSourceDrops;
      await foreignDatagram(video[0]!);
      await waitFor(() => b.stats().foreignSourceDrops > before, 100);
      assert.equal(b.stats().foreignSourceDrops, before + 1, "dropped on the second transport and counted");
      assert.equal(b.stats().srtpAuthFailures, 0, "it never reached SRTP");
    } finally {
      await p.close();
    }
  },
);

netTest("bundled audio+video: one transport, a foreign datagram is counted once", async () => {
  const p = await pair({ bundle: true });
  const { a, b } = p;
  try {
    await Promise.all([a.waitConnected(), b.waitConnected()]);
    assert.equal(b.remoteCertificateFingerprints().length, 1, "one transport");
    await rtpBothWays(a, b, "video");
    assert.ok(b.stats().video.packetsReceived > 0);
    const to = udp4Addresses([...p.local.b.values()].flat())[0];
    assert.ok(to, "b has an IPv4 candidate");
    const before = b.stats().foreignSourceDrops;
    await foreignDatagram(to);
    await waitFor(() => b.stats().foreignSourceDrops > before, 100);
    assert.equal(b.stats().foreignSourceDrops, before + 1);
  } finally {
    await p.close();
  }
});

netTest("unbundled: a failing second (video) transport makes the peer failed with its reason", async () => {
  const p = await pair({ bundle: false, holdVideo: true });
  const { a, b } = p;
  try {
    await waitFor(
      () => a.remoteCertificateFingerprints().length === 1 && b.remoteCertificateFingerprints().length === 1,
      400,
    );
    assert.equal(a.remoteCertificateFingerprints().length, 1, "the audio transport connected");
    assert.equal(b.remoteCertificateFingerprints().length, 1, "the audio transport connected");
    // From now on (the video handshake only) both guards see a forged peer Finished.
    guardTesting.mutateEvidence = (ev) => {
      if (!ev.peerFinished) return;
      const forged = new Uint8Array(ev.peerFinished);
      forged[0]! ^= 1;
      ev.peerFinished = forged;
      ev.transcript = ev.transcript.map((m) => (m.fromPeer && m.type === 20 ? { ...m, body: forged } : m));
    };
    await p.releaseVideo();
    await waitFor(() => a.state().dtls === "failed" || b.state().dtls === "failed", 400);
    const failed = [a, b].filter((x) => x.state().dtls === "failed");
    assert.ok(failed.length > 0, "a side failed");
    for (const [peer, log] of [[a, p.log.a], [b, p.log.b]] as const) {
      if (peer.state().dtls !== "failed") continue;
      assert.match(peer.state().reason ?? "", /peer Finished verify_data mismatch/);
      assert.ok(log.some((s) => s.dtls === "failed"), "the failure was reported");
      assert.ok(!log.some((s) => s.dtls === "connected"), "never reported connected");
      assert.equal(
        peer.remoteCertificateFingerprints().length,
        1,
        "only the audio transport is authenticated",
      );
      assert.equal(await peer.sendRtp("video", rtpPacket(1, new Uint8Array(20), 96)), false);
      await assert.rejects(peer.waitConnected(2000), /connection failed/);
    }
  } finally {
    guardTesting.mutateEvidence = undefined;
    await p.close();
  }
});
