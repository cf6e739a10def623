/**
 * Foundation benchmark: XMPP round trip, login CPU and OMEMO operations, each next to a reference.
 *
 * Aims (from the issue): round trip within 3× Prosody's bare ping, login CPU ≤ 3× Prosody's own,
 * OMEMO operations within 5× python3-oldmemo.
 *
 * 1. IQ round trip (XEP-0199 ping to the domain) through a real Prosody:
 *    - ours: `connectXmpp` + `conn.iq`;
 *    - bare: a minimal raw client in this file (Deno.connect, STARTTLS, SASL PLAIN over TLS to
 *      loopback, bind) with TCP_NODELAY — Prosody's own answering time plus loopback TLS;
 *    - bare with Nagle on, and stock `@xmpp/client` (no NODELAY, library SCRAM), for contrast;
 *    - a burst: a message to self and a ping back to back, timing the ping's reply.
 * 2. Login CPU: `process.cpuUsage()` of N `connectXmpp` logins + close, next to Prosody's CPU
 *    (utime+stime from /proc/<pid>/stat) over the same logins; stock library SCRAM for reference.
 * 3. OMEMO (omemo/mod.ts, in-memory PEP): x3dh_build, first_decrypt, ratchet_turn, encrypt_existing,
 *    decrypt_existing, next to `/usr/bin/python3 scripts/bench_oldmemo.py --iterations N --json`.
 *    Every OMEMO operation includes a synced (fsync'ed, atomically renamed) store write.
 *
 * Usage: `deno run -A scripts/bench_foundation.ts [--iterations N] [--json]`
 *
 * @module
 */
import net from "node:net";
import process from "node:process";
import tls from "node:tls";
import { client as stockClient } from "@xmpp/client";
import { xml as stockXml } from "@xmpp/xml";
import { connectXmpp, type Element, xml } from "../xmpp/mod.ts";
import { OmemoManager, type OmemoPepTransport, OmemoStore } from "../omemo/mod.ts";
import { startProsody } from "./prosody.ts";

/* ------------------------------------------------------------------------------------------------ */
/* Options and statistics.                                                                          */

function parseArgs(args: string[]): { iterations: number; json: boolean } {
  let iterations = 50;
  let json = false;
  for (let i = 0; i < args.length; i++) {
    const a = args[i]!;
    if (a === "--json") json = true;
    else if (a === "--iterations" || a === "-n") iterations = Number(args[++i]);
    else if (a.startsWith("--iterations=")) iterations = Number(a.slice("--iterations=".length));
    else if (a === "--help" || a === "-h") {
      console.log("usage: deno run -A scripts/bench_foundation.ts [--iterations N] [--json]");
      Deno.exit(0);
    } else throw new Error(`unknown argument ${a}`);
  }
  if (!Number.isInteger(iterations) || iterations < 1) {
    throw new Error("--iterations must be a positive integer");
  }
  return { iterations, json };
}

/** Summary of a sample in milliseconds. */
interface Stats {
  median: number;
  p95: number;
  min: number;
  n: number;
}

function stats(samples: number[]): Stats {
  const s = [...samples].sort((a, b) => a - b);
  const n = s.length;
  if (n === 0) return { median: NaN, p95: NaN, min: NaN, n: 0 };
  const median = n % 2 ? s[(n - 1) / 2]! : (s[n / 2 - 1]! + s[n / 2]!) / 2;
  const p95 = s[Math.min(n - 1, Math.ceil(0.95 * n) - 1)]!;
  return { median, p95, min: s[0]!, n };
}

const round = (x: number, d = 3) => Number.isFinite(x) ? Number(x.toFixed(d)) : x;
const roundStats = (s: Stats): Stats => ({
  median: round(s.median),
  p95: round(s.p95),
  min: round(s.min),
  n: s.n,
});

/** Progress goes to stderr so `--json` keeps stdout to one object. */
function progress(msg: string): void {
  console.error(`[bench] ${msg}`);
}

async function withTimeout<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  try {
    return await Promise.race([
      p,
      new Promise<never>((_, reject) => {
        timer = setTimeout(() => reject(new Error(`${what}: timed out after ${ms} ms`)), ms);
      }),
    ]);
  } finally {
    clearTimeout(timer);
  }
}

/* ------------------------------------------------------------------------------------------------ */
/* Minimal raw XMPP client: Prosody's bare ping.                                                    */

const enc = new TextEncoder();

