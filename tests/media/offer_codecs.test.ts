/** The codec names in what we send: werift's own offer says `OPUS`; ours must say `opus`, as Conversations and
 * Dino (libwebrtc) write it, all the way into the Jingle `<payload-type name=…>` we send. */
import assert from "node:assert/strict";
import { createPeer, offeredCodecs } from "../../media/webrtc.ts";
import {
  buildJingleIq,
  contentMapToSdp,
  parseJingleIq,
  parseXml,
  type RtpContentMap,
  sdpToContentMap,
} from "../../jingle/mod.ts";

const FIXTURES = new URL("../fixtures/dino/", import.meta.url);

function names(map: RtpContentMap): Record<string, string[]> {
  return Object.fromEntries(map.contents.map((c) => {
    const d = c.description;
    return [
      d?.kind === "rtp" ? d.media : c.name,
      d?.kind === "rtp" ? d.payloadTypes.map((p) => p.name ?? "") : [],
    ];
  }));
}

Deno.test("offeredCodecs: werift's defaults spelt as Conversations writes them", () => {
  const c = offeredCodecs();
  assert.deepEqual(c.audio.map((x) => x.mimeType), ["audio/opus", "audio/PCMU"]);
  assert.deepEqual(c.video.map((x) => x.mimeType), ["video/VP8"]);
});

Deno.test("our offer (audio+video) names opus, PCMU, VP8 exactly so in SDP and in the Jingle we send", async () => {
  const peer = await createPeer({ role: "initiator", audio: true, video: true, ipv6: false });
  try {
    const sdp = await peer.createOffer();
    assert.match(sdp, /^a=rtpmap:\d+ opus\/48000\/2\r$/m);
    assert.doesNotMatch(sdp, /OPUS/);
    const map = sdpToContentMap(sdp, { author: "initiator" });
    assert.deepEqual(names(map), { audio: ["opus", "PCMU"], video: ["VP8"] });
    // through the Jingle codec: the element we would put on the wire
    const xml = buildJingleIq({ action: "session-initiate", sid: "s", ...map }, { to: "a@b/c", id: "x" })
      .toString();
    assert.match(xml, /<payload-type[^>]* name="opus"/);
    assert.doesNotMatch(xml, /name="OPUS"/);
  } finally {
    await peer.close();
  }
});

Deno.test("our answer to a Conversations offer names opus and VP8 as offered", async () => {
  const j =
    parseJingleIq(parseXml(Deno.readTextFileSync(new URL("conversations-session-initiate.xml", FIXTURES))))!
      .jingle;
  const offer = contentMapToSdp({ contents: j.contents, groups: j.groups }, { author: "initiator" });
  const peer = await createPeer({ role: "responder", audio: true, video: true, ipv6: false });
  try {
    await peer.setRemoteDescription("offer", offer);
    const answer = sdpToContentMap(await peer.createAnswer(), { author: "responder" });
    const n = names(answer);
    assert.equal(n.audio?.[0], "opus");
    assert.equal(n.video?.[0], "VP8");
    assert.ok(!Object.values(n).flat().some((x) => x === "OPUS"));
  } finally {
    await peer.close();
  }
});
