import { type Element, isElement, parseXml } from "../../jingle/mod.ts";

export const FIXTURES = new URL("../fixtures/dino/", import.meta.url);

/** All `<stanza>` payloads of a capture file. */
export function loadCapture(file: string): { dir: string; stanza: Element }[] {
  const root = parseXml(Deno.readTextFileSync(new URL(file, FIXTURES)));
  return root.getChildren("stanza").map((s) => ({
    dir: s.attrs.dir ?? "",
    stanza: s.getChildElements()[0]!,
  }));
}

export function captureFiles(prefix: string): string[] {
  return [...Deno.readDirSync(FIXTURES)].map((e) => e.name).filter((n) =>
    n.startsWith(prefix) && n.endsWith(".xml")
  )
    .sort();
}

/** JSON-comparable form (raw Elements → XML strings). */
export function norm(x: unknown): unknown {
  return JSON.parse(JSON.stringify(x, (_k, v) => isElement(v) ? (v as Element).toString() : v));
}
