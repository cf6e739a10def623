/**
 * Load test of call setups, SIPp-style: callers place OMEMO-verified calls to one answering endpoint at a set
 * rate with a cap on concurrent calls; each call runs propose → first RTP both ways, holds with a 50 packet/s
 * RTP stream each way (per medium), and is hung up by the caller. Every call's setup phases are kept; the
 * report has per-phase percentiles, failures by Jingle reason, the achieved rate, peak concurrency, RTP counts
 * and the process CPU. `scripts/load.ts` (`deno task load`) runs it against an embedded Prosody.
 *
 * A caller holds one call at a time: a second propose from the same account would replace the running call
 * (XEP-0353 existing-session rule), so there are as many callers as the concurrency cap.
 *
 * @module
 */
import process from "node:process";
import type { Endpoint } from "./endpoint.ts";
import { type Call, type CallPhases, type Calls, setupCalls, type VerifyPolicy } from "./calls.ts";
import type { Logger } from "../xmpp/mod.ts";
import type { MediaKind } from "../media/webrtc.ts";

/** What to run. */
export interface LoadOptions {
  /** Calls to place in total. */
  calls: number;
  /** New calls per second (SIPp `-r`). */
  rate: number;
  /** At most this many calls at once (SIPp `-l`); a call due while the cap is reached waits for a free slot. */
  concurrency: number;
  /** How long a call stays up once RTP flows both ways (ms). */
  holdMs: number;
  /** Audio+video calls instead of audio only. */
  video?: boolean;
  /** DTLS fingerprint verification of both sides (default `require`: every call OMEMO-verified). */
  verify?: VerifyPolicy;
  /** A call not carrying RTP both ways this long after its propose fails (ms, default 20 000). */
  setupTimeoutMs?: number;
  /** Calls the answering side takes at once (default unlimited); beyond, it answers `busy`. */
  calleeMaxCalls?: number;
  /** Everything stops after this long, unfinished calls counted as failed (ms, default 10 min). */
  maxDurationMs?: number;
  /** Called about once a second while running. */
  onProgress?: (p: LoadProgress) => void;
  /** Where the call subsystems log (default: silent). */
  logger?: Logger;
}

/** A progress snapshot. */
export interface LoadProgress {
  /** ms since the start. */
  elapsedMs: number;
  /** Calls placed so far. */
  started: number;
  /** Calls up right now. */
  active: number;
  /** Calls that ended after RTP flowed both ways. */
  succeeded: number;
  /** Calls that failed. */
  failed: number;
}

/** Median and percentiles of a series (ms). */
export interface LoadStats {
  /** Samples. */
  n: number;
  /** Smallest. */
  min: number;
  /** Median. */
  median: number;
  /** 95th percentile (nearest rank). */
  p95: number;
  /** 99th percentile (nearest rank). */
  p99: number;
  /** Largest. */
  max: number;
}

/** The setup phases reported, in order (ms between the steps; ICE/DTLS/RTP: the later of both sides). */
export const LOAD_PHASES = [
  "proposed→proceed",
  "proceed→initiate",
  "initiate→accept",
  "accept→iceConnected",
  "iceConnected→dtlsConnected",
  "dtlsConnected→firstRtpBothWays",
  "setup (propose→first RTP both ways)",
] as const;

/** One phase name of {@link LOAD_PHASES}. */
export type LoadPhase = typeof LOAD_PHASES[number];

/** The outcome of a load run. */
export interface LoadReport {
  /** The options run with (without callbacks). */
  options: Omit<LoadOptions, "onProgress" | "logger">;
  /** ISO time of the start. */
  startedAt: string;
  /** Wall time of the whole run (ms). */
  wallMs: number;
  /** Calls placed. */
  attempted: number;
  /** Calls that carried RTP both ways and ended with `success`. */
  succeeded: number;
  /** Calls that did not. */
  failed: number;
  /** Failed calls by reason (`decline`, `busy`, `security-error`, `setup timeout`, …). */
  failures: Record<string, number>;
  /** Every call was OMEMO-verified on both sides (with `verify: require`, a call that was not failed). */
  omemoVerified: number;
  /** Setup phases of the successful calls. */
  phases: Record<LoadPhase, LoadStats>;
  /** Calls started per second, over the placing period. */
  achievedRate: number;
  /** Most calls up at once. */
  peakConcurrency: number;
  /** Calls that waited for a free slot (the concurrency cap was reached when they were due). */
  delayedStarts: number;
  /** RTP packets sent and received by both sides of all calls (authenticated SRTP only). */
  rtp: { sent: number; received: number };
  /** CPU time of this process during the run (ms), all threads. */
  cpu: { userMs: number; systemMs: number };
}

