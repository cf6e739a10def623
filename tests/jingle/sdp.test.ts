import assert from "node:assert/strict";
import {
  buildJingleIq,
  candidateFromSdp,
  candidateToSdp,
  contentMapToSdp,
  JingleProtocolError,
  mLineIndexOf,
  parseJingle,
  parseJingleIq,
  parseXml,
  type RtpContentMap,
  sdpToContentMap,
  serializeJingle,
} from "../../jingle/mod.ts";
import { FIXTURES, loadCapture, norm } from "./_helpers.ts";

const FP = "5F:0A:1B:2C:3D:4E:5F:60:71:82:93:A4:B5:C6:D7:E8:F9:0A:1B:2C:3D:4E:5F:60:71:82:93:A4:B5:C6:D7:9C";

function conversationsMap(): RtpContentMap {
  const j =
    parseJingleIq(parseXml(Deno.readTextFileSync(new URL("conversations-session-initiate.xml", FIXTURES))))!
      .jingle;
  return { contents: j.contents, groups: j.groups };
}

Deno.test("SDP: Conversations session-initiate → SDP → Jingle is stable", () => {
  const map = conversationsMap();
  const sdp = contentMapToSdp(map, { author: "initiator" });
  assert.match(sdp, /^a=group:BUNDLE 0 1\r$/m);
  assert.match(sdp, /^m=audio 9 UDP\/TLS\/RTP\/SAVPF 111 63 9 0 8 13 110 126\r$/m);
  assert.match(sdp, /^a=fingerprint:sha-256 5F:0A:.*:9C\r$/m);
  assert.match(sdp, /^a=ssrc:1186279133 msid:my-media-stream my-video-track\r$/m);
  assert.match(sdp, /^a=ssrc-group:FID 1186279133 4047531474\r$/m);
  const back = sdpToContentMap(sdp, { author: "initiator" });
  assert.deepEqual(norm(back), norm(map));
  assert.equal(contentMapToSdp(back, { author: "initiator" }), sdp);
  assert.equal(mLineIndexOf(map, "1"), 1);
});

Deno.test("SDP: werift offer → Jingle → SDP", () => {
  const sdp = Deno.readTextFileSync(new URL("werift-offer.sdp", FIXTURES));
  const map = sdpToContentMap(sdp, { author: "initiator" });
  assert.deepEqual(map.groups, [{ semantics: "BUNDLE", contents: ["0", "1"] }]);
  const [a, v] = map.contents;
  assert.ok(a?.description?.kind === "rtp" && a.transport?.kind === "ice-udp");
  assert.ok(v?.description?.kind === "rtp" && v.transport?.kind === "ice-udp");
  assert.equal(a.name, "0");
  assert.equal(a.transport.ufrag, "8f3a");
  assert.deepEqual(a.transport.fingerprint, { kind: "plain", hash: "sha-256", setup: "actpass", value: FP });
  assert.equal(a.transport.candidates.length, 2, "TCP candidate dropped");
  assert.deepEqual(a.transport.candidates[1], {
    foundation: "3",
    component: 1,
    protocol: "udp",
    priority: 1694498815,
    ip: "198.51.100.7",
    port: 50001,
    type: "srflx",
    relAddr: "192.0.2.10",
    relPort: 50001,
    generation: 0,
  });
  assert.deepEqual(a.description.payloadTypes[0], {
    id: 111,
    name: "opus",
    clockrate: 48000,
    channels: 2,
    parameters: [{ name: "minptime", value: "10" }, { name: "useinbandfec", value: "1" }],
    rtcpFb: [{ type: "transport-cc" }],
  });
  assert.ok(a.description.extmapAllowMixed && a.description.rtcpMux);
  assert.deepEqual(v.description.payloadTypes.map((p) => p.name), ["VP8", "rtx", "H264"]);
  assert.equal(v.description.payloadTypes[2]?.parameters.length, 3);
  assert.deepEqual(v.description.ssrcGroups, [{ semantics: "FID", ssrcs: [3541877690, 1149023456] }]);
  assert.equal(v.description.sources.length, 2);
  assert.deepEqual(v.description.headerExtensions.map((h) => h.id), [1, 3]);
  // → Jingle XML → back → SDP → same map
  const j = parseJingle(
    parseXml(serializeJingle({ action: "session-initiate", sid: "s", ...map }).toString()),
  );
  assert.deepEqual(norm({ contents: j.contents, groups: j.groups }), norm(map));
  const out = contentMapToSdp(map, { author: "initiator" });
  assert.match(
    out,
    /^a=candidate:3 1 udp 1694498815 198\.51\.100\.7 50001 typ srflx raddr 192\.0\.2\.10 rport 50001 generation 0\r$/m,
  );
  assert.doesNotMatch(out, / tcp /);
  assert.deepEqual(norm(sdpToContentMap(out, { author: "initiator" })), norm(map));
  assert.ok(buildJingleIq({ action: "session-initiate", sid: "s", ...map }, { to: "x@y/z", id: "1" }));
});

