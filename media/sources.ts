/**
 * Media sources: one ffmpeg process encodes (opus 48 kHz / 20 ms, or VP8 realtime) to RTP on a loopback
 * UDP port that we own; every RTP packet is fanned out to any number of subscribers, e.g.
 * `source.onPacket((p) => call.peer.sendRtp("audio", p))`. werift rewrites SSRC and payload type to the
 * negotiated ones, so one encoder can feed many calls (see `sharedSource`).
 *
 * Reception uses `node:dgram` (Deno.listenDatagram needs `--unstable-net`).
 *
 * @module
 */
import dgram from "node:dgram";
import type { MediaKind, PeerLogger } from "./webrtc.ts";
import { ffmpegCommand, outputLines, resolveFfmpeg } from "./ffmpeg.ts";

/** What a source plays: a sine tone (Hz, level 0–1), ffmpeg's test pattern, silence, black video, or a media file. */
export type SourceSpec =
  | { type: "tone"; frequency?: number; level?: number }
  | { type: "testvideo"; width?: number; height?: number; fps?: number }
  | { type: "silence" }
  | { type: "black"; width?: number; height?: number; fps?: number }
  | { type: "file"; path: string };

/** Options of {@link startSource}. */
export interface SourceOptions {
  /** Which media to encode: Opus audio or VP8 video. */
  kind: MediaKind;
  /** Where ffmpeg's failures are logged; default: nowhere. */
  logger?: PeerLogger;
  /** for `file`: loop forever (`-stream_loop -1`) */
  loop?: boolean;
  /** video bitrate in kbit/s (default 300) */
  videoKbps?: number;
  /** audio bitrate in kbit/s (default 32) */
  audioKbps?: number;
}

/** How and why a source's ffmpeg ended. */
export interface SourceExit {
  /** ffmpeg exit code (null when killed by a signal) */
  code: number | null;
  /** The signal that killed ffmpeg, or null. */
  signal: string | null;
  /** human readable: "stopped", "end of input", or the error ffmpeg printed */
  reason: string;
}

/** A running encoder: ffmpeg producing RTP that is fanned out to subscribers. */
export interface MediaSource {
  /** Which media it encodes. */
  readonly kind: MediaKind;
  /** What it plays. */
  readonly spec: SourceSpec;
  /** pid of the ffmpeg encoder */
  readonly pid: number;
  /** subscribe to every RTP packet; returns unsubscribe */
  onPacket(cb: (packet: Uint8Array) => void): () => void;
  /** packets received from ffmpeg so far */
  readonly packets: number;
  /** stop ffmpeg (SIGTERM, then SIGKILL after 2 s) and close the socket; resolves after ffmpeg was reaped */
  stop(): Promise<SourceExit>;
  /** resolves once, when ffmpeg has exited for any reason (and was reaped) */
  readonly exited: Promise<SourceExit>;
}

/** A source cannot be started: bad file, no stream of that kind, ffmpeg failed at start. */
export class MediaSourceError extends Error {
  /**
   * Creates the error.
   * @param stderr ffmpeg's last lines, when ffmpeg failed
   */
  constructor(message: string, readonly stderr?: string) {
    super(message);
    this.name = "MediaSourceError";
  }
}

// ---------------------------------------------------------------- child bookkeeping

const liveChildren = new Set<Deno.ChildProcess>();
let unloadHooked = false;
/** Remember an ffmpeg child so it is killed if this process exits normally while it still runs. */
export function trackChild(child: Deno.ChildProcess): void {
  liveChildren.add(child);
  if (!unloadHooked) {
    unloadHooked = true;
    globalThis.addEventListener("unload", () => {
      for (const c of liveChildren) {
        try {
          c.kill("SIGKILL");
        } catch { /* gone */ }
      }
    });
  }
}
/** Forget a reaped child. */
export function untrackChild(child: Deno.ChildProcess): void {
  liveChildren.delete(child);
}
/** pids of ffmpeg children still running (for tests/benchmarks). */
export function liveFfmpegPids(): number[] {
  return [...liveChildren].map((c) => c.pid);
}

