/**
 * A real Prosody (Debian `prosody` 0.12) for development, tests and the demo.
 *
 * Runs unprivileged (as the `prosody` system user when started as root), from a generated config and
 * data dir in a temp folder, on loopback, on free ports, with a self-signed certificate so clients use
 * STARTTLS as in real deployments. Accounts are written straight into Prosody's internal_hashed store
 * (SCRAM-SHA-1 stored/server keys), so creating one costs no subprocess.
 *
 * CLI: `deno task prosody [--user name:password ...]` starts one and keeps it running until Ctrl-C.
 *
 * @module
 */

const encoder = new TextEncoder();

/** How to start the server. */
export interface ProsodyOptions {
  /** The XMPP domain (default `localhost`, so JIDs resolve to loopback). */
  domain?: string;
  /** Parent of the temp folder (default the OS temp dir). */
  baseDir?: string;
  /** Prosody log level written to `prosody.log` (default `info`). */
  logLevel?: "debug" | "info" | "warn" | "error";
  /** Extra Lua lines appended to the global section of the config. */
  extraConfig?: string;
  /**
   * Nagle's algorithm on Prosody's sockets (default false). Prosody 0.12 keeps it on, and then every small
   * stanza answering a small stanza (an IBB block and its IQ result, any IQ round trip) waits out Nagle plus
   * the peer's delayed ACK: 3 MiB over IBB took 18.7 s with it and 2.5 s without.
   */
  nagle?: boolean;
  /** Services announced through XEP-0215 (mod_external_services). */
  externalServices?: ExternalService[];
}

/** A STUN/TURN service announced by the server through XEP-0215. */
export interface ExternalService {
  /** Protocol of the service. */
  type: "stun" | "turn" | "stuns" | "turns";
  /** Host name or address of the service. */
  host: string;
  /** Port of the service. */
  port: number;
  /** Transport protocol the service listens on. */
  transport: "udp" | "tcp";
  /** TURN user name (static credentials), when any. */
  username?: string;
  /** TURN password (static credentials), when any; never logged. */
  password?: string;
}

/** A running Prosody. */
export interface ProsodyServer {
  /** The server's XMPP domain (e.g. `localhost`). */
  readonly domain: string;
  /** The XEP-0065 proxy component's JID (`proxy.<domain>`). */
  readonly proxyJid: string;
  /** Address to connect to (loopback). */
  readonly host: string;
  /** Client-to-server (c2s) TCP port. */
  readonly c2sPort: number;
  /** TCP port of the XEP-0065 proxy component (proxy65) streamhost. */
  readonly proxy65Port: number;
  /** PEM of the self-signed certificate, for clients that pin it. */
  readonly certificatePem: string;
  /** Path of that certificate's PEM file (e.g. for `--ca`). */
  readonly certificatePath: string;
  /** The server's working folder (config, data, logs), deleted on stop. */
  readonly dir: string;
  /** Creates (or overwrites) an account; returns its bare JID. */
  createAccount(user: string, password: string): Promise<string>;
  /** Stops the server process but keeps its folder (accounts, PEP data) for {@link restart}. */
  kill(): Promise<void>;
  /** Stops the server if running and starts it again on the same ports with the same data. */
  restart(): Promise<void>;
  /** Stops the server (SIGTERM, then SIGKILL after 3 s) and removes the temp folder. */
  stop(): Promise<void>;
  /** The server log so far (for test failure messages). */
  log(): Promise<string>;
}

/** Returns a TCP port that was free a moment ago on 127.0.0.1. */
export function freePort(): number {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const { port } = listener.addr as Deno.NetAddr;
  listener.close();
  return port;
}

function luaString(value: string): string {
  return JSON.stringify(value);
}

function hex(buffer: ArrayBuffer): string {
  return [...new Uint8Array(buffer)].map((b) => b.toString(16).padStart(2, "0")).join("");
}

/** SCRAM-SHA-1 credentials in Prosody's internal_hashed account format. */
export async function scramCredentials(
  password: string,
  salt: string,
  iterations = 10_000,
): Promise<{ storedKey: string; serverKey: string }> {
  const key = await crypto.subtle.importKey("raw", encoder.encode(password), "PBKDF2", false, ["deriveBits"]);
  const salted = await crypto.subtle.deriveBits(
    { name: "PBKDF2", hash: "SHA-1", salt: encoder.encode(salt), iterations },
    key,
    160,
  );
  const hmacKey = await crypto.subtle.importKey("raw", salted, { name: "HMAC", hash: "SHA-1" }, false, [
    "sign",
  ]);
  const clientKey = await crypto.subtle.sign("HMAC", hmacKey, encoder.encode("Client Key"));
  const serverKey = await crypto.subtle.sign("HMAC", hmacKey, encoder.encode("Server Key"));
  const storedKey = await crypto.subtle.digest("SHA-1", clientKey);
  return { storedKey: hex(storedKey), serverKey: hex(serverKey) };
}

