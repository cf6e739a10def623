/**
 * The command-line interface shared by the bot (`deno task bot`), the dialler (`deno task call`) and later
 * tools: one flag table drives parsing, validation and `--help`. {@link parseCli} is pure (environment and
 * file reading are passed in) so it is unit-tested without a process.
 *
 * Precedence: command-line flags, then the `--config` JSON file, then the environment (`XMPP_JID`,
 * `XMPP_PASSWORD`, `XMPP_SERVER`), then defaults.
 *
 * @module
 */
import type { Logger } from "../xmpp/mod.ts";

/** Which program is parsing (some flags exist only for one). */
export type Tool = "bot" | "call" | "send-file";

/** A media source, as `media/sources.ts` takes it. */
export type SourceSpec =
  | { type: "tone"; frequency?: number; level?: number }
  | { type: "testvideo"; width?: number; height?: number; fps?: number }
  | { type: "silence" }
  | { type: "black" }
  | { type: "file"; path: string };

/** What to send on each medium. */
export interface PlaySpec {
  /** Audio source (`--play tone[:HZ]`, `silence` or a file). */
  audio: SourceSpec;
  /** Video source (`--play testvideo[:WxH]`, `black` or a file). */
  video: SourceSpec;
}

/** `--log-level`: the least severe level logged (to stderr); `silent` logs nothing. */
export type LogLevel = "debug" | "info" | "warn" | "error" | "silent";

/** The parsed configuration. */
export interface CliConfig {
  /** The program the flags were parsed for. */
  tool: Tool;
  /** `--help` was given: print {@link helpText} and exit. */
  help: boolean;
  /** Account JID, bare or full (`--jid` / `XMPP_JID`). */
  jid: string;
  /** Account password (`--password` / `XMPP_PASSWORD`); never logged (see {@link redacted}). */
  password: string;
  /** Where to connect (`--server HOST:PORT`); default the JID's domain, port 5222. */
  server: { host: string; port: number };
  /** OMEMO state directory (`--store`); default `./.callbot/<bare JID>`. */
  storeDir: string;
  /** How new OMEMO devices are trusted: blindly until verified, or only by hand. */
  trust: "blind" | "manual";
  /** OMEMO verification of the DTLS fingerprint: required, preferred, or off. */
  verify: "require" | "prefer" | "off";
  /** What to send on each medium (`--play`). */
  play: PlaySpec;
  /** Record incoming media and write call records here (`--record-dir`). */
  recordDir?: string;
  /** Print one JSON record per call / transfer on stdout (`--json`). */
  json: boolean;
  /** Path of the extra CA / self-signed certificate PEM. */
  ca?: string;
  /** Log level (`--log-level`). */
  logLevel: LogLevel;
  // bot
  /** Bot: accept calls and commands only from these JIDs; empty = everyone. */
  allow: string[];
  /** Bot: ring this long before answering, ms. */
  answerDelayMs: number;
  /** Bot: send the caller's media back instead of `play`. */
  echo: boolean;
  /** Bot: hang up calls after this long, seconds. */
  maxCallSeconds?: number;
  /** Bot: concurrent calls; more are rejected as busy. */
  maxCalls?: number;
  /** Receive files into this directory (file transfer off without it). */
  downloadDir?: string;
  /** Largest file received, bytes (default 1 GiB). */
  maxFileSize: number;
  /** Unencrypted (non-JET) file offers: refuse (default) or accept. */
  filesUnencrypted: "accept" | "refuse";
  /** The chat command "send NAME" answers with files from here. */
  filesDir?: string;
  // call
  /** Dialler: the JID to call; send-file: the receiver (first positional argument). */
  peer?: string;
  /** Dialler: audio+video call instead of audio only. */
  video: boolean;
  /** Dialler: hang up after this long, seconds; default when the peer hangs up. */
  durationSeconds?: number;
  // send-file
  /** File to send. */
  path?: string;
  /** Send-file: SOCKS5 then IBB (`auto`), or only one of them. */
  transport: "auto" | "s5b" | "ibb";
  /** Send-file: JET-OMEMO encrypt (default); `false` = `--no-encrypt`. */
  encrypt: boolean;
}

/** A bad flag or value: the message is for the user; exit status 2. */
export class CliError extends Error {
  /** Always "CliError". */
  override name = "CliError";
}

