/**
 * `deno task load [--calls N] [--rate R] [--concurrency C] [--hold MS] [--video] [--verify require|prefer|off]
 * [--callee-max-calls N] [--setup-timeout MS] [--max-duration S] [--json] [--report FILE]`
 *
 * A SIPp-style load test of call setups on an embedded Prosody (loopback only): C caller accounts and one
 * answering account sign in (OMEMO published), then calls are placed at R per second, at most C at once, each
 * propose → first RTP both ways → held MS with RTP both ways → hung up (bot/load.ts). Progress once a second on
 * stderr; the report (per-phase median/p95/p99/max, failures by reason, achieved rate, peak concurrency, RTP,
 * CPU) on stdout, as JSON with `--json`, and written to FILE with `--report`. Defaults: 100 calls, 10/s,
 * concurrency 10, hold 1000 ms, audio, verify require. Stops by itself (after the last call, or after
 * `--max-duration`). Exit 0 when every call succeeded, 1 when any failed, 2 on bad flags.
 *
 * @module
 */
import type { Endpoint } from "../bot/endpoint.ts";
import { formatLoadReport, type LoadOptions, runLoad } from "../bot/load.ts";
import type { VerifyPolicy } from "../bot/calls.ts";
import { startProsody } from "./prosody.ts";
// The throwaway accounts of the embedded server are signed in as the tests do it.
import { endpointOn } from "../tests/bot/_support.ts";

/** The parsed flags. */
export interface LoadCliOptions extends Omit<LoadOptions, "onProgress" | "logger"> {
  /** Print the report as JSON. */
  json: boolean;
  /** Also write the JSON report here. */
  reportPath?: string;
}

const USAGE = "usage: deno task load [--calls N] [--rate R] [--concurrency C] [--hold MS] [--video] " +
  "[--verify require|prefer|off] [--callee-max-calls N] [--setup-timeout MS] [--max-duration S] [--json] " +
  "[--report FILE]";

/** Parses the flags (pure); throws with a message on a bad one. */
export function parseLoadArgs(args: string[]): LoadCliOptions {
  const o: LoadCliOptions = {
    calls: 100,
    rate: 10,
    concurrency: 10,
    holdMs: 1000,
    verify: "require",
    json: false,
  };
  const num = (flag: string, v: string | undefined, integer: boolean, min: number): number => {
    const n = Number(v);
    if (v === undefined || !Number.isFinite(n) || (integer && !Number.isInteger(n)) || n < min) {
      throw new Error(`${flag} needs ${integer ? "an integer" : "a number"} ≥ ${min}, got ${v ?? "nothing"}`);
    }
    return n;
  };
  for (let i = 0; i < args.length; i++) {
    let a = args[i]!;
    let v: string | undefined;
    const eq = a.indexOf("=");
    if (a.startsWith("--") && eq > 0) [a, v] = [a.slice(0, eq), a.slice(eq + 1)];
    const value = () => v ?? args[++i];
    switch (a) {
      case "--calls":
        o.calls = num(a, value(), true, 1);
        break;
      case "--rate":
        o.rate = num(a, value(), false, 0.001);
        break;
      case "--concurrency":
        o.concurrency = num(a, value(), true, 1);
        break;
      case "--hold":
        o.holdMs = num(a, value(), false, 0);
        break;
      case "--setup-timeout":
        o.setupTimeoutMs = num(a, value(), false, 100);
        break;
      case "--callee-max-calls":
        o.calleeMaxCalls = num(a, value(), true, 1);
        break;
      case "--max-duration":
        o.maxDurationMs = num(a, value(), false, 1) * 1000;
        break;
      case "--video":
        o.video = true;
        break;
      case "--verify": {
        const p = value();
        if (p !== "require" && p !== "prefer" && p !== "off") {
          throw new Error(`--verify: require, prefer or off`);
        }
        o.verify = p as VerifyPolicy;
        break;
      }
      case "--json":
        o.json = true;
        break;
      case "--report": {
        const p = value();
        if (!p) throw new Error("--report needs a file");
        o.reportPath = p;
        break;
      }
      default:
        throw new Error(`unknown argument ${a}`);
    }
  }
  return o;
}

async function main(): Promise<number> {
  let opts: LoadCliOptions;
  try {
    opts = parseLoadArgs(Deno.args);
  } catch (e) {
    console.error(`${(e as Error).message}\n${USAGE}`);
    return 2;
  }
  const maxDurationMs = opts.maxDurationMs ?? 600_000;
  // Sign-in and teardown on top of the run's own limit: the whole tool ends by itself.
  const watchdog = setTimeout(() => {
    console.error(`load: exceeded ${maxDurationMs / 1000 + 120} s, aborting`);
    Deno.exit(1);
  }, maxDurationMs + 120_000);
  // Nagle off, as bench_calls: a small stanza answering a small stanza must not wait for a delayed ACK.
  const server = await startProsody({ nagle: false });
  const tmp = await Deno.makeTempDir({ prefix: "callbot-load-" });
  const endpoints: Endpoint[] = [];
  try {
    const connect = async (user: string) => {
      const e = await endpointOn(server, user, tmp);
      endpoints.push(e);
      return e;
    };
    const callerCount = Math.min(opts.concurrency, opts.calls);
    console.error(
      `load: Prosody on ${server.host}:${server.c2sPort}; signing in ${callerCount} callers + 1 callee`,
    );
    const callee = await connect("callee");
    const callers: Endpoint[] = [];
    // A few at a time: each signs in and publishes its OMEMO device and bundle.
    for (let i = 0; i < callerCount; i += 8) {
      const batch = Array.from(
        { length: Math.min(8, callerCount - i) },
        (_, k) => connect(`caller${i + k + 1}`),
      );
      callers.push(...await Promise.all(batch));
    }
    const report = await runLoad(callers, callee, {
      ...opts,
      onProgress: (p) =>
        console.error(
          `t=${
            (p.elapsedMs / 1000).toFixed(1)
          }s started ${p.started} active ${p.active} ok ${p.succeeded} failed ${p.failed}`,
        ),
    });
    const { json: _j, reportPath: _r, ...options } = opts;
    const out = { ...report, options };
    if (opts.reportPath) await Deno.writeTextFile(opts.reportPath, JSON.stringify(out, null, 2) + "\n");
    console.log(opts.json ? JSON.stringify(out, null, 2) : formatLoadReport(out));
    return report.failed === 0 && report.succeeded === opts.calls ? 0 : 1;
  } catch (e) {
    console.error(`load failed: ${(e as Error).message}`);
    return 1;
  } finally {
    clearTimeout(watchdog);
    for (const e of endpoints) await e.close().catch(() => {});
    await server.stop();
    await Deno.remove(tmp, { recursive: true }).catch(() => {});
  }
}

if (import.meta.main) Deno.exit(await main());
