import { createDtlsCertificate, guardTesting } from "../../media/webrtc.ts";
import { makePair } from "./helpers.ts";
guardTesting.enforce = false;
const g = await createDtlsCertificate();
const o = await createDtlsCertificate();
const { a, b } = await makePair({
  initiator: { certificate: { certPem: g.certPem, keyPem: o.keyPem, signature: "ecdsa" } },
});
a.onStateChange((s) => console.log("A", s));
b.onStateChange((s) => console.log("B", s));
console.log(await Promise.allSettled([a.waitConnected(3000), b.waitConnected(3000)]));
console.log(a.state(), b.state(), a.dtlsRole(), a.remoteCertificateFingerprint());
Deno.exit(0);
