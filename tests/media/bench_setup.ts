// Measure loopback pair setup time with/without the early ClientHello, and concurrent setups.
// deno run -A tests/media/bench_setup.ts [rounds] [concurrency]
import { mediaTuning } from "../../media/webrtc.ts";
import { makePair } from "./helpers.ts";

const rounds = Number(Deno.args[0] ?? 10);
const conc = Number(Deno.args[1] ?? 0);

async function one(): Promise<{ total: number; dtls: number; ok: boolean; err?: string }> {
  const t0 = performance.now();
  const { a, b } = await makePair();
  let iceAt = 0;
  a.onStateChange((s) => {
    if (s.ice === "connected" && !iceAt) iceAt = performance.now();
  });
  try {
    await Promise.all([a.waitConnected(20000), b.waitConnected(20000)]);
    const t1 = performance.now();
    return { total: t1 - t0, dtls: t1 - (iceAt || t0), ok: true };
  } catch (e) {
    return { total: performance.now() - t0, dtls: 0, ok: false, err: (e as Error).message };
  } finally {
    await a.close();
    await b.close();
  }
}
const stat = (xs: number[]) => {
  const s = [...xs].sort((x, y) => x - y);
  return `min ${s[0]!.toFixed(1)} median ${s[Math.floor(s.length / 2)]!.toFixed(1)} max ${
    s.at(-1)!.toFixed(1)
  }`;
};

await one(); // warm-up (certificate generation, JIT)
if (!conc) {
  for (const early of [false, true, false, true]) {
    mediaTuning.earlyClientHello = early;
    const r: { total: number; dtls: number }[] = [];
    for (let i = 0; i < rounds; i++) r.push(await one());
    console.log(
      `earlyClientHello=${early}: setup ms ${stat(r.map((x) => x.total))}; ICE-connected→both DTLS ok ms ${
        stat(r.map((x) => x.dtls))
      }`,
    );
  }
} else {
  const t0 = performance.now();
  const res = await Promise.all(Array.from({ length: conc }, () => one()));
  const failed = res.filter((r) => !r.ok);
  console.log(
    `concurrency ${conc}: wall ${
      (performance.now() - t0).toFixed(0)
    } ms, failed ${failed.length}, ok setup ms ${stat(res.filter((r) => r.ok).map((r) => r.total))}`,
  );
  const reasons = new Map<string, number>();
  for (const f of failed) reasons.set(f.err ?? "?", (reasons.get(f.err ?? "?") ?? 0) + 1);
  for (const [k, v] of reasons) console.log(`  ${v}× ${k}`);
}
Deno.exit(0);
