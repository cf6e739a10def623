/**
 * XMPP client connection on top of `@xmpp/client` (STARTTLS, SASL, resource binding), with:
 * - TCP_NODELAY on the socket (the library never sets it, so each round trip waited ~40 ms for Nagle
 *   and delayed ACKs to meet),
 * - our own SCRAM-SHA-1 (one PBKDF2 `deriveBits` call, server signature verified),
 * - pinning of a self-signed server certificate (`caPem`),
 * - capped exponential reconnect backoff and an explicit connection state,
 * - a typed IQ caller/callee and message routing by payload namespace.
 *
 * This module and its siblings are the only importers of `@xmpp/client`.
 *
 * @module
 */
import { client as untypedClient } from "@xmpp/client";
import { AuthError, IqTimeoutError, NotConnectedError, StanzaError } from "./errors.ts";
import { saslCodec, ScramError, ScramSha1Client } from "./scram.ts";
import { bare, type Element, jidEquals, normalizeJid, parseJid, xml } from "./xml.ts";

const NS_SASL = "urn:ietf:params:xml:ns:xmpp-sasl";

/** Minimal structured logger; messages never include credentials. */
export interface Logger {
  /** Details for debugging. */
  debug(message: string, data?: Record<string, unknown>): void;
  /** Normal events. */
  info(message: string, data?: Record<string, unknown>): void;
  /** Problems worked around. */
  warn(message: string, data?: Record<string, unknown>): void;
  /** Failures. */
  error(message: string, data?: Record<string, unknown>): void;
}

/** A logger writing warnings and errors to the console and dropping the rest. */
export const defaultLogger: Logger = {
  debug() {},
  info() {},
  warn(message, data) {
    console.warn(`[xmpp] ${message}`, data ?? "");
  },
  error(message, data) {
    console.error(`[xmpp] ${message}`, data ?? "");
  },
};

/**
 * Connection lifecycle:
 * `connecting` → `online` ⇄ `reconnecting` → … → `closed` (after {@link XmppConnection.close}).
 */
export type ConnectionState = "connecting" | "online" | "reconnecting" | "closed";

/** Options for {@link connectXmpp}. */
export interface ConnectOptions {
  /** Bare (or full, to request that resource) JID of the account. */
  jid: string;
  /** Account password (never logged). */
  password: string;
  /** Where to connect; defaults to the JID's domain on port 5222 (no SRV lookup). */
  server?: { host: string; port: number };
  /** Resource to bind; the server chooses one if omitted. */
  resource?: string;
  /** PEM certificate(s) to trust in addition to the system roots (e.g. a self-signed server cert). */
  caPem?: string;
  /** Set `false` only for tests against servers with unverifiable certificates. Default `true`. */
  rejectUnauthorized?: boolean;
  /** Where logs go (default {@link defaultLogger}). */
  logger?: Logger;
  /** Reconnect backoff: first delay and cap (ms). Defaults 500 ms / 30 s. */
  reconnect?: { initialDelayMs?: number; maxDelayMs?: number } | false;
  /** Timeout for the initial login (ms), default 15 s. */
  connectTimeoutMs?: number;
}

/** Context passed to IQ handlers. */
export interface IqContext {
  /** Normalised sender JID (own bare JID when the stanza had no `from`). */
  from: string;
  /** The whole `<iq/>`. */
  stanza: Element;
}

/**
 * IQ handler: return the result payload element, or `null`/`undefined` for an empty result.
 * Throw a {@link StanzaError} to answer with that error; any other exception becomes
 * `internal-server-error`.
 */
export type IqHandler = (payload: Element, ctx: IqContext) =>
  | Element
  | null
  | undefined
  | void
  | Promise<
    Element | null | undefined | void
  >;

/** Context passed to message handlers. */
export interface MessageContext {
  /** Normalised sender JID (own bare JID when the stanza had no `from`). */
  from: string;
  /** Set when the message was unwrapped from a XEP-0280 carbon. */
  carbon?: "received" | "sent";
  /** The message element (the inner, forwarded one for carbons). */
  stanza: Element;
}

/** Message handler, called with the first child in the registered namespace. */
export type MessageHandler = (payload: Element, ctx: MessageContext) => void | Promise<void>;

