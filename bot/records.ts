/**
 * Call records: every call, answered or placed, leaves one JSON object describing who, how it was verified,
 * how long each step took, what flowed each way, what was recorded and how it ended. Printed one per line
 * on stdout with `--json` and written to `<record-dir>/<sid>.json` with `--record-dir`.
 *
 * @module
 */
import type { Call, CallPhases } from "./calls.ts";
import type { PeerStats } from "../media/webrtc.ts";
import type { RtpContentMap } from "../jingle/sdp.ts";
import { codecLabel, type NegotiatedCodec, negotiatedCodecs } from "../media/codecs.ts";

/** Traffic of one medium. */
export interface RecordTraffic {
  /** RTP packets sent. */
  packetsSent: number;
  /** RTP bytes sent (plaintext). */
  bytesSent: number;
  /** RTP packets received. */
  packetsReceived: number;
  /** RTP bytes received (plaintext). */
  bytesReceived: number;
}

/** One recording of the call. */
export interface RecordFile {
  /** Which medium was recorded. */
  kind: "audio" | "video";
  /** The file written. */
  path: string;
  /** Size of the file on disk (what was written before a failure, for a failed one). */
  bytes: number;
  /** RTP packets written to the file. */
  packets: number;
  /** RTP packets that never arrived (sequence-number gaps). */
  lost: number;
  /** false when the recording failed (ffmpeg died, disk full, …): the file is missing or truncated. */
  ok: boolean;
  /** Why it failed. */
  error?: string;
}

/** The JSON call record. */
export interface CallRecord {
  /** The other party's JID. */
  peer: string;
  /** Jingle session id (the same as the XEP-0353 propose id). */
  sid: string;
  /** Whether the peer called us or we called the peer. */
  direction: "incoming" | "outgoing";
  /** Media of the call, e.g. `["audio", "video"]`. */
  media: string[];
  /** Wall-clock start (ISO 8601): the propose sent or received. */
  startedAt: string;
  /** ms after the start (propose) of each step reached. */
  phases: Partial<Record<keyof CallPhases, number>>;
  /** Call length from connected (media authenticated) to end, ms; absent when it never connected. */
  connectedMs?: number;
  /** How the peer's DTLS fingerprint was verified: OMEMO-signed or not, by which device, its identity and trust. */
  verification: {
    omemo: boolean;
    device?: number;
    identityFingerprint?: string;
    trust?: string;
  };
  /** The codec each way per medium (name, clock rate, channels, payload type). */
  codecs: Partial<Record<"audio" | "video", NegotiatedCodec>>;
  /** Where `codecs` comes from: the Jingle negotiation, or werift's defaults when the call does not expose it. */
  codecsFrom: "negotiation" | "defaults";
  /** Packets and bytes per medium. */
  traffic: Partial<Record<"audio" | "video", RecordTraffic>>;
  /** SRTP/SRTCP packets dropped because their auth tag did not verify. */
  srtpAuthFailures: number;
  /** SRTP packets dropped as replays. */
  srtpReplays: number;
  /** DTLS/SRTP/SRTCP datagrams dropped because they came from an address ICE had not validated (a third party
   * on the media path, or a peer switching address without ICE); 0 on a normal call. */
  foreignSourceDrops: number;
  /** The recordings made (with `--record-dir`). */
  recordings: RecordFile[];
  /** Media sent: the source spec per medium, or "echo". */
  sent: Partial<Record<"audio" | "video", unknown>>;
  /** How the call ended: the Jingle reason condition, its text, who ended it and why. */
  ended: {
    reason: string;
    text?: string;
    /** Who ended it: us (`local`: hangup, time limit, shutdown) or the other party / the network. */
    by: "local" | "remote";
    /** Why we ended it, when we did (`hangup`, `duration`, `max-call-seconds`, `shutdown`, …). */
    cause?: string;
  };
  /** Errors met on the way (source or recorder failures); the call itself may still have succeeded. */
  errors: string[];
}

