/** XEP-0353 Jingle Message Initiation codec (`urn:xmpp:jingle-message:0`). Pure: no I/O. */
import { badRequest, JingleProtocolError } from "./errors.ts";
import { NS_HINTS, NS_JINGLE, NS_JMI, NS_OMEMO_DTLS, NS_RTP } from "./namespaces.ts";
import { type JingleReason, parseReason, serializeReason } from "./jingle.ts";
import { childNS, el, type Element } from "./xml.ts";

/** Media announced in a propose. */
export type JmiMedia = "audio" | "video";

/** A parsed JMI action. `id` is the session id (later reused as Jingle `sid`). */
export type JmiAction =
  | { action: "propose"; id: string; media: JmiMedia[] }
  | { action: "ringing"; id: string }
  | { action: "proceed"; id: string; deviceId?: number }
  | { action: "accept"; id: string }
  | { action: "reject"; id: string; reason?: JingleReason; tieBreak?: boolean }
  | { action: "retract"; id: string; reason?: JingleReason; tieBreak?: boolean }
  | { action: "finish"; id: string; reason?: JingleReason; migratedTo?: string };

/** Envelope data of a received JMI message. */
export interface JmiMessage {
  /** Sender JID. */
  from?: string;
  /** Recipient JID. */
  to?: string;
  /** Message type (`chat` for JMI). */
  type?: string;
  /** The message's `id`. */
  stanzaId?: string;
  /** The JMI payload. */
  jmi: JmiAction;
}

const ACTIONS = ["propose", "ringing", "proceed", "accept", "reject", "retract", "finish"] as const;

/** Find and parse the JMI child of a `<message>`; returns undefined if the message carries no JMI element.
 * Throws {@link JingleProtocolError} for a malformed JMI element. */
export function parseJmiMessage(message: Element): JmiMessage | undefined {
  if (message.name !== "message") badRequest("not a <message/> stanza");
  const child = message.getChildElements().find((c) =>
    c.getNS() === NS_JMI && (ACTIONS as readonly string[]).includes(c.name)
  );
  if (!child) return undefined;
  return {
    from: message.attrs.from,
    to: message.attrs.to,
    type: message.attrs.type,
    stanzaId: message.attrs.id,
    jmi: parseJmiElement(child),
  };
}

/** Parse one JMI element (`<propose/>`, `<proceed/>`, …). */
export function parseJmiElement(e: Element): JmiAction {
  if (e.getNS() !== NS_JMI) badRequest(`unexpected JMI namespace ${e.getNS()}`);
  const id = e.attrs.id;
  if (!id) badRequest(`JMI <${e.name}/> without id`);
  switch (e.name) {
    case "propose": {
      const descs = e.getChildElements().filter((c) => c.name === "description");
      if (descs.length === 0) badRequest("propose without description");
      if (descs.length > 2) badRequest("propose with more than two descriptions");
      const media: JmiMedia[] = [];
      for (const d of descs) {
        if (d.getNS() !== NS_RTP) {
          throw new JingleProtocolError(
            `propose with non-RTP description ${d.getNS()}`,
            "feature-not-implemented",
          );
        }
        const m = d.attrs.media;
        if (m !== "audio" && m !== "video") {
          throw new JingleProtocolError(`propose with unknown media '${m}'`, "feature-not-implemented");
        }
        if (media.includes(m)) badRequest(`propose with duplicate media '${m}'`);
        media.push(m);
      }
      return { action: "propose", id, media };
    }
    case "ringing":
      return { action: "ringing", id };
    case "accept":
      return { action: "accept", id };
    case "proceed": {
      // Conversations reads findChild("device") without namespace check; accept both.
      const dev = childNS(e, "device", NS_OMEMO_DTLS) ?? e.getChild("device");
      if (!dev) return { action: "proceed", id };
      const raw = dev.attrs.id ?? "";
      if (!/^\d+$/.test(raw)) badRequest(`proceed <device/> with invalid id '${raw}'`);
      const deviceId = Number(raw);
      if (deviceId > 0xffffffff) badRequest(`proceed <device/> id out of range`);
      return { action: "proceed", id, deviceId };
    }
    case "reject":
    case "retract": {
      const r = childNS(e, "reason", NS_JINGLE);
      const out: Extract<JmiAction, { action: "reject" | "retract" }> = { action: e.name, id };
      if (r) out.reason = parseReason(r);
      // XEP-0353: <tie-break/> is a sibling of <reason/>; tolerate it inside <reason/> too.
      if (e.getChild("tie-break") || out.reason?.extra?.some((x) => x.name === "tie-break")) {
        out.tieBreak = true;
      }
      return out;
    }
    case "finish": {
      const r = childNS(e, "reason", NS_JINGLE);
      // XEP-0353 v0.8: <migrated to='NEWSID'/> (JMI namespace) names the session replacing this one.
      const mig = childNS(e, "migrated", NS_JMI);
      const out: Extract<JmiAction, { action: "finish" }> = { action: "finish", id };
      if (r) out.reason = parseReason(r);
      if (mig) {
        if (!mig.attrs.to) badRequest("finish <migrated/> without 'to'");
        out.migratedTo = mig.attrs.to;
      }
      return out;
    }
    default:
      return badRequest(`unknown JMI element <${e.name}/>`);
  }
}

