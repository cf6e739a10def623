/** XEP-0166 Jingle envelope codec: actions, contents, reasons, session-info, BUNDLE group, error stanzas. Pure. */
import {
  badRequest,
  type JingleErrorCondition,
  JingleProtocolError,
  type StanzaErrorCondition,
} from "./errors.ts";
import {
  type IceCandidate,
  type IceUdpTransport,
  parseIceUdpTransport,
  serializeIceUdpTransport,
} from "./ice_udp.ts";
import {
  NS_GROUPING,
  NS_ICE_UDP,
  NS_JINGLE,
  NS_JINGLE_ERRORS,
  NS_RTP,
  NS_RTP_INFO,
  NS_STANZAS,
} from "./namespaces.ts";
import { parseRtpDescription, type RtpDescription, serializeRtpDescription } from "./rtp.ts";
import { childNS, childrenNS, cloneElement, el, type Element } from "./xml.ts";

/** All XEP-0166 actions. */
export const JINGLE_ACTIONS = [
  "content-accept",
  "content-add",
  "content-modify",
  "content-reject",
  "content-remove",
  "description-info",
  "security-info",
  "session-accept",
  "session-info",
  "session-initiate",
  "session-terminate",
  "transport-accept",
  "transport-info",
  "transport-reject",
  "transport-replace",
] as const;
/** A Jingle action. */
export type JingleAction = typeof JINGLE_ACTIONS[number];

/** All XEP-0166 reason conditions. */
export const REASON_CONDITIONS = [
  "alternative-session",
  "busy",
  "cancel",
  "connectivity-error",
  "decline",
  "expired",
  "failed-application",
  "failed-transport",
  "general-error",
  "gone",
  "incompatible-parameters",
  "media-error",
  "security-error",
  "success",
  "timeout",
  "unsupported-applications",
  "unsupported-transports",
] as const;
/** A reason condition. */
export type ReasonCondition = typeof REASON_CONDITIONS[number];

/** A reason given as a condition name or a whole reason, checked; throws on a name that is not a condition. */
export function toJingleReason(reason: JingleReason | string): JingleReason {
  if (typeof reason !== "string") return reason;
  if (!(REASON_CONDITIONS as readonly string[]).includes(reason)) {
    throw new Error(`not a Jingle reason condition: '${reason}'`);
  }
  return { condition: reason as ReasonCondition };
}

/** `<reason>`: condition, optional text, optional alternative-session sid, app-specific children. */
export interface JingleReason {
  /** The defined condition (e.g. `success`, `decline`, `busy`). */
  condition: ReasonCondition;
  /** Human-readable `<text>`. */
  text?: string;
  /** `<alternative-session><sid>…</sid></alternative-session>`. */
  alternativeSid?: string;
  /** Application-specific children (e.g. `<tie-break/>`), kept verbatim. */
  extra?: Element[];
}

/** Content creator. */
export type Creator = "initiator" | "responder";
/** Content senders. */
export type Senders = "both" | "initiator" | "responder" | "none";

/** Non-RTP / non-ICE payloads (file-transfer descriptions, s5b/ibb transports) kept as raw Elements. */
export interface UnknownPayload {
  /** Always "unknown": the payload was not parsed. */
  kind: "unknown";
  /** The payload element, kept verbatim. */
  element: Element;
}

/** A `<content/>`. */
export interface JingleContent {
  /** Who created the content (with `name`, identifies it). */
  creator: Creator;
  /** Content name, unique per creator (the SDP `mid`). */
  name: string;
  /** Who sends media; absent = "both". */
  senders?: Senders;
  /** `disposition` attribute (e.g. "session"), kept when given. */
  disposition?: string;
  /** The application: XEP-0167 RTP description, or an unparsed one (e.g. file transfer). */
  description?: RtpDescription | UnknownPayload;
  /** The transport: XEP-0176 ICE-UDP, or an unparsed one (e.g. SOCKS5, IBB). */
  transport?: IceUdpTransport | UnknownPayload;
  /** Other children (e.g. JET `<security/>`), kept verbatim. */
  extra?: Element[];
}

/** XEP-0338 `<group semantics>`. */
export interface JingleGroup {
  /** Group semantics, e.g. "BUNDLE". */
  semantics: string;
  /** Names of the grouped contents. */
  contents: string[];
}

