import { createPeer, type LocalCandidate, type Peer, type PeerOptions } from "../../media/webrtc.ts";

export type PairOptions = Partial<Omit<PeerOptions, "role">> & {
  initiator?: Partial<PeerOptions>;
  responder?: Partial<PeerOptions>;
};

/** Creates an initiator/responder pair wired with trickle ICE and SDP offer/answer (in-process signalling). */
export async function makePair(
  o: PairOptions = {},
): Promise<{ a: Peer; b: Peer; candidates: { a: LocalCandidate[]; b: LocalCandidate[] } }> {
  const base = { audio: true, video: false, ipv6: false, ...o };
  const a = await createPeer({ ...base, ...o.initiator, role: "initiator" });
  const b = await createPeer({ ...base, ...o.responder, role: "responder" });
  const bReady: Promise<void>[] = [];
  const candidates = { a: [] as LocalCandidate[], b: [] as LocalCandidate[] };
  a.onLocalCandidate((c) => void (c && candidates.a.push(c)));
  b.onLocalCandidate((c) => void (c && candidates.b.push(c)));
  let bHasRemote = false;
  const pendingForB: Parameters<Peer["addRemoteCandidate"]>[0][] = [];
  a.onLocalCandidate((c) => {
    if (bHasRemote) bReady.push(b.addRemoteCandidate(c));
    else pendingForB.push(c);
  });
  b.onLocalCandidate((c) => void a.addRemoteCandidate(c).catch(() => {}));
  const offer = await a.createOffer();
  await b.setRemoteDescription("offer", offer);
  bHasRemote = true;
  for (const c of pendingForB) await b.addRemoteCandidate(c).catch(() => {});
  const answer = await b.createAnswer();
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

export const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
