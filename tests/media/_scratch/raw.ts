import { Connection, RTCPeerConnection } from "werift";
const N = Number(Deno.args[0] ?? 50);
const mode = Deno.args[1] ?? "raw";
if (mode === "nostun") {
  const cp = Connection.prototype as any;
  const o = cp.applyStunTurnServersFromOptions;
  cp.applyStunTurnServersFromOptions = function () {
    o.call(this);
    if (!this.options.stunServer) this.stunServer = undefined;
  };
}
if (mode === "all") await import("../../../media/webrtc.ts");
async function pair() {
  const t0 = performance.now();
  const a = new RTCPeerConnection({ iceServers: [], iceUseIpv6: false });
  const b = new RTCPeerConnection({ iceServers: [], iceUseIpv6: false });
  a.addTransceiver("audio", { direction: "sendrecv" });
  a.onIceCandidate.subscribe((c) => c && b.addIceCandidate(c).catch(() => {}));
  b.onIceCandidate.subscribe((c) => c && a.addIceCandidate(c).catch(() => {}));
  const wait = (pc: RTCPeerConnection) =>
    new Promise<string>((r) => {
      const t = setTimeout(() => r("timeout:" + pc.iceConnectionState + "/" + pc.connectionState), 20000);
      pc.connectionStateChange.subscribe((s) => {
        if (s === "connected" || s === "failed") {
          clearTimeout(t);
          r(s + (s === "failed" ? ":ice=" + pc.iceConnectionState : ""));
        }
      });
    });
  const wa = wait(a), wb = wait(b);
  await a.setLocalDescription(await a.createOffer());
  await b.setRemoteDescription(a.localDescription!);
  await b.setLocalDescription(await b.createAnswer());
  await a.setRemoteDescription(b.localDescription!);
  const r = await Promise.all([wa, wb]);
  const ms = performance.now() - t0;
  await a.close();
  await b.close();
  return { r: r.join(","), ms };
}
await pair();
const t0 = performance.now();
const res = await Promise.all(Array.from({ length: N }, () => pair()));
const counts = new Map<string, number>();
for (const x of res) counts.set(x.r, (counts.get(x.r) ?? 0) + 1);
console.log(mode, N, "wall", (performance.now() - t0).toFixed(0), [...counts]);
Deno.exit(0);