/** RTP packet whose VP8 payload (RFC 7741) starts a keyframe. */
export function isVp8KeyframeStart(rtp: Uint8Array): boolean {
  const cc = rtp[0]! & 0x0f;
  let o = 12 + 4 * cc;
  if (rtp[0]! & 0x10) o += 4 + 4 * (((rtp[o + 2] ?? 0) << 8) | (rtp[o + 3] ?? 0)); // header extension
  const d0 = rtp[o];
  if (d0 === undefined || !(d0 & 0x10) || (d0 & 0x0f) !== 0) return false; // S=1, PID=0
  o++;
  if (d0 & 0x80) {
    const x = rtp[o++] ?? 0;
    if (x & 0x80) o += (rtp[o]! & 0x80) ? 2 : 1; // I: picture id
    if (x & 0x40) o++; // L
    if (x & 0x30) o++; // T/K
  }
  const h = rtp[o];
  return h !== undefined && (h & 0x01) === 0; // P bit 0 = keyframe
}

/** payload types / ssrc used on the ffmpeg → bot leg (werift rewrites them anyway) */
export const SOURCE_PT = { audio: 111, video: 96 } as const;

function dbToAmp(db: number): number {
  return Math.pow(10, db / 20);
}

function inputArgs(spec: SourceSpec, kind: MediaKind, loop: boolean): string[] {
  const need = (k: MediaKind) => {
    if (k !== kind) throw new MediaSourceError(`source type "${spec.type}" cannot produce ${kind}`);
  };
  switch (spec.type) {
    case "tone": {
      need("audio");
      const f = spec.frequency ?? 440;
      const amp = dbToAmp(spec.level ?? -20);
      if (!(f > 0 && f < 24000)) throw new MediaSourceError(`tone frequency out of range: ${f}`);
      return ["-f", "lavfi", "-i", `aevalsrc=${amp.toFixed(6)}*sin(2*PI*${f}*t):s=48000:c=mono`];
    }
    case "silence":
      need("audio");
      return ["-f", "lavfi", "-i", "anullsrc=r=48000:cl=mono"];
    case "testvideo": {
      need("video");
      const { width = 320, height = 240, fps = 15 } = spec;
      return ["-f", "lavfi", "-i", `testsrc=size=${width}x${height}:rate=${fps}`];
    }
    case "black": {
      need("video");
      const { width = 320, height = 240, fps = 15 } = spec;
      return ["-f", "lavfi", "-i", `color=c=black:size=${width}x${height}:rate=${fps}`];
    }
    case "file":
      return [
        ...(loop ? ["-stream_loop", "-1"] : []),
        "-i",
        spec.path,
        "-map",
        kind === "audio" ? "0:a:0" : "0:v:0",
      ];
  }
}

function encoderArgs(kind: MediaKind, spec: SourceSpec, o: SourceOptions): string[] {
  if (kind === "audio") {
    return [
      "-c:a",
      "libopus",
      "-b:a",
      `${o.audioKbps ?? 32}k`,
      "-frame_duration",
      "20",
      "-application",
      "voip",
      "-ar",
      "48000",
      "-ac",
      "2",
    ];
  }
  const fps = "fps" in spec && spec.fps ? spec.fps : 15;
  return [
    "-c:v",
    "libvpx",
    "-deadline",
    "realtime",
    "-cpu-used",
    "8",
    "-b:v",
    `${o.videoKbps ?? 300}k`,
    "-g",
    String(Math.max(1, Math.round(fps * 2))), // a keyframe every 2 s for late subscribers
    "-auto-alt-ref",
    "0",
    "-lag-in-frames",
    "0",
    "-error-resilient",
    "1",
    "-pix_fmt",
    "yuv420p",
  ];
}

/** Bind a loopback UDP socket on a free port. */
function bindUdp(): Promise<dgram.Socket> {
  return new Promise((resolve, reject) => {
    const sock = dgram.createSocket("udp4");
    sock.once("error", reject);
    sock.bind(0, "127.0.0.1", () => {
      sock.off("error", reject);
      resolve(sock);
    });
  });
}

/** Keeps the last lines ffmpeg printed on stderr (and logs them). */
export class StderrTail {
  lines: string[] = [];
  done: Promise<void>;
  constructor(stream: ReadableStream<Uint8Array>, onLine?: (l: string) => void, readonly max = 30) {
    this.done = (async () => {
      for await (const raw of outputLines(stream)) {
        const line = raw.trimEnd();
        if (!line.trim()) continue;
        this.lines.push(line);
        if (this.lines.length > max) this.lines.shift();
        onLine?.(line);
      }
    })();
  }
  text(): string {
    return this.lines.join("\n");
  }
}

/** ffmpeg's most telling error line */
export function ffmpegReason(lines: string[]): string {
  const picked = lines.filter((l) =>
    /matches no streams|No such file|Permission denied|Invalid data|No space left|Error|error|failed|out of range/
      .test(l)
  ).slice(-3);
  return picked.length ? picked.join("; ") : lines[lines.length - 1] ?? "";
}

