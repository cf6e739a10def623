/**
 * Media cost per concurrent call: N loopback call pairs (werift, real UDP, DTLS-SRTP) each sending a
 * 20 ms opus stream from ffmpeg, with one shared encoder vs one encoder per call.
 * CPU = Deno process (process.cpuUsage) + ffmpeg children (/proc/<pid>/stat utime+stime);
 * memory = RSS of the Deno process + ffmpeg children. Measured over a window after warm-up.
 *
 *   deno run -A scripts/bench_media.ts [--json] [--video] [--window=4]
 */
import process from "node:process";
import { makePair } from "../tests/media/helpers.ts";
import { type MediaSource, sharedSource, startSource } from "../media/sources.ts";
import type { Peer } from "../media/webrtc.ts";

const json = Deno.args.includes("--json");
const video = Deno.args.includes("--video");
const windowS = Number(Deno.args.find((a) => a.startsWith("--window="))?.split("=")[1] ?? 4);
const CLK = 100; // USER_HZ on Linux
const kind = video ? "video" : "audio";
const spec = video
  ? { type: "testvideo" as const, width: 320, height: 240, fps: 15 }
  : { type: "tone" as const };

function ffmpegCpuS(pid: number): number {
  try {
    const stat = Deno.readTextFileSync(`/proc/${pid}/stat`);
    const f = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
    return (Number(f[11]) + Number(f[12])) / CLK; // utime, stime (fields 14, 15)
  } catch {
    return 0;
  }
}
function rssMiB(pid: number): number {
  try {
    const m = /VmRSS:\s+(\d+)/.exec(Deno.readTextFileSync(`/proc/${pid}/status`));
    return m ? Number(m[1]) / 1024 : 0;
  } catch {
    return 0;
  }
}

interface Row {
  mode: "shared" | "per-call";
  calls: number;
  encoders: number;
  setupMs: number;
  denoCpuPct: number;
  ffmpegCpuPct: number;
  totalCpuPct: number;
  cpuPctPerCall: number;
  denoRssMiB: number;
  ffmpegRssMiB: number;
  rssMiBPerCall: number;
  packetsReceivedPerS: number;
}

async function run(mode: "shared" | "per-call", n: number): Promise<Row> {
  const t0 = performance.now();
  const pairs: { a: Peer; b: Peer }[] = await Promise.all(
    Array.from({ length: n }, () => makePair({ audio: !video, video })),
  );
  await Promise.all(pairs.flatMap((p) => [p.a.waitConnected(), p.b.waitConnected()]));
  const sources: MediaSource[] = [];
  const releases: (() => Promise<unknown>)[] = [];
  let received = 0;
  for (const { a, b } of pairs) {
    let src: MediaSource;
    if (mode === "shared") {
      const h = await sharedSource(spec, kind);
      src = h.source;
      releases.push(h.release);
    } else {
      src = await startSource(spec, { kind });
      releases.push(() => src.stop());
    }
    if (!sources.includes(src)) sources.push(src);
    src.onPacket((p) => void a.sendRtp(kind, p));
    b.onRtp(() => received++);
  }
  const setupMs = performance.now() - t0;
  await new Promise((r) => setTimeout(r, 1000)); // warm-up
  const pids = sources.map((s) => s.pid);
  const c0 = process.cpuUsage();
  const f0 = pids.reduce((s, p) => s + ffmpegCpuS(p), 0);
  const r0 = received;
  const w0 = performance.now();
  await new Promise((r) => setTimeout(r, windowS * 1000));
  const wall = (performance.now() - w0) / 1000;
  const c1 = process.cpuUsage(c0);
  const f1 = pids.reduce((s, p) => s + ffmpegCpuS(p), 0);
  const denoRss = Deno.memoryUsage().rss / 2 ** 20;
  const ffRss = pids.reduce((s, p) => s + rssMiB(p), 0);
  const rcv = (received - r0) / wall;
  for (const r of releases) await r();
  await Promise.all(pairs.flatMap((p) => [p.a.close(), p.b.close()]));
  const denoCpu = ((c1.user + c1.system) / 1e6 / wall) * 100;
  const ffCpu = ((f1 - f0) / wall) * 100;
  const round = (x: number, d = 2) => Number(x.toFixed(d));
  return {
    mode,
    calls: n,
    encoders: pids.length,
    setupMs: round(setupMs, 0),
    denoCpuPct: round(denoCpu),
    ffmpegCpuPct: round(ffCpu),
    totalCpuPct: round(denoCpu + ffCpu),
    cpuPctPerCall: round((denoCpu + ffCpu) / n),
    denoRssMiB: round(denoRss, 1),
    ffmpegRssMiB: round(ffRss, 1),
    rssMiBPerCall: round((denoRss + ffRss) / n, 1),
    packetsReceivedPerS: round(rcv, 0),
  };
}

const deadline = setTimeout(() => {
  console.error("bench_media: exceeded 110 s, aborting");
  Deno.exit(2);
}, 110_000);
const rows: Row[] = [];
for (const n of [1, 5, 10]) {
  for (const mode of ["shared", "per-call"] as const) {
    rows.push(await run(mode, n));
    if (!json) console.error(`done ${mode} N=${n}`);
  }
}
clearTimeout(deadline);
if (json) {
  console.log(JSON.stringify({ kind, windowS, cores: navigator.hardwareConcurrency, rows }, null, 2));
} else {
  console.log(
    `${kind} calls, both peers of each call in this process; CPU in % of one core over ${windowS} s; ` +
      `${navigator.hardwareConcurrency} cores`,
  );
  console.table(rows);
}
Deno.exit(0);