/** Median, p95, p99 (nearest rank) of `xs`. */
export function loadStats(xs: number[]): LoadStats {
  const s = [...xs].sort((a, b) => a - b);
  if (s.length === 0) return { n: 0, min: NaN, median: NaN, p95: NaN, p99: NaN, max: NaN };
  const rank = (p: number) => s[Math.min(s.length - 1, Math.max(0, Math.ceil(p * s.length) - 1))]!;
  const median = s.length % 2 ? s[(s.length - 1) / 2]! : (s[s.length / 2 - 1]! + s[s.length / 2]!) / 2;
  return { n: s.length, min: s[0]!, median, p95: rank(0.95), p99: rank(0.99), max: s[s.length - 1]! };
}

/** The phase durations of a call from both sides' timestamps; undefined when a step is missing. */
export function callPhaseDurations(caller: CallPhases, callee: CallPhases): number[] | undefined {
  const need = [caller.proposed, caller.proceed, caller.initiate, caller.accept] as const;
  if (need.some((x) => x === undefined)) return undefined;
  const ice = Math.max(caller.iceConnected ?? NaN, callee.iceConnected ?? NaN);
  const dtls = Math.max(caller.dtlsConnected ?? NaN, callee.dtlsConnected ?? NaN, ice);
  const rtp = Math.max(caller.firstRtpReceived ?? NaN, callee.firstRtpReceived ?? NaN);
  const out = [
    caller.proceed! - caller.proposed!,
    caller.initiate! - caller.proceed!,
    caller.accept! - caller.initiate!,
    ice - caller.accept!,
    dtls - ice,
    rtp - dtls,
    rtp - caller.proposed!,
  ];
  return out.every(Number.isFinite) ? out : undefined;
}

const silent: Logger = { debug() {}, info() {}, warn() {}, error() {} };

/** An RTP packet shaped like one 20 ms Opus frame (werift rewrites SSRC and payload type). */
function rtpPacket(seq: number, timestamp: number): Uint8Array {
  const p = new Uint8Array(12 + 60);
  p[0] = 0x80;
  p[1] = 111;
  const v = new DataView(p.buffer);
  v.setUint16(2, seq & 0xffff);
  v.setUint32(4, timestamp >>> 0);
  p.fill(0xfc, 12);
  return p;
}

/**
 * Runs the load: `callers` (one per concurrent call) call `callee`. The endpoints are signed in and stay so; the
 * call subsystems set up here are stopped at the end.
 */
