/**
 * 1:1 audio/video calls the way Conversations and Dino place and answer them: XEP-0353 JMI, Jingle RTP over
 * ICE-UDP with DTLS-SRTP (werift), the DTLS fingerprint verified through OMEMO 0.3 (docs/protocol.md §1–§3, §8).
 *
 * @module
 */
import type { Endpoint } from "./endpoint.ts";
import { hasDescription, jingleRouter } from "./jingle_router.ts";
import {
  bare,
  type Element,
  type IqHandler,
  jidEquals,
  type Logger,
  queryDiscoInfo,
  StanzaError,
  xml,
} from "../xmpp/mod.ts";
import {
  buildJingleIq,
  buildJmiMessage,
  candidateFromSdp,
  candidateToSdp,
  contentMapToSdp,
  type Element as JingleElement,
  type IceCandidate,
  type Jingle,
  type JingleAction,
  type JingleContent,
  type JingleReason,
  type JmiAction,
  type JmiMedia,
  mLineIndexOf,
  normalizeFingerprint,
  NS_DTLS,
  NS_GROUPING,
  NS_ICE_UDP,
  NS_JINGLE,
  NS_JINGLE_ERRORS,
  NS_JMI,
  NS_RECEIPTS,
  NS_RTP,
  NS_RTP_AUDIO,
  NS_RTP_VIDEO,
  parseJingle,
  parseJmiElement,
  type ReasonCondition,
  type RtpContentMap,
  sdpToContentMap,
  type SessionInfo,
  tieBreakReject,
} from "../jingle/mod.ts";
import { acceptsAction, type CallDirection, type CallState, CallStateMachine } from "../jingle/session.ts";
import { createPeer, type IceServerConfig, type MediaKind, type Peer } from "../media/webrtc.ts";
import type { TrustState } from "../omemo/mod.ts";

/** How to treat OMEMO verification of the DTLS fingerprint. */
export type VerifyPolicy = "require" | "prefer" | "off";

/** Options for {@link setupCalls}. */
export interface CallsOptions {
  /** `require`: refuse calls whose fingerprint is not OMEMO-verified; `prefer` (default): verify when the peer
   * can; `off`: plain XEP-0320 only (no `<device/>` in proceed, no encryption). */
  verify?: VerifyPolicy;
  /** Decides on an incoming call (default: accept). */
  accept?: (peer: string, media: JmiMedia[]) => boolean | Promise<boolean>;
  /** STUN/TURN servers. Default: what the server announces through XEP-0215 (`urn:xmpp:extdisco:2`), asked
   * before every call; none (host candidates only) when it announces nothing. Never any other server. */
  iceServers?: IceServerConfig[];
  /** Ask the server for STUN/TURN services (XEP-0215) when `iceServers` is not given; default true. */
  externalServices?: boolean;
  logger?: Logger;
  /** Ring timeout (ms) for both directions; default 30 s (Conversations' BUSY_TIME_OUT). */
  ringTimeoutMs?: number;
  /** Time from proceed / accept to a connected, authenticated media path (ms); default 20 s. */
  connectTimeoutMs?: number;
  /** More concurrent calls than this are rejected with `<busy/>`; default unlimited. */
  maxCalls?: number;
}

/** Timestamps (`performance.timeOrigin`-based ms) of the steps of a call. */
export interface CallPhases {
  proposed?: number;
  proceed?: number;
  initiate?: number;
  accept?: number;
  iceConnected?: number;
  dtlsConnected?: number;
  firstRtpSent?: number;
  firstRtpReceived?: number;
  ended?: number;
}

/** How the DTLS fingerprint of the other party was authenticated. */
export interface CallVerification {
  /** The peer's fingerprint came OMEMO-encrypted (and ours went out so). */
  omemo: boolean;
  /** The peer's OMEMO device. */
  deviceId?: number;
  /** Its identity key fingerprint (Conversations/Dino format). */
  identityFingerprint?: string;
  trust?: TrustState;
}

/** One call. */
export interface Call {
  readonly sid: string;
  /** The other party: bare JID until the JMI proceed/propose names the full JID, then the full JID. */
  readonly peerJid: string;
  readonly direction: CallDirection;
  readonly media: JmiMedia[];
  readonly state: CallState;
  readonly verification: CallVerification;
  readonly phases: CallPhases;
  /** The media plane (created when the call is accepted); `sendRtp`/`onRtp`/`stats`. */
  readonly peer: Peer | undefined;
  /** Resolves once the call is active (media authenticated) — rejects if it ends before. */
  readonly connected: Promise<void>;
  /** Resolves when the call ended, with the Jingle reason. */
  readonly ended: Promise<{ reason: ReasonCondition; text?: string }>;
  /** What the other party told through XEP-0167 session-info. */
  readonly remoteInfo: RemoteInfo;
  /** The other party muted (any of) its media (`<mute/>` without unmute). */
  readonly remoteMuted: boolean;
  /** The STUN/TURN servers this call's media plane was given (XEP-0215 or options). */
  readonly iceServers: readonly IceServerConfig[];
  /** Sends a XEP-0167 session-info (`ringing`, `active`, `mute`, …) once a Jingle session exists. */
  sendInfo(info: SessionInfo): Promise<void>;
  /** Subscribe to state changes. */
  onState(cb: (state: CallState) => void): () => void;
  /** Ends the call with the reason fitting the state (success, cancel, decline, retract, reject). */
  hangup(): Promise<void>;
}

/** XEP-0167 session-info received from the other party. */
export interface RemoteInfo {
  ringing: boolean;
  active: boolean;
  held: boolean;
  /** Muted content names (`"*"` = every content, from a `<mute/>` without `name`). */
  muted: string[];
}

