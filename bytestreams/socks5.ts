/**
 * XEP-0065 SOCKS5 Bytestreams, as used by the XEP-0260 Jingle S5B transport: the DST.ADDR hash,
 * direct candidates (a SOCKS5 listener that only speaks the XEP-0065 subset), connecting to a
 * candidate, and a server's proxy (Prosody mod_proxy65): discovery and activation.
 *
 * Only the bytes of RFC 1928 that XEP-0065 uses are spoken: no authentication (method 0), CONNECT,
 * ATYP 3 (domain name) carrying the 40-character hex hash, port 0.
 *
 * @module
 */
import { createHash } from "node:crypto";
import { type Element, xml, type XmppConnection } from "../xmpp/mod.ts";
import { NS_DISCO_ITEMS } from "../xmpp/mod.ts";

/** XEP-0065 namespace (proxy discovery and activation). */
export const NS_BYTESTREAMS = "http://jabber.org/protocol/bytestreams";

/**
 * XEP-0065 §5.3.2 DST.ADDR: hex SHA-1 of `sid + requester + target` (full JIDs, as sent).
 * In Jingle S5B the initiator's candidates use (sid, initiator, responder) and the responder's
 * candidates use (sid, responder, initiator).
 */
export function s5bDstAddr(sid: string, requesterJid: string, targetJid: string): string {
  return createHash("sha1").update(sid + requesterJid + targetJid, "utf8").digest("hex");
}

/** An established SOCKS5 bytestream (a TCP connection after the handshake). */
export interface S5bConnection {
  /** Bytes from the peer; ends when the peer closes its sending side. */
  readable: ReadableStream<Uint8Array>;
  /** Bytes to the peer; closing it half-closes the TCP connection (the peer sees the end). */
  writable: WritableStream<Uint8Array>;
  /** Closes the TCP connection (idempotent). */
  close(): void;
  /** `host:port` of the peer. */
  remote: string;
  /** `host:port` of our side (for a listener: the candidate the peer connected to). */
  local: string;
}

/** A SOCKS5 handshake failed or the connection could not be made. */
export class S5bError extends Error {
  constructor(message: string, readonly code: "refused" | "timeout" | "protocol" | "forbidden" | "aborted") {
    super(message);
    this.name = "S5bError";
  }
}

/** RFC 1928 §6 reply codes, for messages. */
const REPLY_TEXT: Record<number, string> = {
  1: "general SOCKS server failure",
  2: "connection not allowed by ruleset",
  3: "network unreachable",
  4: "host unreachable",
  5: "connection refused",
  6: "TTL expired",
  7: "command not supported",
  8: "address type not supported",
};

const MAX_CHUNK = 64 * 1024;

function addrString(addr: Deno.Addr): string {
  const net = addr as Deno.NetAddr;
  return net.hostname.includes(":") ? `[${net.hostname}]:${net.port}` : `${net.hostname}:${net.port}`;
}

/** Reads exact byte counts from a connection during a handshake, keeping what was read beyond. */
class HandshakeReader {
  #buffer = new Uint8Array(0);
  constructor(private readonly conn: Deno.Conn) {}