/** The file exists, is a regular file and can be opened for reading (else a MediaSourceError naming it). */
async function checkReadable(path: string): Promise<void> {
  try {
    const st = await Deno.stat(path);
    if (!st.isFile) throw new MediaSourceError(`media file ${path} is not a regular file`);
    const f = await Deno.open(path, { read: true });
    f.close();
  } catch (e) {
    if (e instanceof MediaSourceError) throw e;
    const why = e instanceof Deno.errors.NotFound
      ? "does not exist"
      : e instanceof Deno.errors.PermissionDenied
      ? "is not readable"
      : `cannot be opened (${(e as Error).message})`;
    throw new MediaSourceError(`media file ${path} ${why}`);
  }
}

/** What ffmpeg finds in a media file. */
export interface MediaFileInfo {
  /** The file has an audio stream ffmpeg can decode. */
  audio: boolean;
  /** The file has a video stream ffmpeg can decode. */
  video: boolean;
}

/**
 * Checks a media file before any call uses it: it exists, is readable, and ffmpeg can demux an audio or a
 * video stream from it. Throws a {@link MediaSourceError} naming the file and the reason.
 */
export async function checkMediaFile(path: string): Promise<MediaFileInfo> {
  await checkReadable(path);
  const ffmpeg = await resolveFfmpeg();
  // Without an output ffmpeg only opens the input, prints its streams and exits 1.
  const out = await ffmpegCommand(ffmpeg, ["-hide_banner", "-nostdin", "-i", path], {
    stdin: "null",
    stdout: "null",
    stderr: "piped",
  }).output();
  const text = new TextDecoder().decode(out.stderr);
  const info = {
    audio: /Stream #\d+:\d+.*: Audio: /.test(text),
    video: /Stream #\d+:\d+.*: Video: /.test(text),
  };
  if (!info.audio && !info.video) {
    const lines = text.split("\n").map((l) => l.trim()).filter((l) =>
      l && !/output file must be specified/.test(l)
    );
    throw new MediaSourceError(
      `media file ${path} cannot be decoded: ${ffmpegReason(lines) || "no audio or video stream"}`,
      text,
    );
  }
  return info;
}

