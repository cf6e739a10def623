/**
 * Recorder: RTP packets (e.g. from `peer.onRtp`) → ffmpeg (`-c copy`) → Ogg/Opus or WebM/VP8 file.
 *
 * ffmpeg reads an SDP file describing one RTP stream on a loopback UDP port; `write()` puts each packet
 * through a small jitter buffer (reorders by sequence number, counts gaps as lost), rewrites SSRC and
 * payload type to the SDP's and forwards it. `stop()` flushes, asks ffmpeg to quit ("q" on stdin) so it
 * writes the container trailer, waits for it (SIGINT, then SIGKILL after timeouts) and reports what was
 * written. A recorder whose ffmpeg died early (killed, disk full) resolves `exited` with the reason at once;
 * `stop()` then rejects with a {@link RecorderError} that keeps what was written (`partial`).
 *
 * ffmpeg only looks at "q" once it has opened its output, and whatever it read while still probing its
 * input is dropped if "q" is already waiting then. So the input is probed on its first packet only (for VP8
 * ffmpeg's depacketizer drops everything before a keyframe, so that packet is a keyframe, which gives the
 * size), and `stop()` says "q" only after ffmpeg's `-progress` report showed that the output is being written.
 * Before, a VP8 recording probed for 1 s of stream time; under CPU load a 2 s recording could end while
 * ffmpeg was still probing, and the file held a header and no frame.
 *
 * @module
 */
import dgram from "node:dgram";
import { orderedSends } from "./webrtc.ts";
import type { MediaKind, PeerLogger } from "./webrtc.ts";
import { ffmpegCommand, outputLines, resolveFfmpeg } from "./ffmpeg.ts";
import { ffmpegReason, isVp8KeyframeStart, StderrTail, trackChild, untrackChild } from "./sources.ts";

/** Codec of the recorded stream: Opus audio or VP8 video (copied, not transcoded). */
export type RecorderCodec = "opus" | "vp8";

/** Options of {@link startRecorder}. */
export interface RecorderOptions {
  /** Which media the stream carries; must fit `codec`. */
  kind: MediaKind;
  /** output file; `.ogg`/`.opus` → Ogg, `.webm`/`.mkv` → Matroska, anything else: Ogg for opus, WebM for vp8 */
  path: string;
  /** Codec of the incoming RTP payload. */
  codec: RecorderCodec;
  /** Where ffmpeg's failures and progress are logged; default: nowhere. */
  logger?: PeerLogger;
  /** packets held for reordering before a gap is declared lost (default 32) */
  jitterPackets?: number;
}

/** What a finished recording wrote. */
export interface RecordingResult {
  /** The file written. */
  path: string;
  /** size of the file written */
  bytes: number;
  /** packets forwarded to ffmpeg */
  packets: number;
  /** sequence-number gaps (never arrived, or arrived too late) */
  lost: number;
  /** duplicates / packets older than what was already forwarded */
  late: number;
}

/** One running recording: RTP in, a container file out. */
export interface Recorder {
  /** The output file. */
  readonly path: string;
  /** Process id of the ffmpeg writing the file. */
  readonly pid: number;
  /** one RTP packet (any SSRC/PT; sequence numbers and timestamps are kept) */
  write(rtpPacket: Uint8Array): void;
  /** packets forwarded to ffmpeg so far */
  readonly packets: number;
  /** Flushes the jitter buffer, lets ffmpeg write the container trailer and reports what was written; rejects with a {@link RecorderError} when ffmpeg failed. */
  stop(): Promise<RecordingResult>;
  /** resolves when ffmpeg has exited (normally after stop()) */
  readonly exited: Promise<{ code: number | null; signal: string | null; reason: string }>;
}

/** The recording cannot be started or finished: path not writable, disk full, ffmpeg failed. */
export class RecorderError extends Error {
  /**
   * Creates the error, keeping ffmpeg's output and what was written.
   * @param message what went wrong
   * @param stderr ffmpeg's last lines
   * @param partial for a recording that failed after it started: what was written before (bytes on disk)
   */
  constructor(message: string, readonly stderr?: string, readonly partial?: RecordingResult) {
    super(message);
    this.name = "RecorderError";
  }
}

const PT = { opus: 111, vp8: 96 } as const;
const SSRC = 0x0badcafe;