/** Value type of a flag: a `list` flag may be repeated. */
export type FlagKind = "string" | "boolean" | "number" | "list";

/** One row of the flag table ({@link FLAGS}). */
export interface FlagDef {
  /** Flag name without the leading `--`, e.g. `record-dir`. */
  name: string;
  /** Value type. */
  kind: FlagKind;
  /** Key in the config file (defaults to the camel-cased name). */
  key: string;
  /** Placeholder of the value in `--help`, e.g. `DIR`. */
  arg?: string;
  /** Environment variable that supplies the value when neither the flag nor the config file does. */
  env?: string;
  /** The programs that have this flag. */
  tools: Tool[];
  /** One-line description for `--help`. */
  help: string;
}

const both: Tool[] = ["bot", "call"];
/** Connection and output flags every tool has. */
const all: Tool[] = ["bot", "call", "send-file"];
const camel = (s: string) => s.replace(/-([a-z])/g, (_, c: string) => c.toUpperCase());
const def = (
  name: string,
  kind: FlagKind,
  help: string,
  extra: { arg?: string; env?: string; tools?: Tool[] } = {},
): FlagDef => ({ name, kind, key: camel(name), tools: extra.tools ?? both, help, ...extra });

/** Every flag, in `--help` order. */
export const FLAGS: readonly FlagDef[] = [
  def("jid", "string", "account JID (bare or full)", { arg: "JID", env: "XMPP_JID", tools: all }),
  def("password", "string", "account password (prefer the environment: flags show in `ps`)", {
    arg: "PASSWORD",
    env: "XMPP_PASSWORD",
    tools: all,
  }),
  def("server", "string", "where to connect; default the JID's domain on port 5222", {
    arg: "HOST:PORT",
    env: "XMPP_SERVER",
    tools: all,
  }),
  def("store", "string", "OMEMO state directory; default ./.callbot/<bare JID>", { arg: "DIR", tools: all }),
  def("trust", "string", "new OMEMO devices: blind (trusted until verified, default) or manual", {
    arg: "blind|manual",
    tools: all,
  }),
  def("verify", "string", "OMEMO verification of the DTLS fingerprint: require, prefer (default) or off", {
    arg: "require|prefer|off",
  }),
  def(
    "play",
    "list",
    "media to send (repeatable: one audio, one video): tone[:HZ] (default tone:440), silence, " +
      "testvideo[:WxH] (default), black, or a file path (both media)",
    { arg: "SOURCE" },
  ),
  def("record-dir", "string", "record each call's incoming media and write <sid>.json records here", {
    arg: "DIR",
  }),
  def("json", "boolean", "print one JSON call (or file transfer) record per line on stdout", { tools: all }),
  def("ca", "string", "trust this CA / self-signed server certificate (PEM file)", {
    arg: "FILE",
    tools: all,
  }),
  def("config", "string", "JSON file with the same keys as the flags (camelCase or as spelled here)", {
    arg: "FILE",
    tools: all,
  }),
  def("log-level", "string", "debug, info (default), warn, error or silent; logs go to stderr", {
    arg: "LEVEL",
    tools: all,
  }),
  def("allow", "list", "accept calls and commands only from this JID (repeatable); default everyone", {
    arg: "JID",
    tools: ["bot"],
  }),
  def("answer-delay", "number", "ring this long before answering (default 0)", { arg: "MS", tools: ["bot"] }),
  def("echo", "boolean", "send the caller's media back instead of --play", { tools: ["bot"] }),
  def("max-call-seconds", "number", "hang up calls after this long", { arg: "S", tools: ["bot"] }),
  def("max-calls", "number", "concurrent calls; more are rejected as busy", { arg: "N", tools: ["bot"] }),
  def("download-dir", "string", "receive files (Jingle file transfer, JET-OMEMO) into this directory", {
    arg: "DIR",
    tools: ["bot"],
  }),
  def("max-file-size", "string", "largest file received: bytes or with K/M/G (default 1G)", {
    arg: "SIZE",
    tools: ["bot"],
  }),
  def("files-unencrypted", "string", "unencrypted file offers: refuse (default) or accept", {
    arg: "accept|refuse",
    tools: ["bot"],
  }),
  def("files-dir", "string", 'the chat command "send NAME" sends that file from this directory', {
    arg: "DIR",
    tools: ["bot"],
  }),
  def("transport", "string", "auto (SOCKS5, then IBB; default), s5b or ibb", {
    arg: "auto|s5b|ibb",
    tools: ["send-file"],
  }),
  def("no-encrypt", "boolean", "send without JET-OMEMO (default: encrypted, refused if the peer can't)", {
    tools: ["send-file"],
  }),
  def("video", "boolean", "audio+video call (default audio only)", { tools: ["call"] }),
  def("duration", "number", "hang up after this long (default: when the peer hangs up)", {
    arg: "S",
    tools: ["call"],
  }),
  def("help", "boolean", "show this help", { tools: all }),
];