/** What werift 0.25 offers first, and so uses against itself: OPUS/48000/2 on PT 96, VP8/90000 on PT 98. */
export const DEFAULT_CODECS: Readonly<Record<"audio" | "video", NegotiatedCodec>> = {
  audio: {
    send: { name: "opus", clockrate: 48000, channels: 2, pt: 96 },
    receive: { name: "opus", clockrate: 48000, channels: 2, pt: 96 },
  },
  video: {
    send: { name: "VP8", clockrate: 90000, pt: 98 },
    receive: { name: "VP8", clockrate: 90000, pt: 98 },
  },
};

/**
 * Both descriptions of a call's offer/answer, as a call may expose them (`call.negotiated`, see
 * {@link callCodecs}); contents with plain (decrypted) fingerprints.
 */
export interface Negotiation {
  /** Our offer or answer. */
  local: RtpContentMap;
  /** The peer's offer or answer. */
  remote: RtpContentMap;
}

/**
 * The codecs of `call` read from its negotiation when the call exposes one (`negotiated`), else werift's
 * defaults. We sent the offer when the call is outgoing (session-initiate), the answer when incoming.
 */
export function callCodecs(call: Call): { codecs: CallRecord["codecs"]; from: CallRecord["codecsFrom"] } {
  const negotiated = call.negotiated;
  if (negotiated) {
    const codecs = negotiatedCodecs(negotiated.local, negotiated.remote, call.direction === "outgoing");
    return { codecs, from: "negotiation" };
  }
  const codecs: CallRecord["codecs"] = {};
  for (const kind of call.media) codecs[kind] = structuredClone(DEFAULT_CODECS[kind]);
  return { codecs, from: "defaults" };
}

/** Builds the record of an ended call. */
export function buildRecord(
  call: Call,
  info: {
    ended: { reason: string; text?: string };
    endedBy: "local" | "remote";
    cause?: string;
    stats?: PeerStats;
    recordings?: RecordFile[];
    sent?: CallRecord["sent"];
    errors?: string[];
  },
): CallRecord {
  const p = call.phases;
  const t0 = p.proposed ?? p.initiate ?? p.accept ?? p.ended ?? performance.timeOrigin + performance.now();
  const phases: CallRecord["phases"] = {};
  for (const [k, v] of Object.entries(p) as [keyof CallPhases, number | undefined][]) {
    if (v !== undefined) phases[k] = round(v - t0);
  }
  const connectedAt = p.dtlsConnected;
  const v = call.verification;
  const stats = info.stats;
  const traffic: CallRecord["traffic"] = {};
  const { codecs, from: codecsFrom } = callCodecs(call);
  for (const kind of call.media) {
    if (stats) {
      const s = stats[kind];
      traffic[kind] = {
        packetsSent: s.packetsSent,
        bytesSent: s.bytesSent,
        packetsReceived: s.packetsReceived,
        bytesReceived: s.bytesReceived,
      };
    }
  }
  return {
    peer: call.peerJid,
    sid: call.sid,
    direction: call.direction,
    media: [...call.media],
    startedAt: new Date(t0).toISOString(),
    phases,
    ...(connectedAt !== undefined && p.ended !== undefined
      ? { connectedMs: round(p.ended - connectedAt) }
      : {}),
    verification: {
      omemo: v.omemo,
      ...(v.deviceId !== undefined ? { device: v.deviceId } : {}),
      ...(v.identityFingerprint ? { identityFingerprint: v.identityFingerprint } : {}),
      ...(v.trust ? { trust: v.trust } : {}),
    },
    codecs,
    codecsFrom,
    traffic,
    srtpAuthFailures: stats?.srtpAuthFailures ?? 0,
    srtpReplays: stats?.srtpReplays ?? 0,
    foreignSourceDrops: stats?.foreignSourceDrops ?? 0,
    recordings: info.recordings ?? [],
    sent: info.sent ?? {},
    ended: {
      reason: info.ended.reason,
      ...(info.ended.text ? { text: info.ended.text } : {}),
      by: info.endedBy,
      ...(info.cause ? { cause: info.cause } : {}),
    },
    errors: info.errors ?? [],
  };
}

