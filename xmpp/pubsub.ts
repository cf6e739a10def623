/**
 * XEP-0060 / XEP-0163 PEP: publish (with XEP-0223 publish-options), retrieve, and event handling.
 *
 * @module
 */
import type { XmppConnection } from "./connection.ts";
import { NS_DATA } from "./disco.ts";
import { StanzaError } from "./errors.ts";
import { type Element, jidEquals, parseJid, xml } from "./xml.ts";

/** Pubsub namespace. */
export const NS_PUBSUB = "http://jabber.org/protocol/pubsub";
/** Pubsub event namespace. */
export const NS_PUBSUB_EVENT = "http://jabber.org/protocol/pubsub#event";
/** Pubsub owner namespace. */
export const NS_PUBSUB_OWNER = "http://jabber.org/protocol/pubsub#owner";
/** Pubsub application error namespace. */
export const NS_PUBSUB_ERRORS = "http://jabber.org/protocol/pubsub#errors";

/** Node configuration / publish-options fields, e.g. `{ "pubsub#access_model": "open" }`. */
export type NodeOptions = Record<string, string | string[]>;

/** A retrieved or notified item. */
export interface PubsubItem {
  id: string;
  /** The item's payload (first child element), if any. */
  payload?: Element;
}

/** The `+notify` feature that subscribes us to a PEP node through caps (XEP-0163 §4). */
export function notifyFeature(node: string): string {
  return `${node}+notify`;
}

/** Encodes a submit data form with a FORM_TYPE. */
export function submitForm(formType: string, fields: NodeOptions): Element {
  return xml(
    "x",
    { xmlns: NS_DATA, type: "submit" },
    xml("field", { var: "FORM_TYPE", type: "hidden" }, xml("value", {}, formType)),
    Object.entries(fields).map(([v, value]) =>
      xml("field", { var: v }, (Array.isArray(value) ? value : [value]).map((x) => xml("value", {}, x)))
    ),
  );
}

/** Decodes `<items/>` (from a result or an event) into items. */
export function parseItems(items: Element): PubsubItem[] {
  return items.getChildren("item").map((item) => ({
    id: item.attrs.id ?? "",
    payload: item.getChildElements()[0],
  }));
}

function isPreconditionNotMet(err: unknown): boolean {
  return err instanceof StanzaError && err.application?.name === "precondition-not-met";
}

/** Configures one of our PEP nodes (owner namespace). */
export async function configureNode(conn: XmppConnection, node: string, options: NodeOptions): Promise<void> {
  await conn.iq(xml(
    "iq",
    { type: "set" },
    xml(
      "pubsub",
      { xmlns: NS_PUBSUB_OWNER },
      xml("configure", { node }, submitForm("http://jabber.org/protocol/pubsub#node_config", options)),
    ),
  ));
}

/**
 * Publishes `payload` to our PEP node, with publish-options. If the server refuses because the
 * existing node's configuration differs (`precondition-not-met`), reconfigures the node and retries
 * once — the same recovery Conversations uses. Resolves with the item id.
 */
export async function publish(
  conn: XmppConnection,
  node: string,
  payload: Element,
  options: { id?: string; publishOptions?: NodeOptions; timeoutMs?: number } = {},
): Promise<string> {
  const attempt = async () => {
    const result = await conn.iq(
      xml(
        "iq",
        { type: "set" },
        xml(
          "pubsub",
          { xmlns: NS_PUBSUB },
          xml("publish", { node }, xml("item", { id: options.id }, payload)),
          options.publishOptions
            ? xml(
              "publish-options",
              {},
              submitForm("http://jabber.org/protocol/pubsub#publish-options", options.publishOptions),
            )
            : null,
        ),
      ),
      { timeoutMs: options.timeoutMs },
    );
    return result.getChild("pubsub", NS_PUBSUB)?.getChild("publish")?.getChild("item")?.attrs.id ??
      options.id ??
      "";
  };
  try {
    return await attempt();
  } catch (err) {
    if (!options.publishOptions || !isPreconditionNotMet(err)) throw err;
    conn.logger.info("publish-options precondition not met; reconfiguring node", { node });
    await configureNode(conn, node, options.publishOptions);
    return await attempt();
  }
}

/** Retrieves items of `node` at `jid` (a bare JID for PEP): specific ids, or the latest `max`. */
export async function retrieveItems(
  conn: XmppConnection,
  jid: string,
  node: string,
  options: { ids?: string[]; max?: number; timeoutMs?: number } = {},
): Promise<PubsubItem[]> {
  const result = await conn.iq(
    xml(
      "iq",
      { type: "get", to: jid },
      xml(
        "pubsub",
        { xmlns: NS_PUBSUB },
        xml(
          "items",
          { node, max_items: options.ids?.length ? undefined : options.max },
          (options.ids ?? []).map((id) => xml("item", { id })),
        ),
      ),
    ),
    { timeoutMs: options.timeoutMs },
  );
  const items = result.getChild("pubsub", NS_PUBSUB)?.getChild("items");
  return items ? parseItems(items) : [];
}

/** A PEP notification. */
export interface PepEvent {
  /** Bare JID of the node owner (validated). */
  from: string;
  node: string;
  items: PubsubItem[];
  /** Ids of retracted items. */
  retracted: string[];
}

/**
 * Handles PEP notifications for `node`. Events are only accepted when the stanza's `from` is a bare
 * account JID (PEP services are addressed by the owner's bare JID) and, if `owner` is given,
 * equals it; `ownOnly` restricts to our own bare JID. Carbon copies are never accepted as events.
 */
export function onPepEvent(
  conn: XmppConnection,
  node: string,
  handler: (event: PepEvent) => void | Promise<void>,
  options: { owner?: string; ownOnly?: boolean } = {},
): () => void {
  return conn.onMessage(NS_PUBSUB_EVENT, async (event, ctx) => {
    const items = event.getChild("items");
    if (!items || items.attrs.node !== node) return;
    const rawFrom = ctx.stanza.attrs.from;
    const parts = rawFrom === undefined ? null : parseJid(rawFrom);
    const expected = options.ownOnly ? conn.bareJid : options.owner;
    if (
      ctx.carbon || !parts || !parts.local || parts.resource !== null ||
      (expected && !jidEquals(rawFrom, expected))
    ) {
      conn.logger.warn("dropping pubsub event from unexpected sender", { node, from: rawFrom });
      return;
    }
    await handler({
      from: ctx.from,
      node,
      items: parseItems(items),
      retracted: items.getChildren("retract").map((r) => r.attrs.id ?? ""),
    });
  });
}