/** `--help` text for `tool`. */
export function helpText(tool: Tool): string {
  const usage = tool === "bot"
    ? "deno task bot [flags]\n\nAnswers XMPP calls (OMEMO-verified Jingle RTP); chat commands from allowed JIDs:\n" +
      '"status" (calls in progress), "call me", and with --files-dir "files" or "file" (list) and "send NAME" (a file).\n' +
      "With --download-dir it receives files (JET-OMEMO; plain only with --files-unencrypted accept).\n" +
      "SIGINT/SIGTERM hang up, finish recordings and exit 0."
    : tool === "call"
    ? "deno task call JID [flags]\n\nCalls JID (bare JID, XEP-0353), sends --play, optionally records;\n" +
      "exit status 0 when the call connected and ended normally."
    : "deno task send-file JID PATH [flags]\n\nSends the file at PATH to JID over Jingle file transfer, JET-OMEMO\n" +
      "encrypted unless --no-encrypt. JID: a full JID, or a bare one (its best resource with file transfer,\n" +
      "needs a presence subscription). A progress bar on a\n" +
      "terminal; --json prints the transfer record. Exit status 0 when the receiver confirmed the file.";
  const rows = FLAGS.filter((f) => f.tools.includes(tool)).map((f) => {
    const left = `  --${f.name}${f.arg ? ` ${f.arg}` : ""}`;
    const env = f.env ? ` [env ${f.env}]` : "";
    return `${left.padEnd(34)} ${f.help}${env}`;
  });
  return `usage: ${usage}\n\nflags:\n${rows.join("\n")}\n\nexit status 2 on bad flags.\n`;
}

/** `host:port`, `[v6]:port` or `host` (port 5222). */
export function parseServer(value: string): { host: string; port: number } {
  const m = /^\[([^\]]+)\](?::(\d+))?$/.exec(value) ?? /^([^:\[\]]+)(?::(\d+))?$/.exec(value);
  if (!m || !m[1]) throw new CliError(`--server: expected HOST:PORT, got "${value}"`);
  const port = m[2] === undefined ? 5222 : Number(m[2]);
  if (!Number.isInteger(port) || port < 1 || port > 65535) {
    throw new CliError(`--server: port must be 1-65535, got "${m[2]}"`);
  }
  return { host: m[1], port };
}

/** One `--play` value → the medium it is for (`both` for files) and the source. */
export function parsePlay(value: string): { kind: "audio" | "video" | "both"; spec: SourceSpec } {
  const [name, param] = value.split(/:(.*)/s) as [string, string | undefined];
  switch (name) {
    case "tone": {
      if (param === undefined || param === "") return { kind: "audio", spec: { type: "tone" } };
      const frequency = Number(param);
      if (!Number.isFinite(frequency) || frequency <= 0 || frequency > 24_000) {
        throw new CliError(`--play tone:HZ: bad frequency "${param}"`);
      }
      return { kind: "audio", spec: { type: "tone", frequency } };
    }
    case "silence":
      return { kind: "audio", spec: { type: "silence" } };
    case "black":
      return { kind: "video", spec: { type: "black" } };
    case "testvideo": {
      if (param === undefined || param === "") return { kind: "video", spec: { type: "testvideo" } };
      const m = /^(\d+)x(\d+)$/.exec(param);
      const width = Number(m?.[1]);
      const height = Number(m?.[2]);
      if (!m || width < 16 || height < 16 || width > 4096 || height > 4096 || width % 2 || height % 2) {
        throw new CliError(`--play testvideo:WxH: bad size "${param}" (even numbers 16-4096, e.g. 640x480)`);
      }
      return { kind: "video", spec: { type: "testvideo", width, height } };
    }
    default:
      if (value === "") throw new CliError("--play: empty source");
      return { kind: "both", spec: { type: "file", path: value } };
  }
}

