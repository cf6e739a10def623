/** Thin typed layer over `@xmpp/xml` (ltx) which ships no type declarations. */
import { Element as LtxElement, xml as ltxXml } from "@xmpp/xml";
import ltxParse from "@xmpp/xml/lib/parse.js";
import { badRequest } from "./errors.ts";

/** The subset of the ltx `Element` API the codecs rely on. */
export interface Element {
  /** The tag name as written (with its prefix, if any). */
  name: string;
  /** Attributes, `xmlns` included. */
  attrs: Record<string, string | undefined>;
  /** Child elements and text nodes, in document order. */
  children: (Element | string)[];
  /** The enclosing element, or null at the root. */
  parent: Element | null;
  /** The tag name without prefix. */
  getName(): string;
  /** The element's namespace (inherited when not declared on it). */
  getNS(): string | undefined;
  /** True when the element has this name (and namespace, when given). */
  is(name: string, xmlns?: string): boolean;
  /** The first child with this name (and namespace), if any. */
  getChild(name: string, xmlns?: string): Element | undefined;
  /** Every child with this name (and namespace). */
  getChildren(name: string, xmlns?: string): Element[];
  /** The child elements, without text nodes. */
  getChildElements(): Element[];
  /** The concatenated text children. */
  getText(): string;
  /** The text of the first child with this name, or null when there is none. */
  getChildText(name: string, xmlns?: string): string | null;
  /** Appends children; returns this element. */
  append(...nodes: (Element | string)[]): Element;
  /** Serializes the element to XML. */
  toString(): string;
}

/** Attribute map accepted by {@link el}; `undefined` values are dropped. */
export type Attrs = Record<string, string | number | undefined>;

/** Build an element; undefined attributes and undefined/false children are skipped. */
export function el(
  name: string,
  attrs: Attrs = {},
  ...children: (Element | string | undefined | false)[]
): Element {
  const clean: Record<string, string> = {};
  for (const [k, v] of Object.entries(attrs)) {
    if (v !== undefined) clean[k] = String(v);
  }
  const kids = children.filter((c): c is Element | string => c !== undefined && c !== false);
  return ltxXml(name, clean, ...kids) as Element;
}

/** Runtime check that a value is an ltx Element. */
export function isElement(x: unknown): x is Element {
  return x instanceof (LtxElement as unknown as new (...a: unknown[]) => object);
}

/** Parse an XML string into an Element (throws JingleProtocolError on invalid XML). */
export function parseXml(text: string): Element {
  try {
    const r = ltxParse(text) as Element | null;
    if (!r) badRequest("empty XML document");
    return r;
  } catch (e) {
    if (e instanceof Error && e.name === "JingleProtocolError") throw e;
    return badRequest(`invalid XML: ${e instanceof Error ? e.message : String(e)}`);
  }
}

/** Child elements of `parent` named `name` whose namespace (possibly inherited) equals `ns`. */
export function childrenNS(parent: Element, name: string, ns: string): Element[] {
  return parent.getChildElements().filter((c) => c.name === name && c.getNS() === ns);
}

/** First child named `name` in namespace `ns`. */
export function childNS(parent: Element, name: string, ns: string): Element | undefined {
  return childrenNS(parent, name, ns)[0];
}

/** Required attribute; throws bad-request if missing/empty. */
export function reqAttr(e: Element, name: string): string {
  const v = e.attrs[name];
  if (v === undefined || v === "") badRequest(`<${e.name}/> lacks required attribute '${name}'`);
  return v;
}

/** Parse a non-negative integer attribute (optional). */
export function intAttr(e: Element, name: string, required: true): number;
export function intAttr(e: Element, name: string, required?: false): number | undefined;
export function intAttr(e: Element, name: string, required = false): number | undefined {
  const v = e.attrs[name];
  if (v === undefined || v === "") {
    if (required) badRequest(`<${e.name}/> lacks required attribute '${name}'`);
    return undefined;
  }
  if (!/^\d+$/.test(v)) badRequest(`<${e.name}/> attribute '${name}' is not a non-negative integer: ${v}`);
  return Number(v);
}

function copyTree(e: Element): Element {
  const kids = e.children.map((c) => typeof c === "string" ? c : copyTree(c));
  return ltxXml(e.name, { ...e.attrs }, ...kids) as Element;
}

/** Deep copy of an element, detached from its parent; an inherited namespace is made explicit on the copy. */
export function cloneElement(e: Element): Element {
  const c = copyTree(e);
  const ns = e.getNS();
  if (c.attrs.xmlns === undefined && ns !== undefined && !e.name.includes(":")) c.attrs.xmlns = ns;
  return c;
}