/** The call subsystem of one endpoint. */
export interface Calls {
  /**
   * Calls `peerBareJid` (JMI propose to the bare JID); resolves with the call right after the propose went out.
   * With `jmi: false` (as Dino does towards peers without JMI) `peer` must be a full JID and gets a direct
   * session-initiate; the fingerprint is OMEMO-encrypted when the peer has exactly one OMEMO device.
   */
  call(peer: string, options?: { video?: boolean; jmi?: boolean }): Promise<Call>;
  /** Incoming calls (called while ringing, before the accept decision). */
  onIncoming(cb: (call: Call) => void): () => void;
  /** Ends all calls and unregisters the handlers and disco features. */
  stop(): Promise<void>;
  /** Live calls by sid. */
  readonly calls: ReadonlyMap<string, Call>;
}

/** The disco features advertised (only what is implemented). */
export const CALL_FEATURES = [
  NS_JINGLE,
  NS_JMI,
  NS_RTP,
  NS_RTP_AUDIO,
  NS_RTP_VIDEO,
  NS_ICE_UDP,
  NS_DTLS,
  NS_GROUPING,
];

const now = () => performance.timeOrigin + performance.now();

/** XEP-0215 External Service Discovery. */
export const NS_EXTDISCO = "urn:xmpp:extdisco:2";

/** i;octet comparison (RFC 4790) of two strings: by their UTF-8 bytes. */
export function octetCompare(a: string, b: string): number {
  const x = new TextEncoder().encode(a);
  const y = new TextEncoder().encode(b);
  for (let i = 0; i < Math.min(x.length, y.length); i++) if (x[i] !== y[i]) return x[i]! - y[i]!;
  return x.length - y.length;
}

/** XEP-0215 `<services/>` → ICE servers: udp `stun`/`turn` entries only (turn needs username + password). */
export function parseExternalServices(services: Element): IceServerConfig[] {
  const out: IceServerConfig[] = [];
  for (const sv of services.getChildren("service")) {
    const { type, host, transport, username, password } = sv.attrs as Record<string, string | undefined>;
    const port = Number(sv.attrs.port);
    if (type !== "stun" && type !== "turn") continue;
    if (transport !== undefined && transport !== "udp") continue;
    if (!host || !Number.isInteger(port) || port < 1 || port > 65535) continue;
    const h = host.includes(":") ? `[${host}]` : host;
    if (type === "stun") out.push({ urls: `stun:${h}:${port}` });
    else if (username && password) {
      out.push({ urls: `turn:${h}:${port}?transport=udp`, username, credential: password });
    }
  }
  return out;
}

class CallError extends Error {
  constructor(readonly condition: ReasonCondition, message: string) {
    super(message);
  }
}

function iqError(
  condition: string,
  type: "cancel" | "wait" | "modify",
  jingle?: string,
  text?: string,
): StanzaError {
  return new StanzaError(condition, type, {
    ...(text ? { text } : {}),
    ...(jingle ? { application: xml(jingle, { xmlns: NS_JINGLE_ERRORS }) } : {}),
  });
}

const candKey = (c: IceCandidate) => `${c.protocol} ${c.ip} ${c.port} ${c.component}`;