function sdpFor(codec: RecorderCodec, port: number): string {
  const media = codec === "opus"
    ? [
      `m=audio ${port} RTP/AVP ${PT.opus}`,
      `a=rtpmap:${PT.opus} opus/48000/2`,
      `a=fmtp:${PT.opus} sprop-stereo=1`,
    ]
    : [`m=video ${port} RTP/AVP ${PT.vp8}`, `a=rtpmap:${PT.vp8} VP8/90000`];
  return [
    "v=0",
    "o=- 0 0 IN IP4 127.0.0.1",
    "s=callbot recording",
    "c=IN IP4 127.0.0.1",
    "t=0 0",
    ...media,
    "a=recvonly",
    "",
  ].join("\r\n");
}

function containerFor(codec: RecorderCodec, path: string): string {
  const ext = path.toLowerCase().split(".").pop() ?? "";
  if (ext === "ogg" || ext === "opus" || ext === "oga") return "ogg";
  if (ext === "webm") return "webm";
  if (ext === "mkv" || ext === "mka") return "matroska";
  return codec === "opus" ? "ogg" : "webm";
}

async function checkWritable(path: string): Promise<void> {
  const dir = path.includes("/") ? path.slice(0, path.lastIndexOf("/")) || "/" : ".";
  try {
    const st = await Deno.stat(dir);
    if (!st.isDirectory) throw new RecorderError(`cannot record to ${path}: ${dir} is not a directory`);
  } catch (e) {
    if (e instanceof RecorderError) throw e;
    throw new RecorderError(`cannot record to ${path}: directory ${dir} does not exist`);
  }
  try {
    // does not truncate an existing file; ffmpeg (-y) overwrites it later
    const f = await Deno.open(path, { write: true, create: true });
    f.close();
  } catch (e) {
    const why = e instanceof Deno.errors.PermissionDenied ? "permission denied" : (e as Error).message;
    throw new RecorderError(`cannot record to ${path}: not writable (${why})`);
  }
}

/** An even loopback port whose RTCP neighbour (port+1) is free too. */
async function freeRtpPort(): Promise<number> {
  const tryBind = (port: number) =>
    new Promise<dgram.Socket | null>((resolve) => {
      const s = dgram.createSocket("udp4");
      s.once("error", () => {
        try {
          s.close();
        } catch { /* */ }
        resolve(null);
      });
      s.bind(port, "0.0.0.0", () => resolve(s));
    });
  for (let i = 0; i < 50; i++) {
    const port = 20000 + 2 * Math.floor(Math.random() * 20000);
    const a = await tryBind(port);
    if (!a) continue;
    const b = await tryBind(port + 1);
    a.close();
    if (!b) continue;
    b.close();
    return port;
  }
  throw new RecorderError("no free UDP port pair for the recorder");
}

/** true once some process has a UDP socket bound to `port` (Linux /proc). */
async function udpBound(port: number): Promise<boolean> {
  const hex = port.toString(16).toUpperCase().padStart(4, "0");
  for (const f of ["/proc/net/udp", "/proc/net/udp6"]) {
    try {
      const lines = (await Deno.readTextFile(f)).split("\n");
      if (lines.some((l) => /^\s*\d+:\s+[0-9A-F]+:([0-9A-F]{4})\s/.exec(l)?.[1] === hex)) return true;
    } catch { /* no procfs */ }
  }
  return false;
}

/** Adds `by` to the VP8 picture id (RFC 7741) in place, so a replayed frame is not "sequence broken". */
function bumpVp8PictureId(rtp: Uint8Array, by: number): void {
  const o = 12 + 4 * (rtp[0]! & 0x0f);
  if (rtp[0]! & 0x10) return; // header extension: leave as is
  const d0 = rtp[o] ?? 0;
  if (!(d0 & 0x80) || !((rtp[o + 1] ?? 0) & 0x80)) return;
  const i = o + 2;
  if (rtp[i]! & 0x80) {
    const id = (((rtp[i]! & 0x7f) << 8) | rtp[i + 1]!) + by;
    rtp[i] = 0x80 | ((id >> 8) & 0x7f);
    rtp[i + 1] = id & 0xff;
  } else {
    rtp[i] = (rtp[i]! + by) & 0x7f;
  }
}

