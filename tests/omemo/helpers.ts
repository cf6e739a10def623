import type { Element } from "@xmpp/xml";
import { OmemoManager, type OmemoPepTransport, OmemoStore } from "../../omemo/mod.ts";

/** In-memory stand-in for PEP: (jid, node) -> last published item. */
export class FakePep {
  items = new Map<string, Element>();
  publishes: { jid: string; node: string; itemId: string; options: Record<string, string> }[] = [];
  transportFor(jid: string): OmemoPepTransport {
    return {
      publish: (node, item, itemId, options) => {
        this.items.set(`${jid}|${node}`, item);
        this.publishes.push({ jid, node, itemId, options });
        return Promise.resolve();
      },
      fetchItems: (j, node) => {
        const it = this.items.get(`${j}|${node}`);
        return Promise.resolve(it ? [it] : []);
      },
    };
  }
}

export async function tmpDir(): Promise<string> {
  return await Deno.makeTempDir({ prefix: "omemo-test-" });
}

export async function makeManager(
  pep: FakePep,
  jid: string,
  dir?: string,
  extra: Partial<Parameters<typeof OmemoManager.create>[0]> = {},
): Promise<{ m: OmemoManager; store: OmemoStore; dir: string }> {
  const d = dir ?? await tmpDir();
  const store = await OmemoStore.open(d);
  const m = await OmemoManager.create({ store, transport: pep.transportFor(jid), ownJid: jid, ...extra });
  await m.publishOwn();
  return { m, store, dir: d };
}

export async function readState(dir: string): Promise<string> {
  return await Deno.readTextFile(`${dir}/state.json`);
}
