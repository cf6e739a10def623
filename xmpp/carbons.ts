/**
 * XEP-0280 Message Carbons: enabling, and safe unwrapping of carbon copies.
 *
 * @module
 */
import type { XmppConnection } from "./connection.ts";
import { type Element, jidEquals, normalizeJid, xml } from "./xml.ts";

/** Carbons v2 namespace. */
export const NS_CARBONS = "urn:xmpp:carbons:2";
/** XEP-0297 forwarding namespace. */
export const NS_FORWARD = "urn:xmpp:forward:0";

/** Result of {@link unwrapCarbon}. */
export type CarbonUnwrap =
  | { ok: true; direction: "received" | "sent"; message: Element }
  | { ok: false; reason: string };

/**
 * Extracts the forwarded message from a carbon (`<received/>` or `<sent/>`).
 * Only our own server, speaking for our bare JID, may send carbons: anything else is a forgery
 * (CVE-2017-5589) and is rejected.
 */
export function unwrapCarbon(outer: Element, ownBareJid: string): CarbonUnwrap {
  const wrapper = outer.getChild("received", NS_CARBONS) ?? outer.getChild("sent", NS_CARBONS);
  if (!wrapper) return { ok: false, reason: "not a carbon" };
  const from = outer.attrs.from;
  if (from === undefined || !jidEquals(from, ownBareJid)) {
    return { ok: false, reason: `carbon from ${from ?? "(none)"} is not from our bare JID` };
  }
  const message = wrapper.getChild("forwarded", NS_FORWARD)?.getChild("message");
  if (!message) return { ok: false, reason: "carbon without forwarded message" };
  return { ok: true, direction: wrapper.name as "received" | "sent", message };
}

/** Asks the server to enable carbons for this session. */
export async function enableCarbons(conn: XmppConnection): Promise<void> {
  await conn.iq(xml("iq", { type: "set" }, xml("enable", { xmlns: NS_CARBONS })));
}

/**
 * Enables carbons now and after every reconnect, and routes unwrapped carbons through the
 * connection's message handlers (with `ctx.carbon` set). Returns a disposer.
 */
export function setupCarbons(conn: XmppConnection, options: { enable?: boolean } = {}): () => void {
  const offOnline = options.enable === false ? () => {} : conn.onOnline(async () => {
    try {
      await enableCarbons(conn);
    } catch (err) {
      conn.logger.warn("enabling carbons failed", { error: String(err) });
    }
  });
  const offMessage = conn.onMessage(NS_CARBONS, async (payload, ctx) => {
    if (payload.name !== "received" && payload.name !== "sent") return;
    if (ctx.carbon) {
      conn.logger.warn("dropping nested carbon");
      return;
    }
    const result = unwrapCarbon(ctx.stanza, conn.bareJid);
    if (!result.ok) {
      conn.logger.warn("dropping carbon", { reason: result.reason });
      return;
    }
    const inner = result.message;
    // For a received carbon the sender is the inner `from`; for a sent one it is one of our resources.
    const innerFrom = inner.attrs.from === undefined ? conn.bareJid : normalizeJid(inner.attrs.from);
    if (innerFrom === null) {
      conn.logger.warn("dropping carbon with malformed inner from");
      return;
    }
    await conn.dispatchMessage(inner, { from: innerFrom, carbon: result.direction, stanza: inner });
  });
  return () => {
    offOnline();
    offMessage();
  };
}