/** Serialize a JMI action to its element (`<propose xmlns='urn:xmpp:jingle-message:0' id>…`). */
export function serializeJmiElement(a: JmiAction): Element {
  if (!a.id) badRequest("JMI action without id");
  const attrs = { xmlns: NS_JMI, id: a.id };
  switch (a.action) {
    case "propose":
      if (a.media.length === 0 || a.media.length > 2) badRequest("propose needs one or two media");
      return el("propose", attrs, ...a.media.map((m) => el("description", { xmlns: NS_RTP, media: m })));
    case "ringing":
    case "accept":
      return el(a.action, attrs);
    case "proceed":
      return el(
        "proceed",
        attrs,
        a.deviceId !== undefined ? el("device", { xmlns: NS_OMEMO_DTLS, id: a.deviceId }) : undefined,
      );
    case "reject":
    case "retract":
      return el(
        a.action,
        attrs,
        a.reason ? serializeReason(a.reason) : undefined,
        a.tieBreak ? el("tie-break", {}) : undefined,
      );
    case "finish":
      return el(
        "finish",
        attrs,
        a.reason ? serializeReason(a.reason) : undefined,
        a.migratedTo !== undefined ? el("migrated", { to: a.migratedTo }) : undefined,
      );
  }
}

/** Options for {@link buildJmiMessage}. */
export interface JmiMessageOptions {
  /** Recipient: the callee's bare JID for propose/retract, the other party's full JID otherwise. */
  to: string;
  /** Sender (normally left to the server). */
  from?: string;
  /** Stanza id; Conversations uses `jm-propose-SID` / `jm-proceed-SID`. */
  id?: string;
  /** Add `<request xmlns='urn:xmpp:receipts'/>` (Conversations does so on propose). */
  requestReceipt?: boolean;
}

/** Build a complete `<message type='chat'>` with the JMI element and `<store xmlns='urn:xmpp:hints'/>`. */
export function buildJmiMessage(a: JmiAction, opts: JmiMessageOptions): Element {
  return el(
    "message",
    { xmlns: "jabber:client", to: opts.to, from: opts.from, type: "chat", id: opts.id },
    serializeJmiElement(a),
    opts.requestReceipt ? el("request", { xmlns: "urn:xmpp:receipts" }) : undefined,
    el("store", { xmlns: NS_HINTS }),
  );
}

/** The XEP-0353 tie-break reject: `<reject id><reason><expired/><text>Tie-Break</text></reason><tie-break/></reject>`. */
export function tieBreakReject(id: string): JmiAction {
  return { action: "reject", id, reason: { condition: "expired", text: "Tie-Break" }, tieBreak: true };
}