/** Presence fields for {@link XmppConnection.sendPresence}. */
export interface PresenceOptions {
  /** Recipient; broadcast to contacts when absent. */
  to?: string;
  /** Presence type; available when absent. */
  type?: "unavailable" | "subscribe" | "subscribed" | "unsubscribe" | "unsubscribed" | "probe";
  /** Availability sub-state. */
  show?: "away" | "chat" | "dnd" | "xa";
  /** Human-readable status text. */
  status?: string;
  /** Resource priority (-128..127). */
  priority?: number;
  /** Extra payload elements. */
  children?: Element[];
}

/** A live XMPP client connection. Obtain one with {@link connectXmpp}. */
export interface XmppConnection {
  /** Full JID bound by the server. */
  readonly jid: string;
  /** Own bare JID. */
  readonly bareJid: string;
  /** Current connection state. */
  readonly state: ConnectionState;
  /** The logger this connection writes to. */
  readonly logger: Logger;
  /** Subscribes to state changes; returns an unsubscribe function. */
  onStateChange(listener: (state: ConnectionState) => void): () => void;
  /**
   * Runs `hook` now (if online) and after every reconnect — use it for per-session setup
   * (initial presence, enabling carbons). Returns an unsubscribe function.
   */
  onOnline(hook: () => void | Promise<void>): () => void;
  /** Sends a stanza as is. */
  send(element: Element): Promise<void>;
  /** Sends an IQ get/set and resolves with the `result` stanza or rejects with {@link StanzaError}. */
  iq(element: Element, options?: { timeoutMs?: number }): Promise<Element>;
  /** Handles incoming IQs of `type` whose payload is `<name xmlns=ns>`. Returns an unregister function. */
  handleIq(type: "get" | "set", name: string, ns: string, handler: IqHandler): () => void;
  /** Handles messages carrying a child in namespace `ns`. Returns an unregister function. */
  onMessage(ns: string, handler: MessageHandler): () => void;
  /**
   * Handles every incoming `<message type='error'/>` (sender normalised): a bounce of a message we sent, which
   * servers return with the original id but usually without its payload, so {@link onMessage} cannot see it.
   */
  onMessageError(handler: (message: Element, from: string) => void): () => void;
  /** Handles every incoming presence (sender normalised). */
  onPresence(handler: (presence: Element, from: string) => void): () => void;
  /** Routes a message through the message handlers (used by carbons to deliver unwrapped messages). */
  dispatchMessage(message: Element, ctx: MessageContext): Promise<void>;
  /**
   * Adds a provider of an element appended to every presence we send (e.g. XEP-0115 `<c/>`).
   * Returns a remover.
   */
  addPresenceExtension(provider: () => Element | null): () => void;
  /** Sends presence (available by default) including presence extensions. */
  sendPresence(options?: PresenceOptions): Promise<void>;
  /** Ends the session and stops reconnecting. */
  close(): Promise<void>;
}

/* ------------------------------------------------------------------------------------------------ */
/* Minimal typings for the parts of @xmpp/client we touch.                                          */

interface NodeLikeSocket {
  setNoDelay?(noDelay?: boolean): unknown;
}
interface XmppSocket extends NodeLikeSocket {
  /** The underlying node socket (TLS wrapper sockets only). */
  socket?: NodeLikeSocket | null;
  secure?: boolean;
}
interface TransportClass {
  prototype: {
    socketParameters(service: string): unknown;
    Socket: { prototype: Record<string | symbol, unknown> };
  };
}
interface MiddlewareContext {
  stanza: Element;
  element?: Element;
  type?: string;
  from?: string;
}
type Middleware = (ctx: MiddlewareContext, next: () => Promise<unknown>) => unknown;
type SaslDone = (
  credentials: Record<string, unknown>,
  mechanism: string,
  userAgent?: unknown,
) => Promise<void>;
interface RawClient {
  status: string;
  jid: { toString(): string } | null;
  socket: XmppSocket | null;
  transports: TransportClass[];
  options: { domain: string; service: string };
  timeout: number;
  middleware: { use(fn: Middleware): void };
  reconnect: { stop(): void; reconnect(): Promise<void> };
  start(): Promise<unknown>;
  stop(): Promise<unknown>;
  send(element: Element): Promise<void>;
  on(event: string, listener: (...args: never[]) => void): void;
  removeListener(event: string, listener: (...args: never[]) => void): void;
}
type ClientFactory = (options: Record<string, unknown>) => RawClient;
const createRawClient = untypedClient as ClientFactory;