/** XEP-0167 session-info payload. */
export type SessionInfo =
  | { type: "ringing" }
  | { type: "active" }
  | { type: "hold" }
  | { type: "unhold" }
  | { type: "mute"; creator?: Creator; name?: string }
  | { type: "unmute"; creator?: Creator; name?: string };

/** A parsed `<jingle/>` element. */
export interface Jingle {
  /** The Jingle action, e.g. `session-initiate`. */
  action: JingleAction;
  /** Session id. */
  sid: string;
  /** `initiator` attribute (full JID), when present. */
  initiator?: string;
  /** `responder` attribute (full JID), when present. */
  responder?: string;
  /** The `<content/>`s, in document order. */
  contents: JingleContent[];
  /** `<reason/>` (session-terminate, content-reject...). */
  reason?: JingleReason;
  /** XEP-0338 groups. */
  groups: JingleGroup[];
  /** session-info payload (undefined = empty ping / unknown payload in `sessionInfoUnknown`). */
  info?: SessionInfo;
  /** Raw unknown session-info payload: the receiver should answer with `unsupported-info`. */
  infoUnknown?: Element;
}

const INFO_TYPES = ["ringing", "active", "hold", "unhold", "mute", "unmute"];

/** Parse a `<reason xmlns='urn:xmpp:jingle:1'>`. */
export function parseReason(r: Element): JingleReason {
  let condition: ReasonCondition | undefined;
  let text: string | undefined;
  let alternativeSid: string | undefined;
  const extra: Element[] = [];
  for (const c of r.getChildElements()) {
    if (c.getNS() === NS_JINGLE && (REASON_CONDITIONS as readonly string[]).includes(c.name)) {
      if (condition) badRequest("reason with multiple conditions");
      condition = c.name as ReasonCondition;
      if (c.name === "alternative-session") {
        const sid = c.getChildText("sid");
        if (sid) alternativeSid = sid;
      }
    } else if (c.name === "text" && c.getNS() === NS_JINGLE) {
      text = c.getText();
    } else {
      extra.push(c);
    }
  }
  if (!condition) badRequest("reason without a known condition");
  const out: JingleReason = { condition };
  if (text !== undefined) out.text = text;
  if (alternativeSid !== undefined) out.alternativeSid = alternativeSid;
  if (extra.length) out.extra = extra;
  return out;
}

/** Serialize a reason as `<reason xmlns='urn:xmpp:jingle:1'>`. */
export function serializeReason(r: JingleReason): Element {
  if (!(REASON_CONDITIONS as readonly string[]).includes(r.condition)) {
    badRequest(`unknown reason ${r.condition}`);
  }
  return el(
    "reason",
    { xmlns: NS_JINGLE },
    el(
      r.condition,
      {},
      r.condition === "alternative-session" && r.alternativeSid ? el("sid", {}, r.alternativeSid) : undefined,
    ),
    r.text !== undefined ? el("text", {}, r.text) : undefined,
    ...(r.extra ?? []).map((x) => cloneElement(x)),
  );
}

function parseContent(c: Element): JingleContent {
  const name = c.attrs.name;
  if (!name) badRequest("content without name");
  const creator = c.attrs.creator;
  if (creator !== "initiator" && creator !== "responder") badRequest(`content '${name}' has invalid creator`);
  const out: JingleContent = { creator, name };
  const senders = c.attrs.senders;
  if (senders !== undefined) {
    if (!["both", "initiator", "responder", "none"].includes(senders)) {
      badRequest(`invalid senders '${senders}'`);
    }
    out.senders = senders as Senders;
  }
  if (c.attrs.disposition) out.disposition = c.attrs.disposition;
  const extra: Element[] = [];
  for (const ch of c.getChildElements()) {
    if (ch.name === "description") {
      if (out.description) badRequest(`content '${name}' has two descriptions`);
      out.description = ch.getNS() === NS_RTP ? parseRtpDescription(ch) : { kind: "unknown", element: ch };
    } else if (ch.name === "transport") {
      if (out.transport) badRequest(`content '${name}' has two transports`);
      out.transport = ch.getNS() === NS_ICE_UDP ? parseIceUdpTransport(ch) : { kind: "unknown", element: ch };
    } else {
      extra.push(ch);
    }
  }
  if (extra.length) out.extra = extra;
  return out;
}

function serializeContent(c: JingleContent): Element {
  const e = el("content", {
    creator: c.creator,
    name: c.name,
    senders: c.senders,
    disposition: c.disposition,
  });
  const d = c.description;
  if (d) e.append(d.kind === "rtp" ? serializeRtpDescription(d) : cloneElement(d.element));
  const t = c.transport;
  if (t) e.append(t.kind === "ice-udp" ? serializeIceUdpTransport(t) : cloneElement(t.element));
  for (const x of c.extra ?? []) e.append(cloneElement(x));
  return e;
}