const round = (x: number) => Math.round(x * 10) / 10;

/**
 * Prints the record (one line on stdout) and/or writes `<recordDir>/<sid>.json`; returns the file path.
 * stdout comes first, so a record directory that cannot take the file (e.g. a full disk) still leaves the
 * record on stdout; the file is written whole or not at all (temp file + rename) and the error says why.
 */
export async function emitRecord(
  record: CallRecord,
  opts: { json?: boolean; recordDir?: string },
): Promise<string | undefined> {
  if (opts.json) {
    await Deno.stdout.write(new TextEncoder().encode(JSON.stringify(record) + "\n"));
  }
  if (!opts.recordDir) return undefined;
  const path = `${opts.recordDir}/${safeName(record.sid)}.json`;
  const tmp = `${path}.partial`;
  try {
    await Deno.mkdir(opts.recordDir, { recursive: true });
    await Deno.writeTextFile(tmp, JSON.stringify(record, null, 2) + "\n");
    await Deno.rename(tmp, path);
  } catch (e) {
    await Deno.remove(tmp).catch(() => {});
    throw new Error(`cannot write the call record ${path}: ${e instanceof Error ? e.message : e}`);
  }
  return path;
}

/** A sid made safe as a file name. */
export const safeName = (sid: string): string => sid.replace(/[^A-Za-z0-9._-]/g, "_");

/** A few human lines describing the call. */
export function summarize(r: CallRecord): string {
  const lines: string[] = [];
  const arrow = r.direction === "outgoing" ? "→" : "←";
  lines.push(`call ${arrow} ${r.peer} (${r.media.join("+")}), sid ${r.sid}`);
  lines.push(
    r.verification.omemo
      ? `  verified through OMEMO: device ${r.verification.device}, identity ${
        r.verification.identityFingerprint ?? "?"
      } (trust ${r.verification.trust ?? "?"})`
      : `  NOT OMEMO-verified (plain DTLS fingerprint)`,
  );
  const order: (keyof CallPhases)[] = [
    "proposed",
    "proceed",
    "initiate",
    "accept",
    "iceConnected",
    "dtlsConnected",
    "firstRtpSent",
    "firstRtpReceived",
    "ended",
  ];
  lines.push(
    "  phases (ms): " +
      order.filter((k) => r.phases[k] !== undefined).map((k) => `${k} ${r.phases[k]!.toFixed(0)}`).join(", "),
  );
  for (const kind of ["audio", "video"] as const) {
    const t = r.traffic[kind];
    if (!t) continue;
    const c = r.codecs[kind];
    const codec = c ? `${codecLabel(c.send)} pt ${c.send.pt}/${c.receive.pt}` : "no codec";
    lines.push(
      `  ${kind} (${codec}): sent ${t.packetsSent} packets / ${t.bytesSent} B, received ${t.packetsReceived} packets / ${t.bytesReceived} B`,
    );
  }
  lines.push(
    `  SRTP auth failures ${r.srtpAuthFailures}, replays dropped ${r.srtpReplays}, datagrams from unvalidated addresses dropped ${r.foreignSourceDrops}`,
  );
  for (const f of r.recordings) {
    lines.push(
      f.ok
        ? `  recorded ${f.kind}: ${f.path} (${f.bytes} B, ${f.packets} packets, ${f.lost} lost)`
        : `  recording ${f.kind} FAILED: ${f.path} (${f.bytes} B kept): ${f.error ?? "unknown error"}`,
    );
  }
  lines.push(
    `  ended: ${r.ended.reason}${r.ended.text ? ` (${r.ended.text})` : ""} by ${r.ended.by}${
      r.ended.cause ? ` (${r.ended.cause})` : ""
    }${r.connectedMs !== undefined ? ` after ${(r.connectedMs / 1000).toFixed(1)} s connected` : ""}`,
  );
  for (const e of r.errors) lines.push(`  error: ${e}`);
  return lines.join("\n");
}