/** Prosody's datamanager escapes every non-alphanumeric byte of a node/host as `%xx`. */
function encodeStorePath(part: string): string {
  return [...encoder.encode(part)].map((b) => {
    const c = String.fromCharCode(b);
    return /[A-Za-z0-9]/.test(c) ? c : "%" + b.toString(16).padStart(2, "0");
  }).join("");
}

async function run(cmd: string, args: string[]): Promise<void> {
  const out = await new Deno.Command(cmd, { args, stdout: "piped", stderr: "piped" }).output();
  if (!out.success) {
    throw new Error(`${cmd} ${args.join(" ")} failed: ${new TextDecoder().decode(out.stderr)}`);
  }
}

async function prosodyUserIds(): Promise<{ uid: number; gid: number } | null> {
  if (Deno.uid() !== 0) return null;
  try {
    const passwd = await Deno.readTextFile("/etc/passwd");
    const line = passwd.split("\n").find((l) => l.startsWith("prosody:"));
    if (!line) return null;
    const [, , uid, gid] = line.split(":");
    return { uid: Number(uid), gid: Number(gid) };
  } catch {
    return null;
  }
}

async function waitForPort(port: number, child: Deno.ChildProcess, logPath: string): Promise<void> {
  const deadline = Date.now() + 15_000;
  let exited = false;
  child.status.then(() => exited = true);
  while (Date.now() < deadline) {
    if (exited) break;
    try {
      const conn = await Deno.connect({ hostname: "127.0.0.1", port });
      conn.close();
      return;
    } catch {
      await new Promise((r) => setTimeout(r, 25));
    }
  }
  const log = await Deno.readTextFile(logPath).catch(() => "(no log)");
  throw new Error(`Prosody did not start listening on 127.0.0.1:${port}:\n${log}`);
}

function externalServicesLua(services: ExternalService[]): string {
  if (services.length === 0) return "";
  const entries = services.map((s) => {
    const fields = [
      `type = ${luaString(s.type)}`,
      `host = ${luaString(s.host)}`,
      `port = ${s.port}`,
      `transport = ${luaString(s.transport)}`,
    ];
    if (s.username) fields.push(`username = ${luaString(s.username)}`);
    if (s.password) fields.push(`password = ${luaString(s.password)}`);
    return `  { ${fields.join(", ")} };`;
  });
  return `external_services = {\n${entries.join("\n")}\n}\n`;
}

