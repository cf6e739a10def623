import assert from "node:assert/strict";
import {
  buildFileTransport,
  type FileTransport,
  JingleProtocolError,
  NS_JIBB,
  NS_JINGLE,
  NS_S5B,
  parseFileTransport,
  parseXml,
  S5B_TYPE_PREFERENCE,
  s5bPriority,
} from "../../jingle/mod.ts";
import { s5bDstAddr } from "../../bytestreams/socks5.ts";
import { captureFiles, loadCapture } from "./_helpers.ts";

function roundTrip(t: FileTransport): void {
  assert.deepEqual(parseFileTransport(parseXml(buildFileTransport(t).toString())), t);
}

function refuses(xml: string, pattern: RegExp, condition = "bad-request"): void {
  assert.throws(() => parseFileTransport(parseXml(xml)), (e: unknown) => {
    assert.ok(e instanceof JingleProtocolError, `expected JingleProtocolError, got ${e}`);
    assert.equal(e.condition, condition);
    assert.match(e.message, pattern);
    return true;
  });
}

Deno.test("S5B: the Dino 0.4.2 transports parse to the right model and round-trip", () => {
  const f = "filetransfer-jet-omemo-s5b-alice-to-bob.alice.xml";
  const transports = loadCapture(f).flatMap(({ dir, stanza }) => {
    const j = stanza.getChild("jingle", NS_JINGLE);
    const t = j?.getChild("content")?.getChildElements().find((c) => c.name === "transport");
    return t ? [{ dir, action: j!.attrs.action, t: parseFileTransport(t) }] : [];
  });
  assert.deepEqual(transports.map((x) => `${x.dir} ${x.action}`), [
    "out session-initiate",
    "in session-accept",
    "in transport-info",
    "out transport-info",
  ]);
  const [offer, accept, usedByBob, usedByAlice] = transports.map((x) => x.t);
  assert.deepEqual(offer, {
    kind: "s5b",
    sid: "afe1b68b-5aef-4a21-a136-e8b6c82a3c30",
    mode: "tcp",
    dstaddr: "d95eb77bc965791df494a7b3da2c8654b417495f",
    candidates: [
      {
        cid: "87a016cb-c3d8-41c8-a33a-0ab843fab914",
        host: "192.0.2.2",
        port: 34753,
        jid: "alice@dino.test/dino-alice",
        priority: 8290304,
        type: "direct",
      },
      {
        cid: "36ac8e09-ecc0-4ad3-a151-9ae0a4887d5d",
        host: "fd00::2",
        port: 41927,
        jid: "alice@dino.test/dino-alice",
        priority: 8290303,
        type: "direct",
      },
      {
        cid: "14d9c467-9095-4a94-a4f6-57c6ca54ce68",
        host: "fe80::fc:ff:fe00:1%eth0",
        port: 37443,
        jid: "alice@dino.test/dino-alice",
        priority: 8290302,
        type: "direct",
      },
      {
        cid: "53d9cdfb-f2dd-4b05-ad00-a8892850c55a",
        host: "127.0.0.1",
        port: 5000,
        jid: "proxy.dino.test",
        priority: 688128,
        type: "proxy",
      },
    ],
  });
  // Dino's session-accept omits mode: tcp by default.
  assert.equal(accept?.kind === "s5b" && accept.mode, "tcp");
  assert.equal(accept?.kind === "s5b" && accept.dstaddr, "045e4ddbf2c4f0eefb940907aac8f4e36225f3c3");
  assert.equal(accept?.kind === "s5b" && accept.candidates.length, 4);
  assert.deepEqual(usedByBob, {
    kind: "s5b",
    sid: "afe1b68b-5aef-4a21-a136-e8b6c82a3c30",
    mode: "tcp",
    candidates: [],
    candidateUsed: "87a016cb-c3d8-41c8-a33a-0ab843fab914",
  });
  assert.equal(
    usedByAlice?.kind === "s5b" && usedByAlice.candidateUsed,
    "75fc7181-3c55-47a9-85d8-f3e4be11723d",
  );
  for (const t of transports) roundTrip(t.t);
});

