/**
 * XEP-0030 Service Discovery (disco#info responder and query helper) and XEP-0115 Entity Capabilities.
 *
 * @module
 */
import type { XmppConnection } from "./connection.ts";
import { StanzaError } from "./errors.ts";
import { type Element, xml } from "./xml.ts";

/** disco#info namespace. */
export const NS_DISCO_INFO = "http://jabber.org/protocol/disco#info";
/** disco#items namespace. */
export const NS_DISCO_ITEMS = "http://jabber.org/protocol/disco#items";
/** XEP-0115 namespace. */
export const NS_CAPS = "http://jabber.org/protocol/caps";
/** XEP-0004 data forms namespace. */
export const NS_DATA = "jabber:x:data";

/** A disco identity. */
export interface DiscoIdentity {
  /** Identity category, e.g. `client`. */
  category: string;
  /** Identity type within the category, e.g. `bot`. */
  type: string;
  /** Human-readable name. */
  name?: string;
  /** `xml:lang` of the name. */
  lang?: string;
}

/** An XEP-0128 extended info form (one `FORM_TYPE` and its fields). */
export interface DiscoForm {
  /** The form's `FORM_TYPE` value. */
  formType: string;
  /** Field values by `var` (FORM_TYPE excluded). */
  fields: Record<string, string[]>;
}

/** The content of a disco#info result. */
export interface DiscoInfo {
  /** The entity's identities. */
  identities: DiscoIdentity[];
  /** The entity's features (namespaces). */
  features: string[];
  /** Extended information forms (XEP-0128). */
  forms: DiscoForm[];
}

/* ---------------------------------------- pure codecs ---------------------------------------- */

const enc = new TextEncoder();

/** XEP-0115 requires "i;octet" ordering (RFC 4790): compare UTF-8 bytes, not UTF-16 units. */
function octetCompare(a: string, b: string): number {
  const x = enc.encode(a);
  const y = enc.encode(b);
  const n = Math.min(x.length, y.length);
  for (let i = 0; i < n; i++) if (x[i] !== y[i]) return x[i]! - y[i]!;
  return x.length - y.length;
}

/** The XEP-0115 §5.1 verification string S (before hashing). */
export function capsVerificationString(info: DiscoInfo): string {
  let s = "";
  const ids = info.identities.map((i) => `${i.category}/${i.type}/${i.lang ?? ""}/${i.name ?? ""}`);
  for (const id of ids.sort(octetCompare)) s += `${id}<`;
  for (const f of [...new Set(info.features)].sort(octetCompare)) s += `${f}<`;
  const forms = [...info.forms].sort((a, b) => octetCompare(a.formType, b.formType));
  for (const form of forms) {
    s += `${form.formType}<`;
    const vars = Object.keys(form.fields).filter((v) => v !== "FORM_TYPE").sort(octetCompare);
    for (const v of vars) {
      s += `${v}<`;
      for (const value of [...form.fields[v]!].sort(octetCompare)) s += `${value}<`;
    }
  }
  return s;
}

/** XEP-0115 `ver` (sha-1, base64). */
export async function computeCapsVer(info: DiscoInfo): Promise<string> {
  const digest = new Uint8Array(
    await crypto.subtle.digest("SHA-1", enc.encode(capsVerificationString(info))),
  );
  let bin = "";
  for (const b of digest) bin += String.fromCharCode(b);
  return btoa(bin);
}

/** Encodes a disco#info `<query/>`. */
export function discoInfoToElement(info: DiscoInfo, node?: string): Element {
  return xml(
    "query",
    { xmlns: NS_DISCO_INFO, node },
    info.identities.map((i) =>
      xml("identity", { category: i.category, type: i.type, name: i.name, "xml:lang": i.lang })
    ),
    [...new Set(info.features)].map((f) => xml("feature", { var: f })),
    info.forms.map((form) =>
      xml(
        "x",
        { xmlns: NS_DATA, type: "result" },
        xml("field", { var: "FORM_TYPE", type: "hidden" }, xml("value", {}, form.formType)),
        Object.entries(form.fields).map(([v, values]) =>
          xml("field", { var: v }, values.map((x) => xml("value", {}, x)))
        ),
      )
    ),
  );
}

