/**
 * What the apps do with one call once it exists: feed it media (`--play` sources or `--echo`), record what
 * arrives (`--record-dir`), keep its traffic counters, and when it ends build its {@link CallRecord}.
 * Shared by the bot, the dialler and the demo, so all three behave the same.
 *
 * ffmpeg failures never end or hang the call; they degrade it, with a warning logged and the reason in the
 * record (`errors`, and `recordings[].ok/error`):
 * - a source whose ffmpeg dies (killed, crashed) is restarted (a fresh shared encoder, so a gap of a few
 *   hundred ms), at most `maxSourceRestarts` times per medium; after that, or when it cannot be restarted,
 *   the call goes on without sending that medium (the peer hears silence) rather than being torn down —
 *   the other direction and the recording still work, and a bot's caller can still hang up normally;
 * - a recorder whose ffmpeg dies (killed, disk full) is logged at once; the call goes on and the record
 *   marks that recording failed, with ffmpeg's reason and the bytes kept;
 * - a medium whose negotiated codec we cannot encode or record (when the call exposes its negotiation) is
 *   neither sent nor recorded (calls refuse such sessions in the first place; this is the second line).
 *
 * Media start: the encoders and recorders are started as soon as the call is answered (state `proceeding`:
 * the peer's proceed, or our own accept), while Jingle, ICE and DTLS still run, and attached when the call
 * connects; so the first packets go out right after DTLS instead of ~100–300 ms later, and the recording is
 * as long as the connected call. Nothing is spawned for a call that only rings (it may be refused). A call
 * that ends before connecting releases them and leaves no recording.
 *
 * Media added during the call (a video upgrade: our `call.addVideo()` or the peer's accepted content-add)
 * gets its source (or echo) and its recorder as soon as it appears in `call.media`; media removed (the peer's
 * content-remove) is no longer sent, and its recording is finished with the call.
 *
 * @module
 */
import type { Call } from "./calls.ts";
import type { PlaySpec } from "./cli.ts";
import { buildRecord, type CallRecord, type RecordFile, safeName } from "./records.ts";
import type { Logger } from "../xmpp/mod.ts";
import type { MediaKind, PeerStats } from "../media/webrtc.ts";
import { checkMediaFile, RtpContinuity, sharedSource, type SharedSourceHandle } from "../media/sources.ts";
import { type Recorder, RecorderError, startRecorder } from "../media/recorder.ts";
import { codecLabel, SUPPORTED_CODECS } from "../media/codecs.ts";
import { resolveFfmpeg } from "../media/ffmpeg.ts";
import { callCodecs } from "./records.ts";

/** Options for {@link runCall}. */
export interface RunOptions {
  /** What to send on each medium (unless `echo`). */
  play: PlaySpec;
  /** Send the peer's media back instead of playing. */
  echo?: boolean;
  /** Record incoming media here (`<sid>-audio.ogg`, `<sid>-video.webm`). */
  recordDir?: string;
  /** Where the run logs (source/recorder failures, media timings). */
  logger: Logger;
  /** Restarts of a medium's source after its ffmpeg died, per call (default 2). */
  maxSourceRestarts?: number;
  /**
   * Keep the `--play` encoders warm this long after the last call using them ended (default 0), so that an
   * answering bot's next call has media at once instead of after an ffmpeg start (~150–250 ms). The owner
   * stops the lingering ones with `stopIdleSources()` (media/sources.ts) when it shuts down.
   */
  sourceLingerMs?: number;
}

/** The ffmpeg processes serving a call right now. */
export interface CallFfmpegPids {
  /** ffmpeg encoder pid per medium. */
  sources: Partial<Record<MediaKind, number>>;
  /** ffmpeg recorder pid per medium. */
  recorders: Partial<Record<MediaKind, number>>;
}

/** ms after `connected` at which media was ready (for benchmarks; negative = ready before it connected). */
export interface CallMediaTimings {
  /** Per medium: when its source first fed the call, ms after connected. */
  sources: Partial<Record<MediaKind, number>>;
  /** Per medium: when its recorder was ready, ms after connected. */
  recorders: Partial<Record<MediaKind, number>>;
}

