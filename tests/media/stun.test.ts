import assert from "node:assert/strict";
import dgram from "node:dgram";
import { createPeer, type LocalCandidate } from "../../media/webrtc.ts";

const opts = { sanitizeOps: false, sanitizeResources: false };

/** Record every UDP destination werift sends to (werift uses node:dgram). */
function spyDgram() {
  const proto = dgram.Socket.prototype as unknown as { send: (...a: unknown[]) => unknown };
  const orig = proto.send;
  const dests: string[] = [];
  proto.send = function (this: unknown, ...args: unknown[]) {
    // send(msg, [offset, length,] port, address, cb)
    const nums = args.filter((x) => typeof x === "number") as number[];
    const strs = args.filter((x) => typeof x === "string") as string[];
    const port = nums.length >= 3 ? nums[2] : nums[0];
    dests.push(`${strs[0] ?? "?"}:${port}`);
    return orig.apply(this, args);
  };
  return { dests, restore: () => void (proto.send = orig) };
}

async function gather(iceServers: { urls: string }[] | undefined) {
  const p = await createPeer({ role: "initiator", audio: true, video: false, ipv6: false, iceServers });
  const cands: LocalCandidate[] = [];
  const done = new Promise<void>((r) =>
    p.onLocalCandidate((c) => {
      if (c) cands.push(c);
      else r();
    })
  );
  const t0 = performance.now();
  const sdp = await p.createOffer();
  await done;
  const ms = performance.now() - t0;
  await p.close();
  return { sdp, cands, ms };
}

Deno.test({
  ...opts,
  name: "no iceServers => no default STUN server: no srflx, no packet to stun.l.google.com, fast gathering",
  fn: async () => {
    const spy = spyDgram();
    try {
      const { sdp, cands, ms } = await gather(undefined);
      console.log(`gathering ${ms.toFixed(1)} ms, destinations: ${JSON.stringify(spy.dests)}`);
      assert.ok(cands.length > 0);
      for (const c of cands) assert.match(c.candidate, / typ host/);
      assert.doesNotMatch(sdp, /srflx|relay/);
      assert.ok(!spy.dests.some((d) => /google|19302/.test(d)), JSON.stringify(spy.dests));
      assert.equal(spy.dests.length, 0); // nothing at all is sent before a remote candidate exists
      assert.ok(ms < 1000, `gathering took ${ms} ms`);
    } finally {
      spy.restore();
    }
  },
});

Deno.test({
  ...opts,
  name: "a configured STUN server is the only server contacted",
  fn: async () => {
    const server = dgram.createSocket("udp4");
    const seen: string[] = [];
    server.on("message", (_m, rinfo) => seen.push(`${rinfo.address}:${rinfo.port}`));
    await new Promise<void>((r) => server.bind(0, "127.0.0.1", () => r()));
    const port = server.address().port;
    const spy = spyDgram();
    try {
      await gather([{ urls: `stun:127.0.0.1:${port}` }]);
      assert.ok(seen.length > 0, "configured STUN server got no request");
      assert.ok(
        spy.dests.includes(`127.0.0.1:${port}`),
        "spy must see the configured server (positive control)",
      );
      const foreign = spy.dests.filter((d) => d !== `127.0.0.1:${port}`);
      assert.deepEqual(foreign, []);
    } finally {
      spy.restore();
      server.close();
    }
  },
});