Deno.test("S5B: every transport in every Dino file-transfer capture parses and round-trips", () => {
  let n = 0;
  for (const f of captureFiles("filetransfer-")) {
    for (const { stanza } of loadCapture(f)) {
      for (const c of stanza.getChild("jingle", NS_JINGLE)?.getChildren("content") ?? []) {
        const t = c.getChildElements().find((x) => x.name === "transport");
        if (!t) continue;
        const parsed = parseFileTransport(t);
        assert.equal(parsed.kind, "s5b");
        roundTrip(parsed);
        // Dino's priorities are XEP-0260 ones with local preference 32768 (- index).
        if (parsed.kind === "s5b") {
          for (const cand of parsed.candidates) {
            const local = cand.priority - s5bPriority(cand.type);
            assert.ok(local >= 0 && local <= 0xffff, `${cand.type} ${cand.priority}`);
          }
        }
        n++;
      }
    }
  }
  assert.equal(n, 16);
});

Deno.test("S5B: dstaddr is SHA-1(sid ‖ owner JID ‖ peer JID), as in the Dino capture", () => {
  const sid = "afe1b68b-5aef-4a21-a136-e8b6c82a3c30";
  const alice = "alice@dino.test/dino-alice";
  const bob = "bob@dino.test/dino-bob";
  assert.equal(s5bDstAddr(sid, alice, bob), "d95eb77bc965791df494a7b3da2c8654b417495f");
  assert.equal(s5bDstAddr(sid, bob, alice), "045e4ddbf2c4f0eefb940907aac8f4e36225f3c3");
});

Deno.test("S5B: priorities per XEP-0260", () => {
  assert.deepEqual(S5B_TYPE_PREFERENCE, { direct: 126, assisted: 120, tunnel: 110, proxy: 10 });
  assert.equal(s5bPriority("direct"), 126 * 65536);
  assert.equal(s5bPriority("direct", 32768), 8290304);
  assert.equal(s5bPriority("proxy", 32768), 688128);
  assert.equal(s5bPriority("assisted", 1), 120 * 65536 + 1);
  assert.equal(s5bPriority("tunnel", 65535), 110 * 65536 + 65535);
  assert.ok(s5bPriority("proxy", 65535) < s5bPriority("tunnel", 0));
  for (const bad of [-1, 65536, 1.5, NaN]) {
    assert.throws(() => s5bPriority("direct", bad), JingleProtocolError);
  }
});

Deno.test("S5B: reports (candidate-error, activated, proxy-error) and udp mode round-trip", () => {
  const base = { kind: "s5b" as const, sid: "s", mode: "tcp" as const, candidates: [] };
  roundTrip({ ...base, candidateError: true });
  roundTrip({ ...base, activated: "c1" });
  roundTrip({ ...base, proxyError: true });
  roundTrip({ ...base, candidateUsed: "c1" });
  roundTrip({
    ...base,
    mode: "udp",
    dstaddr: "ab",
    candidates: [{ cid: "c", host: "h.example", port: 1, jid: "p.example", priority: 0, type: "tunnel" }],
  });
  const built = buildFileTransport({ ...base, candidateUsed: "c1" });
  assert.equal(built.attrs.mode, undefined, "like Dino, no mode on a report");
  assert.equal(
    built.toString(),
    `<transport xmlns="${NS_S5B}" sid="s"><candidate-used cid="c1"/></transport>`,
  );
  // A candidate without port gets the XEP-0065 default; without type it is direct.
  const t = parseFileTransport(parseXml(
    `<transport xmlns='${NS_S5B}' sid='s'><candidate cid='c' host='h' jid='j' priority='5'/></transport>`,
  ));
  assert.deepEqual(t.kind === "s5b" && t.candidates[0], {
    cid: "c",
    host: "h",
    port: 1080,
    jid: "j",
    priority: 5,
    type: "direct",
  });
});