Deno.test("SDP: Dino session-initiate/accept (no BUNDLE, own transport each, single-PT answer)", () => {
  const st = loadCapture("call-omemo-verified-alice-calls-bob.bob.xml").map((s) => s.stanza);
  const accept = st.map((s) => s.name === "iq" ? parseJingleIq(s)?.jingle : undefined).find((j) =>
    j?.action === "session-accept"
  )!;
  // pretend the OMEMO fingerprint was decrypted
  const contents = accept.contents.map((c) => {
    if (c.transport?.kind !== "ice-udp") throw new Error("x");
    return {
      ...c,
      transport: {
        ...c.transport,
        fingerprint: { kind: "plain" as const, hash: "sha-256", setup: "active" as const, value: FP },
      },
    };
  });
  assert.throws(
    () => contentMapToSdp({ contents: accept.contents, groups: [] }, { author: "responder" }),
    JingleProtocolError,
  );
  const sdp = contentMapToSdp({ contents, groups: accept.groups }, { author: "responder" });
  assert.doesNotMatch(sdp, /a=group/);
  assert.match(sdp, /^m=audio 9 UDP\/TLS\/RTP\/SAVPF 111\r$/m);
  assert.match(sdp, /^a=mid:audio\r$/m);
  assert.match(
    sdp,
    /^a=candidate:1 2 udp 2015363326 192\.0\.2\.2 55911 typ host generation 0 network-id 0\r$/m,
  );
  const back = sdpToContentMap(sdp, { author: "responder" });
  assert.equal(back.contents[0]?.name, "audio");
  const t = back.contents[0]?.transport;
  assert.ok(t?.kind === "ice-udp" && t.ufrag === "tVx/" && t.candidates.length === 4);
});

Deno.test("SDP: senders ⇄ direction relative to the initiator", () => {
  const base = conversationsMap();
  const m = {
    ...base,
    contents: base.contents.map((c, i) => ({
      ...c,
      senders: i === 0 ? "initiator" as const : "none" as const,
    })),
  };
  const offer = contentMapToSdp(m, { author: "initiator" });
  assert.match(offer, /a=sendonly/);
  assert.match(offer, /a=inactive/);
  const answer = contentMapToSdp(m, { author: "responder" });
  assert.match(answer, /a=recvonly/);
  assert.deepEqual(sdpToContentMap(answer, { author: "responder" }).contents.map((c) => c.senders), [
    "initiator",
    "none",
  ]);
  // session-level fallback for ufrag/pwd/fingerprint
  const sessLevel =
    "v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\na=ice-ufrag:uu\r\na=ice-pwd:pppppppppppppppppppppp\r\n" +
    `a=fingerprint:sha-256 ${FP}\r\na=setup:active\r\nm=audio 9 UDP/TLS/RTP/SAVPF 0\r\na=mid:a\r\na=rtpmap:0 PCMU/8000\r\n`;
  const t = sdpToContentMap(sessLevel, { author: "responder" }).contents[0]?.transport;
  assert.ok(
    t?.kind === "ice-udp" && t.ufrag === "uu" && t.fingerprint?.kind === "plain" &&
      t.fingerprint.setup === "active",
  );
});

Deno.test("SDP: candidates", () => {
  const c = candidateFromSdp(
    "a=candidate:842163049 1 udp 1677729535 203.0.113.5 61000 typ srflx raddr 10.0.0.2 rport 61000 generation 0 ufrag 8f3a",
  );
  assert.equal(c?.ufrag, "8f3a");
  assert.equal(
    candidateToSdp(c!.candidate, "8f3a"),
    "candidate:842163049 1 udp 1677729535 203.0.113.5 61000 typ srflx raddr 10.0.0.2 rport 61000 generation 0 ufrag 8f3a",
  );
  assert.equal(
    candidateFromSdp("candidate:2 1 TCP 1518280447 192.0.2.10 9 typ host tcptype active"),
    undefined,
  );
  assert.throws(() => candidateFromSdp("candidate:1 1 udp 5 1.2.3.4 typ host"), JingleProtocolError);
  assert.throws(() => candidateToSdp({ ...c!.candidate, protocol: "tcp" }), JingleProtocolError);
});

Deno.test("SDP: malformed rejected", () => {
  const ok =
    "v=0\r\ns=-\r\nt=0 0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 0\r\na=mid:0\r\na=ice-ufrag:u\r\na=ice-pwd:p\r\na=rtpmap:0 PCMU/8000\r\n";
  assert.ok(sdpToContentMap(ok, { author: "initiator" }));
  assert.throws(
    () => sdpToContentMap(ok.replace("SAVPF 0", "SAVPF abc"), { author: "initiator" }),
    JingleProtocolError,
  );
  assert.throws(
    () => sdpToContentMap(ok.replace("a=mid:0\r\n", ""), { author: "initiator" }),
    JingleProtocolError,
  );
  assert.throws(
    () => sdpToContentMap(ok + `a=fingerprint:sha-256 ${FP}\r\n`, { author: "initiator" }),
    JingleProtocolError,
    "no setup",
  );
  const map = conversationsMap();
  const noUfrag = {
    ...map,
    groups: [],
    contents: map.contents.map((c) => ({
      ...c,
      transport: c.transport?.kind === "ice-udp" ? { ...c.transport, ufrag: undefined } : c.transport,
    })),
  };
  assert.throws(
    () => contentMapToSdp(noUfrag, { author: "initiator" }),
    JingleProtocolError,
    "missing ufrag",
  );
  const badPt = {
    ...map,
    contents: map.contents.map((c) =>
      c.description?.kind === "rtp"
        ? { ...c, description: { ...c.description, payloadTypes: [{ id: 300, parameters: [], rtcpFb: [] }] } }
        : c
    ),
  };
  assert.throws(() => contentMapToSdp(badPt, { author: "initiator" }), JingleProtocolError, "bad PT");
  const wsPwd = {
    ...map,
    contents: map.contents.map((c) => ({
      ...c,
      transport: c.transport?.kind === "ice-udp" ? { ...c.transport, pwd: "a b" } : c.transport,
    })),
  };
  assert.throws(() => contentMapToSdp(wsPwd, { author: "initiator" }), JingleProtocolError);
});