/* ------------------------------------------------------------------------------------------------ */
/* TLS options injection.                                                                           */

/**
 * @xmpp/starttls upgrades with `tls.connect({ socket, host })` and offers no way to pass `ca`.
 * We wrap the connect method of its TLS socket class once, and add per-connection options looked up
 * by the plain TCP socket being upgraded — so other connections are unaffected.
 */
const tlsExtras = new WeakMap<object, Record<string, unknown>>();
// Module-local: a second copy of this module wraps again and consults its own map.
const PATCHED = Symbol("tls-patched");

function patchTlsSocketClass(raw: RawClient): void {
  const tlsTransport = raw.transports.find((t) => {
    try {
      return t.prototype.socketParameters("xmpps://example.org:5223") !== undefined;
    } catch {
      return false;
    }
  });
  if (!tlsTransport) throw new Error("@xmpp/client: TLS transport not found (library layout changed?)");
  const proto = tlsTransport.prototype.Socket.prototype;
  if (proto[PATCHED]) return;
  const original = proto.connect as (this: XmppSocket, ...args: unknown[]) => void;
  proto.connect = function (this: XmppSocket, options: unknown, ...rest: unknown[]) {
    const socket = (options as { socket?: object } | null)?.socket;
    const extra = socket ? tlsExtras.get(socket) : undefined;
    original.call(this, extra ? { ...(options as object), ...extra } : options, ...rest);
    if (extra) this.socket?.setNoDelay?.(true);
  };
  proto[PATCHED] = true;
}

function isLoopback(host: string): boolean {
  return host === "localhost" || host === "::1" || /^127\./.test(host);
}

/* ------------------------------------------------------------------------------------------------ */

interface Pending {
  resolve(el: Element): void;
  reject(err: Error): void;
  timer: ReturnType<typeof setTimeout>;
  to: string | undefined;
}

/**
 * Connects, authenticates (SCRAM-SHA-1 over STARTTLS) and binds a resource.
 * Resolves once online; rejects with {@link AuthError} on bad credentials.
 */
