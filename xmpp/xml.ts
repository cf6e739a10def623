/**
 * Typed facade over `@xmpp/client`'s XML builder (ltx) and small, pure JID helpers.
 *
 * `@xmpp/client` ships no type declarations, so the shapes used by this project are declared here once.
 *
 * @module
 */
import { xml as untypedXml } from "@xmpp/client";

/** An XML element (ltx `Element`, as produced by the stream parser and by {@link xml}). */
export interface Element {
  /** The tag name as written (with its prefix, if any). */
  name: string;
  /** Attributes, `xmlns` included. */
  attrs: Record<string, string | undefined>;
  /** Child elements and text nodes, in document order. */
  children: Array<Element | string>;
  /** The enclosing element, or null at the root. */
  parent: Element | null;
  /** True when the element has this name (and namespace, when given). */
  is(name: string, xmlns?: string): boolean;
  /** The element's namespace (inherited from its ancestors when not declared on it). */
  getNS(): string | undefined;
  /** The first child with this name (and namespace), if any. */
  getChild(name: string, xmlns?: string): Element | undefined;
  /** Every child with this name (and namespace). */
  getChildren(name: string, xmlns?: string): Element[];
  /** The child elements, without text nodes. */
  getChildElements(): Element[];
  /** The text of the first child with this name, or null when there is none. */
  getChildText(name: string, xmlns?: string): string | null;
  /** The concatenated text children. */
  text(): string;
  /** Appends children; returns this element. */
  append(...nodes: Array<Element | string>): Element;
  /** Serializes the element to XML. */
  toString(): string;
}

/** Anything accepted as a child by {@link xml}; falsy values are skipped. */
export type XmlChild = Element | string | null | undefined | false | XmlChild[];

/** Attribute values; `undefined`/`null` attributes are omitted. */
export type XmlAttrs = Record<string, string | number | undefined | null>;

type XmlFactory = (name: string, attrs?: XmlAttrs | null, ...children: XmlChild[]) => Element;

/** Builds an element: `xml("iq", { type: "get" }, xml("ping", { xmlns: "urn:xmpp:ping" }))`. */
export function xml(name: string, attrs?: XmlAttrs | null, ...children: XmlChild[]): Element {
  const clean: Record<string, string> = {};
  for (const [k, v] of Object.entries(attrs ?? {})) {
    if (v !== undefined && v !== null) clean[k] = String(v);
  }
  const flat: Array<Element | string> = [];
  const walk = (items: XmlChild[]) => {
    for (const c of items) {
      if (Array.isArray(c)) walk(c);
      else if (c !== null && c !== undefined && c !== false) flat.push(c);
    }
  };
  walk(children);
  return (untypedXml as XmlFactory)(name, clean, ...flat);
}

/** The parts of a JID. */
export interface JidParts {
  local: string | null;
  domain: string;
  resource: string | null;
}

/**
 * Parses a JID string; returns `null` for malformed input (empty domain, empty local/resource part).
 * Local and domain parts are lower-cased (a cheap stand-in for full PRECIS normalisation).
 */
export function parseJid(value: string): JidParts | null {
  if (!value) return null;
  const slash = value.indexOf("/");
  const head = slash >= 0 ? value.slice(0, slash) : value;
  const resource = slash >= 0 ? value.slice(slash + 1) : null;
  if (resource === "") return null;
  const at = head.indexOf("@");
  const local = at >= 0 ? head.slice(0, at) : null;
  const domain = (at >= 0 ? head.slice(at + 1) : head).toLowerCase().replace(/\.$/, "");
  if (local === "" || !domain || domain.includes("@")) return null;
  if (/[\s<>"&']/.test(head)) return null;
  return { local: local?.toLowerCase() ?? null, domain, resource };
}

/** Formats JID parts back to a string. */
export function formatJid(parts: JidParts): string {
  return (parts.local ? `${parts.local}@` : "") + parts.domain + (parts.resource ? `/${parts.resource}` : "");
}

/** The bare JID (`local@domain`) of a JID string; throws on malformed input. */
export function bare(value: string): string {
  const parts = parseJid(value);
  if (!parts) throw new Error(`invalid JID: ${JSON.stringify(value)}`);
  return formatJid({ ...parts, resource: null });
}

/** Normalised form of a JID string, or `null` if malformed. */
export function normalizeJid(value: string): string | null {
  const parts = parseJid(value);
  return parts ? formatJid(parts) : null;
}

/** True when two JID strings are equal after normalisation. */
export function jidEquals(a: string | undefined, b: string | undefined): boolean {
  if (a === undefined || b === undefined) return false;
  const na = normalizeJid(a);
  return na !== null && na === normalizeJid(b);
}