/** Sequence-number reordering buffer (wrap-aware); emits in order, counts gaps. */
export class JitterBuffer {
  #next: number | undefined;
  #held = new Map<number, Uint8Array>();
  lost = 0;
  late = 0;
  constructor(readonly depth: number, readonly emit: (p: Uint8Array) => void) {}
  push(p: Uint8Array): void {
    const seq = (p[2]! << 8) | p[3]!;
    if (this.#next === undefined) this.#next = seq;
    const d = ((seq - this.#next + 0x8000) & 0xffff) - 0x8000; // signed distance
    if (d < 0 || this.#held.has(seq)) {
      this.late++;
      return;
    }
    this.#held.set(seq, p);
    this.#drain();
    while (this.#held.size > this.depth) {
      // give up on the oldest missing packet(s): skip to the earliest held one
      let best = Infinity;
      for (const s of this.#held.keys()) best = Math.min(best, (s - this.#next! + 0x10000) & 0xffff);
      this.lost += best;
      this.#next = (this.#next! + best) & 0xffff;
      this.#drain();
    }
  }
  #drain() {
    let p;
    while ((p = this.#held.get(this.#next!)) !== undefined) {
      this.#held.delete(this.#next!);
      this.#next = (this.#next! + 1) & 0xffff;
      this.emit(p);
    }
  }
  flush(): void {
    while (this.#held.size > 0) {
      let best = Infinity;
      for (const s of this.#held.keys()) best = Math.min(best, (s - this.#next! + 0x10000) & 0xffff);
      this.lost += best;
      this.#next = (this.#next! + best) & 0xffff;
      this.#drain();
    }
  }
}

/**
 * ffmpeg's `-progress` report (key=value lines, each block ended by `progress=continue|end`). ffmpeg 5.1 prints
 * its first block only once the output header was written, so {@link writing} means the output is open and
 * "q" is read from then on.
 */
export class FfmpegProgress {
  /** A block was reported: ffmpeg writes its output. */
  writing = false;
  /** The last complete block. */
  last: Record<string, string> = {};
  readonly done: Promise<void>;
  #block: Record<string, string> = {};
  #waiters: (() => void)[] = [];
  constructor(stream: ReadableStream<Uint8Array>) {
    this.done = (async () => {
      for await (const line of outputLines(stream)) this.#line(line.trim());
      for (const w of this.#waiters.splice(0)) w();
    })();
  }
  #line(line: string): void {
    const eq = line.indexOf("=");
    if (eq <= 0) return;
    const key = line.slice(0, eq);
    this.#block[key] = line.slice(eq + 1).trim();
    if (key !== "progress") return;
    this.last = this.#block;
    this.#block = {};
    this.writing = true;
    for (const w of this.#waiters.splice(0)) w();
  }
  /** Resolves at the next block (or when the stream ends). */
  next(): Promise<void> {
    return new Promise((r) => this.#waiters.push(r));
  }
  /** Frames written, from the last block (video; audio reports 0). */
  get frames(): number {
    return Number(this.last.frame ?? 0);
  }
}

/** Starts ffmpeg writing one RTP stream (Opus or VP8) into `opts.path`; checks the path is writable first. */
export async function startRecorder(opts: RecorderOptions): Promise<Recorder> {
  const log: PeerLogger = opts.logger ?? (() => {});
  if ((opts.kind === "audio") !== (opts.codec === "opus")) {
    throw new RecorderError(`codec ${opts.codec} does not fit a ${opts.kind} recording`);
  }
  const path = opts.path;
  await checkWritable(path);
  const ffmpeg = await resolveFfmpeg();
  const port = await freeRtpPort();
  const sdpPath = await Deno.makeTempFile({ prefix: "callbot-rec-", suffix: ".sdp" });
  await Deno.writeTextFile(sdpPath, sdpFor(opts.codec, port));
  const args = [
    "-hide_banner",
    "-loglevel",
    Deno.env.get("CALLBOT_FFMPEG_LOGLEVEL") ?? "warning",
    "-y",
    "-protocol_whitelist",
    "file,udp,rtp",
    // Probe on the first packet (see the module doc): the SDP gives the codec, a VP8 keyframe the size.
    "-analyzeduration",
    "0",
    "-probesize",
    "32",
    "-reorder_queue_size",
    "0",
    "-i",
    sdpPath,
    "-map",
    "0:0",
    "-c",
    "copy",
    // write through (not 5 s clusters in memory): a full disk or a killed ffmpeg loses at most ~1 s
    "-flush_packets",
    "1",
    ...(containerFor(opts.codec, path) === "ogg" ? [] : ["-cluster_time_limit", "1000"]),
    "-f",
    containerFor(opts.codec, path),
    path,
  ];
  // Machine-readable progress on stdout: tells when the output is being written (and how many frames).
  args.splice(args.indexOf("-y"), 0, "-progress", "pipe:1", "-stats_period", "0.5");
  // stdin is ffmpeg's clean stop: "q" finalizes the container (SIGINT makes 5.1 fail the Ogg trailer)
  const child = ffmpegCommand(ffmpeg, args, { stdin: "piped", stdout: "piped", stderr: "piped" }).spawn();
  trackChild(child);
  const pid = child.pid;
  const stdin = child.stdin.getWriter();
  const tail = new StderrTail(child.stderr, (l) => log("debug", "ffmpeg recorder", { pid, line: l }));
  const progress = new FfmpegProgress(child.stdout);
  let stopping = false;
  const exited = child.status.then(async (st) => {
    untrackChild(child);
    await Promise.all([tail.done, progress.done]);
    await Deno.remove(sdpPath).catch(() => {});
    const reason = st.signal
      ? `ffmpeg killed by ${st.signal}`
      : st.code === 0
      ? (stopping ? "stopped" : "ended")
      : `ffmpeg exited with code ${st.code}: ${ffmpegReason(tail.lines) || "no message"}`;
    const out = { code: st.signal ? null : st.code, signal: st.signal, reason };
    if (st.code !== 0) log("warn", "recorder exited", { pid, path, ...out });
    return out;
  });
  let dead = false;
  exited.then(() => dead = true);

  // wait until ffmpeg listens (packets sent before would be lost)
  const t0 = performance.now();
  while (!(await udpBound(port))) {
    if (dead) {
      await stdin.close().catch(() => {});
      const e = await exited;
      throw new RecorderError(`recorder ffmpeg failed to start: ${e.reason}`, tail.text());
    }
    if (performance.now() - t0 > 5000) {
      child.kill("SIGKILL");
      await stdin.close().catch(() => {});
      await exited;
      throw new RecorderError("recorder ffmpeg did not open its RTP port within 5 s", tail.text());
    }
    await new Promise((r) => setTimeout(r, 10));
  }

  const sock = dgram.createSocket("udp4");
  orderedSends(sock as unknown as Parameters<typeof orderedSends>[0]);
  sock.on("error", (e) => log("debug", "recorder socket error", { error: String(e) }));
  sock.on("message", () => {}); // RTCP receiver reports from ffmpeg
  await new Promise<void>((r) => sock.bind(0, "127.0.0.1", () => r()));
  let packets = 0;
  let pending = 0;
  let drained: (() => void) | null = null;
  const pt = PT[opts.codec];
  // packets of the last frame (same timestamp), replayed once on stop to wake ffmpeg up (see stop())
  let lastFrame: Uint8Array[] = [];
  let lastTs = -1;
  let prevTsStep = opts.codec === "opus" ? 960 : 6000;
  /** VP8: a keyframe was forwarded (ffmpeg writes nothing before one). */
  let keyframeSeen = opts.codec !== "vp8";
  const forward = (out: Uint8Array) => {
    packets++;
    pending++;
    sock.send(out, port, "127.0.0.1", () => {
      if (--pending === 0 && drained) drained();
    });
  };
  const jb = new JitterBuffer(opts.jitterPackets ?? 32, (p) => {
    if (dead) return;
    const out = p;
    out[1] = (out[1]! & 0x80) | pt;
    const dv = new DataView(out.buffer);
    dv.setUint32(8, SSRC);
    const ts = dv.getUint32(4);
    if (ts !== lastTs) {
      if (lastTs >= 0 && ((ts - lastTs) >>> 0) < 90000) prevTsStep = (ts - lastTs) >>> 0;
      lastTs = ts;
      lastFrame = [];
    }
    lastFrame.push(out);
    if (!keyframeSeen && isVp8KeyframeStart(out)) keyframeSeen = true;
    forward(out);
  });

  let stopped: Promise<RecordingResult> | null = null;
  const rec: Recorder = {
    path,
    pid,
    exited,
    get packets() {
      return packets;
    },
    write(p) {
      if (stopping || dead || p.length < 12 || (p[0]! & 0xc0) !== 0x80) return;
      jb.push(p.slice()); // held for reordering: must not alias the caller's buffer
    },
    stop() {
      if (stopped) return stopped;
      stopped = (async () => {
        jb.flush();
        if (pending > 0) {
          await Promise.race([
            new Promise<void>((r) => drained = r),
            new Promise((r) => setTimeout(r, 1000)),
          ]);
        }
        stopping = true;
        if (packets === 0) {
          // Nothing to finalize (e.g. a call that never connected): no trailer to wait for.
          try {
            child.kill("SIGKILL");
          } catch { /* gone */ }
          await exited;
          await stdin.close().catch(() => {});
          try {
            sock.close();
          } catch { /* closed */ }
          // the empty file checkWritable() created (never a device such as /dev/full)
          const st = await Deno.lstat(path).catch(() => null);
          if (st?.isFile && st.size === 0) await Deno.remove(path).catch(() => {});
          throw new RecorderError(`recording ${path} got no packets`, tail.text());
        }
        await new Promise((r) => setTimeout(r, 50)); // let ffmpeg read what is in its socket
        // Without a keyframe ffmpeg is still probing and never opens its output: no "q" to wait for.
        if (!dead && keyframeSeen) {
          // ffmpeg only looks at stdin between packets, and it is blocked reading RTP when the stream stopped
          // (SIGINT makes 5.1 abort the Ogg trailer): replay the last frame (new seq/ts) until it exits. "q"
          // goes out only once ffmpeg writes its output: said while it still probes, it would drop what it
          // read. The recording ends with a few repeated frames (20 ms of audio / one video frame each).
          const frame = lastFrame;
          let seq = frame.length ? new DataView(frame[frame.length - 1]!.buffer).getUint16(2) : 0;
          let ts = lastTs;
          let round = 0;
          const replay = () => {
            round++;
            ts = (ts + prevTsStep) >>> 0;
            for (const f of frame) {
              const c = f.slice();
              const dv = new DataView(c.buffer);
              seq = (seq + 1) & 0xffff;
              dv.setUint16(2, seq);
              dv.setUint32(4, ts);
              if (opts.codec === "vp8") bumpVp8PictureId(c, round);
              sock.send(c, port, "127.0.0.1");
            }
          };
          const tick = () => Promise.race([exited, progress.next(), new Promise((r) => setTimeout(r, 100))]);
          // Up to 3 s for ffmpeg to open its output (normally done long before), then "q" and up to 2 s to quit.
          for (let i = 0; i < 30 && !dead && !progress.writing && frame.length; i++) {
            replay();
            await tick();
          }
          if (!progress.writing) log("warn", "recorder ffmpeg never opened its output", { pid, path });
          await stdin.write(new TextEncoder().encode("q")).catch(() => {});
          for (let i = 0; i < 20 && !dead && frame.length; i++) {
            replay();
            await tick();
          }
        }
        await stdin.close().catch(() => {});
        // Bounded: ffmpeg that ignored "q" gets SIGINT after 1 s (at once when it is still probing), SIGKILL
        // after 3 s.
        const t1 = setTimeout(() => {
          try {
            child.kill("SIGINT");
          } catch { /* gone */ }
        }, keyframeSeen ? 1000 : 0);
        const t2 = setTimeout(() => {
          try {
            child.kill("SIGKILL");
          } catch { /* gone */ }
        }, 3000);
        const e = await exited;
        clearTimeout(t1);
        clearTimeout(t2);
        try {
          sock.close();
        } catch { /* closed */ }
        // ffmpeg exits 255 after SIGINT on some versions; judge by stderr
        const errorLine = tail.lines.find((l) =>
          /No space left|Permission denied|Read-only file system|Error writing|I\/O error|Invalid argument|could not/i
            .test(l)
        );
        let bytes = 0;
        try {
          bytes = (await Deno.stat(path)).size;
        } catch { /* not a regular file */ }
        const result = { path, bytes, packets, lost: jb.lost, late: jb.late };
        if (!keyframeSeen) {
          throw new RecorderError(
            `recording ${path} has no video: none of its ${packets} packets started a VP8 keyframe`,
            tail.text(),
            result,
          );
        }
        if (errorLine || (e.signal && e.signal !== "SIGINT") || (e.code !== 0 && e.code !== 255)) {
          throw new RecorderError(
            `recording ${path} failed: ${errorLine ?? e.reason}${
              /No space left/.test(errorLine ?? "") ? " (disk full)" : ""
            }`,
            tail.text(),
            result,
          );
        }
        if (packets === 0) throw new RecorderError(`recording ${path} got no packets`, tail.text(), result);
        if (opts.codec === "vp8" && progress.frames === 0) {
          // ffmpeg drops VP8 until a keyframe: a header-only file is a failed recording, not a short one.
          throw new RecorderError(
            `recording ${path} has no video frame: no VP8 keyframe reached the recorder`,
            tail.text(),
            result,
          );
        }
        return result;
      })();
      return stopped;
    },
  };
  return rec;
}
