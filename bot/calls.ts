/**
 * 1:1 audio/video calls the way Conversations and Dino place and answer them: XEP-0353 JMI, Jingle RTP over
 * ICE-UDP with DTLS-SRTP (werift), the DTLS fingerprint verified through OMEMO 0.3 (docs/protocol.md §1–§3, §8).
 *
 * Also: the media-set checks (a session-initiate after JMI carries exactly the proposed media, a session-accept
 * exactly the initiated contents, else `security-error`), the XEP-0353 existing-session rule (a new propose from a
 * party with a running call migrates it: `<finish><expired/><migrated to/></finish>`), and the video upgrade:
 * content-add / content-accept / content-reject renegotiated on werift, both ways (BUNDLE STUB transport as
 * Conversations; a content with its own ICE-UDP transport in Dino's unbundled sessions), simultaneous content-adds
 * settled by the XEP-0166 tie-break (the initiator's wins).
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
  emptyRtpDescription,
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
  trickleTransportInfo,
} from "../jingle/mod.ts";
import { acceptsAction, type CallDirection, type CallState, CallStateMachine } from "../jingle/session.ts";
import {
  createPeer,
  type IceServerConfig,
  localDtlsFingerprint,
  type MediaKind,
  type Peer,
} from "../media/webrtc.ts";
import { unsupportedCodecs } from "../media/codecs.ts";
import { decodeEncrypted, type TrustState } from "../omemo/mod.ts";

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
  /** Where call events go; passwords and keys are never logged. */
  logger?: Logger;
  /** Ring timeout (ms) for both directions; default 30 s (Conversations' BUSY_TIME_OUT). */
  ringTimeoutMs?: number;
  /** Time from proceed / accept to a connected, authenticated media path (ms); default 20 s. */
  connectTimeoutMs?: number;
  /** More concurrent calls than this are rejected with `<busy/>`; default unlimited. */
  maxCalls?: number;
  /** Accept a peer's content-add that adds video to an audio-only call (default true); every other
   * content-add is answered with content-reject. */
  acceptVideoUpgrade?: boolean;
  /** Our offers BUNDLE every content on one ICE transport (default true, as Conversations); `false`: one ICE
   * transport per content, as Dino offers. As callee the peer's offer decides. */
  bundle?: boolean;
}

/** Timestamps (`performance.timeOrigin`-based ms) of the steps of a call. */
export interface CallPhases {
  /** JMI propose sent or received. */
  proposed?: number;
  /** JMI proceed sent or received. */
  proceed?: number;
  /** Jingle session-initiate sent or received. */
  initiate?: number;
  /** Jingle session-accept sent or received. */
  accept?: number;
  /** ICE found a working candidate pair. */
  iceConnected?: number;
  /** DTLS handshake done and the peer's certificate and transcript verified. */
  dtlsConnected?: number;
  /** First RTP packet sent. */
  firstRtpSent?: number;
  /** First authenticated RTP packet received. */
  firstRtpReceived?: number;
  /** The call ended (any reason). */
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
  /** The trust our store gives that device when the call was verified. */
  trust?: TrustState;
}

/** One call. */
export interface Call {
  /** The Jingle session id (= the JMI id). */
  readonly sid: string;
  /** The other party: bare JID until the JMI proceed/propose names the full JID, then the full JID. */
  readonly peerJid: string;
  /** `outgoing` when we called, `incoming` when we answer. */
  readonly direction: CallDirection;
  /** The media of the call (`audio`, `video`); grows when video is added mid-call. */
  readonly media: JmiMedia[];
  /** Where the call's state machine is. */
  readonly state: CallState;
  /** How the peer's DTLS fingerprint was authenticated. */
  readonly verification: CallVerification;
  /** When each setup step happened. */
  readonly phases: CallPhases;
  /** The media plane (created when the call is accepted); `sendRtp`/`onRtp`/`stats`. */
  readonly peer: Peer | undefined;
  /** Resolves once the call is active (media authenticated) — rejects if it ends before. */
  readonly connected: Promise<void>;
  /** Resolves when the call ended, with the Jingle reason (`migratedTo`: the JMI `<finish/>` named the session
   * that replaces this one, XEP-0353 `<migrated/>`). */
  readonly ended: Promise<CallEnd>;
  /** What the other party told through XEP-0167 session-info. */
  readonly remoteInfo: RemoteInfo;
  /** The other party muted (any of) its media (`<mute/>` without unmute). */
  readonly remoteMuted: boolean;
  /** The STUN/TURN servers this call's media plane was given (XEP-0215 or options). */
  readonly iceServers: readonly IceServerConfig[];
  /** Both descriptions (plain fingerprints) once offer and answer were exchanged: the codecs in the record. */
  readonly negotiated: { local: RtpContentMap; remote: RtpContentMap } | undefined;
  /** Sends a XEP-0167 session-info (`ringing`, `active`, `mute`, …) once a Jingle session exists. */
  sendInfo(info: SessionInfo): Promise<void>;
  /**
   * Upgrades an active audio-only call to audio+video (XEP-0166 content-add of a video content: on the existing
   * BUNDLE transport as Conversations does, or with its own ICE-UDP transport in an unbundled session as Dino
   * does). Resolves true once the peer's content-accept is applied (video RTP can flow both ways), false when
   * the peer answered content-reject (or did not answer in time). When both sides add at the same moment the
   * initiator's content-add wins (XEP-0166 tie-break): the responder's addVideo() resolves with the outcome of
   * accepting the initiator's. Throws when the call is not active, already has video, or the peer does not
   * advertise `urn:xmpp:jingle:apps:rtp:video`.
   */
  addVideo(): Promise<boolean>;
  /** Subscribe to state changes. */
  onState(cb: (state: CallState) => void): () => void;
  /** Ends the call with the reason fitting the state (success, cancel, decline, retract, reject). */
  hangup(): Promise<void>;
}

/** How a call ended. */
export interface CallEnd {
  /** The XEP-0166 reason condition (`success`, `decline`, `security-error`, …). */
  reason: ReasonCondition;
  /** The reason's human-readable text, when there is one. */
  text?: string;
  /** XEP-0353 `<finish><migrated to/></finish>`: the sid of the session that replaces this one. */
  migratedTo?: string;
}