const JID_RE = /^[^@/\s]+@[^@/\s]+(\/.+)?$/;

/** Bare part of a JID. */
export const bareJid = (jid: string): string => jid.split("/")[0]!.toLowerCase();

function checkJid(flag: string, jid: string): string {
  if (!JID_RE.test(jid)) throw new CliError(`${flag}: not a JID: "${jid}" (expected user@domain)`);
  return jid;
}

function positiveNumber(flag: string, v: unknown, integer = false): number {
  const n = typeof v === "number" ? v : typeof v === "string" && v.trim() !== "" ? Number(v) : NaN;
  if (!Number.isFinite(n) || n < 0 || (integer && !Number.isInteger(n))) {
    throw new CliError(`--${flag}: expected a ${integer ? "whole " : ""}number ≥ 0, got "${v}"`);
  }
  return n;
}

function oneOf<T extends string>(flag: string, v: unknown, allowed: readonly T[]): T {
  if (typeof v !== "string" || !allowed.includes(v as T)) {
    throw new CliError(`--${flag}: expected ${allowed.join(", ")}; got "${v}"`);
  }
  return v as T;
}

/** `1048576`, `512K`, `10M`, `1G` (powers of 1024) → bytes. */
export function parseSize(flag: string, v: unknown): number {
  const m = /^(\d+(?:\.\d+)?)\s*([kmgt]?)i?b?$/i.exec(String(v).trim());
  if (!m) throw new CliError(`--${flag}: expected bytes or a size like 10M or 1G, got "${v}"`);
  const n = Number(m[1]) * 1024 ** "_kmgt".indexOf((m[2] || "_").toLowerCase());
  if (!Number.isFinite(n) || n <= 0 || n > Number.MAX_SAFE_INTEGER) {
    throw new CliError(`--${flag}: out of range: "${v}"`);
  }
  return Math.floor(n);
}

/** Inputs of {@link parseCli} that come from outside the argument list. */
export interface CliInputs {
  /** Environment variables (`XMPP_JID`, `XMPP_PASSWORD`, `XMPP_SERVER`); default none. */
  env?: Record<string, string | undefined>;
  /** Reads the `--config` file (default `Deno.readTextFileSync`). */
  readFile?: (path: string) => string;
}