function parseSessionInfo(j: Element): Pick<Jingle, "info" | "infoUnknown"> {
  const kids = j.getChildElements().filter((c) => c.getNS() !== NS_JINGLE);
  if (kids.length === 0) return {};
  const k = kids[0]!;
  if (k.getNS() !== NS_RTP_INFO || !INFO_TYPES.includes(k.name)) return { infoUnknown: k };
  if (k.name === "mute" || k.name === "unmute") {
    const info: Extract<SessionInfo, { type: "mute" | "unmute" }> = { type: k.name };
    const cr = k.attrs.creator;
    if (cr !== undefined) {
      if (cr !== "initiator" && cr !== "responder") badRequest(`invalid ${k.name} creator`);
      info.creator = cr;
    }
    if (k.attrs.name) info.name = k.attrs.name;
    return { info };
  }
  return { info: { type: k.name as "ringing" | "active" | "hold" | "unhold" } };
}

/** Parse a `<jingle xmlns='urn:xmpp:jingle:1'>` element. */
export function parseJingle(j: Element): Jingle {
  if (j.name !== "jingle" || j.getNS() !== NS_JINGLE) badRequest("not a <jingle/> element");
  const action = j.attrs.action;
  if (!action) badRequest("jingle without action");
  if (!(JINGLE_ACTIONS as readonly string[]).includes(action)) {
    badRequest(`unknown jingle action '${action}'`);
  }
  const sid = j.attrs.sid;
  if (!sid) badRequest("jingle without sid");
  const out: Jingle = {
    action: action as JingleAction,
    sid,
    contents: childrenNS(j, "content", NS_JINGLE).map(parseContent),
    groups: childrenNS(j, "group", NS_GROUPING).map((g) => ({
      semantics: g.attrs.semantics ?? g.attrs.type ?? badRequest("group without semantics"),
      contents: g.getChildElements().filter((c) => c.name === "content").map((c) =>
        c.attrs.name ?? badRequest("group content without name")
      ),
    })),
  };
  if (j.attrs.initiator) out.initiator = j.attrs.initiator;
  if (j.attrs.responder) out.responder = j.attrs.responder;
  const names = new Set<string>();
  for (const c of out.contents) {
    const key = `${c.creator}\u0000${c.name}`;
    if (names.has(key)) badRequest(`duplicate content '${c.name}'`);
    names.add(key);
  }
  const r = childNS(j, "reason", NS_JINGLE);
  if (r) out.reason = parseReason(r);
  if (action === "session-info") Object.assign(out, parseSessionInfo(j));
  if (action === "session-initiate" && out.contents.length === 0) {
    badRequest("session-initiate without content");
  }
  return out;
}

/** Serialize a Jingle object to `<jingle/>`. */
export function serializeJingle(j: Jingle): Element {
  if (!j.sid) badRequest("jingle without sid");
  const e = el("jingle", {
    xmlns: NS_JINGLE,
    action: j.action,
    initiator: j.initiator,
    responder: j.responder,
    sid: j.sid,
  });
  for (const c of j.contents) e.append(serializeContent(c));
  for (const g of j.groups) {
    e.append(
      el(
        "group",
        { xmlns: NS_GROUPING, semantics: g.semantics },
        ...g.contents.map((n) => el("content", { name: n })),
      ),
    );
  }
  if (j.reason) e.append(serializeReason(j.reason));
  if (j.info) {
    const i = j.info;
    e.append(
      el(i.type, {
        xmlns: NS_RTP_INFO,
        creator: "creator" in i ? i.creator : undefined,
        name: "name" in i ? i.name : undefined,
      }),
    );
  } else if (j.infoUnknown) e.append(cloneElement(j.infoUnknown));
  return e;
}

/** Parsed `<iq>` carrying Jingle. */
export interface JingleIq {
  /** Stanza id. */
  id?: string;
  /** Sender (full JID). */
  from?: string;
  /** Addressee. */
  to?: string;
  /** IQ type ("set" for Jingle requests). */
  type: string;
  /** The parsed `<jingle/>`. */
  jingle: Jingle;
}