/** Starts a Prosody on loopback and waits until it accepts connections. */
export async function startProsody(options: ProsodyOptions = {}): Promise<ProsodyServer> {
  const domain = options.domain ?? "localhost";
  const proxyJid = `proxy.${domain}`;
  const dir = await Deno.makeTempDir({ prefix: "prosody-", dir: options.baseDir });
  const dataDir = `${dir}/data`;
  const certDir = `${dir}/certs`;
  await Deno.mkdir(dataDir, { recursive: true });
  await Deno.mkdir(certDir, { recursive: true });
  const certificatePath = `${certDir}/${domain}.crt`;
  const keyPath = `${certDir}/${domain}.key`;
  await run("openssl", [
    "req",
    "-x509",
    "-newkey",
    "ec",
    "-pkeyopt",
    "ec_paramgen_curve:prime256v1",
    "-nodes",
    "-days",
    "30",
    "-subj",
    `/CN=${domain}`,
    "-addext",
    `subjectAltName=DNS:${domain},DNS:*.${domain}`,
    "-keyout",
    keyPath,
    "-out",
    certificatePath,
  ]);
  const c2sPort = freePort();
  const proxy65Port = freePort();
  const logPath = `${dir}/prosody.log`;
  const modules = [
    "roster",
    "saslauth",
    "tls",
    "disco",
    "carbons",
    "pep",
    "ping",
    "presence",
    "message",
    "iq",
    "blocklist",
    "version",
    "time",
    "uptime",
    "posix",
  ];
  if (options.externalServices?.length) modules.push("external_services");
  const config = `-- generated by scripts/prosody.ts
pidfile = ${luaString(`${dir}/prosody.pid`)}
data_path = ${luaString(dataDir)}
certificates = ${luaString(certDir)}
run_as_root = true
umask = "077"
interfaces = { "127.0.0.1" }
local_interfaces = { "127.0.0.1" }
c2s_ports = { ${c2sPort} }
proxy65_ports = { ${proxy65Port} }
proxy65_interfaces = { "127.0.0.1" }
s2s_ports = { }
component_ports = { }
http_ports = { }
https_ports = { }
modules_enabled = { ${modules.map(luaString).join(", ")} }
modules_disabled = { "s2s", "offline", "mam" }
authentication = "internal_hashed"
storage = "internal"
c2s_require_encryption = true
allow_registration = false
pep_max_items = 256
log = { { levels = { min = ${luaString(options.logLevel ?? "info")} }, to = "file", filename = ${
    luaString(logPath)
  } } }
network_settings = { nagle = ${options.nagle === true ? "true" : "false"} }
${externalServicesLua(options.externalServices ?? [])}${options.extraConfig ?? ""}
VirtualHost ${luaString(domain)}
  ssl = { certificate = ${luaString(certificatePath)}, key = ${luaString(keyPath)} }

Component ${luaString(proxyJid)} "proxy65"
  proxy65_address = "127.0.0.1"
  proxy65_acl = { ${luaString(domain)} }
`;
  const configPath = `${dir}/prosody.cfg.lua`;
  await Deno.writeTextFile(configPath, config);
  const ids = await prosodyUserIds();
  if (ids) {
    for (const path of [dir, dataDir, certDir, configPath, certificatePath, keyPath]) {
      await Deno.chown(path, ids.uid, ids.gid);
    }
  }
  const prosodyArgs = ["--config", configPath, "-F"];
  const spawn = () => {
    const command = ids
      ? new Deno.Command("setpriv", {
        args: [
          "--reuid",
          String(ids.uid),
          "--regid",
          String(ids.gid),
          "--init-groups",
          "prosody",
          ...prosodyArgs,
        ],
        stdout: "null",
        stderr: "null",
        stdin: "null",
      })
      : new Deno.Command("prosody", { args: prosodyArgs, stdout: "null", stderr: "null", stdin: "null" });
    return command.spawn();
  };
  const terminate = async (process: Deno.ChildProcess) => {
    try {
      process.kill("SIGTERM");
    } catch { /* already gone */ }
    const timer = setTimeout(() => {
      try {
        process.kill("SIGKILL");
      } catch { /* already gone */ }
    }, 3000);
    await process.status;
    clearTimeout(timer);
  };
  let child = spawn();
  try {
    await waitForPort(c2sPort, child, logPath);
  } catch (err) {
    try {
      child.kill("SIGKILL");
    } catch { /* already gone */ }
    await child.status;
    await Deno.remove(dir, { recursive: true }).catch(() => {});
    throw err;
  }
  let stopped: Promise<void> | null = null;
  const certificatePem = await Deno.readTextFile(certificatePath);

  return {
    domain,
    proxyJid,
    host: "127.0.0.1",
    c2sPort,
    proxy65Port,
    certificatePem,
    certificatePath,
    dir,
    async createAccount(user: string, password: string): Promise<string> {
      const salt = crypto.randomUUID();
      const iterations = 10_000;
      const { storedKey, serverKey } = await scramCredentials(password, salt, iterations);
      const accountsDir = `${dataDir}/${encodeStorePath(domain)}/accounts`;
      await Deno.mkdir(accountsDir, { recursive: true });
      const body = `return {\n\t["salt"] = ${luaString(salt)};\n\t["stored_key"] = ${
        luaString(storedKey)
      };\n\t["server_key"] = ${luaString(serverKey)};\n\t["iteration_count"] = ${iterations};\n};\n`;
      const path = `${accountsDir}/${encodeStorePath(user)}.dat`;
      await Deno.writeTextFile(path, body);
      if (ids) {
        await Deno.chown(`${dataDir}/${encodeStorePath(domain)}`, ids.uid, ids.gid);
        await Deno.chown(accountsDir, ids.uid, ids.gid);
        await Deno.chown(path, ids.uid, ids.gid);
      }
      return `${user}@${domain}`;
    },
    async kill(): Promise<void> {
      await terminate(child);
    },
    async restart(): Promise<void> {
      await terminate(child);
      child = spawn();
      await waitForPort(c2sPort, child, logPath);
    },
    stop(): Promise<void> {
      stopped ??= (async () => {
        await terminate(child);
        await Deno.remove(dir, { recursive: true }).catch(() => {});
      })();
      return stopped;
    },
    log(): Promise<string> {
      return Deno.readTextFile(logPath).catch(() => "");
    },
  };
}

if (import.meta.main) {
  const users: Array<[string, string]> = [];
  for (let i = 0; i < Deno.args.length; i++) {
    if (Deno.args[i] === "--user" && Deno.args[i + 1]) {
      const [name, pass] = Deno.args[++i]!.split(":");
      users.push([name!, pass ?? name!]);
    } else if (Deno.args[i] === "--help") {
      console.log("usage: deno task prosody [--user name:password ...]");
      Deno.exit(0);
    }
  }
  const server = await startProsody();
  for (const [name, pass] of users) await server.createAccount(name, pass);
  console.log(
    JSON.stringify({
      domain: server.domain,
      host: server.host,
      c2sPort: server.c2sPort,
      proxy65Port: server.proxy65Port,
      certificate: server.certificatePath,
      dir: server.dir,
      users: users.map(([u]) => `${u}@${server.domain}`),
    }),
  );
  const shutdown = async () => {
    await server.stop();
    Deno.exit(0);
  };
  Deno.addSignalListener("SIGINT", shutdown);
  Deno.addSignalListener("SIGTERM", shutdown);
}