/** Starts an encoder for `spec`. Resolves once the first RTP packet arrived (rejects with MediaSourceError). */
export async function startSource(spec: SourceSpec, opts: SourceOptions): Promise<MediaSource> {
  const log: PeerLogger = opts.logger ?? (() => {});
  const kind = opts.kind;
  if (spec.type === "file") await checkReadable(spec.path);
  const input = inputArgs(spec, kind, opts.loop ?? false);
  const ffmpeg = await resolveFfmpeg();
  const sock = await bindUdp();
  const port = (sock.address() as { port: number }).port;
  const ssrc = 1 + Math.floor(Math.random() * 0x7ffffffe); // ffmpeg's option is a signed int
  const args = [
    "-hide_banner",
    "-nostdin",
    "-loglevel",
    Deno.env.get("CALLBOT_FFMPEG_LOGLEVEL") ?? "warning",
    "-re",
    ...input,
    ...encoderArgs(kind, spec, opts),
    "-payload_type",
    String(SOURCE_PT[kind]),
    "-ssrc",
    String(ssrc),
    "-f",
    "rtp",
    // RTCP goes to the same socket and is filtered out (RFC 5761 demux)
    `rtp://127.0.0.1:${port}?rtcpport=${port}&pkt_size=1200`,
  ];
  const child = ffmpegCommand(ffmpeg, args, { stdin: "null", stdout: "null", stderr: "piped" }).spawn();
  trackChild(child);
  const pid = child.pid;
  log("debug", "media source started", { kind, spec: spec.type, pid, port });
  const tail = new StderrTail(child.stderr, (l) => log("debug", "ffmpeg", { pid, line: l }));

  const subs = new Set<(p: Uint8Array) => void>();
  let packets = 0;
  /** video: packets since the last keyframe started, replayed to a new subscriber so it can decode at once */
  let gop: Uint8Array[] = [];
  let firstResolve!: () => void;
  const first = new Promise<void>((r) => firstResolve = r);
  sock.on("message", (msg: Uint8Array) => {
    if (msg.length < 12 || (msg[0]! & 0xc0) !== 0x80) return;
    const pt = msg[1]! & 0x7f;
    if (pt >= 64 && pt <= 95) return; // RTCP (SR/SDES/BYE from ffmpeg)
    const p = new Uint8Array(msg); // own copy: the runtime may reuse the receive buffer
    packets++;
    if (kind === "video") {
      if (isVp8KeyframeStart(p)) gop = [p];
      else if (gop.length && gop.length < 2000) gop.push(p);
    }
    if (packets === 1) firstResolve();
    for (const cb of subs) {
      try {
        cb(p);
      } catch (e) {
        log("warn", "media source subscriber threw", { error: String(e) });
      }
    }
  });
  sock.on("error", (e) => log("warn", "media source socket error", { error: String(e) }));

  let stopping = false;
  let sockClosed = false;
  const closeSock = () => {
    if (sockClosed) return;
    sockClosed = true;
    try {
      sock.close();
    } catch { /* closed */ }
  };
  const exited: Promise<SourceExit> = child.status.then(async (st) => {
    untrackChild(child);
    await tail.done;
    closeSock();
    let reason: string;
    if (stopping) reason = "stopped";
    else if (st.signal) reason = `ffmpeg killed by ${st.signal}`;
    else if (st.code === 0) reason = "end of input";
    else reason = `ffmpeg exited with code ${st.code}: ${ffmpegReason(tail.lines) || "no message"}`;
    const out: SourceExit = { code: st.signal ? null : st.code, signal: st.signal, reason };
    log(stopping || st.code === 0 ? "debug" : "warn", "media source exited", { pid, ...out });
    return out;
  });

  // Wait for the first packet, or for ffmpeg to fail at start.
  const started = await Promise.race([
    first.then(() => "ok" as const),
    exited.then((e) => e),
    new Promise<"timeout">((r) => setTimeout(() => r("timeout"), 10_000)),
  ]);
  if (started !== "ok") {
    if (started === "timeout") {
      stopping = true;
      try {
        child.kill("SIGKILL");
      } catch { /* gone */ }
      await exited;
      throw new MediaSourceError(`ffmpeg produced no ${kind} RTP within 10 s`, tail.text());
    }
    const text = tail.text();
    const noStream = /matches no streams/.test(text);
    throw new MediaSourceError(
      noStream
        ? `${spec.type === "file" ? spec.path : spec.type} has no ${kind} stream`
        : `ffmpeg failed to start the ${kind} source: ${started.reason}`,
      text,
    );
  }

  const source: MediaSource = {
    kind,
    spec,
    pid,
    get packets() {
      return packets;
    },
    onPacket(cb) {
      for (const p of gop) cb(p);
      subs.add(cb);
      return () => void subs.delete(cb);
    },
    async stop() {
      stopping = true;
      subs.clear();
      try {
        child.kill("SIGTERM");
      } catch { /* already gone */ }
      const t = setTimeout(() => {
        try {
          child.kill("SIGKILL");
        } catch { /* gone */ }
      }, 2000);
      const r = await exited;
      clearTimeout(t);
      return r;
    },
    exited,
  };
  return source;
}

// ---------------------------------------------------------------- one stream across sources

/**
 * Keeps one outgoing RTP stream continuous when the source feeding it changes (an ffmpeg restarted after it
 * died): the new encoder starts at random sequence numbers and timestamps, which the receiver's SRTP
 * replay window would take for old packets and drop. After {@link newSource}, packets are shifted so that
 * the sequence number follows the last one sent and the timestamp advanced by the wall-clock gap.
 */
export class RtpContinuity {
  #seqOffset = 0;
  #tsOffset = 0;
  #last: { seq: number; ts: number; at: number } | undefined;
  #switching = false;
  /** @param clockRate RTP clock of the stream (48000 for Opus, 90000 for video) */
  constructor(readonly clockRate: number, readonly now: () => number = () => performance.now()) {}

  /** The next packet comes from another source. */
  newSource(): void {
    this.#switching = true;
  }