/** Decodes a disco#info `<query/>`. */
export function parseDiscoInfo(query: Element): DiscoInfo {
  const identities = query.getChildren("identity").map((i) => ({
    category: i.attrs.category ?? "",
    type: i.attrs.type ?? "",
    name: i.attrs.name,
    lang: i.attrs["xml:lang"],
  }));
  const features = query.getChildren("feature").map((f) => f.attrs.var ?? "").filter(Boolean);
  const forms: DiscoForm[] = [];
  for (const x of query.getChildren("x", NS_DATA)) {
    const fields: Record<string, string[]> = {};
    let formType = "";
    for (const field of x.getChildren("field")) {
      const v = field.attrs.var;
      if (!v) continue;
      const values = field.getChildren("value").map((e) => e.text());
      if (v === "FORM_TYPE") formType = values[0] ?? "";
      else fields[v] = values;
    }
    if (formType) forms.push({ formType, fields });
  }
  return { identities, features, forms };
}

/** Sends a disco#info query and decodes the answer. Throws {@link StanzaError} on error replies. */
export async function queryDiscoInfo(
  conn: XmppConnection,
  to: string,
  node?: string,
  timeoutMs?: number,
): Promise<DiscoInfo> {
  const result = await conn.iq(xml("iq", { type: "get", to }, xml("query", { xmlns: NS_DISCO_INFO, node })), {
    timeoutMs,
  });
  const query = result.getChild("query", NS_DISCO_INFO);
  if (!query) throw new StanzaError("undefined-condition", "cancel", { text: "empty disco#info result" });
  return parseDiscoInfo(query);
}

/* ---------------------------------------- responder ---------------------------------------- */

/** Options for {@link setupDisco}. */
export interface DiscoOptions {
  /** Default `{ category: "client", type: "bot" }`. */
  identity?: DiscoIdentity;
  /** XEP-0115 node URI identifying the software. */
  capsNode?: string;
  /** Initial features. */
  features?: Iterable<string>;
}

/** The local disco#info state; modules register their features here. */
export interface Disco {
  /** Our disco identity. */
  readonly identity: DiscoIdentity;
  /** The XEP-0115 caps node announced in presence. */
  readonly capsNode: string;
  /** The current feature set (including disco#info and caps). */
  features(): string[];
  /** Current disco#info. */
  info(): DiscoInfo;
  /**
   * Adds features; resolves once the caps `ver` is recomputed. The composition should then send
   * presence again (if already online) so contacts see the new `ver`.
   */
  addFeatures(...features: string[]): Promise<void>;
  /** Removes features; resolves once the caps `ver` is recomputed. */
  removeFeatures(...features: string[]): Promise<void>;
  /** Current XEP-0115 ver (recomputed on changes; await a change call before reading). */
  ver(): string;
  /** The XEP-0115 `<c/>` element for presence. */
  capsElement(): Element;
  /** Unregisters the responder and the presence extension. */
  dispose(): void;
}

/**
 * Registers the disco#info responder (answering both plain and `node#ver` queries) and adds
 * the XEP-0115 `<c/>` to every presence sent through `conn.sendPresence`.
 */
export async function setupDisco(conn: XmppConnection, options: DiscoOptions = {}): Promise<Disco> {
  const identity = options.identity ?? { category: "client", type: "bot" };
  const capsNode = options.capsNode ?? "https://github.com/xmpp-call-bot";
  const featureSet = new Set<string>([NS_DISCO_INFO, NS_CAPS, ...(options.features ?? [])]);
  let ver = "";
  const info = (): DiscoInfo => ({ identities: [identity], features: [...featureSet], forms: [] });
  const recompute = async () => {
    ver = await computeCapsVer(info());
  };
  await recompute();

  const offIq = conn.handleIq("get", "query", NS_DISCO_INFO, (query) => {
    const node = query.attrs.node;
    // Only our own caps node#ver is a valid node; anything else is unknown.
    if (node !== undefined && node !== `${capsNode}#${ver}`) {
      throw new StanzaError("item-not-found", "cancel");
    }
    return discoInfoToElement(info(), node);
  });
  const offPresence = conn.addPresenceExtension(() => disco.capsElement());

  const disco: Disco = {
    identity,
    capsNode,
    features: () => [...featureSet],
    info,
    async addFeatures(...features) {
      for (const f of features) featureSet.add(f);
      await recompute();
    },
    async removeFeatures(...features) {
      for (const f of features) featureSet.delete(f);
      await recompute();
    },
    ver: () => ver,
    capsElement: () => xml("c", { xmlns: NS_CAPS, hash: "sha-1", node: capsNode, ver }),
    dispose() {
      offIq();
      offPresence();
    },
  };
  return disco;
}