/** Parses `args` for `tool`. Throws {@link CliError} on anything invalid (unless `--help` is given). */
export function parseCli(tool: Tool, args: readonly string[], inputs: CliInputs = {}): CliConfig {
  const env = inputs.env ?? {};
  const flags = FLAGS.filter((f) => f.tools.includes(tool));
  const byName = new Map(flags.map((f) => [f.name, f]));
  const given = new Map<string, unknown>();
  const positional: string[] = [];
  let help = false;
  for (let i = 0; i < args.length; i++) {
    const a = args[i]!;
    if (a === "--") {
      positional.push(...args.slice(i + 1));
      break;
    }
    if (a === "-h") {
      help = true;
      continue;
    }
    if (!a.startsWith("--")) {
      if (a.startsWith("-") && a.length > 1) throw new CliError(`unknown flag "${a}" (see --help)`);
      positional.push(a);
      continue;
    }
    const eq = a.indexOf("=");
    const name = a.slice(2, eq < 0 ? undefined : eq);
    const f = byName.get(name);
    if (!f) throw new CliError(`unknown flag "--${name}" for ${tool} (see --help)`);
    let value: string | undefined = eq < 0 ? undefined : a.slice(eq + 1);
    if (f.kind === "boolean") {
      if (value !== undefined && value !== "true" && value !== "false") {
        throw new CliError(`--${name} takes no value (or =true/=false)`);
      }
      given.set(f.key, value !== "false");
      if (name === "help") help = value !== "false";
      continue;
    }
    if (value === undefined) {
      value = args[++i];
      if (value === undefined || (value.startsWith("--") && value.length > 2)) {
        throw new CliError(`--${name} needs a value${f.arg ? ` (${f.arg})` : ""}`);
      }
    }
    if (f.kind === "list") given.set(f.key, [...(given.get(f.key) as string[] | undefined ?? []), value]);
    else given.set(f.key, value);
  }

  // --config: same keys (camelCase or the flag spelling).
  const file = new Map<string, unknown>();
  const configPath = given.get("config") as string | undefined;
  if (configPath !== undefined) {
    let raw: unknown;
    try {
      raw = JSON.parse((inputs.readFile ?? Deno.readTextFileSync)(configPath));
    } catch (e) {
      throw new CliError(`--config ${configPath}: ${e instanceof Error ? e.message : e}`);
    }
    if (!raw || typeof raw !== "object" || Array.isArray(raw)) {
      throw new CliError(`--config ${configPath}: expected a JSON object`);
    }
    for (const [k, v] of Object.entries(raw)) {
      const f = flags.find((x) => x.key === k || x.name === k) ??
        (k === "peer" && tool === "call" ? { key: "peer", kind: "string" as FlagKind } : undefined);
      if (!f || f.key === "config" || f.key === "help") {
        throw new CliError(`--config ${configPath}: unknown key "${k}"`);
      }
      const ok = f.kind === "boolean"
        ? typeof v === "boolean"
        : f.kind === "number"
        ? typeof v === "number" || typeof v === "string"
        : f.kind === "list"
        ? typeof v === "string" || (Array.isArray(v) && v.every((x) => typeof x === "string"))
        : typeof v === "string";
      if (!ok) throw new CliError(`--config ${configPath}: "${k}" has the wrong type`);
      file.set(f.key, f.kind === "list" && typeof v === "string" ? [v] : v);
    }
  }
  const get = (key: string, envName?: string): unknown =>
    given.has(key) ? given.get(key) : file.has(key) ? file.get(key) : envName ? env[envName] : undefined;

  const base = {
    tool,
    help,
    trust: "blind" as const,
    verify: "prefer" as const,
    json: false,
    logLevel: "info" as const,
    allow: [],
    answerDelayMs: 0,
    echo: false,
    video: false,
    maxFileSize: 1024 ** 3,
    filesUnencrypted: "refuse" as const,
    transport: "auto" as const,
    encrypt: true,
    play: { audio: { type: "tone", frequency: 440 }, video: { type: "testvideo" } } as PlaySpec,
  };
  if (help) {
    return { ...base, jid: "", password: "", server: { host: "", port: 5222 }, storeDir: "" };
  }

  if (tool === "call") {
    if (positional.length > 1) throw new CliError(`one JID to call, got ${positional.join(" ")}`);
    const peer = positional[0] ?? file.get("peer") as string | undefined;
    if (!peer) throw new CliError("missing the JID to call: deno task call JID [flags]");
    checkJid("JID to call", peer);
  } else if (tool === "send-file") {
    if (positional.length !== 2) throw new CliError("usage: deno task send-file JID PATH [flags]");
    // A bare JID is resolved to one of the peer's resources when sending (bot/files.ts).
    checkJid("JID to send to", positional[0]!);
  } else if (positional.length) {
    throw new CliError(`unexpected argument "${positional[0]}" (see --help)`);
  }

  const jid = get("jid", "XMPP_JID") as string | undefined;
  if (!jid) throw new CliError("missing --jid (or XMPP_JID)");
  checkJid("--jid", jid);
  const password = get("password", "XMPP_PASSWORD") as string | undefined;
  if (!password) throw new CliError("missing --password (or XMPP_PASSWORD)");
  const serverValue = get("server", "XMPP_SERVER") as string | undefined;
  const domain = bareJid(jid).split("@")[1]!;
  const server = serverValue ? parseServer(serverValue) : { host: domain, port: 5222 };

  const play: PlaySpec = { ...base.play };
  for (const p of (get("play") as string[] | undefined) ?? []) {
    const { kind, spec } = parsePlay(p);
    if (kind === "both") play.audio = play.video = spec;
    else play[kind] = spec;
  }

  const out: CliConfig = {
    ...base,
    jid,
    password,
    server,
    storeDir: (get("store") as string | undefined) ?? `./.callbot/${bareJid(jid)}`,
    trust: get("trust") === undefined ? "blind" : oneOf("trust", get("trust"), ["blind", "manual"] as const),
    verify: get("verify") === undefined
      ? "prefer"
      : oneOf("verify", get("verify"), ["require", "prefer", "off"] as const),
    play,
    json: get("json") === true,
    logLevel: get("logLevel") === undefined
      ? "info"
      : oneOf("log-level", get("logLevel"), ["debug", "info", "warn", "error", "silent"] as const),
  };
  const recordDir = get("recordDir") as string | undefined;
  if (recordDir !== undefined) {
    if (!recordDir) throw new CliError("--record-dir: empty path");
    out.recordDir = recordDir;
  }
  const ca = get("ca") as string | undefined;
  if (ca !== undefined) out.ca = ca;
  if (tool === "bot") {
    out.allow = ((get("allow") as string[] | undefined) ?? []).map((j) => checkJid("--allow", j));
    if (get("answerDelay") !== undefined) {
      out.answerDelayMs = positiveNumber("answer-delay", get("answerDelay"));
    }
    out.echo = get("echo") === true;
    if (get("maxCallSeconds") !== undefined) {
      out.maxCallSeconds = positiveNumber("max-call-seconds", get("maxCallSeconds"));
      if (out.maxCallSeconds === 0) throw new CliError("--max-call-seconds must be > 0");
    }
    if (get("maxCalls") !== undefined) out.maxCalls = positiveNumber("max-calls", get("maxCalls"), true);
    const downloadDir = get("downloadDir") as string | undefined;
    if (downloadDir !== undefined) {
      if (!downloadDir) throw new CliError("--download-dir: empty path");
      out.downloadDir = downloadDir;
    }
    if (get("maxFileSize") !== undefined) out.maxFileSize = parseSize("max-file-size", get("maxFileSize"));
    if (get("filesUnencrypted") !== undefined) {
      out.filesUnencrypted = oneOf(
        "files-unencrypted",
        get("filesUnencrypted"),
        ["accept", "refuse"] as const,
      );
    }
    const filesDir = get("filesDir") as string | undefined;
    if (filesDir !== undefined) {
      if (!filesDir) throw new CliError("--files-dir: empty path");
      out.filesDir = filesDir;
    }
  } else if (tool === "send-file") {
    out.peer = positional[0]!;
    out.path = positional[1]!;
    if (get("transport") !== undefined) {
      out.transport = oneOf("transport", get("transport"), ["auto", "s5b", "ibb"] as const);
    }
    out.encrypt = get("noEncrypt") !== true;
  } else {
    out.peer = positional[0] ?? file.get("peer") as string;
    out.video = get("video") === true;
    if (get("duration") !== undefined) {
      out.durationSeconds = positiveNumber("duration", get("duration"));
      if (out.durationSeconds === 0) throw new CliError("--duration must be > 0");
    }
  }
  return out;
}