/** Registers the call features and handlers on `endpoint`. */
export async function setupCalls(endpoint: Endpoint, options: CallsOptions = {}): Promise<Calls> {
  const conn = endpoint.conn;
  const log = options.logger ?? conn.logger;
  const verify = options.verify ?? "prefer";
  const ringTimeoutMs = options.ringTimeoutMs ?? 30_000;
  const connectTimeoutMs = options.connectTimeoutMs ?? 20_000;
  const maxCalls = options.maxCalls ?? Infinity;
  const sessions = new Map<string, Session>();
  const publicCalls = new Map<string, Call>();
  const incomingCbs = new Set<(call: Call) => void>();

  const sendJmi = (a: JmiAction, to: string, id?: string, requestReceipt = false) =>
    conn.send(buildJmiMessage(a, { to, ...(id ? { id } : {}), requestReceipt }) as unknown as Element);

  let extdisco: Promise<boolean> | undefined;
  const domain = conn.bareJid.slice(conn.bareJid.indexOf("@") + 1);
  /** STUN/TURN for one call: options, else XEP-0215 from our own server domain (asked per call), else none. */
  async function discoverIceServers(): Promise<IceServerConfig[]> {
    if (options.iceServers) return options.iceServers;
    if (options.externalServices === false) return [];
    extdisco ??= queryDiscoInfo(conn, domain, undefined, 5_000)
      .then((info) => info.features.includes(NS_EXTDISCO))
      .catch((e) => {
        log.debug("server disco#info failed", { error: String(e) });
        return false;
      });
    if (!await extdisco) return [];
    try {
      const res = await conn.iq(
        xml("iq", { type: "get", to: domain }, xml("services", { xmlns: NS_EXTDISCO })),
        {
          timeoutMs: 5_000,
        },
      );
      const services = res.getChild("services", NS_EXTDISCO);
      const found = services ? parseExternalServices(services) : [];
      log.debug("XEP-0215 ICE servers", { servers: found.map((s) => s.urls) });
      return found;
    } catch (e) {
      log.warn("XEP-0215 services request failed", { error: String(e) });
      return [];
    }
  }

  class Session {
    readonly fsm: CallStateMachine;
    readonly phases: CallPhases = {};
    readonly verification: CallVerification = { omemo: false };
    peerJid: string;
    peer?: Peer;
    /** The peer's fingerprint from signalling (decrypted if OMEMO). */
    remoteFingerprint?: string;
    /** Device id from the proceed (caller) / initiate header (callee). */
    omemoDevice?: number;
    /** We sent our fingerprint OMEMO-encrypted (caller: expects a verified accept). */
    sentVerified = false;
    remoteDescriptionSet = false;
    iceChecking = false;
    localCandidatesOpen = false;
    readonly pendingRemote: { content: string; ufrag?: string; candidate: IceCandidate }[] = [];
    readonly pendingLocal: { mid: string; candidate: IceCandidate }[] = [];
    readonly sentLocal = new Set<string>();
    contentMap?: RtpContentMap;
    localUfrag?: string;
    localPwd?: string;
    timer?: ReturnType<typeof setTimeout>;
    readonly remoteInfo: RemoteInfo = { ringing: false, active: false, held: false, muted: [] };
    iceServers: IceServerConfig[] = [];
    /** No JMI: a direct session-initiate (sent or received). */
    direct = false;
    readonly stateCbs = new Set<(s: CallState) => void>();
    readonly endedP: Promise<{ reason: ReasonCondition; text?: string }>;
    readonly connectedP: Promise<void>;
    #resolveEnded!: (r: { reason: ReasonCondition; text?: string }) => void;
    #resolveConnected!: () => void;
    #rejectConnected!: (e: Error) => void;
    readonly call: Call;

    constructor(
      readonly sid: string,
      readonly direction: CallDirection,
      peerJid: string,
      readonly media: JmiMedia[],
    ) {
      this.peerJid = peerJid;
      this.fsm = new CallStateMachine(direction, now);
      this.endedP = new Promise((r) => this.#resolveEnded = r);
      this.connectedP = new Promise((res, rej) => {
        this.#resolveConnected = res;
        this.#rejectConnected = rej;
      });
      this.connectedP.catch(() => {});
      this.fsm.onTransition((t) => {
        log.debug("call state", { sid, from: t.from, to: t.to, why: t.why });
        if (t.to === "active") this.#resolveConnected();
        for (const cb of this.stateCbs) cb(t.to);
      });
      // deno-lint-ignore no-this-alias
      const s = this;
      this.call = {
        sid,
        direction,
        media,
        get peerJid() {
          return s.peerJid;
        },
        get state() {
          return s.fsm.state;
        },
        verification: this.verification,
        phases: this.phases,
        get peer() {
          return s.peer;
        },
        connected: this.connectedP,
        ended: this.endedP,
        remoteInfo: this.remoteInfo,
        get remoteMuted() {
          return s.remoteInfo.muted.length > 0;
        },
        get iceServers() {
          return s.iceServers;
        },
        sendInfo: (info) => this.sendInfo(info),
        onState(cb) {
          s.stateCbs.add(cb);
          return () => s.stateCbs.delete(cb);
        },
        hangup: () => this.hangup(),
      };
    }

    get state() {
      return this.fsm.state;
    }

    move(to: CallState, why: string) {
      this.fsm.transition(to, why);
    }

    /** Ends locally (idempotent): closes media, resolves `ended`. Does not signal. */
    finish(reason: JingleReason) {
      if (this.fsm.ended) return;
      clearTimeout(this.timer);
      this.fsm.transition("ended", reason);
      this.phases.ended = now();
      sessions.delete(this.sid);
      publicCalls.delete(this.sid);
      void this.peer?.close();
      this.#rejectConnected(
        new Error(`call ended: ${reason.condition}${reason.text ? ` (${reason.text})` : ""}`),
      );
      this.#resolveEnded({ reason: reason.condition, ...(reason.text ? { text: reason.text } : {}) });
    }

    /** Sends session-terminate (if a Jingle session can exist) and ends. */
    terminate(condition: ReasonCondition, text?: string) {
      if (this.fsm.ended) return;
      const reason: JingleReason = text ? { condition, text } : { condition };
      const level = condition === "success" || condition === "decline" || condition === "cancel"
        ? "info"
        : "warn";
      log[level]("call terminated by us", { sid: this.sid, peer: this.peerJid, reason: condition, text });
      const st = this.state;
      if ((st === "proposed" || st === "ringing") && !this.direct) {
        // No Jingle session yet: JMI retract (caller) / reject (callee).
        const a: JmiAction = this.direction === "outgoing"
          ? { action: "retract", id: this.sid, reason }
          : { action: "reject", id: this.sid, reason };
        void sendJmi(a, this.direction === "outgoing" ? bare(this.peerJid) : this.peerJid).catch(() => {});
      } else {
        const j: Jingle = { action: "session-terminate", sid: this.sid, contents: [], groups: [], reason };
        const to = this.peerJid;
        void conn.iq(buildJingleIq(j, { to, id: crypto.randomUUID() }) as unknown as Element)
          .catch((e) => log.debug("session-terminate not acknowledged", { sid: this.sid, error: String(e) }));
        // XEP-0353 v0.4+: <finish/> to the other party's full JID after a normal end (harmless for clients that
        // ignore it; sent after the IQ so it arrives after the session-terminate).
        if (condition === "success" && !this.direct) {
          void sendJmi({ action: "finish", id: this.sid, reason: { condition: "success" } }, to).catch(
            () => {},
          );
        }
      }
      this.finish(reason);
    }

    async sendInfo(info: SessionInfo) {
      const st = this.state;
      if (st === "proposed" || st === "ringing" || st === "ended") {
        throw new Error(`no Jingle session in state ${st}`);
      }
      const j: Jingle = { action: "session-info", sid: this.sid, contents: [], groups: [], info };
      await conn.iq(buildJingleIq(j, { to: this.peerJid, id: crypto.randomUUID() }) as unknown as Element);
    }

    /** A received session-info payload. */
    onInfo(info: SessionInfo) {
      const r = this.remoteInfo;
      switch (info.type) {
        case "ringing":
          r.ringing = true;
          break;
        case "active":
          r.active = true;
          r.held = false;
          break;
        case "hold":
          r.held = true;
          break;
        case "unhold":
          r.held = false;
          break;
        case "mute": {
          const name = info.name ?? "*";
          if (!r.muted.includes(name)) r.muted.push(name);
          break;
        }
        case "unmute":
          if (info.name === undefined) r.muted.length = 0;
          else r.muted.splice(0, r.muted.length, ...r.muted.filter((n) => n !== info.name && n !== "*"));
          break;
      }
      log.info("session-info from peer", { sid: this.sid, info: info.type, ...info });
    }

    fail(err: unknown) {
      if (this.fsm.ended) return;
      const condition = err instanceof CallError ? err.condition : "failed-application";
      log.warn("call failed", { sid: this.sid, peer: this.peerJid, reason: condition, error: String(err) });
      this.terminate(condition, err instanceof Error ? err.message : String(err));
    }

    hangup(): Promise<void> {
      const st = this.state;
      if (st === "ended") return Promise.resolve();
      if (st === "accepted" || st === "active") this.terminate("success");
      else if (this.direction === "outgoing") this.terminate("cancel");
      else this.terminate("decline");
      return Promise.resolve();
    }

    #media?: Promise<Peer>;
    /** The media plane, created once (memoized: proceed / initiate may race its creation). */
    ensureMedia(): Promise<Peer> {
      this.#media ??= this.createMedia();
      return this.#media;
    }
    /** Caller: the offer, created while it rings. */
    offer?: Promise<string>;

    private async createMedia(): Promise<Peer> {
      this.iceServers = await discoverIceServers();
      if (this.fsm.ended) throw new CallError("cancel", "call ended while discovering ICE servers");
      const peer = await createPeer({
        role: this.direction === "outgoing" ? "initiator" : "responder",
        audio: this.media.includes("audio"),
        video: this.media.includes("video"),
        iceServers: this.iceServers,
        logger: (level, msg, fields) =>
          (log as unknown as Record<string, (m: string, f?: unknown) => void>)[level]?.(`media: ${msg}`, {
            sid: this.sid,
            ...fields as object,
          }),
      });
      if (this.fsm.ended) {
        await peer.close();
        throw new CallError("cancel", "call ended while creating media");
      }
      const origSend = peer.sendRtp.bind(peer);
      this.peer = {
        ...peer,
        sendRtp: async (kind: MediaKind, packet: Uint8Array) => {
          const ok = await origSend(kind, packet);
          if (ok && this.phases.firstRtpSent === undefined) this.phases.firstRtpSent = now();
          return ok;
        },
      };
      peer.onRtp(() => {
        if (this.phases.firstRtpReceived === undefined) this.phases.firstRtpReceived = now();
      });
      peer.onStateChange((s) => {
        log.debug("media state", {
          sid: this.sid,
          ice: s.ice,
          dtls: s.dtls,
          t: now() - (this.phases.proposed ?? 0),
        });
        // werift reports ice "connected" once before any check ran: only count it after "checking".
        if (s.ice === "checking") this.iceChecking = true;
        if (s.ice === "connected" && this.iceChecking && this.phases.iceConnected === undefined) {
          this.phases.iceConnected = now();
        }
        if (s.dtls === "connected" && this.phases.dtlsConnected === undefined) {
          this.phases.dtlsConnected = now();
        }
        if ((s.ice === "failed" || s.dtls === "failed") && !this.fsm.ended) {
          this.fail(
            new CallError(
              s.dtls === "failed" ? "security-error" : "failed-transport",
              `media ${s.dtls === "failed" ? "DTLS" : "ICE"} failed: ${s.reason ?? ""}`,
            ),
          );
        }
      });
      peer.onLocalCandidate((c) => {
        if (!c || this.fsm.ended) return;
        const parsed = candidateFromSdp(c.candidate);
        if (!parsed) return;
        const mid = c.sdpMid ?? this.contentMap?.contents[0]?.name ?? "0";
        this.pendingLocal.push({ mid, candidate: parsed.candidate });
        if (this.localCandidatesOpen) this.flushLocal();
      });
      return this.peer;
    }

    /** Trickles queued local candidates (one transport-info each, like Conversations). */
    flushLocal() {
      const map = this.contentMap;
      if (!map) return;
      while (this.pendingLocal.length) {
        const { mid, candidate } = this.pendingLocal.shift()!;
        const key = candKey(candidate);
        if (this.sentLocal.has(key)) continue;
        this.sentLocal.add(key);
        const content = map.contents.find((c) => c.name === mid) ?? map.contents[0]!;
        const j: Jingle = {
          action: "transport-info",
          sid: this.sid,
          contents: [{
            creator: "initiator",
            name: content.name,
            ...(content.senders ? { senders: content.senders } : {}),
            transport: {
              kind: "ice-udp",
              ...(this.localUfrag ? { ufrag: this.localUfrag } : {}),
              ...(this.localPwd ? { pwd: this.localPwd } : {}),
              candidates: [candidate],
            },
          }],
          groups: [],
        };
        void conn.iq(buildJingleIq(j, { to: this.peerJid, id: crypto.randomUUID() }) as unknown as Element)
          .catch((e) => log.debug("transport-info failed", { sid: this.sid, error: String(e) }));
      }
    }

    async addRemote(content: string, candidate: IceCandidate, ufrag?: string) {
      if (!this.remoteDescriptionSet || !this.peer) {
        this.pendingRemote.push({ content, candidate, ...(ufrag ? { ufrag } : {}) });
        return;
      }
      const map = this.contentMap!;
      let idx = 0;
      try {
        idx = mLineIndexOf(map, content);
      } catch {
        idx = 0;
      }
      await this.peer.addRemoteCandidate({
        candidate: candidateToSdp(candidate, ufrag),
        sdpMid: content,
        sdpMLineIndex: idx,
      }).catch((e) => log.debug("remote candidate refused", { sid: this.sid, error: String(e) }));
    }

    async flushRemote() {
      this.remoteDescriptionSet = true;
      const q = this.pendingRemote.splice(0);
      for (const r of q) await this.addRemote(r.content, r.candidate, r.ufrag);
    }

    /** Local SDP → content map; records ufrag/pwd; merges already gathered candidates; marks them sent. */
    localMap(sdp: string, author: "initiator" | "responder"): RtpContentMap {
      const map = sdpToContentMap(sdp, { author, creator: "initiator" });
      const first = map.contents[0]?.transport;
      if (first?.kind === "ice-udp") {
        this.localUfrag = first.ufrag;
        this.localPwd = first.pwd;
      }
      // Include the candidates gathered so far (Conversations pitfall: candidates in session-accept).
      for (const c of map.contents) {
        if (c.transport?.kind !== "ice-udp") continue;
        for (const cand of c.transport.candidates) this.sentLocal.add(candKey(cand));
      }
      const lead = map.contents[0];
      if (lead?.transport?.kind === "ice-udp") {
        for (const p of this.pendingLocal.splice(0)) {
          const key = candKey(p.candidate);
          if (this.sentLocal.has(key)) continue;
          this.sentLocal.add(key);
          const target = map.contents.find((c) => c.name === p.mid) ?? lead;
          if (target.transport?.kind === "ice-udp") target.transport.candidates.push(p.candidate);
        }
      }
      return map;
    }

    /** Replaces our plain fingerprints by OMEMO-encrypted ones for `deviceId`. */
    async encryptFingerprints(contents: JingleContent[], deviceId: number): Promise<JingleContent[]> {
      const peerBare = bare(this.peerJid);
      const out: JingleContent[] = [];
      for (const c of contents) {
        const t = c.transport;
        if (t?.kind !== "ice-udp" || t.fingerprint?.kind !== "plain") {
          out.push(c);
          continue;
        }
        const fp = t.fingerprint;
        const enc = await endpoint.omemo.encrypt([peerBare], normalizeFingerprint(fp.value), {
          devices: [{ jid: peerBare, deviceId }],
        });
        if (enc.devices.length !== 1) {
          throw new CallError(
            "security-error",
            `cannot encrypt fingerprint to ${peerBare}/${deviceId}: ${
              enc.skipped.map((s) => s.reason).join(", ") || "no session"
            }`,
          );
        }
        out.push({
          ...c,
          transport: {
            ...t,
            fingerprint: {
              kind: "omemo",
              hash: fp.hash,
              setup: fp.setup,
              encrypted: enc.element as unknown as JingleElement,
            },
          },
        });
      }
      return out;
    }

    /**
     * Decrypts OMEMO fingerprints (every content must agree on kind, device and value) and applies the policy.
     * Returns contents with plain fingerprints for the SDP.
     */
    async readFingerprints(contents: JingleContent[], requireVerified: boolean): Promise<JingleContent[]> {
      const kinds = new Set(
        contents.map((c) => c.transport?.kind === "ice-udp" ? c.transport.fingerprint?.kind : "none"),
      );
      if (kinds.has(undefined) || kinds.has("none")) {
        throw new CallError("security-error", "DTLS fingerprint missing");
      }
      if (kinds.size > 1) {
        throw new CallError("security-error", "mix of OMEMO-verified and plain fingerprints");
      }
      const out: JingleContent[] = [];
      if (kinds.has("plain")) {
        if (requireVerified) {
          throw new CallError("security-error", "DTLS fingerprint was unexpectedly not verifiable");
        }
        for (const c of contents) {
          const fp = c.transport?.kind === "ice-udp" && c.transport.fingerprint?.kind === "plain"
            ? c.transport.fingerprint.value
            : undefined;
          if (this.remoteFingerprint && fp && this.remoteFingerprint !== normalizeFingerprint(fp)) {
            throw new CallError("security-error", "contents carry different fingerprints");
          }
          this.remoteFingerprint = fp ? normalizeFingerprint(fp) : undefined;
          out.push(c);
        }
        return out;
      }
      const peerBare = bare(this.peerJid);
      for (const c of contents) {
        const t = c.transport;
        if (t?.kind !== "ice-udp" || t.fingerprint?.kind !== "omemo") throw new Error("unreachable");
        const fp = t.fingerprint;
        let value: string;
        try {
          const r = await endpoint.omemo.decrypt(peerBare, fp.encrypted as unknown as Element);
          if (r.plaintext === null) throw new Error("OMEMO fingerprint without payload");
          value = normalizeFingerprint(r.plaintext);
          if (this.verification.deviceId !== undefined && this.verification.deviceId !== r.senderDeviceId) {
            throw new Error(
              `fingerprints from different devices ${this.verification.deviceId}/${r.senderDeviceId}`,
            );
          }
          if (
            this.direction === "outgoing" && this.omemoDevice !== undefined &&
            r.senderDeviceId !== this.omemoDevice
          ) {
            throw new Error(`fingerprint from device ${r.senderDeviceId}, proceed named ${this.omemoDevice}`);
          }
          this.verification.deviceId = r.senderDeviceId;
          this.verification.identityFingerprint = r.identityFingerprint;
          this.verification.trust = r.trust;
        } catch (e) {
          throw new CallError("security-error", `cannot decrypt OMEMO fingerprint: ${(e as Error).message}`);
        }
        if (this.remoteFingerprint && this.remoteFingerprint !== value) {
          throw new CallError("security-error", "contents carry different fingerprints");
        }
        this.remoteFingerprint = value;
        out.push({
          ...c,
          transport: { ...t, fingerprint: { kind: "plain", hash: fp.hash, setup: fp.setup, value } },
        });
      }
      this.omemoDevice = this.verification.deviceId;
      this.verification.omemo = true;
      return out;
    }

    /** Waits for ICE+DTLS, then checks the certificate against the signalled fingerprint. */
    async awaitMedia() {
      const peer = this.peer!;
      try {
        await peer.waitConnected(connectTimeoutMs);
      } catch (e) {
        throw new CallError("failed-transport", `media did not connect: ${(e as Error).message}`);
      }
      if (this.fsm.ended) return;
      this.phases.iceConnected ??= now();
      this.phases.dtlsConnected ??= now();
      const got = peer.remoteCertificateFingerprint();
      if (!got || !this.remoteFingerprint || normalizeFingerprint(got) !== this.remoteFingerprint) {
        throw new CallError(
          "security-error",
          `DTLS certificate ${
            got ?? "(none)"
          } does not match the signalled fingerprint ${this.remoteFingerprint}`,
        );
      }
      if (!this.verification.omemo) this.verification.omemo = false;
      this.move("active", "dtls authenticated");
      log.info("call active", {
        sid: this.sid,
        peer: this.peerJid,
        omemo: this.verification.omemo,
        setupMs: Math.round(now() - (this.phases.proposed ?? this.phases.proceed ?? now())),
      });
    }

    // ---- caller ----

    async onProceed(from: string, deviceId: number | undefined) {
      this.peerJid = from;
      this.phases.proceed = now();
      clearTimeout(this.timer);
      this.move("proceeding", "proceed");
      this.timer = setTimeout(
        () => this.fail(new CallError("timeout", "no session-accept in time")),
        ringTimeoutMs,
      );
      const offer = await (this.offer ?? (await this.ensureMedia()).createOffer());
      if (this.fsm.ended) return;
      const map = this.localMap(offer, "initiator");
      this.contentMap = map;
      let contents = map.contents;
      if (verify !== "off" && deviceId !== undefined) {
        this.omemoDevice = deviceId;
        try {
          contents = await this.encryptFingerprints(contents, deviceId);
          this.sentVerified = true;
        } catch (e) {
          if (verify === "require") throw e;
          log.warn("falling back to plain DTLS fingerprint", { sid: this.sid, error: String(e) });
          contents = map.contents;
        }
      } else if (verify === "require") {
        throw new CallError("security-error", "peer offered no OMEMO device for fingerprint verification");
      }
      if (this.fsm.ended) return;
      const j: Jingle = {
        action: "session-initiate",
        sid: this.sid,
        initiator: conn.jid,
        contents,
        groups: map.groups,
      };
      this.move("initiated", "session-initiate");
      this.phases.initiate = now();
      await conn.iq(buildJingleIq(j, { to: this.peerJid, id: crypto.randomUUID() }) as unknown as Element);
      if (this.fsm.ended) return;
      this.localCandidatesOpen = true;
      this.flushLocal();
    }

    async onSessionAccept(j: Jingle) {
      this.phases.accept = now();
      clearTimeout(this.timer);
      const contents = await this.readFingerprints(j.contents, this.sentVerified || verify === "require");
      const sdp = contentMapToSdp(
        { contents, groups: j.groups.length ? j.groups : this.contentMap!.groups },
        {
          author: "responder",
        },
      );
      await this.peer!.setRemoteDescription("answer", sdp);
      await this.flushRemote();
      await this.awaitMedia();
    }

    // ---- callee ----

    /** Runs the accept callback (never throws). */
    async askAccept(): Promise<boolean> {
      try {
        return await (options.accept ?? (() => true))(bare(this.peerJid), this.media);
      } catch (e) {
        log.warn("accept callback failed", { sid: this.sid, error: String(e) });
        return false;
      }
    }

    /** Callee of a direct session-initiate (no JMI): ring (session-info), decide, then accept or decline. */
    async decideDirect(j: Jingle) {
      const ringing: Jingle = {
        action: "session-info",
        sid: this.sid,
        contents: [],
        groups: [],
        info: { type: "ringing" },
      };
      void conn.iq(
        buildJingleIq(ringing, { to: this.peerJid, id: crypto.randomUUID() }) as unknown as Element,
      )
        .catch((e) => log.debug("session-info ringing failed", { sid: this.sid, error: String(e) }));
      const ok = await this.askAccept();
      if (this.fsm.ended) return;
      if (!ok) return this.terminate("decline");
      this.phases.proceed = now();
      this.move("proceeding", "accepted locally (direct session-initiate)");
      this.move("initiated", "session-initiate received");
      await this.onSessionInitiate(j);
    }

    async decide(auto = false) {
      let ok: boolean;
      try {
        ok = auto || await (options.accept ?? (() => true))(bare(this.peerJid), this.media);
      } catch (e) {
        log.warn("accept callback failed", { sid: this.sid, error: String(e) });
        ok = false;
      }
      if (this.fsm.ended) return;
      if (!ok) return this.terminate("decline");
      clearTimeout(this.timer);
      this.move("proceeding", "accepted locally");
      this.phases.proceed = now();
      this.timer = setTimeout(
        () => this.fail(new CallError("timeout", "no session-initiate after proceed")),
        ringTimeoutMs,
      );
      const createMedia = this.ensureMedia();
      await sendJmi({ action: "accept", id: this.sid }, conn.bareJid);
      await sendJmi(
        { action: "proceed", id: this.sid, ...(verify !== "off" ? { deviceId: endpoint.deviceId } : {}) },
        this.peerJid,
        `jm-proceed-${this.sid}`,
      );
      await createMedia;
    }

    async onSessionInitiate(j: Jingle) {
      this.phases.initiate = now();
      clearTimeout(this.timer);
      for (const c of j.contents) {
        const t = c.transport;
        if (t?.kind === "ice-udp" && t.fingerprint && t.fingerprint.setup !== "actpass") {
          throw new CallError("security-error", `initiator offered setup='${t.fingerprint.setup}'`);
        }
      }
      const contents = await this.readFingerprints(j.contents, verify === "require");
      const offerMap: RtpContentMap = { contents, groups: j.groups };
      this.contentMap = offerMap;
      const peer = await this.ensureMedia();
      await peer.setRemoteDescription("offer", contentMapToSdp(offerMap, { author: "initiator" }));
      await this.flushRemote();
      const answer = await peer.createAnswer();
      if (this.fsm.ended) return;
      const map = this.localMap(answer, "responder");
      let out = map.contents;
      if (this.verification.omemo && this.verification.deviceId !== undefined) {
        out = await this.encryptFingerprints(out, this.verification.deviceId);
        this.sentVerified = true;
      }
      if (this.fsm.ended) return;
      const accept: Jingle = {
        action: "session-accept",
        sid: this.sid,
        responder: conn.jid,
        contents: out,
        groups: map.groups,
      };
      this.move("accepted", "session-accept");
      this.phases.accept = now();
      const media = this.awaitMedia();
      media.catch(() => {});
      await conn.iq(
        buildJingleIq(accept, { to: this.peerJid, id: crypto.randomUUID() }) as unknown as Element,
      );
      if (this.fsm.ended) return;
      this.localCandidatesOpen = true;
      this.flushLocal();
      await media;
    }
  }

  /* ---------------- JMI ---------------- */

  const stopJmi = conn.onMessage(NS_JMI, async (payload, ctx) => {
    if (ctx.stanza.attrs.type === "groupchat" || ctx.stanza.attrs.type === "error") return;
    let a: JmiAction;
    try {
      a = parseJmiElement(payload as unknown as JingleElement);
    } catch (e) {
      log.warn("malformed JMI message", { from: ctx.from, error: String(e) });
      return;
    }
    const from = ctx.from;
    const s = sessions.get(a.id);
    if (jidEquals(bare(from), conn.bareJid)) {
      // Our own accept echoed to our bare JID, or another resource of ours (its accept to our bare JID, the carbon
      // of its proceed/reject to the caller): that device answered the call ringing here.
      if (jidEquals(from, conn.jid)) return;
      if (
        (a.action === "accept" || a.action === "proceed" || a.action === "reject") &&
        s?.direction === "incoming" && s.state === "ringing" && !s.direct
      ) {
        log.info("call answered elsewhere", { sid: a.id, by: from, action: a.action });
        s.finish({ condition: a.action === "reject" ? "decline" : "cancel", text: "answered elsewhere" });
      }
      return;
    }
    if (ctx.carbon) return; // copies of other parties' JMI to our other resources are not ours to act on
    switch (a.action) {
      case "propose": {
        if (s) return;
        // Everything up to registering the session runs synchronously: a JMI message that follows this propose
        // (proceed, retract, tie-break reject) must find the state this propose leaves behind.
        if (ctx.stanza.getChild("request", NS_RECEIPTS) && ctx.stanza.attrs.id) {
          void conn.send(xml(
            "message",
            { to: from, id: crypto.randomUUID() },
            xml("received", {
              xmlns: NS_RECEIPTS,
              id: ctx.stanza.attrs.id,
            }),
          )).catch(() => {});
        }
        // Glare (XEP-0353 v0.8 tie-break, as Conversations): both proposed to each other; the lower sid (i;octet)
        // wins. The loser's propose is rejected with a tie-break reason; the holder of the higher sid retracts it
        // likewise and answers the winning propose without asking.
        let auto = false;
        const mine = [...sessions.values()].find((o) =>
          o.direction === "outgoing" && !o.direct && (o.state === "proposed" || o.state === "ringing") &&
          jidEquals(bare(o.peerJid), bare(from))
        );
        if (mine) {
          if (octetCompare(mine.sid, a.id) < 0) {
            log.info("call glare: our propose wins the tie-break", { ours: mine.sid, theirs: a.id, from });
            void sendJmi(tieBreakReject(a.id), from).catch(() => {});
            return;
          }
          log.info("call glare: their propose wins the tie-break; retracting ours", {
            ours: mine.sid,
            theirs: a.id,
            from,
          });
          const tb = tieBreakReject(mine.sid) as Extract<JmiAction, { action: "reject" }>;
          void sendJmi({ ...tb, action: "retract" }, bare(mine.peerJid)).catch(() => {});
          mine.finish({ condition: "expired", text: "Tie-Break" });
          auto = true;
        }
        if (sessions.size >= maxCalls) {
          log.warn("call rejected: busy", { sid: a.id, from });
          void sendJmi({ action: "reject", id: a.id, reason: { condition: "busy" } }, from).catch(() => {});
          return;
        }
        const session = new Session(a.id, "incoming", from, a.media);
        session.phases.proposed = now();
        sessions.set(a.id, session);
        publicCalls.set(a.id, session.call);
        session.timer = setTimeout(() => session.terminate("timeout", "not answered in time"), ringTimeoutMs);
        await sendJmi({ action: "ringing", id: a.id }, from);
        for (const cb of incomingCbs) {
          try {
            cb(session.call);
          } catch (e) {
            log.error("incoming call callback failed", { error: String(e) });
          }
        }
        session.decide(auto).catch((e) => session.fail(e));
        return;
      }
      case "ringing":
        if (s?.direction === "outgoing" && s.state === "proposed" && jidEquals(bare(from), bare(s.peerJid))) {
          s.move("ringing", "peer ringing");
        }
        return;
      case "proceed":
        if (!s || s.direction !== "outgoing" || !jidEquals(bare(from), bare(s.peerJid))) {
          log.debug("ignoring proceed", { sid: a.id, from });
          return;
        }
        if (s.state !== "proposed" && s.state !== "ringing") {
          log.debug("ignoring proceed in state", { sid: a.id, from, state: s.state });
          return;
        }
        s.onProceed(from, a.deviceId).catch((e) => s.fail(e));
        return;
      case "reject":
        if (s?.direction === "outgoing" && jidEquals(bare(from), bare(s.peerJid)) && !s.fsm.ended) {
          log.info("call rejected by peer", { sid: a.id, from, reason: a.reason?.condition ?? "decline" });
          s.finish(a.reason ?? { condition: "decline" });
        }
        return;
      case "retract":
        if (s?.direction === "incoming" && jidEquals(bare(from), bare(s.peerJid)) && !s.fsm.ended) {
          log.info("call retracted by peer", { sid: a.id, from });
          s.finish(a.reason ?? { condition: "cancel" });
        }
        return;
      case "finish":
        if (s && jidEquals(bare(from), bare(s.peerJid)) && !s.fsm.ended) {
          log.info("call finished by peer (JMI finish)", { sid: a.id, reason: a.reason?.condition });
          s.finish(a.reason ?? { condition: "success" });
        } else log.debug("JMI finish for an ended call", { sid: a.id, from, reason: a.reason?.condition });
        return;
      default:
        return;
    }
  });

  /* ---------------- Jingle ---------------- */

  const handleJingle: IqHandler = (payload, ctx) => {
    let j: Jingle;
    try {
      j = parseJingle(payload as unknown as JingleElement);
    } catch (e) {
      log.warn("malformed jingle", { from: ctx.from, error: String(e) });
      throw iqError("bad-request", "modify", undefined, (e as Error).message);
    }
    const s = sessions.get(j.sid);
    if (!s && j.action === "session-initiate") return directInitiate(j, ctx.from);
    const earlyDirect = s?.direct && s.state === "ringing" &&
      (j.action === "transport-info" || j.action === "session-terminate");
    if (
      !s || !jidEquals(ctx.from, s.peerJid) ||
      ((s.state === "proposed" || s.state === "ringing") && !earlyDirect)
    ) {
      log.warn("jingle for unknown session", {
        sid: j.sid,
        action: j.action,
        from: ctx.from,
        reason: s ? "wrong sender" : "unknown sid",
      });
      throw iqError("item-not-found", "cancel", "unknown-session");
    }
    if (!earlyDirect && !acceptsAction(s.direction, s.state, j.action as JingleAction)) {
      if (
        j.action === "content-add" || j.action === "content-modify" || j.action === "description-info" ||
        j.action === "security-info" || j.action === "transport-replace"
      ) {
        log.warn("unsupported jingle action", { sid: j.sid, action: j.action });
        throw iqError("feature-not-implemented", "cancel");
      }
      log.warn("jingle action out of order", { sid: j.sid, action: j.action, state: s.state });
      throw iqError("unexpected-request", "wait", "out-of-order");
    }
    switch (j.action) {
      case "session-initiate":
        s.move("initiated", "session-initiate received");
        s.onSessionInitiate(j).catch((e) => s.fail(e));
        break;
      case "session-accept":
        s.move("accepted", "session-accept received");
        s.onSessionAccept(j).catch((e) => s.fail(e));
        break;
      case "transport-info":
        for (const c of j.contents) {
          if (c.transport?.kind !== "ice-udp") continue;
          for (const cand of c.transport.candidates) void s.addRemote(c.name, cand, c.transport.ufrag);
        }
        break;
      case "session-terminate": {
        const r = j.reason ?? { condition: "success" as const };
        const level = r.condition === "success" || r.condition === "decline" || r.condition === "cancel"
          ? "info"
          : "warn";
        log[level]("call terminated by peer", { sid: j.sid, reason: r.condition, text: r.text });
        s.finish(r);
        break;
      }
      case "session-info":
        if (j.infoUnknown) {
          log.debug("unsupported session-info", { sid: j.sid, payload: j.infoUnknown.name });
          throw iqError("feature-not-implemented", "modify", "unsupported-info");
        }
        if (j.info) s.onInfo(j.info);
        break;
    }
    return null;
  };
  const stopIq = jingleRouter(conn, log).register({
    name: "calls",
    owns: (sid) => sessions.has(sid),
    takesInitiate: (jingle) => hasDescription(jingle, NS_RTP),
    handle: handleJingle,
  });

  /** A session-initiate without JMI (Dino towards peers without JMI): acknowledged, then accepted or declined. */
  function directInitiate(j: Jingle, from: string): null {
    const media: JmiMedia[] = [];
    for (const c of j.contents) {
      const m = c.description?.kind === "rtp" ? c.description.media : undefined;
      if ((m === "audio" || m === "video") && !media.includes(m)) media.push(m);
    }
    if (media.length === 0 || media.length !== j.contents.length) {
      log.warn("direct session-initiate with unsupported contents", { sid: j.sid, from });
      throw iqError("feature-not-implemented", "cancel");
    }
    const session = new Session(j.sid, "incoming", from, media);
    session.direct = true;
    session.phases.proposed = now();
    if (sessions.size >= maxCalls) {
      log.warn("direct call rejected: busy", { sid: j.sid, from });
      setTimeout(() => session.terminate("busy"), 0);
      return null;
    }
    sessions.set(j.sid, session);
    publicCalls.set(j.sid, session.call);
    log.info("direct session-initiate (no JMI)", { sid: j.sid, from, media });
    session.timer = setTimeout(() => session.terminate("timeout", "not answered in time"), ringTimeoutMs);
    for (const cb of incomingCbs) {
      try {
        cb(session.call);
      } catch (e) {
        log.error("incoming call callback failed", { error: String(e) });
      }
    }
    // After the IQ result went out.
    setTimeout(() => session.decideDirect(j).catch((e) => session.fail(e)), 0);
    return null;
  }

  async function directCall(peerFullJid: string, video: boolean): Promise<Call> {
    if (peerFullJid === bare(peerFullJid)) throw new Error("a call without JMI needs the peer's full JID");
    const sid = crypto.randomUUID();
    const media: JmiMedia[] = video ? ["audio", "video"] : ["audio"];
    const s = new Session(sid, "outgoing", peerFullJid, media);
    s.direct = true;
    sessions.set(sid, s);
    publicCalls.set(sid, s.call);
    s.phases.proposed = now();
    let deviceId: number | undefined;
    if (verify !== "off") {
      const devices = await endpoint.omemo.getDevices(bare(peerFullJid)).catch(() => [] as number[]);
      if (devices.length === 1) deviceId = devices[0];
      else log.info("direct call: peer has no single OMEMO device", { sid, devices: devices.length });
    }
    s.onProceed(peerFullJid, deviceId).catch((e) => s.fail(e));
    return s.call;
  }

  await endpoint.disco.addFeatures(...CALL_FEATURES);
  await conn.sendPresence().catch((e) => log.debug("presence after features failed", { error: String(e) }));

  return {
    calls: publicCalls,
    async call(peerJid, { video = false, jmi = true } = {}) {
      if (!jmi) return await directCall(peerJid, video);
      const to = bare(peerJid);
      const sid = crypto.randomUUID();
      const media: JmiMedia[] = video ? ["audio", "video"] : ["audio"];
      const s = new Session(sid, "outgoing", to, media);
      sessions.set(sid, s);
      publicCalls.set(sid, s.call);
      s.phases.proposed = now();
      s.timer = setTimeout(() => s.terminate("timeout", "not answered in time"), ringTimeoutMs);
      // Prepare the media plane while it rings.
      const media0 = s.ensureMedia().then((peer) => {
        const offer = peer.createOffer();
        offer.catch(() => {});
        s.offer = offer;
      }).catch((e) => s.fail(e));
      try {
        await sendJmi({ action: "propose", id: sid, media }, to, `jm-propose-${sid}`, true);
      } catch (e) {
        s.fail(e);
      }
      await media0;
      return s.call;
    },
    onIncoming(cb) {
      incomingCbs.add(cb);
      return () => incomingCbs.delete(cb);
    },
    async stop() {
      for (const s of [...sessions.values()]) await s.hangup();
      stopJmi();
      stopIq();
      await endpoint.disco.removeFeatures(...CALL_FEATURES).catch(() => {});
    },
  };
}