/** A call being run. */
export interface CallRun {
  /** The call being run. */
  readonly call: Call;
  /** Hangs up, remembering why (appears in the record as `ended.cause`). */
  hangup(cause: string): Promise<void>;
  /** Notes that we end (or refuse) the call for `cause`, when it ends through other means (e.g. a decline). */
  noteCause(cause: string): void;
  /** Resolves once the media of the connected call was set up (sources and recorders started or given up). */
  readonly mediaStarted: Promise<void>;
  /** pids of the ffmpeg processes sending and recording this call's media (shared sources included). */
  ffmpegPids(): CallFfmpegPids;
  /** When each source fed the call and each recorder was ready, in ms after the call connected. */
  mediaTimings(): CallMediaTimings;
  /** The record, once the call ended and recordings are finished. */
  readonly record: Promise<CallRecord>;
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

const SUPPORTED_CLOCK = { audio: SUPPORTED_CODECS.audio.clockrate, video: SUPPORTED_CODECS.video.clockrate };

/** Says once per process which ffmpeg the calls use and why (or that none was found). */
let ffmpegAnnounced = false;
function announceFfmpeg(log: Logger): void {
  if (ffmpegAnnounced) return;
  ffmpegAnnounced = true;
  resolveFfmpeg().then(
    (f) =>
      log.info("using ffmpeg", {
        path: f.path,
        from: f.source,
        version: f.version,
        diesWithUs: f.deathWrapper.length > 0
          ? f.deathWrapper.slice(0, -1).join(" ")
          : "no (setpriv unavailable)",
      }),
    (e) => {
      ffmpegAnnounced = false; // say it again next time: it may have been installed meanwhile
      log.error("no ffmpeg: calls get no media", { error: message(e) });
    },
  );
}

/** Removes `path` if it is a regular file (a recording we created), never anything else. */
async function removeFile(path: string): Promise<void> {
  const st = await Deno.lstat(path).catch(() => null);
  if (st?.isFile) await Deno.remove(path).catch(() => {});
}

const message = (e: unknown) => e instanceof Error ? e.message : String(e);

/**
 * Checks the `--play` files before any call (missing, not a file, unreadable, not decodable): throws a
 * `MediaSourceError` naming the file. Synthetic sources need no check.
 */
export async function checkPlay(play: PlaySpec): Promise<void> {
  const seen = new Set<string>();
  for (const spec of [play.audio, play.video]) {
    if (spec.type !== "file" || seen.has(spec.path)) continue;
    seen.add(spec.path);
    await checkMediaFile(spec.path);
  }
}

/** Runs media and bookkeeping for `call` until it ends. */
export function runCall(call: Call, opts: RunOptions): CallRun {
  const log = opts.logger;
  const maxRestarts = opts.maxSourceRestarts ?? 2;
  let localCause: string | undefined;
  const errors: string[] = [];
  const cleanups: (() => void)[] = [];
  const sources = new Map<MediaKind, SharedSourceHandle>();
  const restarts: Record<MediaKind, number> = { audio: 0, video: 0 };
  /** One continuous outgoing stream per medium, whichever encoder feeds it (restarts). */
  const streams: Record<MediaKind, RtpContinuity> = {
    audio: new RtpContinuity(SUPPORTED_CLOCK.audio),
    video: new RtpContinuity(SUPPORTED_CLOCK.video),
  };
  const recorders: { kind: MediaKind; rec: Recorder }[] = [];
  const failedRecordings: RecordFile[] = [];
  /** ffmpeg starts in flight (sources, restarts, recorders): the record waits for them before cleaning up. */
  const starting = new Set<Promise<unknown>>();
  const track = <T>(p: Promise<T>): Promise<T> => {
    starting.add(p);
    void p.finally(() => starting.delete(p)).catch(() => {});
    return p;
  };
  const sent: CallRecord["sent"] = {};
  let lastStats: PeerStats | undefined;
  const snapshot = () => {
    try {
      if (call.peer) lastStats = structuredClone(call.peer.stats());
    } catch { /* closed */ }
  };
  // The call has no event for media added or removed (calls.ts): the ticker also compares `call.media`.
  const ticker = setInterval(() => {
    snapshot();
    watchMedia();
  }, 250);
  let ended = false;
  let connected = false;
  let stoppingRecorders = false;
  /** performance.now() when each source first fed the call / each recorder was ready. */
  const readyAt: {
    sources: Partial<Record<MediaKind, number>>;
    recorders: Partial<Record<MediaKind, number>>;
  } = {
    sources: {},
    recorders: {},
  };
  let connectedAt: number | undefined;

  /** Why `kind` cannot be sent/recorded with the negotiated codec, when the call exposes its negotiation. */
  const codecProblem = (kind: MediaKind): string | undefined => {
    const { codecs, from } = callCodecs(call);
    if (from !== "negotiation") return undefined;
    const c = codecs[kind];
    const want = SUPPORTED_CODECS[kind];
    if (!c) return `no ${kind} codec was negotiated`;
    if (c.send.name.toLowerCase() !== want.name.toLowerCase() || c.send.clockrate !== want.clockrate) {
      return `negotiated ${kind} codec ${codecLabel(c.send)} is not ${codecLabel(want)}`;
    }
    return undefined;
  };

  // ---- recorders: started when answered, fed once connected

  const recordingPath = (kind: MediaKind) =>
    `${opts.recordDir}/${safeName(call.sid)}-${kind}.${kind === "audio" ? "ogg" : "webm"}`;
  const cannotRecord = (kind: MediaKind, path: string, error: string) => {
    errors.push(`recorder ${kind}: ${error}`);
    failedRecordings.push({ kind, path, bytes: 0, packets: 0, lost: 0, ok: false, error });
    log.warn("cannot record", { sid: call.sid, kind, path, error });
  };

  /** Why the record directory cannot be used (then nothing is recorded). */
  let recordDirError: string | undefined;
  /** Media whose recorder was started (or given up): one recording per medium per call. */
  const recordingClaimed = new Set<MediaKind>();

  const prepareRecorders = async () => {
    if (!opts.recordDir) return;
    try {
      await Deno.mkdir(opts.recordDir, { recursive: true });
    } catch (e) {
      recordDirError = `cannot create the record directory ${opts.recordDir}: ${message(e)}`;
    }
    for (const kind of [...call.media]) {
      await startRecording(kind);
      if (ended) return;
    }
  };

  /** Starts the recorder of `kind` (once per call), attached at once when the call is connected. */
  const startRecording = async (kind: MediaKind) => {
    if (!opts.recordDir || recordingClaimed.has(kind)) return;
    recordingClaimed.add(kind);
    if (recordDirError) {
      notRecorded.add(kind);
      early.delete(kind);
      cannotRecord(kind, opts.recordDir, recordDirError);
      return;
    }
    const path = recordingPath(kind);
    try {
      const rec = await recorderStarts(() =>
        startRecorder({ kind, path, codec: kind === "audio" ? "opus" : "vp8" })
      );
      recorders.push({ kind, rec });
      readyAt.recorders[kind] = performance.now();
      rec.exited.then((x) => {
        if (stoppingRecorders || ended) return;
        // Logged now; the record gets ffmpeg's own reason (e.g. "No space left on device") from stop().
        log.warn("recording failed during the call; the call continues", {
          sid: call.sid,
          kind,
          path,
          pid: rec.pid,
          reason: x.reason,
        });
      });
      if (connected) attachRecorder(kind, rec);
    } catch (e) {
      notRecorded.add(kind);
      early.delete(kind);
      cannotRecord(kind, path, message(e));
    }
  };

  /** Recorders fed by the call, per medium; packets that arrive before a medium's recorder is ready wait. */
  const sinks = new Map<MediaKind, Recorder>();
  const early = new Map<MediaKind, Uint8Array[]>();
  const notRecorded = new Set<MediaKind>();
  const EARLY_MAX = 3000; // ~10 s of video: far more than a recorder takes to start
  const listenForRecording = () => {
    if (!opts.recordDir) return;
    cleanups.push(call.peer!.onRtp((e) => {
      const rec = sinks.get(e.kind);
      if (rec) return rec.write(e.packet);
      if (notRecorded.has(e.kind)) return;
      const queue = early.get(e.kind) ?? [];
      if (queue.length < EARLY_MAX) queue.push(e.packet);
      early.set(e.kind, queue);
    }));
  };
  const attachRecorder = (kind: MediaKind, rec: Recorder) => {
    if (sinks.has(kind) || notRecorded.has(kind)) return;
    const problem = codecProblem(kind);
    if (problem) {
      // Not recorded: stopped at the end with no packets, reported here instead.
      notRecorded.add(kind);
      early.delete(kind);
      cannotRecord(kind, rec.path, problem);
      return;
    }
    for (const p of early.get(kind) ?? []) rec.write(p);
    early.delete(kind);
    sinks.set(kind, rec);
  };

  // ---- sources: warm when answered, fed to the call once connected, restarted when they die

  /** Acquires the (shared) encoder of `kind`; undefined when it cannot be started (logged and recorded). */
  const acquire = async (kind: MediaKind): Promise<SharedSourceHandle | undefined> => {
    const spec = opts.play[kind];
    try {
      const handle = await startWithRetry(
        () =>
          sourceStarts(() => sharedSource(spec, kind, { loop: true, lingerMs: opts.sourceLingerMs ?? 0 })),
        (e) => log.warn("media source failed to start, retrying", { sid: call.sid, kind, error: message(e) }),
      );
      if (ended) {
        await handle.release();
        return undefined;
      }
      sources.set(kind, handle);
      return handle;
    } catch (e) {
      errors.push(`source ${kind}: ${message(e)}; nothing is sent`);
      log.warn("cannot start media source; the call continues without sending it", {
        sid: call.sid,
        kind,
        error: message(e),
      });
      return undefined;
    }
  };

  /** What feeds each medium now (its source's unsubscribe), so that a removed medium can stop. */
  const feeding = new Map<MediaKind, { handle: SharedSourceHandle; off: () => void }>();

  /** Feeds the connected call from `handle`; watches it and restarts it when its ffmpeg dies. */
  const feed = (kind: MediaKind, handle: SharedSourceHandle) => {
    const peer = call.peer!;
    sent[kind] = opts.play[kind];
    const stream = streams[kind];
    stream.newSource();
    let first = true;
    const off = handle.source.onPacket((p) => {
      if (first) {
        first = false;
        readyAt.sources[kind] ??= performance.now();
      }
      void peer.sendRtp(kind, stream.rewrite(p)).catch(() => {});
    });
    cleanups.push(off);
    feeding.set(kind, { handle, off });
    void handle.source.exited.then((x) => {
      if (ended || x.reason === "stopped" || feeding.get(kind)?.handle !== handle) return;
      feeding.delete(kind);
      off();
      if (sources.get(kind) === handle) sources.delete(kind);
      void handle.release().catch(() => {});
      errors.push(`source ${kind} died: ${x.reason}`);
      if (restarts[kind] >= maxRestarts) {
        errors.push(`source ${kind}: not restarted again (${maxRestarts} restarts); nothing is sent`);
        log.warn("media source died again; the call continues without sending it", {
          sid: call.sid,
          kind,
          pid: handle.source.pid,
          reason: x.reason,
          restarts: restarts[kind],
        });
        return;
      }
      restarts[kind]++;
      log.warn("media source died; restarting it", {
        sid: call.sid,
        kind,
        pid: handle.source.pid,
        reason: x.reason,
        restart: restarts[kind],
      });
      void track(
        acquire(kind).then((again) => {
          if (!again) return;
          feed(kind, again);
          errors.push(`source ${kind} restarted (ffmpeg pid ${again.source.pid})`);
        }),
      );
    });
  };

  /** Per medium: the encoder acquired when answered (resolves undefined for echo or failure). */
  const prepared = new Map<MediaKind, Promise<SharedSourceHandle | undefined>>();
  /** Media sent (or being set up to be sent) by this run; the media watch adds and removes the later ones. */
  const sending = new Set<MediaKind>();
  const prepareSources = () => {
    for (const kind of call.media) {
      sending.add(kind);
      if (!opts.echo) prepared.set(kind, track(acquire(kind)));
    }
  };

  /** Feeds `kind` from `handle` unless its negotiated codec is one we cannot encode (then released). */
  const feedChecked = async (kind: MediaKind, handle: SharedSourceHandle) => {
    const problem = codecProblem(kind);
    if (problem) {
      errors.push(`source ${kind}: ${problem}; nothing is sent`);
      log.warn("not sending: unsupported codec", { sid: call.sid, kind, problem });
      sources.delete(kind);
      await handle.release().catch(() => {});
      return;
    }
    feed(kind, handle);
  };

  const startFeeding = async () => {
    const peer = call.peer!;
    if (opts.echo) {
      // Every medium the peer sends comes back, including media added later.
      for (const kind of sending) sent[kind] = "echo";
      cleanups.push(peer.onRtp((e) => void peer.sendRtp(e.kind, e.packet).catch(() => {})));
      return;
    }
    for (const kind of sending) {
      const handle = await prepared.get(kind);
      if (!handle || ended) continue;
      await feedChecked(kind, handle);
    }
  };

  // ---- media added or removed during the call (video upgrade, content-remove)

  /** Starts sending and recording a medium that appeared in `call.media` (e.g. video after an upgrade). */
  const addMedium = async (kind: MediaKind) => {
    log.info("media added during the call: sending and recording it", { sid: call.sid, kind });
    const recording = startRecording(kind);
    if (opts.echo) sent[kind] = "echo";
    else {
      const handle = await acquire(kind);
      if (handle && !ended && sending.has(kind)) await feedChecked(kind, handle);
      else if (handle) {
        sources.delete(kind);
        await handle.release().catch(() => {});
      }
    }
    await recording;
  };

  /** Stops sending a medium that left `call.media` (its recording goes on until the call ends). */
  const removeMedium = (kind: MediaKind) => {
    log.info("media removed during the call: no longer sent", { sid: call.sid, kind });
    const f = feeding.get(kind);
    if (!f) return;
    feeding.delete(kind);
    f.off();
    if (sources.get(kind) === f.handle) sources.delete(kind);
    void track(f.handle.release().catch(() => {}));
  };

  /** Compares `call.media` with what this run sends; runs on the ticker once the initial media is set up. */
  let watchingMedia = false;
  const watchMedia = () => {
    if (!watchingMedia || ended) return;
    for (const kind of call.media) {
      if (sending.has(kind)) continue;
      sending.add(kind);
      void track(addMedium(kind));
    }
    for (const kind of [...sending]) {
      if (call.media.includes(kind)) continue;
      sending.delete(kind);
      removeMedium(kind);
    }
  };

  // Answered: warm up the encoders and recorders while Jingle, ICE and DTLS run. Nothing is spawned for an
  // incoming call that only rings (it may be refused); an outgoing call is ours, so it warms up at once.
  const answered = new Promise<boolean>((resolve) => {
    const isAnswered = (s: string) =>
      call.direction === "outgoing" ||
      s === "proceeding" || s === "initiated" || s === "accepted" || s === "active";
    if (isAnswered(call.state)) return resolve(true);
    if (call.state === "ended") return resolve(false);
    const off = call.onState((s) => {
      if (isAnswered(s) || s === "ended") {
        off();
        resolve(s !== "ended");
      }
    });
  });
  const recordersPrepared = answered.then((yes) => {
    if (!yes) return;
    if (!opts.echo || opts.recordDir) announceFfmpeg(log);
    prepareSources();
    return track(prepareRecorders());
  });

  const mediaStarted = call.connected.then(async () => {
    connectedAt = performance.now();
    connected = true;
    listenForRecording();
    for (const { kind, rec } of recorders) attachRecorder(kind, rec); // the ones ready by now
    await answered;
    await Promise.all([startFeeding(), recordersPrepared]);
    watchingMedia = true;
    watchMedia();
  }, () => {});

  const record = (async () => {
    const end = await call.ended;
    snapshot();
    ended = true;
    clearInterval(ticker);
    await mediaStarted.catch(() => {});
    while (starting.size) await Promise.all([...starting]).catch(() => {});
    for (const off of cleanups) off();
    await Promise.all([...sources.values()].map((s) => s.release().catch(() => {})));
    stoppingRecorders = true;
    const recordings: RecordFile[] = [...failedRecordings];
    for (const { kind, rec } of recorders) {
      if (!connected) {
        // Answered but never connected: nothing to keep.
        await rec.stop().catch(() => {});
        await removeFile(rec.path);
        continue;
      }
      if (failedRecordings.some((f) => f.kind === kind)) {
        await rec.stop().catch(() => {}); // not attached (unsupported codec): already reported
        await removeFile(rec.path);
        continue;
      }
      try {
        const r = await rec.stop();
        recordings.push({ kind, path: r.path, bytes: r.bytes, packets: r.packets, lost: r.lost, ok: true });
      } catch (e) {
        const error = message(e);
        const partial = e instanceof RecorderError ? e.partial : undefined;
        errors.push(`recorder ${kind}: ${error}`);
        log.warn("recording failed", { sid: call.sid, kind, path: rec.path, error });
        recordings.push({
          kind,
          path: rec.path,
          bytes: partial?.bytes ?? 0,
          packets: partial?.packets ?? rec.packets,
          lost: partial?.lost ?? 0,
          ok: false,
          error,
        });
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
    mediaStarted,
    mediaTimings() {
      const rel = (t: Partial<Record<MediaKind, number>>) => {
        const out: Partial<Record<MediaKind, number>> = {};
        for (const [k, v] of Object.entries(t) as [MediaKind, number][]) {
          out[k] = connectedAt === undefined ? NaN : Math.round(v - connectedAt);
        }
        return out;
      };
      return { sources: rel(readyAt.sources), recorders: rel(readyAt.recorders) };
    },
    ffmpegPids() {
      const out: CallFfmpegPids = { sources: {}, recorders: {} };
      for (const [kind, h] of sources) out.sources[kind] = h.source.pid;
      for (const { kind, rec } of recorders) out.recorders[kind] = rec.pid;
      return out;
    },
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
