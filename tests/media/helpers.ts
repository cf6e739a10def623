import dgram from "node:dgram";
import {
  createPeer,
  type LocalCandidate,
  orderedSends,
  type Peer,
  type PeerOptions,
} from "../../media/webrtc.ts";

export const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Polls `done` every `stepMs` until it holds or `tries` polls passed (the caller asserts afterwards). */
export async function waitFor(done: () => boolean, tries = 50, stepMs = 20): Promise<void> {
  for (let i = 0; i < tries && !done(); i++) await sleep(stepMs);
}

/** Which side signalled a candidate. */
export type Side = "a" | "b";

export type PairOptions = Partial<Omit<PeerOptions, "role">> & {
  initiator?: Partial<PeerOptions>;
  responder?: Partial<PeerOptions>;
  /** rewrites (or drops, with null) every candidate line one side signals to the other, trickled or in
   * the SDP; the line is "candidate:…" without "a=" */
  mapCandidate?: (from: Side, candidate: string) => string | null;
};

/** Creates an initiator/responder pair wired with trickle ICE and SDP offer/answer (in-process signalling). */
export async function makePair(
  o: PairOptions = {},
): Promise<{ a: Peer; b: Peer; candidates: { a: LocalCandidate[]; b: LocalCandidate[] } }> {
  const { mapCandidate, initiator, responder, ...common } = o;
  const base = { audio: true, video: false, ipv6: false, ...common };
  const a = await createPeer({ ...base, ...initiator, role: "initiator" });
  const b = await createPeer({ ...base, ...responder, role: "responder" });
  const map = (from: Side, c: LocalCandidate): LocalCandidate | null => {
    if (!mapCandidate) return c;
    const candidate = mapCandidate(from, c.candidate);
    return candidate === null ? null : { ...c, candidate };
  };
  const mapSdp = (from: Side, sdp: string) =>
    mapCandidate
      ? sdp.split("\r\n").flatMap((line) => {
        if (!line.startsWith("a=candidate:")) return [line];
        const mapped = mapCandidate(from, line.slice(2));
        return mapped === null ? [] : [`a=${mapped}`];
      }).join("\r\n")
      : sdp;
  const candidates = { a: [] as LocalCandidate[], b: [] as LocalCandidate[] };
  a.onLocalCandidate((c) => void (c && candidates.a.push(c)));
  b.onLocalCandidate((c) => void (c && candidates.b.push(c)));
  let bHasRemote = false;
  const pendingForB: LocalCandidate[] = [];
  a.onLocalCandidate((c) => {
    const m = c && map("a", c);
    if (!m) return;
    if (bHasRemote) void b.addRemoteCandidate(m).catch(() => {});
    else pendingForB.push(m);
  });
  b.onLocalCandidate((c) => {
    const m = c && map("b", c);
    if (m) void a.addRemoteCandidate(m).catch(() => {});
  });
  const offer = mapSdp("a", await a.createOffer());
  await b.setRemoteDescription("offer", offer);
  bHasRemote = true;
  for (const c of pendingForB) await b.addRemoteCandidate(c).catch(() => {});
  const answer = mapSdp("b", await b.createAnswer());
  await a.setRemoteDescription("answer", answer);
  return { a, b, candidates };
}

/** Minimal RTP packet (V=2, PT, seq, ts, ssrc) with payload. */
export function rtpPacket(seq: number, payload: Uint8Array, pt = 111): Uint8Array {
  const p = new Uint8Array(12 + payload.length);
  const v = new DataView(p.buffer);
  p[0] = 0x80;
  p[1] = pt & 0x7f;
  v.setUint16(2, seq & 0xffff);
  v.setUint32(4, seq * 960);
  v.setUint32(8, 0x1234abcd);
  p.set(payload, 12);
  return p;
}

/** RTP or RTCP by the first byte (RFC 7983 demultiplexing: 128..191). */
export const isSrtp = (d: Uint8Array) => d.length >= 12 && d[0]! >= 128 && d[0]! < 192;
/** RTCP by the packet type (RFC 5761: 192..223 in the second byte). */
export const isSrtcp = (d: Uint8Array) => isSrtp(d) && d[1]! >= 192 && d[1]! <= 223;
/** DTLS by the first byte (RFC 7983: 20..63). */
export const isDtlsRecord = (d: Uint8Array) => d.length >= 13 && d[0]! >= 20 && d[0]! <= 63;

type Address = { host: string; port: number };
type UdpSocket = ReturnType<typeof dgram.createSocket>;

function openSocket(): Promise<UdpSocket> {
  const s = dgram.createSocket("udp4");
  // Deno's node:dgram reorders back-to-back sends; DTLS flights must stay in order.
  orderedSends(s as unknown as Parameters<typeof orderedSends>[0]);
  return new Promise((resolve) => s.bind(0, () => resolve(s)));
}

const sendTo = (s: UdpSocket, d: Uint8Array, to: Address) =>
  new Promise<void>((r) => s.send(d, to.port, to.host, () => r()));