export async function runLoad(
  callers: Endpoint[],
  callee: Endpoint,
  options: LoadOptions,
): Promise<LoadReport> {
  const {
    calls: total,
    rate,
    concurrency,
    holdMs,
    video = false,
    verify = "require",
    setupTimeoutMs = 20_000,
    maxDurationMs = 600_000,
  } = options;
  if (!Number.isInteger(total) || total < 1) throw new Error("calls must be a positive integer");
  if (!(rate > 0)) throw new Error("rate must be positive");
  if (!Number.isInteger(concurrency) || concurrency < 1) {
    throw new Error("concurrency must be a positive integer");
  }
  if (callers.length < Math.min(concurrency, total)) {
    throw new Error(`${Math.min(concurrency, total)} callers needed for concurrency ${concurrency}`);
  }
  const logger = options.logger ?? silent;
  const media: MediaKind[] = video ? ["audio", "video"] : ["audio"];

  const calleeCalls = await setupCalls(callee, {
    verify,
    logger,
    accept: () => true,
    ...(options.calleeMaxCalls !== undefined ? { maxCalls: options.calleeMaxCalls } : {}),
  });
  const callerCalls: Calls[] = [];
  for (const c of callers.slice(0, Math.min(concurrency, total))) {
    callerCalls.push(await setupCalls(c, { verify, logger }));
  }
  const incoming = new Map<string, Call>();
  const incomingWaiters = new Map<string, (c: Call) => void>();
  const stopIncoming = calleeCalls.onIncoming((c) => {
    incoming.set(c.sid, c);
    incomingWaiters.get(c.sid)?.(c);
  });

  // One 20 ms clock sends the media of every call carrying it (a timer per call would cost more than the media).
  const streaming = new Set<{ call: Call; seq: number; ts: number }>();
  let sent = 0;
  const clock = setInterval(() => {
    for (const s of streaming) {
      const peer = s.call.peer;
      if (!peer) continue;
      s.seq++;
      s.ts += 960;
      for (const kind of media) {
        void peer.sendRtp(kind, rtpPacket(s.seq, s.ts)).then((ok) => ok && sent++, () => {});
      }
    }
  }, 20);

  const started0 = performance.now();
  const cpu0 = process.cpuUsage();
  const samples: number[][] = LOAD_PHASES.map(() => []);
  const failures: Record<string, number> = {};
  let started = 0, active = 0, succeeded = 0, failed = 0, peak = 0, delayed = 0, verified = 0, received = 0;
  let lastStart = started0;
  const fail = (why: string) => {
    failed++;
    failures[why] = (failures[why] ?? 0) + 1;
  };
  const freeCallers = [...callerCalls];
  const slotWaiters: (() => void)[] = [];

  const runOne = async (mine: Calls): Promise<void> => {
    const deadline = performance.now() + setupTimeoutMs;
    let out: Call | undefined;
    let inc: Call | undefined;
    const streams: { call: Call; seq: number; ts: number }[] = [];
    try {
      out = await mine.call(callee.conn.bareJid, { video });
      const sid = out.sid;
      const timeLeft = () => Math.max(0, deadline - performance.now());
      inc = incoming.get(sid) ?? await new Promise<Call | undefined>((resolve) => {
        const t = setTimeout(() => resolve(undefined), timeLeft());
        const settle = (c: Call | undefined) => {
          clearTimeout(t);
          incomingWaiters.delete(sid);
          resolve(c);
        };
        incomingWaiters.set(sid, settle);
        void out!.ended.then(() => settle(incoming.get(sid)));
      });
      if (!inc) throw new LoadCallError(await endedWhy(out, "the callee never saw the call"));
      const connected = Promise.all([out.connected, inc.connected]);
      connected.catch(() => {});
      const ok = await within(connected.then(() => true, () => false), timeLeft(), false);
      if (!ok) throw new LoadCallError(await endedWhy(out, "setup timeout (media not connected)", inc));
      for (const call of [out, inc]) {
        const s = { call, seq: Math.floor(Math.random() * 30000), ts: 0 };
        streams.push(s);
        streaming.add(s);
      }
      while (out.phases.firstRtpReceived === undefined || inc.phases.firstRtpReceived === undefined) {
        if (performance.now() > deadline) throw new LoadCallError("setup timeout (no RTP both ways)");
        if (out.state === "ended" || inc.state === "ended") {
          throw new LoadCallError(await endedWhy(out, "ended before RTP flowed", inc));
        }
        await sleep(5);
      }
      const d = callPhaseDurations(out.phases, inc.phases);
      if (out.verification.omemo && inc.verification.omemo) verified++;
      await sleep(holdMs);
      await out.hangup();
      const ends = await within(Promise.all([out.ended, inc.ended]), setupTimeoutMs, undefined);
      if (!ends) throw new LoadCallError("the callee did not end the call after our hang-up");
      const [a, b] = ends;
      if (a.reason !== "success" || b.reason !== "success") {
        throw new LoadCallError(`ended with ${a.reason}/${b.reason}`);
      }
      succeeded++;
      if (d) d.forEach((v, k) => samples[k]!.push(v));
    } catch (e) {
      fail(e instanceof LoadCallError ? e.message : `error: ${(e as Error).message}`);
      await out?.hangup().catch(() => {});
    } finally {
      if (out) incoming.delete(out.sid);
      for (const s of streams) streaming.delete(s);
      for (const c of [out, inc]) {
        const st = c?.peer?.stats();
        if (st) received += st.audio.packetsReceived + st.video.packetsReceived;
      }
    }
  };

  const progress = () =>
    options.onProgress?.({ elapsedMs: performance.now() - started0, started, active, succeeded, failed });
  const ticker = setInterval(progress, 1000);
  const running = new Set<Promise<void>>();
  let timedOut = false;
  let watchdog: ReturnType<typeof setTimeout> | undefined;
  const timeUp = new Promise<void>((r) => watchdog = setTimeout(() => (timedOut = true, r()), maxDurationMs));
  try {
    for (let i = 0; i < total && !timedOut; i++) {
      // Due time from the rate; a call due while the cap is reached waits for a slot, the next ones keep pace.
      const due = started0 + i * (1000 / rate);
      const wait = due - performance.now();
      if (wait > 0) await sleep(wait);
      if (freeCallers.length === 0) {
        delayed++;
        await Promise.race([new Promise<void>((r) => slotWaiters.push(r)), timeUp]);
      }
      if (timedOut) break;
      const mine = freeCallers.pop()!;
      started++;
      active++;
      peak = Math.max(peak, active);
      lastStart = performance.now();
      const p = runOne(mine).finally(() => {
        active--;
        running.delete(p);
        freeCallers.push(mine);
        slotWaiters.shift()?.();
      });
      running.add(p);
    }
    // Unfinished calls at the watchdog count as failed (their own timeouts end them soon after).
    await Promise.race([Promise.all(running), timeUp]);
  } finally {
    clearTimeout(watchdog);
    clearInterval(ticker);
    clearInterval(clock);
    stopIncoming();
  }
  progress();
  const wallMs = performance.now() - started0;
  const cpu = process.cpuUsage(cpu0);
  for (const c of [...callerCalls, calleeCalls]) await c.stop().catch(() => {});
  if (timedOut && running.size) fail(`unfinished after ${maxDurationMs} ms`);
  const placingMs = lastStart - started0;
  const { onProgress: _p, logger: _l, ...plain } = options;
  return {
    options: plain,
    startedAt: new Date(performance.timeOrigin + started0).toISOString(),
    wallMs,
    attempted: started,
    succeeded,
    failed,
    failures,
    omemoVerified: verified,
    phases: Object.fromEntries(LOAD_PHASES.map((p, k) => [p, loadStats(samples[k]!)])) as Record<
      LoadPhase,
      LoadStats
    >,
    achievedRate: started > 1 && placingMs > 0 ? (started - 1) / (placingMs / 1000) : started,
    peakConcurrency: peak,
    delayedStarts: delayed,
    rtp: { sent, received },
    cpu: { userMs: cpu.user / 1000, systemMs: cpu.system / 1000 },
  };
}