  async exactly(n: number): Promise<Uint8Array> {
    while (this.#buffer.byteLength < n) {
      const chunk = new Uint8Array(Math.max(n - this.#buffer.byteLength, 512));
      const read = await this.conn.read(chunk);
      if (read === null) throw new S5bError("connection closed during the SOCKS5 handshake", "protocol");
      const joined = new Uint8Array(this.#buffer.byteLength + read);
      joined.set(this.#buffer);
      joined.set(chunk.subarray(0, read), this.#buffer.byteLength);
      this.#buffer = joined;
    }
    const out = this.#buffer.slice(0, n);
    this.#buffer = this.#buffer.slice(n);
    return out;
  }

  /** Bytes received after the handshake (normally none). */
  rest(): Uint8Array | undefined {
    return this.#buffer.byteLength > 0 ? this.#buffer : undefined;
  }
}

async function writeAll(conn: Deno.Conn, bytes: Uint8Array): Promise<void> {
  let offset = 0;
  while (offset < bytes.byteLength) offset += await conn.write(bytes.subarray(offset));
}

/** Wraps a connected TCP socket whose handshake is done; `leftover` are bytes already read. */
function wrapConnection(conn: Deno.TcpConn, leftover: Uint8Array | undefined): S5bConnection {
  let closed = false;
  const close = () => {
    if (closed) return;
    closed = true;
    try {
      conn.close();
    } catch { /* already closed */ }
  };
  let pending = leftover;
  const readable = new ReadableStream<Uint8Array>({
    async pull(controller) {
      if (pending) {
        controller.enqueue(pending);
        pending = undefined;
        return;
      }
      const buffer = new Uint8Array(MAX_CHUNK);
      let n: number | null;
      try {
        n = closed ? null : await conn.read(buffer);
      } catch (err) {
        if (closed) n = null;
        else throw err;
      }
      if (n === null) controller.close();
      else controller.enqueue(buffer.subarray(0, n));
    },
    cancel() {
      close();
    },
  }, { highWaterMark: 0 });
  const writable = new WritableStream<Uint8Array>({
    async write(chunk) {
      await writeAll(conn, chunk);
    },
    async close() {
      try {
        await conn.closeWrite();
      } catch { /* already closed */ }
    },
    abort() {
      close();
    },
  });
  return {
    readable,
    writable,
    close,
    remote: addrString(conn.remoteAddr),
    local: addrString(conn.localAddr),
  };
}

/* ------------------------------------------------------------------------------------------------ */
/* Target side of SOCKS5 bytestreams: direct candidates.                                            */

/** Options for {@link listenS5b}. */
export interface ListenS5bOptions {
  /** The DST.ADDR peers must ask for ({@link s5bDstAddr}). */
  dstaddr: string;
  /** Addresses to listen on, one candidate each; default 127.0.0.1 plus this host's other IPv4 addresses. */
  hostnames?: string[];
  /** Port for every listener; default a free one (the same for all when possible). */
  port?: number;
  /** Time a client gets to finish the handshake (slowloris guard), default 5 s. */
  handshakeTimeoutMs?: number;
  /** Handshakes in progress at once; more connections are closed at once. Default 16. */
  maxPendingHandshakes?: number;
}

/** Direct SOCKS5 candidates, listening. */
export interface S5bListener {
  /** Where we listen, in the order of `hostnames`. */
  candidates: { host: string; port: number }[];
  /**
   * Resolves with the next connection that completed a handshake for our dstaddr (in arrival order).
   * Wrong dstaddr → SOCKS5 failure reply and close, never returned. Which one is used is decided by
   * the Jingle layer (`candidate-used`); connections not taken stay open until {@link close}.
   */
  accept(signal?: AbortSignal): Promise<S5bConnection>;
  /** Connections that completed the handshake and were not returned by {@link accept} yet. */
  readonly ready: readonly S5bConnection[];
  /** Stops listening, closes the connections not taken by {@link accept}, rejects pending accepts. */
  close(): void;
}

/** IPv4 addresses of this host, loopback first. */
function defaultHostnames(): string[] {
  const hosts = ["127.0.0.1"];
  try {
    for (const iface of Deno.networkInterfaces()) {
      if (iface.family === "IPv4" && !iface.address.startsWith("127.") && !hosts.includes(iface.address)) {
        hosts.push(iface.address);
      }
    }
  } catch { /* no permission to list interfaces: loopback only */ }
  return hosts;
}

/** The server half of the XEP-0065 handshake; resolves true when the client asked for `dstaddr`. */
async function serverHandshake(
  conn: Deno.TcpConn,
  reader: HandshakeReader,
  dstaddr: string,
): Promise<boolean> {
  const [version, methodCount] = await reader.exactly(2);
  if (version !== 5 || methodCount === 0) {
    throw new S5bError(`not a SOCKS5 greeting (version ${version})`, "protocol");
  }
  const methods = await reader.exactly(methodCount!);
  if (!methods.includes(0)) {
    await writeAll(conn, new Uint8Array([5, 0xff]));
    throw new S5bError("client offers no 'no authentication' method", "protocol");
  }
  await writeAll(conn, new Uint8Array([5, 0]));
  const [v, command, , addressType] = await reader.exactly(4);
  const fail = async (code: number, why: string): Promise<never> => {
    await writeAll(conn, new Uint8Array([5, code, 0, 1, 0, 0, 0, 0, 0, 0])).catch(() => {});
    throw new S5bError(why, "protocol");
  };
  if (v !== 5) return await fail(1, `bad request version ${v}`);
  if (command !== 1) return await fail(7, `command ${command} is not CONNECT`);
  if (addressType !== 3) return await fail(8, `address type ${addressType} is not a domain name`);
  const [length] = await reader.exactly(1);
  const address = new TextDecoder().decode(await reader.exactly(length!));
  await reader.exactly(2); // port: 0 per XEP-0065, not checked (some clients send other values)
  if (address.toLowerCase() !== dstaddr.toLowerCase()) {
    await fail(2, "wrong DST.ADDR");
    return false;
  }
  const reply = new Uint8Array(7 + address.length);
  reply.set([5, 0, 0, 3, address.length]);
  reply.set(new TextEncoder().encode(address), 5);
  await writeAll(conn, reply);
  return true;
}

/**
 * Listens for XEP-0065 clients (the target side of a bytestream, our direct candidates).
 * Every accepted TCP connection must finish the handshake within `handshakeTimeoutMs`.
 */
export function listenS5b(opts: ListenS5bOptions): Promise<S5bListener> {
  try {
    return Promise.resolve(listenNow(opts));
  } catch (err) {
    return Promise.reject(err);
  }
}

function listenNow(opts: ListenS5bOptions): S5bListener {
  if (!/^[0-9a-fA-F]{40}$/.test(opts.dstaddr)) throw new Error(`dstaddr is not a SHA-1 hex string`);
  const hostnames = opts.hostnames ?? defaultHostnames();
  const handshakeTimeoutMs = opts.handshakeTimeoutMs ?? 5_000;
  const maxPending = opts.maxPendingHandshakes ?? 16;
  const listeners: Deno.TcpListener[] = [];
  const candidates: { host: string; port: number }[] = [];
  let port = opts.port ?? 0;
  try {
    for (const hostname of hostnames) {
      let listener: Deno.TcpListener;
      try {
        listener = Deno.listen({ hostname, port, transport: "tcp" });
      } catch (err) {
        // The port chosen for the first address may be taken on another one: take any there.
        if (opts.port !== undefined || port === 0) throw err;
        listener = Deno.listen({ hostname, port: 0, transport: "tcp" });
      }
      listeners.push(listener);
      const bound = (listener.addr as Deno.NetAddr).port;
      if (port === 0) port = bound;
      candidates.push({ host: hostname, port: bound });
    }
  } catch (err) {
    for (const l of listeners) l.close();
    throw err;
  }

  let closed = false;
  let pendingHandshakes = 0;
  const handshaking = new Set<Deno.TcpConn>();
  const ready: S5bConnection[] = [];
  const waiters: Array<{ resolve(conn: S5bConnection): void; reject(err: Error): void }> = [];
  const deliver = (conn: S5bConnection) => {
    const waiter = waiters.shift();
    if (waiter) waiter.resolve(conn);
    else ready.push(conn);
  };

  const handle = async (conn: Deno.TcpConn) => {
    if (pendingHandshakes >= maxPending) {
      conn.close();
      return;
    }
    pendingHandshakes++;
    handshaking.add(conn);
    const timer = setTimeout(() => {
      // Closing the socket makes the pending read fail, which ends the handshake.
      try {
        conn.close();
      } catch { /* closed */ }
    }, handshakeTimeoutMs);
    try {
      conn.setNoDelay(true);
      const reader = new HandshakeReader(conn);
      const ok = await serverHandshake(conn, reader, opts.dstaddr);
      clearTimeout(timer);
      if (!ok || closed) throw new S5bError("refused", "protocol");
      deliver(wrapConnection(conn, reader.rest()));
    } catch {
      clearTimeout(timer);
      try {
        conn.close();
      } catch { /* closed */ }
    } finally {
      pendingHandshakes--;
      handshaking.delete(conn);
    }
  };

  for (const listener of listeners) {
    (async () => {
      try {
        for await (const conn of listener) {
          if (closed) {
            conn.close();
            break;
          }
          void handle(conn);
        }
      } catch { /* listener closed */ }
    })();
  }

  return {
    candidates,
    ready,
    accept(signal) {
      const first = ready.shift();
      if (first) return Promise.resolve(first);
      if (closed) return Promise.reject(new S5bError("listener closed", "aborted"));
      return new Promise<S5bConnection>((resolve, reject) => {
        const onAbort = () => {
          const i = waiters.indexOf(waiter);
          if (i >= 0) waiters.splice(i, 1);
          reject(new S5bError("accept aborted", "aborted"));
        };
        const waiter = {
          resolve(conn: S5bConnection) {
            signal?.removeEventListener("abort", onAbort);
            resolve(conn);
          },
          reject(err: Error) {
            signal?.removeEventListener("abort", onAbort);
            reject(err);
          },
        };
        if (signal?.aborted) return onAbort();
        signal?.addEventListener("abort", onAbort, { once: true });
        waiters.push(waiter);
      });
    },
    close() {
      if (closed) return;
      closed = true;
      for (const l of listeners) {
        try {
          l.close();
        } catch { /* closed */ }
      }
      for (const conn of handshaking) {
        try {
          conn.close();
        } catch { /* closed */ }
      }
      for (const conn of ready.splice(0)) conn.close();
      for (const waiter of waiters.splice(0)) waiter.reject(new S5bError("listener closed", "aborted"));
    },
  };
}

/* ------------------------------------------------------------------------------------------------ */
/* Requester side: connecting to a candidate (a peer's direct candidate or a proxy).                */

/** Options for {@link connectS5b}. */
export interface ConnectS5bOptions {
  /** For the TCP connect and the whole handshake, default 5 s. */
  timeoutMs?: number;
  signal?: AbortSignal;
  /**
   * Connect to loopback addresses (127.0.0.0/8, ::1, `localhost`). Default true (tests run on
   * loopback); a bot exposed to untrusted peers should pass false so a candidate cannot point it at a
   * local service (security checklist F7).
   */
  allowLoopback?: boolean;
  /** Connect to private/link-local addresses (10/8, 172.16/12, 192.168/16, 169.254/16, fc00::/7, fe80::/10). Default true. */
  allowPrivate?: boolean;
}

/** What kind of address `ip` is, for the SSRF options. */
export function classifyAddress(ip: string): "loopback" | "private" | "public" {
  const v4 = ip.match(/^(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})$/);
  if (v4) {
    const [a, b] = [Number(v4[1]), Number(v4[2])];
    if (a === 127) return "loopback";
    if (a === 10 || a === 0 || (a === 172 && b >= 16 && b <= 31) || (a === 192 && b === 168)) {
      return "private";
    }
    if (a === 169 && b === 254) return "private";
    if (a === 100 && b >= 64 && b <= 127) return "private"; // carrier-grade NAT
    return "public";
  }
  const v6 = ip.toLowerCase().replace(/^\[|\]$/g, "").replace(/%.*$/, "");
  if (v6 === "::1" || v6 === "0:0:0:0:0:0:0:1") return "loopback";
  const mapped = v6.match(/^::ffff:(\d+\.\d+\.\d+\.\d+)$/);
  if (mapped) return classifyAddress(mapped[1]!);
  if (/^f[cd]/.test(v6) || /^fe[89ab]/.test(v6) || v6 === "::") return "private";
  return "public";
}

function isIpLiteral(host: string): boolean {
  return /^\d{1,3}(\.\d{1,3}){3}$/.test(host) || host.includes(":");
}

/** Resolves `host` to the address to connect to, enforcing the SSRF options. */
async function checkedAddress(host: string, opts: ConnectS5bOptions): Promise<string> {
  const allowLoopback = opts.allowLoopback ?? true;
  const allowPrivate = opts.allowPrivate ?? true;
  if (allowLoopback && allowPrivate) return host;
  let address = host;
  if (!isIpLiteral(host)) {
    if (host.toLowerCase() === "localhost") {
      address = "127.0.0.1";
    } else {
      // Resolve once and connect to that address, so a second lookup cannot return another one.
      const records = await Deno.resolveDns(host, "A").catch(() => [] as string[]);
      if (records.length === 0) throw new S5bError(`cannot resolve ${host}`, "refused");
      address = records[0]!;
    }
  }
  const kind = classifyAddress(address);
  if ((kind === "loopback" && !allowLoopback) || (kind === "private" && !allowPrivate)) {
    throw new S5bError(`refusing to connect to ${kind} address ${host}`, "forbidden");
  }
  return address;
}

/** The client half of the XEP-0065 handshake. */
async function clientHandshake(conn: Deno.TcpConn, reader: HandshakeReader, dstaddr: string): Promise<void> {
  await writeAll(conn, new Uint8Array([5, 1, 0]));
  const [version, method] = await reader.exactly(2);
  if (version !== 5) throw new S5bError(`not a SOCKS5 server (version ${version})`, "protocol");
  if (method !== 0) {
    throw new S5bError(`SOCKS5 server refused 'no authentication' (method ${method})`, "protocol");
  }
  // One write: Prosody's mod_proxy65 expects the whole 47-byte request in one read.
  const address = new TextEncoder().encode(dstaddr);
  const request = new Uint8Array(7 + address.byteLength);
  request.set([5, 1, 0, 3, address.byteLength]);
  request.set(address, 5);
  await writeAll(conn, request);
  const [v, reply, , addressType] = await reader.exactly(4);
  if (v !== 5) throw new S5bError(`bad SOCKS5 reply version ${v}`, "protocol");
  if (reply !== 0) {
    throw new S5bError(`SOCKS5 failure reply ${reply} (${REPLY_TEXT[reply!] ?? "unknown"})`, "refused");
  }
  if (addressType === 3) {
    const [length] = await reader.exactly(1);
    await reader.exactly(length! + 2);
  } else if (addressType === 1) {
    await reader.exactly(4 + 2);
  } else if (addressType === 4) {
    await reader.exactly(16 + 2);
  } else {
    throw new S5bError(`bad SOCKS5 reply address type ${addressType}`, "protocol");
  }
}

/**
 * Connects to a streamhost (direct candidate or proxy) and asks for `dstaddr`:
 * TCP, greeting with "no authentication", CONNECT ATYP=3 dstaddr port 0, reply checked.
 * @throws {S5bError} `refused` (TCP refused or a SOCKS5 failure reply), `timeout`, `protocol`,
 * `forbidden` (SSRF options), `aborted`.
 */
export async function connectS5b(
  host: string,
  port: number,
  dstaddr: string,
  opts: ConnectS5bOptions = {},
): Promise<S5bConnection> {
  const timeoutMs = opts.timeoutMs ?? 5_000;
  const where = `${host}:${port}`;
  if (opts.signal?.aborted) throw new S5bError(`connect to ${where} aborted`, "aborted");
  const address = await checkedAddress(host, opts);
  let conn: Deno.TcpConn | undefined;
  let outcome: "timeout" | "aborted" | undefined;
  let stopWaiting!: (err: S5bError) => void;
  // Deno.connect takes no signal: race it against this, and close the socket if it arrives late.
  const gaveUp = new Promise<never>((_, reject) => stopWaiting = reject);
  gaveUp.catch(() => {});
  const giveUp = (why: "timeout" | "aborted") => {
    outcome ??= why;
    stopWaiting(new S5bError(`connect to ${where}: ${why}`, why));
    try {
      conn?.close();
    } catch { /* closed */ }
  };
  const timer = setTimeout(() => giveUp("timeout"), timeoutMs);
  const onAbort = () => giveUp("aborted");
  opts.signal?.addEventListener("abort", onAbort, { once: true });
  try {
    const connecting = Deno.connect({ hostname: address, port, transport: "tcp" });
    connecting.then((c) => {
      if (outcome) c.close();
    }).catch(() => {});
    try {
      conn = await Promise.race([connecting, gaveUp]);
    } catch (err) {
      if (err instanceof S5bError) throw err;
      if (err instanceof Deno.errors.ConnectionRefused) {
        throw new S5bError(`connection to ${where} refused`, "refused");
      }
      throw new S5bError(`cannot connect to ${where}: ${(err as Error).message}`, "refused");
    }
    conn.setNoDelay(true);
    const reader = new HandshakeReader(conn);
    try {
      await clientHandshake(conn, reader, dstaddr);
    } catch (err) {
      if (outcome) throw new S5bError(`SOCKS5 handshake with ${where}: ${outcome}`, outcome);
      throw err instanceof S5bError
        ? new S5bError(`${where}: ${err.message}`, err.code)
        : new S5bError(`${where}: ${(err as Error).message}`, "protocol");
    }
    if (outcome) throw new S5bError(`SOCKS5 handshake with ${where}: ${outcome}`, outcome);
    return wrapConnection(conn, reader.rest());
  } catch (err) {
    try {
      conn?.close();
    } catch { /* closed */ }
    throw err;
  } finally {
    clearTimeout(timer);
    opts.signal?.removeEventListener("abort", onAbort);
  }
}

/* ------------------------------------------------------------------------------------------------ */
/* The server's proxy (XEP-0065 §6).                                                                 */

/** A SOCKS5 proxy announced by a server. */
export interface S5bProxy {
  jid: string;
  host: string;
  port: number;
}

/** Decodes the first `<streamhost jid host port/>` of a bytestreams `<query/>`. */
export function parseStreamhost(query: Element): S5bProxy | undefined {
  for (const host of query.getChildren("streamhost")) {
    const port = Number(host.attrs.port);
    if (host.attrs.jid && host.attrs.host && Number.isInteger(port) && port > 0 && port < 65536) {
      return { jid: host.attrs.jid, host: host.attrs.host, port };
    }
  }
  return undefined;
}

/** Asks `jid` for its streamhost; undefined when it is no (usable) proxy. */
export async function queryProxy(conn: XmppConnection, jid: string): Promise<S5bProxy | undefined> {
  try {
    const result = await conn.iq(
      xml("iq", { type: "get", to: jid }, xml("query", { xmlns: NS_BYTESTREAMS })),
      { timeoutMs: 5_000 },
    );
    const query = result.getChild("query", NS_BYTESTREAMS);
    return query ? parseStreamhost(query) : undefined;
  } catch {
    return undefined;
  }
}

/**
 * Finds the server's SOCKS5 proxy: asks every disco#items entry of our server for a streamhost
 * (Prosody lists its `proxy.<domain>` component there). Undefined when there is none or we may not use it.
 */
export async function discoverProxy(conn: XmppConnection): Promise<S5bProxy | undefined> {
  const domain = conn.bareJid.split("@")[1]!;
  let items: string[] = [];
  try {
    const result = await conn.iq(
      xml("iq", { type: "get", to: domain }, xml("query", { xmlns: NS_DISCO_ITEMS })),
      { timeoutMs: 5_000 },
    );
    items = (result.getChild("query", NS_DISCO_ITEMS)?.getChildren("item") ?? [])
      .map((item) => item.attrs.jid)
      .filter((jid): jid is string => !!jid && !jid.includes("@"));
  } catch { /* no disco#items: nothing to try */ }
  // Ask the likely one first, the others in parallel after.
  items.sort((a, b) => Number(b.startsWith("proxy")) - Number(a.startsWith("proxy")));
  const found = await Promise.all(items.map((jid) => queryProxy(conn, jid)));
  return found.find((p) => p !== undefined);
}

/**
 * Asks the proxy to link the two connections for `sid` (XEP-0065 §6.3.3). Must be sent by the
 * requester, after both parties connected with `s5bDstAddr(sid, requester, target)`.
 * @throws {StanzaError} e.g. `item-not-found` (unknown hash: wrong sid/JIDs), `not-allowed`,
 * `forbidden` (ACL).
 */
export async function activateProxy(
  conn: XmppConnection,
  proxyJid: string,
  sid: string,
  targetJid: string,
): Promise<void> {
  await conn.iq(
    xml(
      "iq",
      { type: "set", to: proxyJid },
      xml("query", { xmlns: NS_BYTESTREAMS, sid }, xml("activate", {}, targetJid)),
    ),
    { timeoutMs: 10_000 },
  );
}

/* ------------------------------------------------------------------------------------------------ */
/* Trying several candidates.                                                                        */

/** Options for {@link connectAnyS5b}. */
export interface ConnectAnyS5bOptions extends ConnectS5bOptions {
  /** Candidates tried at once (default 2): a peer cannot make us open many connections together. */
  concurrency?: number;
}

/**
 * Tries `candidates` in the given order (highest priority first), at most `concurrency` at once, and
 * resolves with the first that completes the handshake; the others are aborted (and closed if they
 * still connect). `timeoutMs` applies to each candidate.
 * @throws {S5bError} when every candidate failed (the message lists each failure), or on abort.
 */
export function connectAnyS5b(
  candidates: readonly { host: string; port: number }[],
  dstaddr: string,
  opts: ConnectAnyS5bOptions = {},
): Promise<{ index: number; connection: S5bConnection }> {
  const concurrency = Math.max(1, opts.concurrency ?? 2);
  const stop = new AbortController();
  const onOuterAbort = () => stop.abort();
  opts.signal?.addEventListener("abort", onOuterAbort, { once: true });
  if (opts.signal?.aborted) stop.abort();
  const failures: string[] = new Array(candidates.length);
  return new Promise<{ index: number; connection: S5bConnection }>((resolve, reject) => {
    let next = 0;
    let running = 0;
    let settled = false;
    const settle = () => {
      settled = true;
      stop.abort();
      opts.signal?.removeEventListener("abort", onOuterAbort);
    };
    const launch = () => {
      while (!settled && running < concurrency && next < candidates.length) {
        const index = next++;
        const { host, port } = candidates[index]!;
        running++;
        connectS5b(host, port, dstaddr, { ...opts, signal: stop.signal }).then(
          (connection) => {
            running--;
            if (settled) {
              connection.close();
              return;
            }
            settle();
            resolve({ index, connection });
          },
          (err: Error) => {
            running--;
            failures[index] = err.message;
            if (settled) return;
            if (opts.signal?.aborted) {
              settle();
              reject(new S5bError("connecting to the candidates was aborted", "aborted"));
            } else if (running === 0 && next >= candidates.length) {
              settle();
              reject(new S5bError(`no candidate worked: ${failures.join("; ") || "none given"}`, "refused"));
            } else {
              launch();
            }
          },
        );
      }
      if (!settled && running === 0 && next >= candidates.length) {
        settle();
        reject(new S5bError("no candidate given", "refused"));
      }
    };
    launch();
  });
}