/** XEP-0167 session-info received from the other party. */
export interface RemoteInfo {
  /** The peer said `<ringing/>`. */
  ringing: boolean;
  /** The peer said `<active/>` (after a hold). */
  active: boolean;
  /** The peer put the call on hold (`<hold/>` without `<unhold/>`). */
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

/** At most this many of the peer's OMEMO devices get our fingerprint encrypted ahead (callee: of the caller's,
 * while the session-initiate is awaited; caller: of the callee's, while it rings). Bounded: OMEMO operations run
 * one at a time, and a long queue would delay the decryption the call waits for. */
const PRE_ENCRYPT_DEVICES = { incoming: 2, outgoing: 4 } as const;

/** Our propose's stanza id is this + the sid (as Conversations): a bounce of it names the call. */
const PROPOSE_ID_PREFIX = "jm-propose-";

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

/**
 * `map` with `added` contents: a content of the same name is replaced in place (an inactive m-line reused by a
 * later upgrade), others are appended and joined to the BUNDLE group.
 */
function withContents(map: RtpContentMap, added: JingleContent[]): RtpContentMap {
  const contents = map.contents.map((c) => added.find((a) => a.name === c.name) ?? c);
  const fresh = added.filter((a) => !map.contents.some((c) => c.name === a.name));
  contents.push(...fresh);
  const groups = map.groups.map((g) =>
    g.semantics === "BUNDLE"
      ? {
        ...g,
        contents: [...g.contents, ...fresh.map((c) => c.name).filter((n) => !g.contents.includes(n))],
      }
      : g
  );
  return { contents, groups };
}

/** A video content that was refused and left inactive (its m-line stays in werift and may be reused). */
function isIdleVideo(c: JingleContent | undefined): boolean {
  return c?.senders === "none" && c.description?.kind === "rtp" && c.description.media === "video";
}

/** The media of RTP contents as a sorted list (`audio,video`); a content without RTP description counts as `?`. */
function mediaList(contents: JingleContent[]): string {
  return contents.map((c) => c.description?.kind === "rtp" ? c.description.media : "?").sort().join(",");
}

/** Our content-add in progress. */
interface OwnAdd {
  /** Names of the added contents (set once werift made the offer). */
  names: string[];
  /** Ends the wait for the answer: the peer's content-accept / content-reject, `lost` (the initiator's
   * simultaneous content-add won the tie-break) or undefined (no answer, call ended). */
  answer: (r: Jingle | "lost" | undefined) => void;
  /** The initiator's simultaneous content-add won the tie-break (we are the responder). */
  lost: boolean;
  /** The peer's content-accept / content-reject arrived. */
  answered?: boolean;
}

/** A Jingle IQ error is `<conflict/>` + `<tie-break/>` (XEP-0166 "Tie Breaking Related to Jingle Actions"). */
function isTieBreak(e: unknown): boolean {
  return e instanceof StanzaError && e.condition === "conflict" && e.application?.name === "tie-break";
}

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
    /**
     * Our DTLS fingerprint OMEMO-encrypted ahead of need, by `deviceId/fingerprint`: one `<encrypted/>` per content
     * (a copy per content: the peer decrypts each one). Taken (once) by {@link encryptFingerprints}; undefined when
     * encrypting failed (then it encrypts as usual, with the usual errors).
     */
    readonly preEncrypted = new Map<string, Promise<JingleElement[] | undefined>>();
    remoteDescriptionSet = false;
    iceChecking = false;
    localCandidatesOpen = false;
    readonly pendingRemote: { content: string; ufrag?: string; candidate: IceCandidate }[] = [];
    readonly pendingLocal: { mid: string; candidate: IceCandidate }[] = [];
    readonly sentLocal = new Set<string>();
    contentMap?: RtpContentMap;
    /** Our own description (offer or answer), as sent but with the plain fingerprint. */
    localDescription?: RtpContentMap;
    localUfrag?: string;
    localPwd?: string;
    /** Our ICE credentials per content name: one pair when bundled, one per content for an unbundled (Dino) offer. */
    readonly localCreds = new Map<string, { ufrag?: string; pwd?: string }>();
    timer?: ReturnType<typeof setTimeout>;
    readonly remoteInfo: RemoteInfo = { ringing: false, active: false, held: false, muted: [] };
    iceServers: IceServerConfig[] = [];
    /** No JMI: a direct session-initiate (sent or received). */
    direct = false;
    readonly stateCbs = new Set<(s: CallState) => void>();
    /** The peer's RTP contents as last applied (plain fingerprints): the base of every renegotiation. */
    remoteMap?: RtpContentMap;
    /** Our content-add under way (from werift's offer until the peer's answer is applied). */
    ownAdd?: OwnAdd;
    /** The peer's content-add being answered (its content-accept / content-reject not sent yet). */
    peerAdd?: { names: string[]; done: Promise<void> };
    /** Called when the peer's next content-add arrives (a tie-break loser waits for the winner's). */
    readonly peerAddWaiters = new Set<() => void>();
    /** The peer's content-add until it is fully answered (`peerAdd` is cleared earlier, once werift applied it, so
     * that the next content-add may come; this one still covers the content-accept and the new transport). */
    peerAddInFlight?: Promise<void>;
    /** werift renegotiation steps (offer, answer) run one after the other. */
    #chain: Promise<unknown> = Promise.resolve();
    /** Content names of the received session-initiate (known before its processing finishes). */
    initiateNames: string[] = [];
    /** The DTLS setup we answered per content (the peer took the other role): pins later renegotiations. */
    readonly answeredSetup = new Map<string, "active" | "passive">();
    /** The BUNDLE policy the media plane was created with. */
    mediaBundled = true;
    /** werift holds a local offer of ours (content-add) that no answer or remote offer settled yet. */
    localOfferPending = false;
    /** `o=` version of the SDPs we synthesise for werift; bumped per renegotiation. */
    sdpVersion = 2;
    readonly endedP: Promise<CallEnd>;
    readonly connectedP: Promise<void>;
    #resolveEnded!: (r: CallEnd) => void;
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
        get negotiated() {
          return s.localDescription && s.remoteMap
            ? { local: s.localDescription, remote: s.remoteMap }
            : undefined;
        },
        sendInfo: (info) => this.sendInfo(info),
        addVideo: () => this.addVideo(),
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

    /** Our Jingle role in this session (`author` of the SDPs / content maps we produce). */
    get ourRole(): "initiator" | "responder" {
      return this.direction === "outgoing" ? "initiator" : "responder";
    }
    get peerRole(): "initiator" | "responder" {
      return this.direction === "outgoing" ? "responder" : "initiator";
    }