class LoadCallError extends Error {}

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

/** `p`, or `otherwise` after `ms` (the timer is cleared either way). */
async function within<T, U>(p: Promise<T>, ms: number, otherwise: U): Promise<T | U> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  try {
    return await Promise.race([p, new Promise<U>((r) => timer = setTimeout(() => r(otherwise), ms))]);
  } finally {
    clearTimeout(timer);
  }
}

/** Why a call that did not set up failed: its Jingle end reason if it ended (soon), else `fallback`. */
async function endedWhy(call: Call, fallback: string, other?: Call): Promise<string> {
  const end = await within(Promise.race([call.ended, ...(other ? [other.ended] : [])]), 50, undefined)
    .catch(() => undefined);
  return end ? `${end.reason}${end.text ? ` (${end.text})` : ""}` : fallback;
}

/** The report as text: counts, phase table, failures. */
export function formatLoadReport(r: LoadReport): string {
  const f = (x: number) => Number.isFinite(x) ? x.toFixed(2).padStart(9) : "        -";
  const lines = [
    `load: ${r.attempted} calls (${r.options.video ? "audio+video" : "audio"}, verify ${
      r.options.verify ?? "require"
    }) at ${r.options.rate}/s requested, ${
      r.achievedRate.toFixed(1)
    }/s achieved, concurrency cap ${r.options.concurrency} (peak ${r.peakConcurrency}, ${r.delayedStarts} calls waited for a slot), hold ${r.options.holdMs} ms`,
    `succeeded ${r.succeeded}, failed ${r.failed}; OMEMO-verified both sides: ${r.omemoVerified}; wall ${
      (r.wallMs / 1000).toFixed(1)
    } s; CPU user ${(r.cpu.userMs / 1000).toFixed(1)} s, system ${(r.cpu.systemMs / 1000).toFixed(1)} s`,
    `RTP packets: sent ${r.rtp.sent}, received ${r.rtp.received}`,
    `${"phase (ms)".padEnd(40)}${"median".padStart(9)}${"p95".padStart(9)}${"p99".padStart(9)}${
      "max".padStart(9)
    }     n`,
  ];
  for (const p of LOAD_PHASES) {
    const s = r.phases[p];
    lines.push(`${p.padEnd(40)}${f(s.median)}${f(s.p95)}${f(s.p99)}${f(s.max)}  ${String(s.n).padStart(4)}`);
  }
  for (const [why, n] of Object.entries(r.failures)) lines.push(`failed: ${n} × ${why}`);
  return lines.join("\n");
}