export async function connectXmpp(options: ConnectOptions): Promise<XmppConnection> {
  const logger = options.logger ?? defaultLogger;
  const account = parseJid(options.jid);
  if (!account?.local) throw new Error(`connectXmpp: not an account JID: ${options.jid}`);
  const domain = account.domain;
  const resource = options.resource ?? account.resource ?? undefined;
  const host = options.server?.host ?? domain;
  const port = options.server?.port ?? 5222;
  const ownBare = `${account.local}@${domain}`;
  const password = options.password;

  /** Our SASL: SCRAM-SHA-1 ourselves; PLAIN (through the library) only over TLS to loopback. */
  async function authenticate(
    done: SaslDone,
    mechanisms: string[],
    _fast: unknown,
    entity: RawClient,
  ): Promise<void> {
    const creds = { username: account!.local, password };
    // SASL2 (XEP-0388) passes a 3-argument `done`; keep the library's flow there.
    const sasl2 = done.length >= 3;
    if (mechanisms.includes("SCRAM-SHA-1") && !sasl2) {
      await scramLogin(entity, account!.local!, password);
      return;
    }
    if (mechanisms.includes("SCRAM-SHA-1")) return done(creds, "SCRAM-SHA-1");
    if (mechanisms.includes("PLAIN") && entity.socket?.secure && isLoopback(host)) {
      logger.warn("SASL PLAIN (loopback only)");
      return done(creds, "PLAIN");
    }
    throw new AuthError("no-acceptable-mechanism", `offered: ${mechanisms.join(", ")}`);
  }

  async function scramLogin(entity: RawClient, user: string, pass: string): Promise<void> {
    const scram = new ScramSha1Client(user, pass);
    const timeout = Math.max(entity.timeout, 10_000);
    const next = (): Promise<Element> =>
      new Promise((resolve, reject) => {
        const onNonza = (el: Element) => {
          if (el.getNS() !== NS_SASL) return;
          clearTimeout(timer);
          entity.removeListener("nonza", onNonza as (...a: never[]) => void);
          resolve(el);
        };
        const timer = setTimeout(() => {
          entity.removeListener("nonza", onNonza as (...a: never[]) => void);
          reject(new AuthError("timeout", "no SASL answer"));
        }, timeout);
        entity.on("nonza", onNonza as (...a: never[]) => void);
      });
    const failure = (el: Element): never => {
      const condition = el.getChildElements().find((c) => c.name !== "text")?.name ?? "failure";
      throw new AuthError(condition, el.getChildText("text") ?? undefined);
    };
    try {
      let answer = next();
      await entity.send(
        xml("auth", { xmlns: NS_SASL, mechanism: "SCRAM-SHA-1" }, saslCodec.encode(scram.clientFirst())),
      );
      let el = await answer;
      if (el.name === "failure") failure(el);
      if (el.name !== "challenge") throw new AuthError("malformed-request", `unexpected <${el.name}/>`);
      const final = await scram.clientFinal(saslCodec.decode(el.text()));
      answer = next();
      await entity.send(xml("response", { xmlns: NS_SASL }, saslCodec.encode(final)));
      el = await answer;
      if (el.name === "challenge") {
        // Some servers send server-final as a challenge and an empty <success/> afterwards.
        scram.verifyServerFinal(saslCodec.decode(el.text()));
        answer = next();
        await entity.send(xml("response", { xmlns: NS_SASL }));
        el = await answer;
        if (el.name === "failure") failure(el);
        if (el.name !== "success") throw new AuthError("malformed-request", `unexpected <${el.name}/>`);
      } else if (el.name === "success") {
        scram.verifyServerFinal(saslCodec.decode(el.text()));
      } else {
        failure(el);
      }
      logger.debug("SASL SCRAM-SHA-1 succeeded");
    } catch (err) {
      if (err instanceof ScramError) throw new AuthError(err.condition, err.message);
      throw err;
    }
  }

  const raw = createRawClient({
    service: `xmpp://${host}:${port}`,
    domain,
    resource,
    username: account.local,
    credentials: authenticate,
  });
  // The library's reconnect uses a fixed 1 s delay and retries forever; we run our own.
  raw.reconnect.stop();
  patchTlsSocketClass(raw);

  let state: ConnectionState = "connecting";
  let fullJid = "";
  let closing = false;
  const stateListeners = new Set<(s: ConnectionState) => void>();
  const onlineHooks = new Set<() => void | Promise<void>>();
  const iqHandlers = new Map<string, IqHandler>();
  const messageHandlers = new Map<string, Set<MessageHandler>>();
  const presenceHandlers = new Set<(p: Element, from: string) => void>();
  const messageErrorHandlers = new Set<(m: Element, from: string) => void>();
  const presenceExtensions = new Set<() => Element | null>();
  const pending = new Map<string, Pending>();

  const setState = (next: ConnectionState) => {
    if (state === next) return;
    state = next;
    logger.debug("state", { state });
    for (const l of stateListeners) {
      try {
        l(next);
      } catch (err) {
        logger.error("state listener failed", { err: String(err) });
      }
    }
  };

  raw.on("connect", () => {
    // Plain TCP socket is up: disable Nagle and register TLS options for the STARTTLS upgrade.
    const sock = raw.socket;
    sock?.setNoDelay?.(true);
    if (sock) {
      const extra: Record<string, unknown> = { servername: domain };
      if (options.caPem) extra.ca = [options.caPem];
      if (options.rejectUnauthorized === false) extra.rejectUnauthorized = false;
      tlsExtras.set(sock, extra);
    }
  });
  raw.on(
    "error",
    ((err: Error) => {
      logger.debug("client error", { error: err.message });
    }) as (...a: never[]) => void,
  );

  /* ---------------- incoming ---------------- */

  /** Normalises `from`; absent means "from my own account" (RFC 6120 §8.1.2.1). */
  const senderOf = (stanza: Element): string | null => {
    const from = stanza.attrs.from;
    if (from === undefined) return ownBare;
    return normalizeJid(from);
  };

  const onIqResponse = (stanza: Element) => {
    const id = stanza.attrs.id;
    if (!id) return;
    const p = pending.get(id);
    if (!p) return;
    // Only accept the response from the entity we asked (anti-spoofing), RFC 6120 §8.1.2.1.
    const from = stanza.attrs.from;
    const ok = p.to === undefined || jidEquals(p.to, ownBare) || jidEquals(p.to, domain)
      ? from === undefined || jidEquals(from, ownBare) || jidEquals(from, fullJid) ||
        jidEquals(from, domain) ||
        (p.to !== undefined && jidEquals(from, p.to))
      : jidEquals(from, p.to);
    if (!ok) {
      logger.warn("dropping IQ response from unexpected sender", { id, from, expected: p.to });
      return;
    }
    pending.delete(id);
    clearTimeout(p.timer);
    if (stanza.attrs.type === "result") p.resolve(stanza);
    else p.reject(StanzaError.fromStanza(stanza));
  };

  const dispatchMessage = async (message: Element, ctx: MessageContext): Promise<void> => {
    const seen = new Set<string>();
    for (const child of message.getChildElements()) {
      const ns = child.getNS();
      if (!ns || seen.has(ns)) continue;
      seen.add(ns);
      for (const handler of messageHandlers.get(ns) ?? []) {
        try {
          await handler(child, ctx);
        } catch (err) {
          logger.error("message handler failed", { ns, err: String(err) });
        }
      }
    }
  };

  raw.on(
    "stanza",
    ((stanza: Element) => {
      if (stanza.name === "iq") {
        if (stanza.attrs.type === "result" || stanza.attrs.type === "error") onIqResponse(stanza);
        return;
      }
      const from = senderOf(stanza);
      if (from === null) {
        logger.warn("dropping stanza with malformed from", { name: stanza.name, from: stanza.attrs.from });
        return;
      }
      if (stanza.name === "message") {
        if (stanza.attrs.type === "error") {
          for (const h of messageErrorHandlers) {
            try {
              h(stanza, from);
            } catch (err) {
              logger.error("message error handler failed", { err: String(err) });
            }
          }
        }
        void dispatchMessage(stanza, { from, stanza });
      } else if (stanza.name === "presence") {
        for (const h of presenceHandlers) {
          try {
            h(stanza, from);
          } catch (err) {
            logger.error("presence handler failed", { err: String(err) });
          }
        }
      }
    }) as (...a: never[]) => void,
  );

  // IQ callee. The library's iq middleware (registered earlier) wraps this one: it answers
  // `service-unavailable` when we return nothing, a result when we return an element or `true`,
  // and an error when we return an <error/>.
  raw.middleware.use(async (ctx, next) => {
    const { stanza, element } = ctx;
    if (stanza.name !== "iq" || !element) return next();
    const type = stanza.attrs.type;
    if (type !== "get" && type !== "set") return next();
    const handler = iqHandlers.get(key(type, element.name, element.getNS() ?? ""));
    if (!handler) return next();
    const from = senderOf(stanza);
    if (from === null) return new StanzaError("jid-malformed", "modify").toElement();
    try {
      const reply = await handler(element, { from, stanza });
      return reply ?? true;
    } catch (err) {
      if (err instanceof StanzaError) return err.toElement();
      logger.error("IQ handler failed", { name: element.name, ns: element.getNS(), err: String(err) });
      return new StanzaError("internal-server-error", "cancel").toElement();
    }
  });

  /* ---------------- lifecycle ---------------- */

  const runOnlineHooks = async () => {
    for (const hook of onlineHooks) {
      try {
        await hook();
      } catch (err) {
        logger.error("online hook failed", { err: String(err) });
      }
    }
  };

  raw.on(
    "online",
    ((jid: { toString(): string }) => {
      fullJid = jid.toString();
      backoff = initialDelay;
      setState("online");
      void runOnlineHooks();
    }) as (...a: never[]) => void,
  );

  const reconnectOpts = options.reconnect === false ? null : options.reconnect ?? {};
  const initialDelay = reconnectOpts?.initialDelayMs ?? 500;
  const maxDelay = reconnectOpts?.maxDelayMs ?? 30_000;
  let backoff = initialDelay;
  let reconnectTimer: ReturnType<typeof setTimeout> | undefined;

  const failPending = (err: Error) => {
    for (const [id, p] of pending) {
      clearTimeout(p.timer);
      pending.delete(id);
      p.reject(err);
    }
  };

  raw.on("disconnect", () => {
    failPending(new NotConnectedError("disconnected"));
    if (closing || state === "connecting" || !reconnectOpts) return;
    setState("reconnecting");
    clearTimeout(reconnectTimer);
    // Jitter avoids reconnect storms when many bots lose the same server.
    const delay = Math.round(backoff * (0.75 + Math.random() * 0.5));
    backoff = Math.min(backoff * 2, maxDelay);
    logger.info("reconnecting", { delayMs: delay });
    reconnectTimer = setTimeout(() => {
      if (closing || raw.status !== "disconnect") return;
      raw.reconnect.reconnect().catch((err: Error) =>
        logger.warn("reconnect failed", { error: err.message })
      );
    }, delay);
  });

  const started = Date.now();
  try {
    await withTimeout(raw.start(), options.connectTimeoutMs ?? 15_000, "XMPP login timed out");
  } catch (err) {
    closing = true;
    setState("closed");
    await raw.stop().catch(() => {});
    throw err;
  }
  logger.info("online", { jid: fullJid, ms: Date.now() - started });

  const conn: XmppConnection = {
    get jid() {
      return fullJid;
    },
    bareJid: ownBare,
    get state() {
      return state;
    },
    logger,
    onStateChange(listener) {
      stateListeners.add(listener);
      return () => stateListeners.delete(listener);
    },
    onOnline(hook) {
      onlineHooks.add(hook);
      if (state === "online") {
        void Promise.resolve().then(hook).catch((err) =>
          logger.error("online hook failed", { err: String(err) })
        );
      }
      return () => onlineHooks.delete(hook);
    },
    async send(element) {
      if (state !== "online") throw new NotConnectedError(state);
      await raw.send(element);
    },
    iq(element, { timeoutMs = 10_000 } = {}) {
      if (state !== "online") return Promise.reject(new NotConnectedError(state));
      const id = element.attrs.id ?? crypto.randomUUID();
      element.attrs.id = id;
      return new Promise<Element>((resolve, reject) => {
        const timer = setTimeout(() => {
          pending.delete(id);
          reject(new IqTimeoutError(id, timeoutMs));
        }, timeoutMs);
        pending.set(id, { resolve, reject, timer, to: element.attrs.to });
        raw.send(element).catch((err: Error) => {
          clearTimeout(timer);
          pending.delete(id);
          reject(err);
        });
      });
    },
    handleIq(type, name, ns, handler) {
      const k = key(type, name, ns);
      iqHandlers.set(k, handler);
      return () => {
        if (iqHandlers.get(k) === handler) iqHandlers.delete(k);
      };
    },
    onMessage(ns, handler) {
      let set = messageHandlers.get(ns);
      if (!set) messageHandlers.set(ns, set = new Set());
      set.add(handler);
      return () => set.delete(handler);
    },
    onMessageError(handler) {
      messageErrorHandlers.add(handler);
      return () => messageErrorHandlers.delete(handler);
    },
    onPresence(handler) {
      presenceHandlers.add(handler);
      return () => presenceHandlers.delete(handler);
    },
    dispatchMessage,
    addPresenceExtension(provider) {
      presenceExtensions.add(provider);
      return () => presenceExtensions.delete(provider);
    },
    async sendPresence(p = {}) {
      const extensions = p.type ? [] : [...presenceExtensions].map((f) => f());
      await conn.send(xml(
        "presence",
        { to: p.to, type: p.type },
        p.show ? xml("show", {}, p.show) : null,
        p.status ? xml("status", {}, p.status) : null,
        p.priority !== undefined ? xml("priority", {}, String(p.priority)) : null,
        ...(p.children ?? []),
        ...extensions,
      ));
    },
    async close() {
      if (closing) return;
      closing = true;
      clearTimeout(reconnectTimer);
      failPending(new NotConnectedError("closed"));
      try {
        if (raw.status !== "offline" && raw.status !== "disconnect") await raw.stop();
      } catch (err) {
        logger.debug("close error", { error: String(err) });
      }
      setState("closed");
    },
  };
  return conn;
}

function key(type: string, name: string, ns: string): string {
  return `${type} ${ns} ${name}`;
}

function withTimeout<T>(p: Promise<T>, ms: number, message: string): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  return Promise.race([
    p,
    new Promise<never>((_, reject) => timer = setTimeout(() => reject(new Error(message)), ms)),
  ]).finally(() => clearTimeout(timer));
}

/** Bare JID of a full JID (re-exported convenience). */
export { bare };