Deno.test("S5B: garbage transports and candidates are refused with bad-request", () => {
  const tr = (attrs: string, inner: string) => `<transport xmlns='${NS_S5B}' ${attrs}>${inner}</transport>`;
  const cand = (attrs: string) => tr("sid='s'", `<candidate ${attrs}/>`);
  const ok = "cid='c' host='192.0.2.1' jid='a@b/c' priority='1' port='1080'";
  parseFileTransport(parseXml(cand(ok)));
  refuses(tr("", ""), /sid/);
  refuses(tr("sid='s' mode='sctp'", ""), /mode/);
  refuses(tr("sid='s' dstaddr='a b'", ""), /dstaddr/);
  refuses(cand(ok.replace("port='1080'", "port='0'")), /port.*range/);
  refuses(cand(ok.replace("port='1080'", "port='65536'")), /port.*range/);
  refuses(cand(ok.replace("port='1080'", "port='-1'")), /port/);
  refuses(cand(ok.replace("port='1080'", "port='80x'")), /port/);
  refuses(cand(ok.replace("port='1080'", "port='99999999999'")), /port/);
  refuses(cand(ok.replace("cid='c'", "")), /cid/);
  refuses(cand(ok.replace("jid='a@b/c'", "")), /jid/);
  refuses(cand(ok.replace("host='192.0.2.1'", "")), /host/);
  refuses(cand(ok.replace("host='192.0.2.1'", "host='a b'")), /host/);
  refuses(cand(ok.replace("host='192.0.2.1'", "host='../x'")), /host/);
  refuses(cand(ok.replace("host='192.0.2.1'", `host='${"a".repeat(256)}'`)), /host/);
  refuses(cand(ok.replace("priority='1'", "")), /priority/);
  refuses(cand(ok.replace("priority='1'", "priority='4294967296'")), /priority/);
  refuses(cand(ok + " type='relay'"), /type/);
  refuses(tr("sid='s'", `<candidate ${ok}/><candidate ${ok}/>`), /duplicate/);
  refuses(tr("sid='s'", `<candidate-used/>`), /cid/);
  refuses(tr("sid='s'", `<candidate-used cid='a'/><candidate-error/>`), /more than one/);
  refuses(tr("sid='s'", `<candidate ${ok}/><candidate-used cid='a'/>`), /mixes/);
  refuses(tr("sid='s'", `<activated/>`), /cid/);
  refuses(
    `<transport xmlns='urn:xmpp:jingle:transports:ice-udp:1'/>`,
    /unsupported/,
    "feature-not-implemented",
  );
  refuses(`<candidate xmlns='${NS_S5B}'/>`, /not a <transport/);
  // Builder refuses what the parser refuses.
  assert.throws(
    () =>
      buildFileTransport({
        kind: "s5b",
        sid: "s",
        mode: "tcp",
        candidates: [{ cid: "c", host: "h", port: 70000, jid: "j", priority: 1, type: "direct" }],
      }),
    JingleProtocolError,
  );
});

Deno.test("IBB: transport parse/build and block-size bounds", () => {
  const t = parseFileTransport(parseXml(`<transport xmlns='${NS_JIBB}' sid='ibb1' block-size='4096'/>`));
  assert.deepEqual(t, { kind: "ibb", sid: "ibb1", blockSize: 4096 });
  roundTrip(t);
  roundTrip({ kind: "ibb", sid: "x", blockSize: 1 });
  roundTrip({ kind: "ibb", sid: "x", blockSize: 65535 });
  const ibb = (attrs: string) => `<transport xmlns='${NS_JIBB}' ${attrs}/>`;
  refuses(ibb("sid='s' block-size='0'"), /block-size.*range/);
  refuses(ibb("sid='s' block-size='65536'"), /block-size.*range/);
  refuses(ibb("sid='s' block-size='-5'"), /block-size/);
  refuses(ibb("sid='s' block-size='4k'"), /block-size/);
  refuses(ibb("sid='s'"), /block-size/);
  refuses(ibb("block-size='4096'"), /sid/);
  assert.throws(() => buildFileTransport({ kind: "ibb", sid: "s", blockSize: 70000 }), JingleProtocolError);
});
