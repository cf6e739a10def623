/**
 * What the apps do with one call once it exists: feed it media (`--play` sources or `--echo`), record what
 * arrives (`--record-dir`), keep its traffic counters, and when it ends build its {@link CallRecord}.
 * Shared by the bot, the dialler and the demo, so all three behave the same.
 *
 * @module
 */
import type { Call } from "./calls.ts";
import type { PlaySpec } from "./cli.ts";
import { buildRecord, type CallRecord, type RecordFile, safeName } from "./records.ts";
import type { Logger } from "../xmpp/mod.ts";
import type { MediaKind, PeerStats } from "../media/webrtc.ts";
import { sharedSource, type SharedSourceHandle } from "../media/sources.ts";
import { startRecorder } from "../media/recorder.ts";

/** Options for {@link runCall}. */
export interface RunOptions {
  play: PlaySpec;
  /** Send the peer's media back instead of playing. */
  echo?: boolean;
  /** Record incoming media here (`<sid>-audio.ogg`, `<sid>-video.webm`). */
  recordDir?: string;
  logger: Logger;
}

/** A call being run. */
export interface CallRun {
  readonly call: Call;
  /** Hangs up, remembering why (appears in the record as `ended.cause`). */
  hangup(cause: string): Promise<void>;
  /** Notes that we end (or refuse) the call for `cause`, when it ends through other means (e.g. a decline). */
  noteCause(cause: string): void;
  /** The record, once the call ended and recordings are finished. */
  readonly record: Promise<CallRecord>;
}

interface Recorder {
  write(p: Uint8Array): void;
  stop(): Promise<{ path: string; bytes: number; packets: number; lost: number }>;
}

/** ffmpeg processes are started one at a time (concurrent starts on loopback RTP ports are fragile). */
function serializer() {
  let chain: Promise<unknown> = Promise.resolve();
  return <T>(fn: () => Promise<T>): Promise<T> => {
    const next = chain.then(fn, fn);
    chain = next.catch(() => {});
    return next;
  };
}
const sourceStarts = serializer();
const recorderStarts = serializer();

/** ffmpeg sometimes fails at start for transient reasons: two more attempts before giving up. */
async function startWithRetry<T>(start: () => Promise<T>, onRetry: (e: unknown) => void): Promise<T> {
  for (let attempt = 1;; attempt++) {
    try {
      return await start();
    } catch (e) {
      if (attempt >= 3) throw e;
      onRetry(e);
    }
  }
}

/** Runs media and bookkeeping for `call` until it ends. */
export function runCall(call: Call, opts: RunOptions): CallRun {
  const log = opts.logger;
  let localCause: string | undefined;
  const errors: string[] = [];
  const cleanups: (() => void)[] = [];
  const sources: SharedSourceHandle[] = [];
  const recorders: { kind: MediaKind; rec: Recorder }[] = [];
  const sent: CallRecord["sent"] = {};
  let lastStats: PeerStats | undefined;
  const snapshot = () => {
    try {
      if (call.peer) lastStats = structuredClone(call.peer.stats());
    } catch { /* closed */ }
  };
  const ticker = setInterval(snapshot, 250);
  let ended = false;

  const startRecorders = async () => {
    const peer = call.peer!;
    if (opts.recordDir) {
      await Deno.mkdir(opts.recordDir, { recursive: true });
      for (const kind of call.media) {
        const path = `${opts.recordDir}/${safeName(call.sid)}-${kind}.${kind === "audio" ? "ogg" : "webm"}`;
        try {
          const rec = await recorderStarts(() =>
            startRecorder({ kind, path, codec: kind === "audio" ? "opus" : "vp8" })
          );
          if (ended) {
            errors.push(`recorder ${kind}: started only after the call ended`);
            await rec.stop().catch(() => {});
            continue;
          }
          recorders.push({ kind, rec });
          cleanups.push(peer.onRtp((e) => e.kind === kind && rec.write(e.packet)));
        } catch (e) {
          errors.push(`recorder ${kind}: ${e instanceof Error ? e.message : e}`);
          log.warn("cannot record", { sid: call.sid, kind, error: String(e) });
        }
      }
    }
  };

  const startSending = async () => {
    const peer = call.peer!;
    if (opts.echo) {
      for (const kind of call.media) sent[kind] = "echo";
      cleanups.push(peer.onRtp((e) => void peer.sendRtp(e.kind, e.packet).catch(() => {})));
      return;
    }
    for (const kind of call.media) {
      const spec = opts.play[kind];
      try {
        const handle = await startWithRetry(
          () => sourceStarts(() => sharedSource(spec, kind, { loop: true })),
          (e) =>
            log.warn("media source failed to start, retrying", { sid: call.sid, kind, error: String(e) }),
        );
        if (ended) {
          await handle.release();
          return;
        }
        sources.push(handle);
        sent[kind] = spec;
        cleanups.push(handle.source.onPacket((p) => void peer.sendRtp(kind, p).catch(() => {})));
        handle.source.exited.then((x) => {
          if (!ended && x.reason !== "stopped") {
            errors.push(`source ${kind} ended: ${x.reason}`);
            log.warn("media source ended", { sid: call.sid, kind, reason: x.reason });
          }
        });
      } catch (e) {
        errors.push(`source ${kind}: ${e instanceof Error ? e.message : e}`);
        log.warn("cannot start media source", { sid: call.sid, kind, error: String(e) });
      }
    }
  };

  // Sending does not wait for the recorders (each medium's recording starts as soon as its ffmpeg listens).
  const mediaStarted = call.connected.then(() => Promise.all([startRecorders(), startSending()]), () => {});

  const record = (async () => {
    const end = await call.ended;
    snapshot();
    ended = true;
    clearInterval(ticker);
    await mediaStarted.catch(() => {});
    for (const off of cleanups) off();
    await Promise.all(sources.map((s) => s.release().catch(() => {})));
    const recordings: RecordFile[] = [];
    for (const { kind, rec } of recorders) {
      try {
        const r = await rec.stop();
        recordings.push({ kind, path: r.path, bytes: r.bytes, packets: r.packets, lost: r.lost });
      } catch (e) {
        errors.push(`recorder ${kind}: ${e instanceof Error ? e.message : e}`);
      }
    }
    return buildRecord(call, {
      ended: end,
      endedBy: localCause ? "local" : "remote",
      ...(localCause ? { cause: localCause } : {}),
      ...(lastStats ? { stats: lastStats } : {}),
      recordings,
      sent,
      errors,
    });
  })();

  return {
    call,
    record,
    noteCause(cause) {
      localCause ??= cause;
    },
    async hangup(cause) {
      if (call.state === "ended") return;
      localCause ??= cause;
      snapshot();
      await call.hangup();
    },
  };
}
