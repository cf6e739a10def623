/**
 * Typed XMPP errors and their element codecs (RFC 6120 §8.3).
 *
 * @module
 */
import { type Element, xml } from "./xml.ts";

/** RFC 6120 stanza error namespace. */
export const NS_STANZAS = "urn:ietf:params:xml:ns:xmpp-stanzas";

/** RFC 6120 §8.3.2 error types. */
export type StanzaErrorType = "auth" | "cancel" | "continue" | "modify" | "wait";

/** An `<error/>` received in (or to be sent in) a stanza of type `error`. */
export class StanzaError extends Error {
  /** Defined condition, e.g. `service-unavailable`, `item-not-found`. */
  readonly condition: string;
  /** Error type: how the receiver should react (`cancel`, `modify`, `wait`, …). */
  readonly type: StanzaErrorType;
  /** Human readable `<text/>`, if any. */
  readonly text?: string;
  /** Application-specific condition child (e.g. pubsub `<precondition-not-met/>`), if any. */
  readonly application?: Element;
  /** The whole stanza the error came in, if received. */
  readonly stanza?: Element;

  /** An error with this condition, type and optional text, application condition and received stanza. */
  constructor(
    condition: string,
    type: StanzaErrorType = "cancel",
    options: { text?: string; application?: Element; stanza?: Element } = {},
  ) {
    super(
      `${condition}${options.application ? ` (${options.application.name})` : ""}${
        options.text ? `: ${options.text}` : ""
      }`,
    );
    this.name = "StanzaError";
    this.condition = condition;
    this.type = type;
    this.text = options.text;
    this.application = options.application;
    this.stanza = options.stanza;
  }

  /** Decodes the `<error/>` child of an error stanza. */
  static fromStanza(stanza: Element): StanzaError {
    const error = stanza.getChild("error");
    if (!error) return new StanzaError("undefined-condition", "cancel", { stanza });
    let condition = "undefined-condition";
    let text: string | undefined;
    let application: Element | undefined;
    for (const child of error.getChildElements()) {
      if (child.getNS() === NS_STANZAS) {
        if (child.name === "text") text = child.text();
        else condition = child.name;
      } else {
        application ??= child;
      }
    }
    const type = (error.attrs.type ?? "cancel") as StanzaErrorType;
    return new StanzaError(condition, type, { text, application, stanza });
  }

  /** Encodes this error as an `<error/>` element. */
  toElement(): Element {
    return xml(
      "error",
      { type: this.type },
      xml(this.condition, { xmlns: NS_STANZAS }),
      this.text ? xml("text", { xmlns: NS_STANZAS }, this.text) : null,
      this.application ?? null,
    );
  }
}

/** An IQ got no response in time. */
export class IqTimeoutError extends Error {
  /** The IQ `id` that got no answer within `timeoutMs`. */
  constructor(readonly id: string, readonly timeoutMs: number) {
    super(`IQ ${id} timed out after ${timeoutMs} ms`);
    this.name = "IqTimeoutError";
  }
}

/** Authentication failed (SASL `<failure/>`, or the server could not prove it knows the password). */
export class AuthError extends Error {
  /** SASL condition such as `not-authorized`, or `server-signature-mismatch`. */
  readonly condition: string;
  /** A failure with its SASL (or our own) condition and the server's text. */
  constructor(condition: string, text?: string) {
    super(`authentication failed: ${condition}${text ? ` (${text})` : ""}`);
    this.name = "AuthError";
    this.condition = condition;
  }
}

/** The connection is not online (closed, or currently reconnecting). */
export class NotConnectedError extends Error {
  constructor(state: string) {
    super(`XMPP connection is ${state}`);
    this.name = "NotConnectedError";
  }
}