  /** `packet` with its sequence number and timestamp shifted (a copy once shifted; the input is untouched). */
  rewrite(packet: Uint8Array): Uint8Array {
    if (packet.length < 12) return packet;
    const view = new DataView(packet.buffer, packet.byteOffset, packet.byteLength);
    const seq = view.getUint16(2);
    const ts = view.getUint32(4);
    if (this.#switching) {
      this.#switching = false;
      if (this.#last) {
        const gap = Math.max(1, Math.round(((this.now() - this.#last.at) * this.clockRate) / 1000));
        this.#seqOffset = (this.#last.seq + 1 - seq) & 0xffff;
        this.#tsOffset = (this.#last.ts + gap - ts) >>> 0;
      }
    }
    let out = packet;
    if (this.#seqOffset !== 0 || this.#tsOffset !== 0) {
      out = packet.slice();
      const w = new DataView(out.buffer);
      w.setUint16(2, (seq + this.#seqOffset) & 0xffff);
      w.setUint32(4, (ts + this.#tsOffset) >>> 0);
    }
    const v = new DataView(out.buffer, out.byteOffset, out.byteLength);
    this.#last = { seq: v.getUint16(2), ts: v.getUint32(4), at: this.now() };
    return out;
  }
}

// ---------------------------------------------------------------- shared sources

interface SharedEntry {
  refs: number;
  source: Promise<MediaSource>;
  /** Set while nobody uses it and it lingers (see `lingerMs`). */
  idle?: { timer: number; stop: () => Promise<void> };
}
const shared = new Map<string, SharedEntry>();

/** A handle on a shared encoder; `release()` drops the reference (the last one stops ffmpeg). */
export interface SharedSourceHandle {
  /** The shared encoder. */
  source: MediaSource;
  /** Drops this reference; the last one stops ffmpeg (or lets it linger, see `lingerMs`). */
  release(): Promise<void>;
}

/** Options of {@link sharedSource}. */
export interface SharedSourceOptions extends Omit<SourceOptions, "kind"> {
  /**
   * Keep the encoder running this long after its last handle was released, so that the next call playing
   * the same thing finds it warm (no ffmpeg spawn, media from the first millisecond). Default 0: stopped with
   * the last release. {@link stopIdleSources} stops lingering ones at once (e.g. on shutdown).
   */
  lingerMs?: number;
}

/** Key used by the shared-source cache. */
export function sourceKey(spec: SourceSpec, kind: MediaKind, loop = false): string {
  const ordered = Object.fromEntries(Object.entries(spec).sort(([a], [b]) => a.localeCompare(b)));
  return `${kind}:${loop ? "loop:" : ""}${JSON.stringify(ordered)}`;
}

/**
 * One warm encoder per (spec, kind): the first caller spawns ffmpeg, later ones reuse it (ffmpeg spawn
 * costs ~85 ms CPU). Reference counted; a source that exited is replaced on the next call.
 */
export async function sharedSource(
  spec: SourceSpec,
  kind: MediaKind,
  opts: SharedSourceOptions = {},
): Promise<SharedSourceHandle> {
  const { lingerMs = 0, ...sourceOpts } = opts;
  const key = sourceKey(spec, kind, opts.loop);
  let entry = shared.get(key);
  if (!entry) {
    const e: SharedEntry = { refs: 0, source: startSource(spec, { ...sourceOpts, kind }) };
    entry = e;
    shared.set(key, e);
    e.source.then(
      (s) =>
        s.exited.then(() => {
          if (e.idle) clearTimeout(e.idle.timer);
          if (shared.get(key) === e) shared.delete(key);
        }),
      () => shared.get(key) === e && shared.delete(key),
    );
  }
  if (entry.idle) {
    clearTimeout(entry.idle.timer);
    delete entry.idle;
  }
  entry.refs++;
  const mine = entry;
  let source: MediaSource;
  try {
    source = await entry.source;
  } catch (e) {
    mine.refs--;
    throw e;
  }
  const stopNow = async () => {
    if (mine.idle) clearTimeout(mine.idle.timer);
    delete mine.idle;
    if (shared.get(key) === mine) shared.delete(key);
    await source.stop();
  };
  let released = false;
  return {
    source,
    async release() {
      if (released) return;
      released = true;
      mine.refs--;
      if (mine.refs > 0) return;
      if (lingerMs > 0 && shared.get(key) === mine) {
        const timer = setTimeout(() => void (mine.refs === 0 && stopNow()), lingerMs) as unknown as number;
        Deno.unrefTimer(timer); // a lingering encoder never keeps the process alive
        mine.idle = { timer, stop: stopNow };
        return;
      }
      await stopNow();
    },
  };
}

/** Stops the shared encoders nobody uses any more (lingering ones); resolves once they were reaped. */
export async function stopIdleSources(): Promise<void> {
  const idle = [...shared.values()].filter((e) => e.refs === 0 && e.idle);
  await Promise.all(idle.map((e) => e.idle!.stop()));
}

/** Number of live shared encoders (for tests/metrics). */
export function sharedSourceCount(): number {
  return shared.size;
}