    /** Ends locally (idempotent): closes media, resolves `ended`. Does not signal. */
    finish(reason: JingleReason, migratedTo?: string) {
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
      this.#resolveEnded({
        reason: reason.condition,
        ...(reason.text ? { text: reason.text } : {}),
        ...(migratedTo ? { migratedTo } : {}),
      });
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

    /* ---- video upgrade: content-add / content-accept / content-reject (XEP-0166 §7.2, protocol.md §3.1) ---- */

    /** The BUNDLE group of the session, if the peer bundled (Conversations does, Dino does not). */
    bundle(): { semantics: string; contents: string[] } | undefined {
      return this.remoteMap?.groups.find((g) => g.semantics === "BUNDLE");
    }

    /** Runs `step` after every werift renegotiation step queued before it: offers and answers never interleave. */
    serial<T>(step: () => Promise<T>): Promise<T> {
      const run = this.#chain.then(step, step);
      this.#chain = run.catch(() => {});
      return run;
    }

    /** Is `name` a content of this session, or of a content-add (ours or the peer's) under way? */
    knowsContent(name: string): boolean {
      return !!this.contentMap?.contents.some((c) => c.name === name) || this.initiateNames.includes(name) ||
        this.negotiating(name);
    }

    /** Is content `name` being added right now (its candidates wait for the description that names it)? */
    negotiating(name: string): boolean {
      return !!this.ownAdd?.names.includes(name) || !!this.peerAdd?.names.includes(name);
    }

    /**
     * The peer's content map extended by `added` (whose empty STUB transports borrow the BUNDLE transport), as SDP
     * for werift. The DTLS `setup` of the running transports is pinned to the role their handshake already settled
     * (an `actpass` from the original offer inside an answer would make werift pick a role again); candidates are
     * left out (ICE runs).
     */
    renegotiationSdp(added: JingleContent[]): { map: RtpContentMap; sdp: string } {
      const base = this.remoteMap!;
      const remoteSetup = this.peer!.dtlsRole() === "client" ? "passive" : "active";
      /** The peer's settled role on content `name`: as it answered, the flip of what we answered, else (the
       * transport werift reports on) from our DTLS role. */
      const settled = (name: string, setup: string) => {
        if (setup === "active" || setup === "passive") return setup;
        const ours = this.answeredSetup.get(name);
        return ours ? (ours === "active" ? "passive" : "active") : remoteSetup;
      };
      const pin = (c: JingleContent): JingleContent => {
        const t = c.transport;
        // A new content with its own transport (unbundled, Dino) negotiates its own DTLS role and candidates.
        if (t?.kind !== "ice-udp" || (added.includes(c) && t.ufrag)) return c;
        const fp = t.fingerprint?.kind === "plain"
          ? { ...t.fingerprint, setup: settled(c.name, t.fingerprint.setup) } as const
          : undefined;
        return { ...c, transport: { ...t, candidates: [], ...(fp ? { fingerprint: fp } : {}) } };
      };
      const map = withContents(base, added);
      const sdp = contentMapToSdp({ contents: map.contents.map((c) => pin(c)), groups: map.groups }, {
        author: this.peerRole,
        sessionVersion: ++this.sdpVersion,
      });
      return { map, sdp };
    }

    /**
     * Our content `name` in a local SDP. Unbundled, it keeps its own transport: its credentials are recorded for
     * the trickle, and the candidates gathered so far for it go inside (marked sent).
     */
    localContent(sdp: string, name: string, bundled: boolean): JingleContent | undefined {
      const c = sdpToContentMap(sdp, { author: this.ourRole, creator: "initiator" }).contents.find((x) =>
        x.name === name
      );
      if (!c || bundled || c.transport?.kind !== "ice-udp") return c;
      const t = c.transport;
      this.localCreds.set(name, { ufrag: t.ufrag, pwd: t.pwd });
      for (const cand of t.candidates) this.sentLocal.add(candKey(cand));
      const others: typeof this.pendingLocal = [];
      for (const p of this.pendingLocal.splice(0)) {
        if (p.mid !== name) {
          others.push(p);
          continue;
        }
        const key = candKey(p.candidate);
        if (this.sentLocal.has(key)) continue;
        this.sentLocal.add(key);
        t.candidates.push(p.candidate);
      }
      this.pendingLocal.push(...others);
      return c;
    }

    /**
     * Unbundled: resolves once the transport of a content being added has connected and its DTLS peer is
     * authenticated (media sent on it before would be lost). The media plane's DTLS state is the aggregate over its
     * transports: it goes to checking when the new transport appears and back to connected once every transport is
     * up, so this waits for a "checking" and then a "connected". Never rejects:
     * a transport that fails ends the call through the media state handler; one that stays silent is logged.
     */
    newTransportConnected(): Promise<void> {
      const peer = this.peer!;
      let started = false;
      return new Promise<void>((resolve) => {
        const done = () => {
          clearTimeout(timer);
          off();
          resolve();
        };
        const timer = setTimeout(() => {
          log.warn("the transport of the added content did not connect in time", { sid: this.sid });
          done();
        }, connectTimeoutMs);
        const off = peer.onStateChange((st) => {
          if (st.dtls === "checking") started = true;
          else if ((st.dtls === "connected" && started) || st.dtls === "failed" || st.dtls === "closed") {
            done();
          }
        });
        void this.endedP.then(done);
      });
    }

    /** Why a peer's content-add is refused (undefined = acceptable: audio-only call + one video content). */
    contentAddRefusal(contents: JingleContent[]): string | undefined {
      if (options.acceptVideoUpgrade === false) return "video upgrades are disabled";
      if (this.media.join(",") !== "audio") return `not an audio-only call (media: ${this.media})`;
      // A video content just accepted (its transport still connecting) counts already.
      if (
        this.contentMap?.contents.some((x) =>
          x.description?.kind === "rtp" && x.description.media === "video" && !isIdleVideo(x)
        )
      ) {
        return "not an audio-only call (a video content is being set up)";
      }
      if (contents.length !== 1) {
        return `${contents.length} contents added (only one video content is accepted)`;
      }
      const c = contents[0]!;
      if (c.description?.kind !== "rtp" || c.description.media !== "video") {
        return "the added content is not video";
      }
      if (c.description.payloadTypes.length === 0) return "the added video content offers no payload type";
      if (c.senders === "none") return "the added content sends nothing either way";
      const existing = this.contentMap?.contents.find((x) => x.name === c.name);
      if (existing && !isIdleVideo(existing)) {
        return `content '${c.name}' already exists`;
      }
      const t = c.transport;
      if (t && t.kind !== "ice-udp") return "the added content has a non-ICE-UDP transport";
      const lead = this.remoteMap!.contents[0]?.transport;
      if (this.bundle()) {
        if (t?.ufrag && lead?.kind === "ice-udp" && t.ufrag !== lead.ufrag) {
          return "the added content has its own ICE credentials in a bundled session";
        }
      } else if (!t?.ufrag || !t.pwd || !t.fingerprint) {
        // Unbundled (Dino): the new content brings its own ICE transport and DTLS fingerprint.
        return "the added content of an unbundled session lacks its own ICE credentials or fingerprint";
      }
      if (t?.fingerprint) {
        // Only the fingerprint already authenticated for this call may appear again (an OMEMO one is decrypted and
        // compared when the content is accepted).
        if (
          t.fingerprint.kind === "plain" &&
          normalizeFingerprint(t.fingerprint.value) !== this.remoteFingerprint
        ) {
          return "the added content carries a different DTLS fingerprint";
        }
        if (t.fingerprint.kind === "omemo" && !this.verification.omemo) {
          return "the added content carries an OMEMO fingerprint in a call that is not OMEMO-verified";
        }
        if (t.fingerprint.kind === "plain" && this.verification.omemo) {
          return "the added content carries a plain fingerprint in an OMEMO-verified call";
        }
      }
      return undefined;
    }

    /**
     * A content-add from the peer: acknowledged (the caller returns the IQ result), then accepted or rejected.
     * Simultaneous content-adds (XEP-0166 "Tie Breaking Related to Jingle Actions"): the initiator's wins. As
     * initiator we refuse theirs with `<conflict/>` + `<tie-break/>`; as responder we drop ours and accept theirs.
     */
    onContentAdd(j: Jingle) {
      if (this.peerAdd) {
        log.warn("content-add while the previous one is still being answered", { sid: this.sid });
        throw iqError("unexpected-request", "wait", "out-of-order");
      }
      const own = this.ownAdd;
      if (own && !own.lost) {
        if (this.ourRole === "initiator") {
          log.info("simultaneous content-adds: ours (initiator) wins the tie-break", { sid: this.sid });
          throw iqError("conflict", "cancel", "tie-break");
        }
        log.info(
          "simultaneous content-adds: the initiator's wins the tie-break; answering it instead of ours",
          {
            sid: this.sid,
          },
        );
        own.lost = true;
        own.answer("lost");
      }
      const why = this.contentAddRefusal(j.contents);
      const entry = { names: j.contents.map((c) => c.name), done: Promise.resolve() };
      entry.done = new Promise<void>((r) => setTimeout(r, 0)) // after the IQ result went out
        .then(() =>
          this.serial(() =>
            why === undefined
              ? this.acceptContentAdd(j).catch((e) => this.rejectContentAdd(j, `renegotiation failed: ${e}`))
              : this.rejectContentAdd(j, why)
          )
        )
        .finally(() => {
          if (this.peerAdd === entry) this.peerAdd = undefined;
          if (this.peerAddInFlight === entry.done) this.peerAddInFlight = undefined;
        });
      this.peerAdd = entry;
      this.peerAddInFlight = entry.done;
      for (const w of [...this.peerAddWaiters]) w();
    }

    /** Resolves once a content-add of the peer was answered: the one under way, or the next within `ms`. */
    async awaitPeerAdd(ms: number): Promise<void> {
      if (!this.peerAdd && this.peerAddInFlight) return await this.peerAddInFlight;
      if (!this.peerAdd) {
        let timer: ReturnType<typeof setTimeout> | undefined;
        let waiter = () => {};
        await new Promise<void>((resolve) => {
          waiter = resolve;
          this.peerAddWaiters.add(waiter);
          timer = setTimeout(() => {
            log.info("no content-add of the peer came", { sid: this.sid, waitedMs: ms });
            resolve();
          }, ms);
          void this.endedP.then(() => resolve());
        });
        clearTimeout(timer);
        this.peerAddWaiters.delete(waiter);
      }
      await this.peerAdd?.done;
    }

    /** Runs inside {@link serial}. */
    async acceptContentAdd(j: Jingle) {
      const add = j.contents[0]!;
      const peer = this.peer!;
      const bundled = !!this.bundle();
      // Bundled (Conversations): the STUB transport borrows the running one. Unbundled (Dino): the content brings
      // its own transport, whose fingerprint must be the one this call authenticated (decrypted if OMEMO).
      const transport = bundled
        ? { kind: "ice-udp" as const, candidates: [] }
        : (await this.readFingerprints([add], this.verification.omemo))[0]!.transport;
      const offered: JingleContent = {
        creator: add.creator,
        name: add.name,
        ...(add.senders ? { senders: add.senders } : {}),
        description: add.description,
        transport,
      };
      const { map, sdp } = this.renegotiationSdp([offered]);
      // With an offer of ours still pending (a lost tie-break, an unbundled add the peer refused) werift has our
      // video transceiver: it must want to receive before the peer's offer is applied onto it.
      peer.enableMedia("video", this.localOfferPending);
      const connected = bundled ? undefined : this.newTransportConnected();
      // A local offer of ours that lost the tie-break is rolled back by werift here (implicit rollback).
      await peer.setRemoteDescription("offer", sdp);
      this.localOfferPending = false;
      const answer = await peer.createAnswer();
      if (this.fsm.ended) return;
      this.remoteMap = map;
      const mine = this.localContent(answer, add.name, bundled);
      if (mine?.description?.kind !== "rtp" || mine.description.payloadTypes.length === 0) {
        throw new Error("no common video codec");
      }
      const fp = mine.transport?.kind === "ice-udp" ? mine.transport.fingerprint : undefined;
      if (fp?.setup === "active" || fp?.setup === "passive") this.answeredSetup.set(add.name, fp.setup);
      this.contentMap = withContents(this.contentMap!, [mine]);
      if (this.localDescription) this.localDescription = withContents(this.localDescription, [mine]);
      // werift has applied the new offer/answer: candidates for the new content go to it now, and the next
      // content-add may come as soon as this answer arrives.
      this.peerAdd = undefined;
      await this.flushRemote();
      let content: JingleContent = {
        creator: add.creator,
        name: add.name,
        ...(mine.senders ? { senders: mine.senders } : {}),
        description: mine.description,
        transport: bundled ? { kind: "ice-udp", candidates: [] } : mine.transport,
      };
      if (!bundled && this.verification.omemo && this.verification.deviceId !== undefined) {
        content = (await this.encryptFingerprints([content], this.verification.deviceId))[0]!;
      }
      const accept: Jingle = { action: "content-accept", sid: this.sid, contents: [content], groups: [] };
      log.info("video upgrade accepted (content-accept)", {
        sid: this.sid,
        content: add.name,
        senders: add.senders,
        bundled,
      });
      await conn.iq(
        buildJingleIq(accept, { to: this.peerJid, id: crypto.randomUUID() }) as unknown as Element,
      );
      this.flushLocal(); // candidates of the new transport gathered after the answer
      await connected;
      if (connected && !this.fsm.ended) {
        try {
          this.checkEveryTransport();
        } catch (e) {
          return this.fail(e); // the content-accept went out already: the call ends, nothing to reject
        }
      }
      if (!this.fsm.ended && !this.media.includes("video")) this.media.push("video");
    }

    /** content-reject with stub description + transport (as Conversations answers). Never throws. */
    async rejectContentAdd(j: Jingle, why: string) {
      log.warn("content-add rejected", { sid: this.sid, contents: j.contents.map((c) => c.name), why });
      this.peerAdd = undefined;
      if (this.fsm.ended) return;
      const reject: Jingle = {
        action: "content-reject",
        sid: this.sid,
        contents: j.contents.map((c) => ({
          creator: c.creator,
          name: c.name,
          description: emptyRtpDescription(c.description?.kind === "rtp" ? c.description.media : "video"),
          transport: { kind: "ice-udp", candidates: [] },
        })),
        groups: [],
        reason: { condition: "failed-application", text: why },
      };
      await conn.iq(
        buildJingleIq(reject, { to: this.peerJid, id: crypto.randomUUID() }) as unknown as Element,
      )
        .catch((e) => log.debug("content-reject not acknowledged", { sid: this.sid, error: String(e) }));
    }

    /** A content-accept / content-reject answering our content-add. */
    onContentAnswer(j: Jingle) {
      const p = this.ownAdd;
      const names = j.contents.map((c) => c.name).sort().join(",");
      if (!p || p.lost || p.answered || p.names.length === 0 || names !== [...p.names].sort().join(",")) {
        log.warn("content answer without a matching content-add", { sid: this.sid, action: j.action, names });
        throw iqError("unexpected-request", "wait", "out-of-order");
      }
      p.answered = true;
      p.answer(j);
    }

    /** A content-remove: the peer stops a content (we stop sending on it) or retracts its pending content-add. */
    onContentRemove(j: Jingle) {
      const unknown = j.contents.filter((c) => !this.knowsContent(c.name)).map((c) => c.name);
      if (unknown.length) {
        log.warn("content-remove for an unknown content", { sid: this.sid, contents: unknown });
        throw iqError("bad-request", "modify", undefined, `unknown content '${unknown.join("', '")}'`);
      }
      for (const c of j.contents) {
        const known = this.contentMap?.contents.find((x) => x.name === c.name);
        const media = known?.description?.kind === "rtp" ? known.description.media : undefined;
        log.info("content removed by peer", { sid: this.sid, content: c.name, media });
        if (known && media === "video" && this.media.includes("video") && this.media.includes("audio")) {
          this.peer?.disableMedia("video");
          this.media.splice(this.media.indexOf("video"), 1);
          // The m-line stays (inactive) in werift: modelled as an idle video content a later upgrade reuses.
          const idle = (m?: RtpContentMap) => {
            const x = m?.contents.find((y) => y.name === c.name);
            if (x) x.senders = "none";
          };
          idle(this.contentMap);
          if (this.remoteMap !== this.contentMap) idle(this.remoteMap);
        }
      }
    }

    /**
     * A content-modify (a `senders` change: Dino turning its camera on/off, C-new asking for `both`): recorded and
     * acknowledged. Answering it with an error would end the call in Conversations; the media plane keeps its
     * directions (what we send that the peer no longer wants is dropped by it). Nothing changes when one of the
     * named contents is unknown.
     */
    onContentModify(j: Jingle) {
      const unknown = j.contents.filter((c) => !this.contentMap?.contents.some((x) => x.name === c.name));
      if (unknown.length) {
        log.warn("content-modify for an unknown content", { sid: this.sid, content: unknown[0]!.name });
        throw iqError("bad-request", "modify", undefined, `unknown content '${unknown[0]!.name}'`);
      }
      for (const c of j.contents) {
        const senders = c.senders ?? "both";
        log.info("content-modify from peer", { sid: this.sid, content: c.name, senders });
        const set = (m?: RtpContentMap) => {
          const x = m?.contents.find((y) => y.name === c.name);
          if (!x) return;
          if (senders === "both") delete x.senders;
          else x.senders = senders;
        };
        set(this.contentMap);
        if (this.remoteMap !== this.contentMap) set(this.remoteMap);
      }
    }

    async addVideo(): Promise<boolean> {
      if (this.state !== "active" || !this.peer) throw new Error(`no active call (state ${this.state})`);
      if (this.media.includes("video")) throw new Error("the call already has video");
      if (this.ownAdd) throw new Error("a video upgrade is already under way");
      const info = await queryDiscoInfo(conn, this.peerJid, undefined, 5_000);
      if (!info.features.includes(NS_RTP_VIDEO)) {
        throw new Error(`${this.peerJid} does not advertise ${NS_RTP_VIDEO}`);
      }
      if (this.state !== "active") throw new Error("the call ended while asking for the peer's features");
      if (this.ownAdd) throw new Error("a video upgrade is already under way");
      if (this.peerAdd) {
        // The peer is adding a content right now (its content-add arrived while we asked): its outcome is ours.
        await this.peerAdd.done;
        return this.media.includes("video");
      }
      if (this.media.includes("video")) return true;
      const own: OwnAdd = { names: [], lost: false, answer: () => {} };
      let timer: ReturnType<typeof setTimeout> | undefined;
      const answered = new Promise<Jingle | "lost" | undefined>((resolve) => {
        own.answer = resolve;
        timer = setTimeout(() => resolve(undefined), connectTimeoutMs);
        void this.endedP.then(() => resolve(undefined));
      });
      this.ownAdd = own;
      const peer = this.peer;
      const bundled = !!this.bundle();
      try {
        // werift's offer with the new m-line, after any renegotiation step still running.
        const offered = await this.serial(async (): Promise<JingleContent | undefined> => {
          if (own.lost || this.fsm.ended) return undefined;
          peer.enableMedia("video", true);
          const offer = await peer.createOffer();
          this.localOfferPending = true;
          const local = sdpToContentMap(offer, { author: this.ourRole, creator: "initiator" });
          // New m-lines, or the inactive one of an earlier refused upgrade that werift reuses.
          const known = new Set(this.contentMap!.contents.filter((c) => !isIdleVideo(c)).map((c) => c.name));
          const added = local.contents.filter((c) => !known.has(c.name));
          if (added.length !== 1 || added[0]!.description?.kind !== "rtp") {
            throw new Error(`werift offered ${added.length} new contents for the video upgrade`);
          }
          const video = this.localContent(offer, added[0]!.name, bundled)!;
          own.names = [video.name];
          return {
            creator: "initiator",
            name: video.name,
            ...(video.senders ? { senders: video.senders } : {}),
            description: video.description,
            // Bundled: an empty STUB (the BUNDLE transport is reused). Unbundled: the new content's own ICE
            // transport (credentials, fingerprint, candidates gathered so far).
            transport: bundled ? { kind: "ice-udp", candidates: [] } : video.transport,
          };
        });
        if (!offered) return await this.lostTieBreak(own, bundled);
        let wire = offered;
        if (!bundled && this.verification.omemo && this.verification.deviceId !== undefined) {
          wire = (await this.encryptFingerprints([offered], this.verification.deviceId))[0]!;
        }
        log.info("video upgrade: content-add", { sid: this.sid, content: offered.name, bundled });
        try {
          await conn.iq(
            buildJingleIq(
              { action: "content-add", sid: this.sid, contents: [wire], groups: [] },
              { to: this.peerJid, id: crypto.randomUUID() },
            ) as unknown as Element,
          );
        } catch (e) {
          if (own.lost || (isTieBreak(e) && this.ourRole === "responder")) {
            return await this.lostTieBreak(own, bundled, offered);
          }
          log.warn("content-add refused by the peer", { sid: this.sid, error: String(e) });
          await this.serial(() => this.rollbackVideoOffer(offered, bundled));
          return false;
        }
        const answer = await answered;
        if (answer === "lost") return await this.lostTieBreak(own, bundled, offered);
        if (this.fsm.ended) return false;
        if (!answer || answer.action === "content-reject") {
          log.info("video upgrade refused", {
            sid: this.sid,
            why: answer ? answer.reason?.text ?? answer.reason?.condition ?? "content-reject" : "no answer",
          });
          if (!answer) {
            // Retract the unanswered content-add (XEP-0166 content-remove).
            void conn.iq(
              buildJingleIq(
                {
                  action: "content-remove",
                  sid: this.sid,
                  contents: [{ creator: "initiator", name: offered.name }],
                  groups: [],
                },
                { to: this.peerJid, id: crypto.randomUUID() },
              ) as unknown as Element,
            ).catch(() => {});
          }
          await this.serial(() => this.rollbackVideoOffer(offered, bundled));
          return false;
        }
        const acc = answer.contents[0]!;
        if (acc.description?.kind !== "rtp" || acc.description.media !== "video") {
          throw new CallError("incompatible-parameters", "content-accept without a video description");
        }
        const transport = await this.acceptedTransport(acc, bundled);
        const accepted: JingleContent = {
          creator: acc.creator,
          name: acc.name,
          ...(acc.senders ? { senders: acc.senders } : {}),
          description: acc.description,
          transport,
        };
        let connected: Promise<void> | undefined;
        await this.serial(async () => {
          const { map, sdp } = this.renegotiationSdp([accepted]);
          connected = bundled ? undefined : this.newTransportConnected();
          await peer.setRemoteDescription("answer", sdp);
          this.localOfferPending = false;
          this.remoteMap = map;
          this.contentMap = withContents(this.contentMap!, [offered]);
          if (this.localDescription) this.localDescription = withContents(this.localDescription, [offered]);
        });
        this.ownAdd = undefined;
        await this.flushRemote(); // the peer's candidates for the new transport that came before its answer
        this.flushLocal(); // ours gathered after the content-add
        await connected;
        if (this.fsm.ended) return false;
        if (connected) this.checkEveryTransport();
        if (!this.media.includes("video")) this.media.push("video");
        log.info("video upgrade accepted by peer", { sid: this.sid, content: offered.name, bundled });
        return true;
      } catch (e) {
        if (e instanceof CallError) this.fail(e);
        throw e;
      } finally {
        clearTimeout(timer);
        if (this.ownAdd === own) this.ownAdd = undefined;
      }
    }

    /**
     * The transport of the peer's content-accept, for the SDP. Bundled: a STUB (an own fingerprint must be the
     * call's). Unbundled: its own ICE transport, whose fingerprint must be of the call's kind (OMEMO-encrypted in
     * a verified call) and value; anything else ends the call with security-error.
     */
    async acceptedTransport(acc: JingleContent, bundled: boolean): Promise<JingleContent["transport"]> {
      const t = acc.transport;
      if (bundled) {
        if (
          t?.kind === "ice-udp" && t.fingerprint?.kind === "plain" &&
          normalizeFingerprint(t.fingerprint.value) !== this.remoteFingerprint
        ) {
          throw new CallError("security-error", "content-accept carries a different DTLS fingerprint");
        }
        return { kind: "ice-udp", candidates: [] };
      }
      if (t?.kind !== "ice-udp" || !t.ufrag || !t.pwd) {
        throw new CallError(
          "failed-transport",
          "content-accept of an unbundled content without its own ICE credentials",
        );
      }
      const want = this.verification.omemo ? "omemo" : "plain";
      if (t.fingerprint?.kind !== want) {
        throw new CallError(
          "security-error",
          `content-accept carries ${t.fingerprint ? `a ${t.fingerprint.kind}` : "no"} fingerprint in a${
            this.verification.omemo ? "n OMEMO-verified" : " plain"
          } call`,
        );
      }
      return (await this.readFingerprints([acc], this.verification.omemo))[0]!.transport;
    }

    /**
     * Our content-add lost the tie-break (we are the responder): the initiator's content-add is answered instead
     * (its offer rolls werift's pending one back). Resolves true once that gave the call video; false when no
     * content-add of the peer came in time (ours is then undone).
     */
    async lostTieBreak(own: OwnAdd, bundled: boolean, offered?: JingleContent): Promise<boolean> {
      own.lost = true;
      if (this.ownAdd === own) this.ownAdd = undefined;
      log.info(
        "video upgrade: the initiator's content-add wins the tie-break; answering it instead of ours",
        {
          sid: this.sid,
        },
      );
      // The initiator's content-add may be answered already, or in its last steps (ours came back with its
      // tie-break error after that): awaiting "the next" content-add instead stalled such a call for 20 s.
      if (!this.media.includes("video")) await this.awaitPeerAdd(connectTimeoutMs);
      if (this.media.includes("video")) return true;
      if (this.fsm.ended) return false;
      log.info("no video content-add of the peer after the tie-break: undoing ours", { sid: this.sid });
      if (offered && this.localOfferPending) {
        await this.serial(() => this.rollbackVideoOffer(offered, bundled));
      } else this.peer?.disableMedia("video");
      return false;
    }

    /**
     * Our video offer was refused. Bundled: werift gets an answer that leaves the video section inactive (its
     * m-line stays and a later upgrade reuses it). Unbundled: video is no longer wanted and werift's offer stays
     * pending; the next offer (ours or the peer's) replaces it. Runs inside {@link serial}.
     */
    async rollbackVideoOffer(offered: JingleContent, bundled: boolean) {
      this.peer?.disableMedia("video");
      if (this.fsm.ended || !bundled) return;
      const stub: JingleContent = {
        ...offered,
        senders: "none",
        transport: { kind: "ice-udp", candidates: [] },
      };
      const { map, sdp } = this.renegotiationSdp([stub]);
      try {
        await this.peer!.setRemoteDescription("answer", sdp);
        this.localOfferPending = false;
        // werift keeps the (now inactive) m-line: track it, a later upgrade reuses it.
        this.remoteMap = map;
        this.contentMap = withContents(this.contentMap!, [stub]);
      } catch (e) {
        log.warn("video rollback failed", { sid: this.sid, error: String(e) });
      }
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
    /** The media plane, created once (memoized: proceed / initiate may race its creation). `bundle`: our offers
     * BUNDLE (caller default: the `bundle` option; callee: until the offer says otherwise, see mediaFor). */
    ensureMedia(bundle = this.direction === "incoming" || options.bundle !== false): Promise<Peer> {
      this.#media ??= this.createMedia(bundle);
      return this.#media;
    }

    /**
     * Callee: the media plane for the received offer. The one made while it rang bundles (Conversations); an
     * unbundled offer (Dino) gets one that keeps a transport per content, so that a content we add later brings
     * its own. The early one has applied no description yet and is simply replaced.
     */
    async mediaFor(bundled: boolean): Promise<Peer> {
      const peer = await this.ensureMedia();
      if (this.mediaBundled === bundled) return peer;
      log.debug("unbundled offer: media plane without BUNDLE", { sid: this.sid });
      this.#media = undefined;
      await peer.close();
      return await this.ensureMedia(bundled);
    }
    /** Caller: the offer, created while it rings. */
    offer?: Promise<string>;

    private async createMedia(bundle: boolean): Promise<Peer> {
      this.iceServers = this.peer ? this.iceServers : await discoverIceServers();
      if (this.fsm.ended) throw new CallError("cancel", "call ended while discovering ICE servers");
      this.mediaBundled = bundle;
      const peer = await createPeer({
        role: this.direction === "outgoing" ? "initiator" : "responder",
        audio: this.media.includes("audio"),
        video: this.media.includes("video"),
        iceServers: this.iceServers,
        bundle,
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
      const later: typeof this.pendingLocal = [];
      while (this.pendingLocal.length) {
        const p = this.pendingLocal.shift()!;
        const { mid, candidate } = p;
        const key = candKey(candidate);
        if (this.sentLocal.has(key)) continue;
        const content = map.contents.find((c) => c.name === mid);
        if (!content) {
          // A transport of a content still being negotiated (our unbundled content-add): sent with it.
          later.push(p);
          continue;
        }
        this.sentLocal.add(key);
        const creds = this.localCreds.get(content.name) ?? { ufrag: this.localUfrag, pwd: this.localPwd };
        const j = trickleTransportInfo(this.sid, content, creds, candidate);
        void conn.iq(buildJingleIq(j, { to: this.peerJid, id: crypto.randomUUID() }) as unknown as Element)
          .catch((e) => log.debug("transport-info failed", { sid: this.sid, error: String(e) }));
      }
      this.pendingLocal.push(...later);
    }

    async addRemote(content: string, candidate: IceCandidate, ufrag?: string) {
      if (!this.remoteDescriptionSet || !this.peer || this.negotiating(content)) {
        // Before the description that names this content was applied (e.g. Dino trickling candidates of a new
        // content while we answer its content-add): kept until then.
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
        this.localCreds.set(c.name, { ufrag: c.transport.ufrag, pwd: c.transport.pwd });
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

    /** Up to `max` OMEMO devices of the peer we have a session with and do not distrust: those of its published
     * device list first, then others we know. */
    sessionDevices(max: number): number[] {
      const peerBare = bare(this.peerJid);
      const store = endpoint.omemo.store;
      const known = store.listIdentities(peerBare).filter((r) => r.trust !== "untrusted").map((r) =>
        r.deviceId
      );
      const listed = store.getDeviceList(peerBare);
      const ordered = [
        ...listed.filter((d) => known.includes(d)),
        ...known.filter((d) => !listed.includes(d)),
      ];
      return ordered.filter((d) => store.hasSession(peerBare, d)).slice(0, max);
    }

    /** The content's OMEMO fingerprint reaches our device as a PreKeySignalMessage. */
    preKeyForUs(c: JingleContent): boolean {
      const fp = c.transport?.kind === "ice-udp" ? c.transport.fingerprint : undefined;
      if (fp?.kind !== "omemo") return false;
      try {
        return decodeEncrypted(fp.encrypted as unknown as Element).keys.some((k) =>
          k.rid === endpoint.deviceId && k.preKey
        );
      } catch {
        return false; // readFingerprints reports it
      }
    }

    /**
     * Starts encrypting our fingerprint `value` (`count` copies) for those of `deviceIds` we have an OMEMO session
     * with, so that the session-initiate / session-accept need not wait for it. A device without a session is left
     * to {@link encryptFingerprints} (building one fetches its bundle: not done speculatively).
     */
    preEncryptFingerprint(value: string, count: number, deviceIds: number[]) {
      const peerBare = bare(this.peerJid);
      const fp = normalizeFingerprint(value);
      for (const deviceId of deviceIds) {
        const key = `${deviceId}/${fp}`;
        if (this.preEncrypted.has(key) || !endpoint.omemo.store.hasSession(peerBare, deviceId)) continue;
        const job = (async () => {
          const out: JingleElement[] = [];
          for (let i = 0; i < count && !this.fsm.ended; i++) {
            const enc = await endpoint.omemo.encrypt([peerBare], fp, {
              devices: [{ jid: peerBare, deviceId }],
            });
            if (enc.devices.length !== 1) return undefined;
            out.push(enc.element as unknown as JingleElement);
          }
          return out.length === count ? out : undefined;
        })().catch((e) => {
          log.debug("fingerprint not encrypted ahead", { sid: this.sid, deviceId, error: String(e) });
          return undefined;
        });
        this.preEncrypted.set(key, job);
      }
    }

    /** Copies of our fingerprint encrypted ahead for `deviceId` (consumed), if there are `count` of them for `value`
     * and the device is still not distrusted. */
    async takePreEncrypted(
      deviceId: number,
      value: string,
      count: number,
    ): Promise<JingleElement[] | undefined> {
      const key = `${deviceId}/${normalizeFingerprint(value)}`;
      const job = this.preEncrypted.get(key);
      if (!job) return undefined;
      this.preEncrypted.delete(key);
      const elements = await job;
      // Trust may have changed since: encrypt() refuses a distrusted device, so must this.
      if (endpoint.omemo.store.getIdentity(bare(this.peerJid), deviceId)?.trust === "untrusted") {
        return undefined;
      }
      return elements?.length === count ? elements : undefined;
    }

    /** Replaces our plain fingerprints by OMEMO-encrypted ones for `deviceId` (encrypted ahead when possible). */
    async encryptFingerprints(contents: JingleContent[], deviceId: number): Promise<JingleContent[]> {
      const peerBare = bare(this.peerJid);
      const plain = contents.flatMap((c) =>
        c.transport?.kind === "ice-udp" && c.transport.fingerprint?.kind === "plain"
          ? [normalizeFingerprint(c.transport.fingerprint.value)]
          : []
      );
      const ready = plain.length > 0 && plain.every((v) => v === plain[0])
        ? await this.takePreEncrypted(deviceId, plain[0]!, plain.length)
        : undefined;
      const out: JingleContent[] = [];
      for (const c of contents) {
        const t = c.transport;
        if (t?.kind !== "ice-udp" || t.fingerprint?.kind !== "plain") {
          out.push(c);
          continue;
        }
        const fp = t.fingerprint;
        const early = ready?.shift();
        const enc = early
          ? { element: early, devices: [deviceId], skipped: [] }
          : await endpoint.omemo.encrypt(
            [peerBare],
            normalizeFingerprint(fp.value),
            {
              devices: [{ jid: peerBare, deviceId }],
            },
          );
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
        // A fingerprint vouched for by a device we distrust (or, with manual trust, never approved) proves nothing.
        if (this.verification.trust === "untrusted") {
          throw new CallError(
            "security-error",
            `OMEMO device ${this.verification.deviceId} of ${peerBare} is not trusted`,
          );
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

    /**
     * Every connected DTLS transport (one per content without BUNDLE) presented the certificate of the signalled
     * (OMEMO-decrypted) fingerprint; else the call ends with security-error. werift compares each transport with
     * its own m-line's fingerprint already; this ties them all to the one the call verified.
     */
    checkEveryTransport() {
      const all = this.peer?.remoteCertificateFingerprints() ?? [];
      const odd = all.find((fp) => normalizeFingerprint(fp) !== this.remoteFingerprint);
      if (odd) {
        throw new CallError(
          "security-error",
          `a DTLS transport presented certificate ${odd}, not the call's ${this.remoteFingerprint}`,
        );
      }
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
      this.checkEveryTransport();
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
      this.localDescription = map;
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
      this.preEncrypted.clear();
      await conn.iq(buildJingleIq(j, { to: this.peerJid, id: crypto.randomUUID() }) as unknown as Element);
      if (this.fsm.ended) return;
      this.localCandidatesOpen = true;
      this.flushLocal();
    }

    async onSessionAccept(j: Jingle) {
      this.phases.accept = now();
      clearTimeout(this.timer);
      // Conversations: the accepted contents must be the initiated ones, with the same media (else security-error).
      const offered = this.contentMap!.contents;
      const sig = (cs: JingleContent[]) =>
        cs.map((c) => `${c.name}=${c.description?.kind === "rtp" ? c.description.media : "?"}`).sort().join(
          ",",
        );
      if (sig(j.contents) !== sig(offered)) {
        log.warn("session-accept contents differ from the session-initiate", {
          sid: this.sid,
          initiated: sig(offered),
          accepted: sig(j.contents),
        });
        throw new CallError(
          "security-error",
          `session-accept contents [${sig(j.contents)}] differ from the initiated [${sig(offered)}]`,
        );
      }
      const contents = await this.readFingerprints(j.contents, this.sentVerified || verify === "require");
      this.remoteMap = { contents, groups: j.groups.length ? j.groups : this.contentMap!.groups };
      const unsupported = unsupportedCodecs(this.remoteMap);
      if (unsupported) {
        log.warn("call refused: the answer chose a codec we cannot send or record", {
          sid: this.sid,
          unsupported,
        });
        throw new CallError("failed-application", unsupported);
      }
      const sdp = contentMapToSdp(this.remoteMap, { author: "responder" });
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
      const peer = await createMedia;
      if (verify !== "off" && !this.fsm.ended) {
        // While the session-initiate is on its way: our fingerprint encrypted for the caller's devices.
        this.preEncryptFingerprint(
          peer.localFingerprint(),
          this.media.length,
          this.sessionDevices(PRE_ENCRYPT_DEVICES.incoming),
        );
      }
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
      // Conversations: a session-initiate after JMI must carry exactly the proposed media (else the peer could
      // turn an accepted audio call into a video call, or add contents nobody agreed to).
      if (!this.direct && mediaList(j.contents) !== [...this.media].sort().join(",")) {
        log.warn("session-initiate media differ from the JMI propose", {
          sid: this.sid,
          proposed: this.media,
          initiated: mediaList(j.contents),
        });
        throw new CallError(
          "security-error",
          `session-initiate media [${mediaList(j.contents)}] differ from the proposed [${this.media}]`,
        );
      }
      // A PreKeySignalMessage means the caller (re)built its session with us: what we encrypted ahead in the old
      // one could not be read by it any more.
      if (j.contents.some((c) => this.preKeyForUs(c))) this.preEncrypted.clear();
      const contents = await this.readFingerprints(j.contents, verify === "require");
      const offerMap: RtpContentMap = { contents, groups: j.groups };
      this.contentMap = offerMap;
      this.remoteMap = offerMap;
      const peer = await this.mediaFor(j.groups.some((g) => g.semantics === "BUNDLE"));
      if (this.verification.omemo && this.verification.deviceId !== undefined) {
        // Encrypting our fingerprint runs alongside werift's answer (unless done while the initiate came).
        this.preEncryptFingerprint(peer.localFingerprint(), contents.length, [this.verification.deviceId]);
      }
      await peer.setRemoteDescription("offer", contentMapToSdp(offerMap, { author: "initiator" }));
      await this.flushRemote();
      const answer = await peer.createAnswer();
      if (this.fsm.ended) return;
      const map = this.localMap(answer, "responder");
      this.localDescription = map;
      for (const c of map.contents) {
        const fp = c.transport?.kind === "ice-udp" ? c.transport.fingerprint : undefined;
        if (fp?.setup === "active" || fp?.setup === "passive") this.answeredSetup.set(c.name, fp.setup);
      }
      // werift answers codecs it knows but our media cannot produce or record (PCMU, G722, H264…): refuse.
      const unsupported = unsupportedCodecs(map);
      if (unsupported) {
        log.warn("call refused: no codec we can send and record", { sid: this.sid, unsupported });
        throw new CallError("failed-application", unsupported);
      }
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
      this.preEncrypted.clear();
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
        // XEP-0353 v0.8 existing-session rule: a propose from a party we already have a running call with (e.g. its
        // client restarted mid-call) replaces that call: <finish/> the old one with <expired/> + <migrated to/>,
        // then proceed with the new one without asking again.
        const running = [...sessions.values()].find((o) =>
          !o.fsm.ended && (o.state === "proceeding" || o.state === "initiated" || o.state === "accepted" ||
            o.state === "active") &&
          jidEquals(bare(o.peerJid), bare(from))
        );
        if (running) {
          log.info("propose from a party with a running call: migrating the call", {
            old: running.sid,
            new: a.id,
            from,
          });
          void sendJmi(
            { action: "finish", id: running.sid, reason: { condition: "expired" }, migratedTo: a.id },
            running.peerJid,
          ).catch(() => {});
          running.finish({ condition: "expired", text: `migrated to ${a.id}` }, a.id);
          auto = true;
        }
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
          log.info("call finished by peer (JMI finish)", {
            sid: a.id,
            reason: a.reason?.condition,
            ...(a.migratedTo ? { migratedTo: a.migratedTo } : {}),
          });
          s.finish(a.reason ?? { condition: "success" }, a.migratedTo);
        } else {
          log.debug("JMI finish for an ended call", {
            sid: a.id,
            from,
            reason: a.reason?.condition,
            ...(a.migratedTo ? { migratedTo: a.migratedTo } : {}),
          });
        }
        return;
      default:
        return;
    }
  });

  // A propose nobody received (no available resource, unknown account, blocked): the server bounces it with its
  // id. Ringing on until the timeout would hide why; the call ends now, saying so.
  const stopBounces = conn.onMessageError((stanza, from) => {
    const id = stanza.attrs.id;
    if (typeof id !== "string" || !id.startsWith(PROPOSE_ID_PREFIX)) return;
    const s = sessions.get(id.slice(PROPOSE_ID_PREFIX.length));
    if (!s || s.direction !== "outgoing" || s.direct || (s.state !== "proposed" && s.state !== "ringing")) {
      return;
    }
    if (!jidEquals(bare(from), bare(s.peerJid))) return;
    const condition = StanzaError.fromStanza(stanza).condition;
    log.warn("call propose bounced", { sid: s.sid, peer: from, condition });
    s.finish({
      condition: "connectivity-error",
      text: `the propose bounced (${condition}): ${from} is not reachable`,
    });
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
        j.action === "description-info" ||
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
        s.initiateNames = j.contents.map((c) => c.name);
        s.move("initiated", "session-initiate received");
        s.onSessionInitiate(j).catch((e) => s.fail(e));
        break;
      case "session-accept":
        s.move("accepted", "session-accept received");
        s.onSessionAccept(j).catch((e) => s.fail(e));
        break;
      case "transport-info": {
        // Candidates for a content this session does not have would land on another m-line: refused, none applied.
        const unknown = j.contents.filter((c) => !s.knowsContent(c.name)).map((c) => c.name);
        if (unknown.length) {
          log.warn("transport-info for an unknown content", { sid: j.sid, contents: unknown });
          throw iqError("bad-request", "modify", undefined, `unknown content '${unknown.join("', '")}'`);
        }
        for (const c of j.contents) {
          if (c.transport?.kind !== "ice-udp") continue;
          for (const cand of c.transport.candidates) void s.addRemote(c.name, cand, c.transport.ufrag);
        }
        break;
      }
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
      case "content-add":
        s.onContentAdd(j);
        break;
      case "content-accept":
      case "content-reject":
        s.onContentAnswer(j);
        break;
      case "content-remove":
        s.onContentRemove(j);
        break;
      case "content-modify":
        s.onContentModify(j);
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
    session.initiateNames = j.contents.map((c) => c.name);
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
      // The propose leaves first; while it travels and rings: our fingerprint OMEMO-encrypted for the peer's devices
      // (the certificate is known before any peer exists), the media plane and its offer (set in this same turn, so
      // that an early proceed waits for this one instead of making a second).
      const proposal = sendJmi({ action: "propose", id: sid, media }, to, `${PROPOSE_ID_PREFIX}${sid}`, true);
      const encryptedAhead = verify === "off"
        ? Promise.resolve()
        : localDtlsFingerprint().then((fingerprint) =>
          s.preEncryptFingerprint(fingerprint, media.length, s.sessionDevices(PRE_ENCRYPT_DEVICES.outgoing))
        );
      const prepared = s.ensureMedia();
      s.offer = prepared.then((peer) => peer.createOffer());
      s.offer.catch(() => {});
      try {
        await proposal;
      } catch (e) {
        s.fail(e);
      }
      await Promise.all([encryptedAhead, prepared]).catch((e) => s.fail(e));
      return s.call;
    },
    onIncoming(cb) {
      incomingCbs.add(cb);
      return () => incomingCbs.delete(cb);
    },
    async stop() {
      for (const s of [...sessions.values()]) await s.hangup();
      stopJmi();
      stopBounces();
      stopIq();
      await endpoint.disco.removeFeatures(...CALL_FEATURES).catch(() => {});
    },
  };
}
