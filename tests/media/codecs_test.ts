/** Codec negotiation read from real Dino 0.4.2 captures and werift's offer (pure, no server). */
import assert from "node:assert/strict";
import { loadCapture } from "../jingle/_helpers.ts";
import {
  type Jingle,
  NS_JINGLE,
  parseJingle,
  type RtpContentMap,
  sdpToContentMap,
} from "../../jingle/mod.ts";
import { negotiatedCodecs, unsupportedCodecs } from "../../media/codecs.ts";

/** The session-initiate and session-accept of a Dino capture, as content maps. */
function dinoCall(file: string): { initiate: RtpContentMap; accept: RtpContentMap } {
  const found: Record<string, Jingle> = {};
  for (const { stanza } of loadCapture(file)) {
    const el = stanza.getChild("jingle", NS_JINGLE);
    if (!el) continue;
    const j = parseJingle(el);
    if (j.action === "session-initiate" || j.action === "session-accept") found[j.action] ??= j;
  }
  const initiate = found["session-initiate"];
  const accept = found["session-accept"];
  assert.ok(initiate && accept, `${file}: initiate and accept`);
  return {
    initiate: { contents: initiate.contents, groups: initiate.groups },
    accept: { contents: accept.contents, groups: accept.groups },
  };
}

Deno.test("negotiatedCodecs: Dino's audio call, from the caller's and from the callee's side", () => {
  const { initiate, accept } = dinoCall("call-omemo-verified-alice-calls-bob.alice.xml");
  const opus = { name: "opus", clockrate: 48000, channels: 2, pt: 111 };
  assert.deepEqual(negotiatedCodecs(initiate, accept, true), { audio: { send: opus, receive: opus } });
  assert.deepEqual(negotiatedCodecs(accept, initiate, false), { audio: { send: opus, receive: opus } });
  assert.equal(unsupportedCodecs(accept), undefined);
});

Deno.test("negotiatedCodecs: payload-type numbers each way come from the receiver's description", () => {
  const offer = sdpToContentMap(
    Deno.readTextFileSync(new URL("../fixtures/dino/werift-offer.sdp", import.meta.url)),
    {
      author: "initiator",
    },
  );
  // An answer that numbers the same codecs differently (allowed by RFC 3264) and prefers them first.
  const answer: RtpContentMap = structuredClone(offer);
  for (const c of answer.contents) {
    if (c.description?.kind !== "rtp") continue;
    for (const pt of c.description.payloadTypes) pt.id += 10;
  }
  const got = negotiatedCodecs(offer, answer, true);
  assert.deepEqual(got.audio, {
    send: { name: "opus", clockrate: 48000, channels: 2, pt: 121 },
    receive: { name: "opus", clockrate: 48000, channels: 2, pt: 111 },
  });
  assert.deepEqual(got.video, {
    send: { name: "VP8", clockrate: 90000, pt: 106 },
    receive: { name: "VP8", clockrate: 90000, pt: 96 },
  });
  assert.equal(unsupportedCodecs(answer), undefined);
});

Deno.test("unsupportedCodecs: an answer settling on PCMU, G722 or H264 names the medium and the codecs", () => {
  const { initiate, accept } = dinoCall("call-omemo-verified-alice-calls-bob.alice.xml");
  const only = (map: RtpContentMap, keep: (name: string | undefined, id: number) => boolean) => {
    const m = structuredClone(map);
    for (const c of m.contents) {
      if (c.description?.kind === "rtp") {
        c.description.payloadTypes = c.description.payloadTypes.filter((p) => keep(p.name, p.id));
      }
    }
    return m;
  };
  assert.match(
    unsupportedCodecs(only(initiate, (n) => n === "PCMU")) ?? "",
    /^unsupported codec: audio: PCMU\/8000 cannot be encoded or recorded here \(we support opus\/48000; offered PCMU\/8000\)$/,
  );
  // A static payload type without a name is still recognised.
  const g722 = only(accept, () => false);
  const d = g722.contents[0]!.description!;
  assert.ok(d.kind === "rtp");
  d.payloadTypes.push({ id: 9, parameters: [], rtcpFb: [] });
  assert.match(unsupportedCodecs(g722) ?? "", /audio: G722\/8000\/1 cannot be encoded/);
  assert.match(unsupportedCodecs(only(accept, () => false)) ?? "", /audio: no codec \(offered none\)/);

  const video: RtpContentMap = {
    groups: [],
    contents: [{
      creator: "initiator",
      name: "1",
      description: {
        kind: "rtp",
        media: "video",
        payloadTypes: [
          { id: 102, name: "H264", clockrate: 90000, parameters: [], rtcpFb: [] },
          { id: 103, name: "rtx", clockrate: 90000, parameters: [{ name: "apt", value: "102" }], rtcpFb: [] },
        ],
        rtcpFb: [],
        headerExtensions: [],
        extmapAllowMixed: false,
        sources: [],
        ssrcGroups: [],
        rtcpMux: true,
      },
    }],
  };
  assert.match(
    unsupportedCodecs(video) ?? "",
    /video: H264\/90000 cannot be encoded .*offered H264\/90000, rtx\/90000/,
  );
  // RTX ahead of the real codec does not count as the choice.
  const rtxFirst = structuredClone(video);
  const rd = rtxFirst.contents[0]!.description!;
  assert.ok(rd.kind === "rtp");
  rd.payloadTypes = [rd.payloadTypes[1]!, {
    id: 96,
    name: "VP8",
    clockrate: 90000,
    parameters: [],
    rtcpFb: [],
  }];
  assert.equal(unsupportedCodecs(rtxFirst), undefined);
});
