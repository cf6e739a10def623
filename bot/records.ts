/**
 * Call records: every call, answered or placed, leaves one JSON object describing who, how it was verified,
 * how long each step took, what flowed each way, what was recorded and how it ended. Printed one per line
 * on stdout with `--json` and written to `<record-dir>/<sid>.json` with `--record-dir`.
 *
 * @module
 */
import type { Call, CallPhases } from "./calls.ts";
import type { PeerStats } from "../media/webrtc.ts";

/** Traffic of one medium. */
export interface RecordTraffic {
  packetsSent: number;
  bytesSent: number;
  packetsReceived: number;
  bytesReceived: number;
}

/** One recording written for the call. */
export interface RecordFile {
  kind: "audio" | "video";
  path: string;
  bytes: number;
  packets: number;
  lost: number;
}

/** The JSON call record. */
export interface CallRecord {
  peer: string;
  sid: string;
  direction: "incoming" | "outgoing";
  media: string[];
  /** Wall-clock start (ISO 8601): the propose sent or received. */
  startedAt: string;
  /** ms after the start (propose) of each step reached. */
  phases: Partial<Record<keyof CallPhases, number>>;
  /** Call length from connected (media authenticated) to end, ms; absent when it never connected. */
  connectedMs?: number;
  verification: {
    omemo: boolean;
    device?: number;
    identityFingerprint?: string;
    trust?: string;
  };
  /** The codecs in use per medium (werift's negotiated defaults). */
  codecs: Partial<Record<"audio" | "video", string>>;
  traffic: Partial<Record<"audio" | "video", RecordTraffic>>;
  srtpAuthFailures: number;
  srtpReplays: number;
  recordings: RecordFile[];
  /** Media sent: the source spec per medium, or "echo". */
  sent: Partial<Record<"audio" | "video", unknown>>;
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

/** The codecs werift negotiates by default (opus 48 kHz stereo, VP8). */
export const DEFAULT_CODECS = { audio: "opus/48000/2", video: "VP8/90000" } as const;

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
  const codecs: CallRecord["codecs"] = {};
  for (const kind of call.media) {
    codecs[kind] = DEFAULT_CODECS[kind];
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
    traffic,
    srtpAuthFailures: stats?.srtpAuthFailures ?? 0,
    srtpReplays: stats?.srtpReplays ?? 0,
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

/** Prints the record (one line on stdout) and/or writes `<recordDir>/<sid>.json`; returns the file path. */
export async function emitRecord(
  record: CallRecord,
  opts: { json?: boolean; recordDir?: string },
): Promise<string | undefined> {
  let path: string | undefined;
  if (opts.recordDir) {
    await Deno.mkdir(opts.recordDir, { recursive: true });
    path = `${opts.recordDir}/${safeName(record.sid)}.json`;
    await Deno.writeTextFile(path, JSON.stringify(record, null, 2) + "\n");
  }
  if (opts.json) {
    await Deno.stdout.write(new TextEncoder().encode(JSON.stringify(record) + "\n"));
  }
  return path;
}

/** A sid made safe as a file name. */
export const safeName = (sid: string) => sid.replace(/[^A-Za-z0-9._-]/g, "_");

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
    lines.push(
      `  ${kind} (${
        r.codecs[kind]
      }): sent ${t.packetsSent} packets / ${t.bytesSent} B, received ${t.packetsReceived} packets / ${t.bytesReceived} B`,
    );
  }
  lines.push(`  SRTP auth failures ${r.srtpAuthFailures}, replays dropped ${r.srtpReplays}`);
  for (const f of r.recordings) {
    lines.push(`  recorded ${f.kind}: ${f.path} (${f.bytes} B, ${f.packets} packets, ${f.lost} lost)`);
  }
  lines.push(
    `  ended: ${r.ended.reason}${r.ended.text ? ` (${r.ended.text})` : ""} by ${r.ended.by}${
      r.ended.cause ? ` (${r.ended.cause})` : ""
    }${r.connectedMs !== undefined ? ` after ${(r.connectedMs / 1000).toFixed(1)} s connected` : ""}`,
  );
  for (const e of r.errors) lines.push(`  error: ${e}`);
  return lines.join("\n");
}
