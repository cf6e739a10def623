/**
 * 1:1 audio/video calls the way Conversations and Dino place and answer them: XEP-0353 JMI, Jingle RTP over
 * ICE-UDP with DTLS-SRTP (werift), the DTLS fingerprint verified through OMEMO 0.3 (docs/protocol.md §1–§3, §8).
 *
 * @module
 */
import type { Endpoint } from "./endpoint.ts";
import { bare, type Element, jidEquals, type Logger, StanzaError, xml } from "../xmpp/mod.ts";
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
  /** STUN/TURN servers; default none (host candidates only). */
  iceServers?: IceServerConfig[];
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
  /** Subscribe to state changes. */
  onState(cb: (state: CallState) => void): () => void;
  /** Ends the call with the reason fitting the state (success, cancel, decline, retract, reject). */
  hangup(): Promise<void>;
}

/** The call subsystem of one endpoint. */
export interface Calls {
  /** Calls `peerBareJid` (JMI propose to the bare JID); resolves with the call right after the propose went out. */
  call(peerBareJid: string, options?: { video?: boolean }): Promise<Call>;
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
      if (st === "proposed" || st === "ringing") {
        // No Jingle session yet: JMI retract (caller) / reject (callee).
        const a: JmiAction = this.direction === "outgoing"
          ? { action: "retract", id: this.sid, reason }
          : { action: "reject", id: this.sid, reason };
        void sendJmi(a, this.direction === "outgoing" ? bare(this.peerJid) : this.peerJid).catch(() => {});
      } else {
        const j: Jingle = { action: "session-terminate", sid: this.sid, contents: [], groups: [], reason };
        void conn.iq(buildJingleIq(j, { to: this.peerJid, id: crypto.randomUUID() }) as unknown as Element)
          .catch((e) => log.debug("session-terminate not acknowledged", { sid: this.sid, error: String(e) }));
      }
      this.finish(reason);
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
      const peer = await createPeer({
        role: this.direction === "outgoing" ? "initiator" : "responder",
        audio: this.media.includes("audio"),
        video: this.media.includes("video"),
        ...(options.iceServers ? { iceServers: options.iceServers } : {}),
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

    async decide() {
      let ok: boolean;
      try {
        ok = await (options.accept ?? (() => true))(bare(this.peerJid), this.media);
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
    if (ctx.carbon) return;
    if (ctx.stanza.attrs.type === "groupchat" || ctx.stanza.attrs.type === "error") return;
    let a: JmiAction;
    try {
      a = parseJmiElement(payload as unknown as JingleElement);
    } catch (e) {
      log.warn("malformed JMI message", { from: ctx.from, error: String(e) });
      return;
    }
    const from = ctx.from;
    if (jidEquals(bare(from), conn.bareJid)) return; // our own accept/reject echoed to our bare JID
    const s = sessions.get(a.id);
    switch (a.action) {
      case "propose": {
        if (s) return;
        if (ctx.stanza.getChild("request", NS_RECEIPTS) && ctx.stanza.attrs.id) {
          await conn.send(xml(
            "message",
            { to: from, id: crypto.randomUUID() },
            xml("received", {
              xmlns: NS_RECEIPTS,
              id: ctx.stanza.attrs.id,
            }),
          ));
        }
        if (sessions.size >= maxCalls) {
          log.warn("call rejected: busy", { sid: a.id, from });
          await sendJmi({ action: "reject", id: a.id, reason: { condition: "busy" } }, from);
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
        session.decide().catch((e) => session.fail(e));
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
        if (s && jidEquals(from, s.peerJid) && !s.fsm.ended) s.finish(a.reason ?? { condition: "success" });
        return;
      default:
        return;
    }
  });

  /* ---------------- Jingle ---------------- */

  const stopIq = conn.handleIq("set", "jingle", NS_JINGLE, (payload, ctx) => {
    let j: Jingle;
    try {
      j = parseJingle(payload as unknown as JingleElement);
    } catch (e) {
      log.warn("malformed jingle", { from: ctx.from, error: String(e) });
      throw iqError("bad-request", "modify", undefined, (e as Error).message);
    }
    const s = sessions.get(j.sid);
    if (!s || !jidEquals(ctx.from, s.peerJid) || s.state === "proposed" || s.state === "ringing") {
      log.warn("jingle for unknown session", {
        sid: j.sid,
        action: j.action,
        from: ctx.from,
        reason: s ? "wrong sender" : "unknown sid",
      });
      throw iqError("item-not-found", "cancel", "unknown-session");
    }
    if (!acceptsAction(s.direction, s.state, j.action as JingleAction)) {
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
        break;
    }
    return null;
  });

  await endpoint.disco.addFeatures(...CALL_FEATURES);
  await conn.sendPresence().catch((e) => log.debug("presence after features failed", { error: String(e) }));

  return {
    calls: publicCalls,
    async call(peerBareJid, { video = false } = {}) {
      const to = bare(peerBareJid);
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