function escapeXml(s: string): string {
  return s.replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;").replace(/'/g, "&apos;")
    .replace(/"/g, "&quot;");
}

/**
 * Just enough XMPP for pings: STARTTLS, SASL PLAIN, bind; matching by substring on the raw stream.
 *
 * TLS goes through node:tls rather than Deno.startTls: Prosody's generated certificate is a
 * self-signed CA certificate, which Deno.startTls's verifier refuses as an end-entity certificate
 * (`CaUsedAsEndEntity`) even when given as `caCerts`; node:tls accepts it as `ca`, as connectXmpp does.
 */
class RawXmpp {
  #sock: net.Socket;
  #buf = "";
  #decoder = new TextDecoder();
  #wake: (() => void) | null = null;
  #closed: Error | null = null;
  #id = 0;
  jid = "";

  private constructor(sock: net.Socket) {
    this.#sock = sock;
    sock.on("data", (d: Uint8Array) => {
      this.#buf += this.#decoder.decode(d, { stream: true });
      this.#wake?.();
    });
    sock.on("close", () => {
      this.#closed ??= new Error("stream closed");
      this.#wake?.();
    });
    sock.on("error", (e: Error) => {
      this.#closed = e;
      this.#wake?.();
    });
  }

  static async connect(o: {
    host: string;
    port: number;
    domain: string;
    user: string;
    password: string;
    caPem: string;
    noDelay: boolean;
  }): Promise<RawXmpp> {
    const tcp = net.connect({ host: o.host, port: o.port });
    await new Promise<void>((resolve, reject) => {
      tcp.once("connect", resolve);
      tcp.once("error", reject);
    });
    tcp.setNoDelay(o.noDelay);
    const plain = new RawXmpp(tcp);
    const header = `<?xml version='1.0'?><stream:stream to='${
      escapeXml(o.domain)
    }' xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' version='1.0'>`;
    await plain.write(header);
    await plain.readUntil((b) => b.indexOf("</stream:features>"));
    await plain.write("<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>");
    await plain.readUntil((b) => b.indexOf("<proceed"));
    tcp.removeAllListeners("data");
    tcp.removeAllListeners("close");
    tcp.removeAllListeners("error");
    const secure = tls.connect({ socket: tcp, servername: o.domain, ca: [o.caPem] });
    await new Promise<void>((resolve, reject) => {
      secure.once("secureConnect", resolve);
      secure.once("error", reject);
    });
    const c = new RawXmpp(secure);
    await c.write(header);
    const features = await c.readUntil((b) => b.indexOf("</stream:features>"));
    if (!features.includes(">PLAIN<")) throw new Error("raw client: server does not offer PLAIN over TLS");
    const creds = btoa(String.fromCharCode(...enc.encode(`\0${o.user}\0${o.password}`)));
    await c.write(`<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>${creds}</auth>`);
    const sasl = await c.readUntil((b) => {
      const s = b.indexOf("<success");
      return s >= 0 ? s : b.indexOf("<failure");
    });
    if (!sasl.includes("<success")) throw new Error(`raw client: SASL failed: ${sasl}`);
    c.#buf = "";
    await c.write(header);
    await c.readUntil((b) => b.indexOf("</stream:features>"));
    await c.write(
      "<iq type='set' id='bind1'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'><resource>bench-raw</resource></bind></iq>",
    );
    const bound = await c.readUntil((b) => b.indexOf("</iq>"));
    c.jid = /<jid>([^<]+)<\/jid>/.exec(bound)?.[1] ?? "";
    if (!c.jid) throw new Error(`raw client: bind failed: ${bound}`);
    return c;
  }

  write(s: string): Promise<void> {
    return new Promise((resolve, reject) =>
      this.#sock.write(s, (e?: Error | null) => e ? reject(e) : resolve())
    );
  }

  /** Reads until `find(buffer)` returns an index ≥ 0; returns and drops the buffer up to the next `>`. */
  async readUntil(find: (buf: string) => number): Promise<string> {
    for (;;) {
      const at = find(this.#buf);
      if (at >= 0) {
        const end = this.#buf.indexOf(">", at);
        if (end >= 0) {
          const out = this.#buf.slice(0, end + 1);
          this.#buf = this.#buf.slice(end + 1);
          return out;
        }
      }
      if (this.#closed) {
        throw new Error(`raw client: ${this.#closed.message}; buffer: ${this.#buf.slice(-300)}`);
      }
      await new Promise<void>((r) => this.#wake = r);
      this.#wake = null;
    }
  }

  #pingStanza(to: string): { id: string; text: string } {
    const id = `p${++this.#id}`;
    return { id, text: `<iq type='get' to='${escapeXml(to)}' id='${id}'><ping xmlns='urn:xmpp:ping'/></iq>` };
  }

  #waitFor(id: string): Promise<string> {
    return this.readUntil((b) => {
      const a = b.indexOf(`id='${id}'`);
      return a >= 0 ? a : b.indexOf(`id="${id}"`);
    });
  }

  /** One ping; resolves on its reply. */
  async ping(to: string): Promise<void> {
    const { id, text } = this.#pingStanza(to);
    await this.write(text);
    await this.#waitFor(id);
  }

  /** A message to self and a ping as two back-to-back writes; resolves on the ping's reply. */
  async burst(to: string): Promise<void> {
    const { id, text } = this.#pingStanza(to);
    await this.write(
      `<message to='${escapeXml(this.jid)}' type='chat' id='m${id}'><body>burst</body></message>`,
    );
    await this.write(text);
    await this.#waitFor(id);
  }

  async close(): Promise<void> {
    try {
      await this.write("</stream:stream>");
    } catch { /* gone */ }
    this.#sock.destroy();
  }
}

/* ------------------------------------------------------------------------------------------------ */
/* Stock @xmpp/client (no TCP_NODELAY, library SCRAM).                                              */

interface StockClient {
  start(): Promise<unknown>;
  stop(): Promise<unknown>;
  send(el: unknown): Promise<void>;
  on(event: string, fn: (...a: unknown[]) => void): void;
  jid: { toString(): string } | null;
  iqCaller: { request(el: unknown, timeout?: number): Promise<unknown> };
  reconnect: { stop(): void };
}

async function stockConnect(
  o: { host: string; port: number; domain: string; user: string; password: string },
) {
  const c = (stockClient as unknown as (opts: Record<string, unknown>) => StockClient)({
    service: `xmpp://${o.host}:${o.port}`,
    domain: o.domain,
    username: o.user,
    password: o.password,
    resource: "bench-stock",
  });
  c.reconnect.stop();
  c.on("error", () => {});
  await withTimeout(c.start(), 10_000, "stock @xmpp/client login");
  return c;
}

/* ------------------------------------------------------------------------------------------------ */
/* Prosody process CPU.                                                                             */

async function findProsodyPid(dir: string): Promise<number | null> {
  for await (const e of Deno.readDir("/proc")) {
    if (!/^\d+$/.test(e.name)) continue;
    try {
      const cmdline = (await Deno.readTextFile(`/proc/${e.name}/cmdline`)).split("\0");
      const exe = cmdline.join(" ");
      if (exe.includes(dir) && /lua/.test(exe) && Number(e.name) !== Deno.pid) return Number(e.name);
    } catch { /* process gone */ }
  }
  return null;
}

/** utime+stime of a process in clock ticks. */
async function procTicks(pid: number): Promise<number> {
  const stat = await Deno.readTextFile(`/proc/${pid}/stat`);
  // comm (field 2) may contain spaces; fields after the closing paren start at field 3.
  const rest = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  return Number(rest[11]) + Number(rest[12]); // fields 14 and 15
}

async function clockTicksPerSecond(): Promise<number> {
  try {
    const out = await new Deno.Command("getconf", { args: ["CLK_TCK"], stdout: "piped", stderr: "null" })
      .output();
    const v = Number(new TextDecoder().decode(out.stdout).trim());
    return v > 0 ? v : 100;
  } catch {
    return 100;
  }
}

const cpuMs = (): number => {
  const u = process.cpuUsage();
  return (u.user + u.system) / 1000;
};

/* ------------------------------------------------------------------------------------------------ */
/* OMEMO.                                                                                           */

/** In-memory PEP (as tests/omemo/helpers.ts FakePep). */
class MemPep {
  items = new Map<string, Element>();
  transportFor(jid: string): OmemoPepTransport {
    return {
      publish: (node, item) => {
        this.items.set(`${jid}|${node}`, item);
        return Promise.resolve();
      },
      fetchItems: (j, node) => {
        const it = this.items.get(`${j}|${node}`);
        return Promise.resolve(it ? [it] : []);
      },
    };
  }
}

const OMEMO_OPS = [
  "x3dh_build",
  "first_decrypt",
  "ratchet_turn",
  "encrypt_existing",
  "decrypt_existing",
] as const;
type OmemoOp = typeof OMEMO_OPS[number];

async function benchOmemo(iterations: number, root: string): Promise<Record<OmemoOp, Stats>> {
  const samples: Record<OmemoOp, number[]> = {
    x3dh_build: [],
    first_decrypt: [],
    ratchet_turn: [],
    encrypt_existing: [],
    decrypt_existing: [],
  };
  const A = "alice@bench.example", B = "bob@bench.example";
  let k = 0;
  const fresh = async (pep: MemPep, jid: string) => {
    const store = await OmemoStore.open(`${root}/omemo-${k++}`);
    const m = await OmemoManager.create({ store, transport: pep.transportFor(jid), ownJid: jid });
    await m.publishOwn();
    return { m, store };
  };
  // Session setup against a fresh device pair each round (a handful of rounds suffice for the rest).
  const rounds = iterations;
  let steady: { a: OmemoManager; b: OmemoManager; stores: OmemoStore[] } | null = null;
  for (let i = 0; i < rounds; i++) {
    const pep = new MemPep();
    const a = await fresh(pep, A);
    const b = await fresh(pep, B);
    let t = performance.now();
    const first = await a.m.encrypt([B], `hello ${i}`);
    samples.x3dh_build.push(performance.now() - t);
    if (!first.devices[0]?.preKey) throw new Error("OMEMO: first message is not a PreKeySignalMessage");
    t = performance.now();
    const got = await b.m.decrypt(A, first.element);
    samples.first_decrypt.push(performance.now() - t);
    if (got.plaintext !== `hello ${i}`) throw new Error("OMEMO: first decrypt mismatch");
    if (steady === null) steady = { a: a.m, b: b.m, stores: [a.store, b.store] };
    else {
      await a.store.close();
      await b.store.close();
    }
  }
  const { a, b, stores } = steady!;
  // Ratchet turns: alternate directions, so every message carries a new ratchet key (DH step).
  let [from, to, fromJid, toJid] = [b, a, B, A];
  for (let i = 0; i < iterations; i++) {
    const t = performance.now();
    const e = await from.encrypt([toJid], `turn ${i}`);
    const d = await to.decrypt(fromJid, e.element);
    samples.ratchet_turn.push(performance.now() - t);
    if (d.plaintext !== `turn ${i}`) throw new Error("OMEMO: ratchet turn mismatch");
    [from, to, fromJid, toJid] = [to, from, toJid, fromJid];
  }
  // Existing session, same direction: symmetric chain steps only. The first message of the run may
  // still carry a DH ratchet step, so it is not timed (as in bench_oldmemo.py).
  await b.decrypt(A, (await a.encrypt([B], "untimed")).element);
  for (let i = 0; i < iterations; i++) {
    let t = performance.now();
    const e = await a.encrypt([B], `msg ${i}`);
    samples.encrypt_existing.push(performance.now() - t);
    t = performance.now();
    const d = await b.decrypt(A, e.element);
    samples.decrypt_existing.push(performance.now() - t);
    if (d.plaintext !== `msg ${i}`) throw new Error("OMEMO: existing-session mismatch");
  }
  for (const s of stores) await s.close();
  return Object.fromEntries(OMEMO_OPS.map((op) => [op, stats(samples[op])])) as Record<OmemoOp, Stats>;
}

/** Cost of one synced write like the store's (8 KiB temp file, fsync, rename, dir fsync), for context. */
async function fsyncWriteFloor(iterations: number, root: string): Promise<Stats> {
  const data = crypto.getRandomValues(new Uint8Array(8192));
  const s: number[] = [];
  for (let i = 0; i < iterations; i++) {
    const t = performance.now();
    const f = await Deno.open(`${root}/floor.tmp`, { write: true, create: true, truncate: true });
    await f.write(data);
    await f.sync();
    f.close();
    await Deno.rename(`${root}/floor.tmp`, `${root}/floor.json`);
    const d = await Deno.open(root, { read: true });
    await d.sync().catch(() => {});
    d.close();
    s.push(performance.now() - t);
  }
  return stats(s);
}

/** Runs the python3-oldmemo bench; returns per-op median ms, or the reason it is unavailable. */
async function runOldmemo(
  iterations: number,
  timeoutMs: number,
): Promise<
  { ok: true; medians: Partial<Record<OmemoOp, number>>; raw: unknown } | { ok: false; reason: string }
> {
  const script = new URL("./bench_oldmemo.py", import.meta.url).pathname;
  try {
    await Deno.stat(script);
  } catch {
    return { ok: false, reason: "scripts/bench_oldmemo.py not found" };
  }
  let child: Deno.ChildProcess;
  try {
    child = new Deno.Command("/usr/bin/python3", {
      args: [script, "--iterations", String(iterations), "--json"],
      stdout: "piped",
      stderr: "piped",
      stdin: "null",
    }).spawn();
  } catch (e) {
    return { ok: false, reason: `cannot start /usr/bin/python3: ${(e as Error).message}` };
  }
  const timer = setTimeout(() => {
    try {
      child.kill("SIGKILL");
    } catch { /* gone */ }
  }, timeoutMs);
  const out = await child.output();
  clearTimeout(timer);
  const stdout = new TextDecoder().decode(out.stdout).trim();
  const stderr = new TextDecoder().decode(out.stderr).trim();
  if (!out.success) {
    const why = out.signal === "SIGKILL" ? `timed out after ${timeoutMs} ms` : `exit ${out.code}`;
    return { ok: false, reason: `${why}: ${(stderr.split("\n").at(-1) ?? "").slice(0, 200)}` };
  }
  let raw: unknown;
  try {
    raw = JSON.parse(stdout.split("\n").filter((l) => l.trim().startsWith("{")).at(-1) ?? stdout);
  } catch {
    return { ok: false, reason: `output is not JSON: ${stdout.slice(0, 200)}` };
  }
  const medians: Partial<Record<OmemoOp, number>> = {};
  const containers = [
    raw,
    ...["results", "ops", "operations", "benchmarks", "timings"].map((k) =>
      (raw as Record<string, unknown> | null)?.[k]
    ),
  ].filter((c): c is Record<string, unknown> => typeof c === "object" && c !== null);
  for (const op of OMEMO_OPS) {
    for (const c of containers) {
      const v = c[op] ?? c[`${op}_ms`];
      const num = typeof v === "number"
        ? v
        : typeof v === "object" && v !== null
        ? ["median_ms", "median", "p50_ms", "p50"].map((f) => (v as Record<string, unknown>)[f])
          .find((x) => typeof x === "number") as number | undefined
        : undefined;
      if (num !== undefined) {
        medians[op] = num;
        break;
      }
    }
  }
  if (Object.keys(medians).length === 0) {
    return {
      ok: false,
      reason: `no known operation in its JSON (keys: ${Object.keys(raw as object).join(", ")})`,
    };
  }
  return { ok: true, medians, raw };
}

/* ------------------------------------------------------------------------------------------------ */
/* Main.                                                                                            */

interface Aim {
  name: string;
  ours: number;
  reference: number;
  ratio: number;
  limit: number;
  pass: boolean;
  unit: string;
}

function aim(name: string, ours: number, reference: number, limit: number, unit = "ms"): Aim {
  const ratio = ours / reference;
  return {
    name,
    ours: round(ours),
    reference: round(reference),
    ratio: round(ratio, 2),
    limit,
    pass: ratio <= limit,
    unit,
  };
}

async function main(): Promise<void> {
  const { iterations: N, json } = parseArgs(Deno.args);
  const started = performance.now();
  const root = await Deno.makeTempDir({ prefix: "bench-foundation-" });
  const notes: string[] = [];
  const server = await startProsody({ logLevel: "warn" });
  const user = "bench", password = "bench-secret-pw";
  const jid = await server.createAccount(user, password);
  const domain = server.domain;
  const base = { host: server.host, port: server.c2sPort, domain, user, password };
  const pingEl = () => xml("iq", { type: "get", to: domain }, xml("ping", { xmlns: "urn:xmpp:ping" }));
  const ourOptions = {
    jid,
    password,
    server: { host: server.host, port: server.c2sPort },
    caPem: server.certificatePem,
    reconnect: false as const,
  };

  const rtt: Record<string, Stats | null> = {};
  const burst: Record<string, Stats | null> = {};
  let login: Record<string, number | string | null> = {};
  let omemo: Record<OmemoOp, Stats> | null = null;
  let oldmemo: Awaited<ReturnType<typeof runOldmemo>> = { ok: false, reason: "not run" };
  try {
    const warm = 5;
    const measure = async (fn: () => Promise<unknown>): Promise<Stats> => {
      for (let i = 0; i < warm; i++) await fn();
      const s: number[] = [];
      for (let i = 0; i < N; i++) {
        const t = performance.now();
        await fn();
        s.push(performance.now() - t);
      }
      return stats(s);
    };

    /* ---- 1. round trip ---- */
    progress("round trip: ours (connectXmpp)");
    {
      const conn = await connectXmpp({ ...ourOptions, resource: "bench-ours" });
      rtt.ours = await measure(() => conn.iq(pingEl()));
      burst.ours = await measure(async () => {
        const sent = conn.send(xml("message", { to: conn.jid, type: "chat" }, xml("body", {}, "burst")));
        const reply = conn.iq(pingEl());
        await sent;
        await reply;
      });
      await conn.close();
    }
    progress("round trip: bare raw client (NODELAY)");
    {
      const raw = await RawXmpp.connect({ ...base, caPem: server.certificatePem, noDelay: true });
      rtt.bare = await measure(() => raw.ping(domain));
      burst.bare = await measure(() => raw.burst(domain));
      await raw.close();
    }
    progress("round trip: bare raw client (Nagle on)");
    {
      const raw = await RawXmpp.connect({ ...base, caPem: server.certificatePem, noDelay: false });
      rtt.bare_nagle = await measure(() => raw.ping(domain));
      burst.bare_nagle = await measure(() => raw.burst(domain));
      await raw.close();
    }
    // Stock @xmpp/client cannot be given a CA; skip certificate verification for it only via Node's switch.
    const prevReject = Deno.env.get("NODE_TLS_REJECT_UNAUTHORIZED");
    let stockOk = true;
    progress("round trip: stock @xmpp/client (no NODELAY)");
    try {
      Deno.env.set("NODE_TLS_REJECT_UNAUTHORIZED", "0");
      const c = await stockConnect(base);
      const ping = () =>
        stockXml("iq", { type: "get", to: domain }, stockXml("ping", { xmlns: "urn:xmpp:ping" }));
      rtt.stock = await measure(() => c.iqCaller.request(ping(), 10_000));
      burst.stock = await measure(async () => {
        const sent = c.send(
          stockXml("message", { to: c.jid!.toString(), type: "chat" }, stockXml("body", {}, "burst")),
        );
        const reply = c.iqCaller.request(ping(), 10_000);
        await sent;
        await reply;
      });
      await c.stop();
    } catch (e) {
      stockOk = false;
      rtt.stock = burst.stock = null;
      notes.push(`stock @xmpp/client skipped: ${(e as Error).message}`);
    } finally {
      if (prevReject === undefined) Deno.env.delete("NODE_TLS_REJECT_UNAUTHORIZED");
      else Deno.env.set("NODE_TLS_REJECT_UNAUTHORIZED", prevReject);
    }

    /* ---- 2. login CPU ---- */
    progress("login CPU");
    const pid = await findProsodyPid(server.dir);
    const hz = await clockTicksPerSecond();
    const logins = N;
    const loginWall: number[] = [];
    // warm-up (JIT, module init)
    for (let i = 0; i < 3; i++) await (await connectXmpp(ourOptions)).close();
    const p0 = pid ? await procTicks(pid) : 0;
    const c0 = cpuMs();
    for (let i = 0; i < logins; i++) {
      const t = performance.now();
      const conn = await connectXmpp(ourOptions);
      await conn.close();
      loginWall.push(performance.now() - t);
    }
    const oursCpu = (cpuMs() - c0) / logins;
    const prosodyCpu = pid ? ((await procTicks(pid)) - p0) * 1000 / hz / logins : NaN;
    if (!pid) notes.push("Prosody pid not found; its CPU per login is unknown");
    let stockCpu: number | null = null;
    let stockProsodyCpu: number | null = null;
    let stockLogins = 0;
    if (stockOk) {
      try {
        Deno.env.set("NODE_TLS_REJECT_UNAUTHORIZED", "0");
        await (await stockConnect(base)).stop();
        const sp0 = pid ? await procTicks(pid) : 0;
        const s0 = cpuMs();
        // The library's SCRAM costs ~0.5 s of CPU per login: a few logins are enough for a reference.
        stockLogins = Math.min(logins, 5);
        for (let i = 0; i < stockLogins; i++) await (await stockConnect(base)).stop();
        stockCpu = (cpuMs() - s0) / stockLogins;
        stockProsodyCpu = pid ? ((await procTicks(pid)) - sp0) * 1000 / hz / stockLogins : null;
      } catch (e) {
        notes.push(`stock SCRAM login skipped: ${(e as Error).message}`);
      } finally {
        if (prevReject === undefined) Deno.env.delete("NODE_TLS_REJECT_UNAUTHORIZED");
        else Deno.env.set("NODE_TLS_REJECT_UNAUTHORIZED", prevReject);
      }
    }
    login = {
      logins,
      ours_cpu_ms_per_login: round(oursCpu),
      prosody_cpu_ms_per_login: round(prosodyCpu),
      prosody_pid: pid,
      prosody_clock_tick_ms: round(1000 / hz),
      ours_wall_median_ms: round(stats(loginWall).median),
      stock_logins: stockLogins,
      stock_scram_cpu_ms_per_login: stockCpu === null ? null : round(stockCpu),
      stock_prosody_cpu_ms_per_login: stockProsodyCpu === null ? null : round(stockProsodyCpu),
    };
  } finally {
    await server.stop();
  }

  /* ---- 3. OMEMO ---- */
  progress("OMEMO");
  let fsyncFloor: Stats | null = null;
  try {
    fsyncFloor = await fsyncWriteFloor(N, root);
    omemo = await benchOmemo(N, root);
  } finally {
    await Deno.remove(root, { recursive: true }).catch(() => {});
  }
  // Run alone (not concurrently with our measurements), so neither competes for the CPU.
  progress("python3-oldmemo");
  oldmemo = await runOldmemo(N, 60_000);

  /* ---- report ---- */
  const aims: Aim[] = [];
  aims.push(aim("IQ round trip (ours / bare ping), median", rtt.ours!.median, rtt.bare!.median, 3));
  aims.push(aim("burst msg+ping (ours / bare), median", burst.ours!.median, burst.bare!.median, 3));
  aims.push(
    aim(
      "login CPU (ours / Prosody's), per login",
      login.ours_cpu_ms_per_login as number,
      login.prosody_cpu_ms_per_login as number,
      3,
      "ms CPU",
    ),
  );
  for (const op of OMEMO_OPS) {
    const ref = oldmemo.ok ? oldmemo.medians[op] : undefined;
    if (ref !== undefined) aims.push(aim(`OMEMO ${op} (ours / oldmemo), median`, omemo[op].median, ref, 5));
  }
  const seconds = round((performance.now() - started) / 1000, 1);
  const result = {
    iterations: N,
    seconds,
    aims_text:
      "round trip within 3× Prosody's bare ping, login CPU ≤ 3× Prosody's own, OMEMO operations within 5× python3-oldmemo",
    round_trip_ms: Object.fromEntries(Object.entries(rtt).map(([k, v]) => [k, v && roundStats(v)])),
    burst_ms: Object.fromEntries(Object.entries(burst).map(([k, v]) => [k, v && roundStats(v)])),
    login_cpu: login,
    omemo_ms: Object.fromEntries(OMEMO_OPS.map((op) => [op, roundStats(omemo![op])])),
    omemo_note: "every OMEMO operation includes a synced store write (temp file, fsync, rename, dir fsync)",
    synced_write_floor_ms: fsyncFloor && roundStats(fsyncFloor),
    oldmemo: oldmemo.ok ? { medians_ms: oldmemo.medians, raw: oldmemo.raw } : { unavailable: oldmemo.reason },
    aims,
    notes,
  };
  if (json) {
    console.log(JSON.stringify(result));
    return;
  }
  printTable(result, rtt, burst, omemo, oldmemo, aims, notes);
}

function printTable(
  r: {
    iterations: number;
    seconds: number;
    login_cpu: Record<string, number | string | null>;
    synced_write_floor_ms: Stats | null;
  },
  rtt: Record<string, Stats | null>,
  burst: Record<string, Stats | null>,
  omemo: Record<OmemoOp, Stats>,
  oldmemo: Awaited<ReturnType<typeof runOldmemo>>,
  aims: Aim[],
  notes: string[],
): void {
  const f = (x: number | null | undefined) =>
    x === null || x === undefined || !Number.isFinite(x) ? "-" : x.toFixed(3);
  const pad = (s: string, w: number) => s.padEnd(w);
  const lpad = (s: string, w: number) => s.padStart(w);
  const row = (name: string, s: Stats | null, extra = "") =>
    `  ${pad(name, 44)}${lpad(f(s?.median), 10)}${lpad(f(s?.p95), 10)}${lpad(f(s?.min), 10)}${
      lpad(String(s?.n ?? "-"), 6)
    }${extra}`;
  const head = `  ${pad("", 44)}${lpad("median", 10)}${lpad("p95", 10)}${lpad("min", 10)}${lpad("N", 6)}`;
  const label: Record<string, string> = {
    ours: "ours (connectXmpp, NODELAY)",
    bare: "Prosody bare ping (raw, NODELAY)",
    bare_nagle: "raw client, Nagle on",
    stock: "stock @xmpp/client (no NODELAY)",
  };
  console.log(`bench:foundation — ${r.iterations} iterations, ${r.seconds} s`);
  console.log(
    "Aims: round trip within 3× Prosody's bare ping, login CPU ≤ 3× Prosody's own, OMEMO operations within 5× python3-oldmemo",
  );
  console.log("\n1. XMPP IQ round trip (XEP-0199 ping to the domain), ms");
  console.log(head);
  for (const [k, v] of Object.entries(rtt)) console.log(row(label[k] ?? k, v));
  console.log("\n   burst: message to self + ping back to back, time to the ping's reply, ms");
  console.log(head);
  for (const [k, v] of Object.entries(burst)) console.log(row(label[k] ?? k, v));
  const l = r.login_cpu;
  console.log(`\n2. Login CPU (STARTTLS + SASL + bind + close), ${l.logins} logins`);
  console.log(
    `  ${pad("ours (connectXmpp, own SCRAM-SHA-1)", 40)}${
      lpad(f(l.ours_cpu_ms_per_login as number), 10)
    } ms CPU/login` +
      `  (wall median ${f(l.ours_wall_median_ms as number)} ms)`,
  );
  console.log(
    `  ${pad("Prosody (same logins)", 40)}${lpad(f(l.prosody_cpu_ms_per_login as number), 10)} ms CPU/login` +
      `  (pid ${l.prosody_pid ?? "?"}, tick ${l.prosody_clock_tick_ms} ms)`,
  );
  if (l.stock_scram_cpu_ms_per_login !== null) {
    console.log(
      `  ${pad("stock @xmpp/client SCRAM (reference)", 40)}${
        lpad(f(l.stock_scram_cpu_ms_per_login as number), 10)
      } ms CPU/login  (Prosody ${f(l.stock_prosody_cpu_ms_per_login as number)}; ${l.stock_logins} logins)`,
    );
  }
  console.log(
    "\n3. OMEMO 0.3, ms (each operation includes a synced store write: fsync + rename + dir fsync)",
  );
  console.log(`${head}${lpad("oldmemo", 10)}${lpad("ours/old", 10)}`);
  for (const op of OMEMO_OPS) {
    const ref = oldmemo.ok ? oldmemo.medians[op] : undefined;
    const extra = `${lpad(f(ref), 10)}${lpad(ref ? (omemo[op].median / ref).toFixed(2) + "×" : "-", 10)}`;
    console.log(row(op, omemo[op], extra));
  }
  console.log(row("(one synced 8 KiB write alone, for context)", r.synced_write_floor_ms));
  if (oldmemo.ok) {
    console.log("  python3-oldmemo: in-memory storage, XML (de)serialisation untimed (its --json 'level')");
  } else console.log(`  python3-oldmemo: unavailable (${oldmemo.reason})`);
  console.log("\nAims");
  console.log(
    `  ${pad("", 50)}${lpad("ours", 10)}${lpad("ref", 10)}${lpad("ratio", 8)}${lpad("limit", 7)}  result`,
  );
  for (const a of aims) {
    console.log(
      `  ${pad(a.name, 50)}${lpad(f(a.ours), 10)}${lpad(f(a.reference), 10)}${
        lpad(a.ratio.toFixed(2) + "×", 8)
      }${lpad("≤" + a.limit + "×", 7)}  ${a.pass ? "PASS" : "MISS"}`,
    );
  }
  if (!oldmemo.ok) console.log(`  ${pad("OMEMO vs python3-oldmemo", 50)}  (no reference: ${oldmemo.reason})`);
  for (const n of notes) console.log(`note: ${n}`);
}

if (import.meta.main) {
  try {
    await main();
    Deno.exit(0);
  } catch (e) {
    console.error(`bench_foundation failed: ${(e as Error).stack ?? e}`);
    Deno.exit(1);
  }
}