/** The configuration with the password hidden (for logs and error reports). */
export function redacted(config: CliConfig): Omit<CliConfig, "password"> & { password: string } {
  return { ...config, password: config.password ? "***" : "" };
}

/** A {@link Logger} writing `level` and above to stderr (stdout stays free for `--json`). */
export function stderrLogger(level: LogLevel, prefix = ""): Logger {
  const order = ["debug", "info", "warn", "error", "silent"];
  const min = order.indexOf(level);
  const enc = new TextEncoder();
  const line = (l: string) => (message: string, data?: Record<string, unknown>) => {
    if (order.indexOf(l) < min) return;
    const extra = data && Object.keys(data).length ? ` ${JSON.stringify(data, redactPassword)}` : "";
    Deno.stderr.writeSync(
      enc.encode(`${new Date().toISOString()} ${l.padEnd(5)} ${prefix}${message}${extra}\n`),
    );
  };
  return { debug: line("debug"), info: line("info"), warn: line("warn"), error: line("error") };
}

function redactPassword(key: string, value: unknown) {
  return /password|credential|secret/i.test(key) && value ? "***" : value;
}

/** Runs the CLI front matter for `tool`: parses `Deno.args`, prints help (exit 0) or errors (exit 2). */
export function cliOrExit(tool: Tool, args: readonly string[] = Deno.args): CliConfig {
  let config: CliConfig;
  try {
    config = parseCli(tool, args, { env: Deno.env.toObject() });
  } catch (e) {
    if (e instanceof CliError) {
      console.error(`error: ${e.message}`);
      Deno.exit(2);
    }
    throw e;
  }
  if (config.help) {
    console.log(helpText(tool));
    Deno.exit(0);
  }
  return config;
}
