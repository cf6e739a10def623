/** Typed protocol errors raised by the Jingle codecs on malformed input. */

/** RFC 6120 stanza error conditions used by the codecs. */
export type StanzaErrorCondition =
  | "bad-request"
  | "feature-not-implemented"
  | "item-not-found"
  | "unexpected-request"
  | "conflict"
  | "not-acceptable"
  | "service-unavailable";

/** XEP-0166 application-specific error conditions (`urn:xmpp:jingle:errors:1`). */
export type JingleErrorCondition = "unknown-session" | "out-of-order" | "tie-break" | "unsupported-info";

/** Thrown by every parser/serializer when input violates the protocol. Carries the stanza
 * condition to answer with (and optionally a Jingle-specific condition). */
export class JingleProtocolError extends Error {
  /** Stanza-level condition the receiver should reply with. */
  readonly condition: StanzaErrorCondition;
  /** Optional XEP-0166 specific condition. */
  readonly jingleCondition?: JingleErrorCondition;

  /** A protocol error with the stanza error (and optional Jingle error) the receiver should answer with. */
  constructor(
    message: string,
    condition: StanzaErrorCondition = "bad-request",
    jingleCondition?: JingleErrorCondition,
  ) {
    super(message);
    this.name = "JingleProtocolError";
    this.condition = condition;
    this.jingleCondition = jingleCondition;
  }
}

/** Shorthand: throw a `bad-request` JingleProtocolError. */
export function badRequest(message: string): never {
  throw new JingleProtocolError(message, "bad-request");
}