/**
 * A man in the middle on the media path: each peer is told the relay's port instead of the other's,
 * so the ICE pair each side validates is the relay's address. Everything is forwarded unchanged and
 * copied to `aToB`/`bToA`; a test can keep datagrams back (`holdAToB`) and send its own from the
 * addresses the peers validated (`injectToB`, `injectToA`).
 */
export class UdpRelay {
  /** copies of the datagrams a sent towards b / b towards a, in arrival order */
  readonly aToB: Uint8Array[] = [];
  readonly bToA: Uint8Array[] = [];
  /** while set, a→b datagrams for which it returns true are not forwarded but kept in `heldAToB` */
  holdAToB: ((d: Uint8Array) => boolean) | undefined;
  readonly heldAToB: Uint8Array[] = [];
  /** the real media address of each peer (its first IPv4 UDP host candidate) */
  readonly real: Partial<Record<Side, Address>> = {};

  private constructor(private readonly asA: UdpSocket, private readonly asB: UdpSocket) {
    // asB stands for b towards a (a sends to it); asA stands for a towards b.
    asB.on("message", (d: Uint8Array) => {
      this.aToB.push(Uint8Array.from(d));
      if (this.holdAToB?.(d)) this.heldAToB.push(Uint8Array.from(d));
      else if (this.real.b) void sendTo(asA, d, this.real.b);
    });
    asA.on("message", (d: Uint8Array) => {
      this.bToA.push(Uint8Array.from(d));
      if (this.real.a) void sendTo(asB, d, this.real.a);
    });
  }

  static async open(): Promise<UdpRelay> {
    return new UdpRelay(await openSocket(), await openSocket());
  }

  /** For {@link PairOptions.mapCandidate}: one IPv4 UDP host candidate per side, pointing at the relay. */
  mapCandidate = (from: Side, candidate: string): string | null => {
    const f = candidate.split(" ");
    if (f[2]?.toLowerCase() !== "udp" || f[7] !== "host" || !/^\d+\.\d+\.\d+\.\d+$/.test(f[4] ?? "")) {
      return null;
    }
    const real = { host: f[4]!, port: Number(f[5]) };
    const known = this.real[from];
    if (known && (known.host !== real.host || known.port !== real.port)) return null;
    this.real[from] = real;
    f[5] = String((from === "a" ? this.asA : this.asB).address().port);
    return f.join(" ");
  };

  /** Sends `d` to b from the address b validated as a's. */
  injectToB(d: Uint8Array): Promise<void> {
    return sendTo(this.asA, d, this.real.b!);
  }
  /** Sends `d` to a from the address a validated as b's. */
  injectToA(d: Uint8Array): Promise<void> {
    return sendTo(this.asB, d, this.real.a!);
  }
  /** Forwards the held a→b datagrams to b and stops holding. */
  async releaseAToB(): Promise<void> {
    this.holdAToB = undefined;
    for (const d of this.heldAToB.splice(0)) await this.injectToB(d);
  }
  close(): void {
    this.asA.close();
    this.asB.close();
  }
}

/** What {@link withRelayedCall} hands to a test. */
export interface RelayedCall {
  a: Peer;
  b: Peer;
  relay: UdpRelay;
  /** decrypted RTP packets b delivered, in order */
  rtpAtB: Uint8Array[];
  /** sends `d` to b's real media port from a socket of its own (an off-path attacker) */
  offPath(d: Uint8Array): Promise<void>;
  /** a sends one RTP packet whose payload is `text`; resolves once b delivered it (or after ~1 s) */
  sendAToB(seq: number, text: string): Promise<void>;
}

/**
 * Runs `test` on a connected audio call between two real peers over real UDP, through a
 * {@link UdpRelay}, with an off-path attacker socket; closes everything afterwards.
 */
export async function withRelayedCall(test: (call: RelayedCall) => Promise<void>): Promise<void> {
  const relay = await UdpRelay.open();
  const attacker = await openSocket();
  const { a, b } = await makePair({ mapCandidate: relay.mapCandidate });
  try {
    await Promise.all([a.waitConnected(), b.waitConnected()]);
    const rtpAtB: Uint8Array[] = [];
    b.onRtp((e) => rtpAtB.push(e.packet));
    await test({
      a,
      b,
      relay,
      rtpAtB,
      offPath: (d) => sendTo(attacker, d, relay.real.b!),
      async sendAToB(seq, text) {
        const before = rtpAtB.length;
        if (!await a.sendRtp("audio", rtpPacket(seq, new TextEncoder().encode(text)))) {
          throw new Error("a refused to send RTP");
        }
        await waitFor(() => rtpAtB.length > before);
      },
    });
  } finally {
    attacker.close();
    relay.close();
    await a.close();
    await b.close();
  }
}

/** The text payload of a delivered RTP packet built by {@link rtpPacket}. */
export const rtpText = (p: Uint8Array) => new TextDecoder().decode(p.subarray(12));

/** Deno.test options shared by the network tests (werift leaves timers and sockets behind). */
export const netTest = (name: string, fn: () => Promise<void>) =>
  Deno.test({ name, sanitizeOps: false, sanitizeResources: false, fn });