/** Parse an `<iq type='set'><jingle/></iq>`; returns undefined if the iq has no jingle child. */
export function parseJingleIq(iq: Element): JingleIq | undefined {
  if (iq.name !== "iq") badRequest("not an <iq/>");
  const j = childNS(iq, "jingle", NS_JINGLE);
  if (!j) return undefined;
  return {
    id: iq.attrs.id,
    from: iq.attrs.from,
    to: iq.attrs.to,
    type: iq.attrs.type ?? "",
    jingle: parseJingle(j),
  };
}

/** Build `<iq type='set'><jingle/></iq>`. */
export function buildJingleIq(j: Jingle, opts: { to: string; from?: string; id: string }): Element {
  return el(
    "iq",
    { xmlns: "jabber:client", type: "set", to: opts.to, from: opts.from, id: opts.id },
    serializeJingle(j),
  );
}

/** Stanza error type. */
export type ErrorType = "cancel" | "modify" | "wait" | "auth" | "continue";

/** Build an `<iq type='error'>` answering `request` (swaps from/to, keeps id). */
export function buildIqError(
  request: Element,
  condition: StanzaErrorCondition,
  type: ErrorType,
  jingleCondition?: JingleErrorCondition,
  text?: string,
): Element {
  return el(
    "iq",
    {
      xmlns: "jabber:client",
      type: "error",
      id: request.attrs.id,
      to: request.attrs.from,
      from: request.attrs.to,
    },
    el(
      "error",
      { type },
      el(condition, { xmlns: NS_STANZAS }),
      text !== undefined ? el("text", { xmlns: NS_STANZAS }, text) : undefined,
      jingleCondition ? el(jingleCondition, { xmlns: NS_JINGLE_ERRORS }) : undefined,
    ),
  );
}

/** `<item-not-found/>` + `<unknown-session/>` (type cancel). */
export function unknownSessionError(request: Element): Element {
  return buildIqError(request, "item-not-found", "cancel", "unknown-session");
}
/** `<unexpected-request/>` + `<out-of-order/>` (type wait). */
export function outOfOrderError(request: Element): Element {
  return buildIqError(request, "unexpected-request", "wait", "out-of-order");
}
/** `<conflict/>` + `<tie-break/>` (type cancel). */
export function tieBreakError(request: Element): Element {
  return buildIqError(request, "conflict", "cancel", "tie-break");
}
/** `<feature-not-implemented/>` + `<unsupported-info/>` (type modify). */
export function unsupportedInfoError(request: Element): Element {
  return buildIqError(request, "feature-not-implemented", "modify", "unsupported-info");
}
/** Map a {@link JingleProtocolError} to the matching error stanza. */
export function errorFromException(request: Element, err: JingleProtocolError): Element {
  const type: ErrorType = err.jingleCondition === "out-of-order"
    ? "wait"
    : err.condition === "bad-request" || err.condition === "feature-not-implemented"
    ? "modify"
    : "cancel";
  return buildIqError(request, err.condition, type, err.jingleCondition, err.message);
}

/** Parsed error info of an `<iq type='error'>` (stanza + Jingle condition). */
export function parseIqError(iq: Element): { type?: string; condition?: string; jingleCondition?: string } {
  const e = iq.getChild("error");
  if (!e) return {};
  const cond = e.getChildElements().find((c) => c.getNS() === NS_STANZAS && c.name !== "text");
  const jc = e.getChildElements().find((c) => c.getNS() === NS_JINGLE_ERRORS);
  return { type: e.attrs.type, condition: cond?.name, jingleCondition: jc?.name };
}

/**
 * One trickled candidate as Conversations sends and expects it (protocol.md §3.1, §3.4): a `transport-info` with one
 * content (`creator='initiator'`, its name and `senders`, no description), a transport carrying the ICE credentials
 * of that content and exactly ONE candidate — never a fingerprint (neither Conversations nor Dino put one there).
 */
export function trickleTransportInfo(
  sid: string,
  content: { name: string; senders?: Senders },
  creds: { ufrag?: string; pwd?: string },
  candidate: IceCandidate,
): Jingle {
  return {
    action: "transport-info",
    sid,
    contents: [{
      creator: "initiator",
      name: content.name,
      ...(content.senders && content.senders !== "both" ? { senders: content.senders } : {}),
      transport: {
        kind: "ice-udp",
        ...(creds.ufrag ? { ufrag: creds.ufrag } : {}),
        ...(creds.pwd ? { pwd: creds.pwd } : {}),
        candidates: [candidate],
      },
    }],
    groups: [],
  };
}
