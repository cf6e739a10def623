import assert from "node:assert/strict";
import { createDtlsCertificate, type DtlsCertificate, guardTesting, type Peer } from "../../media/webrtc.ts";
import { makePair } from "./helpers.ts";

const opts = { sanitizeOps: false, sanitizeResources: false };

/** attacker presents the victim's genuine certificate but holds a different private key */
async function impostorCert(signature: "ecdsa" | "rsa" = "ecdsa"): Promise<DtlsCertificate> {
  const genuine = await createDtlsCertificate(signature);
  const other = await createDtlsCertificate(signature);
  return { certPem: genuine.certPem, keyPem: other.keyPem, signature };
}

async function outcome(p: Peer): Promise<string> {
  try {
    await p.waitConnected(8000);
    return "connected";
  } catch (e) {
    return (e as Error).message;
  }
}

for (const impostorIsInitiator of [true, false]) {
  for (const sig of ["ecdsa", "rsa"] as const) {
    Deno.test({
      ...opts,
      name: `impostor with genuine cert but wrong ${sig} key fails (impostor is ${
        impostorIsInitiator ? "initiator" : "responder"
      })`,
      fn: async () => {
        const cert = await impostorCert(sig);
        const { a, b } = await makePair(
          impostorIsInitiator ? { initiator: { certificate: cert } } : { responder: { certificate: cert } },
        );
        const [impostor, victim] = impostorIsInitiator ? [a, b] : [b, a];
        try {
          const r = await outcome(victim);
          const role = victim.dtlsRole();
          console.log(`victim dtls role=${role}: ${r}`);
          assert.notEqual(r, "connected");
          assert.equal(victim.state().dtls, "failed");
          assert.match(
            victim.state().reason ?? "",
            role === "server" ? /CertificateVerify invalid/ : /ServerKeyExchange invalid/,
          );
          assert.equal(victim.remoteCertificateFingerprint(), undefined);
          assert.equal(await victim.sendRtp("audio", new Uint8Array(20)), false);
          assert.equal(victim.stats().audio.packetsReceived, 0);
          void impostor;
        } finally {
          await a.close();
          await b.close();
        }
      },
    });
  }
}

Deno.test({
  ...opts,
  name: "without the guard werift alone accepts the impostor (documents the upstream bug)",
  fn: async () => {
    guardTesting.enforce = false;
    const cert = await impostorCert();
    const { a, b } = await makePair({ initiator: { certificate: cert } });
    try {
      await Promise.all([a.waitConnected(1500).catch(() => {}), b.waitConnected(1500).catch(() => {})]);
      // the victim's DTLS transport reached "connected" although the peer never proved key possession
      assert.equal(b.state().dtls, "connected");
      assert.equal(b.remoteCertificateFingerprint(), undefined); // but our adapter never marks it verified
    } finally {
      guardTesting.enforce = true;
      await a.close();
      await b.close();
    }
  },
});

Deno.test({
  ...opts,
  name: "genuine RSA certificates still connect in both roles",
  fn: async () => {
    const { a, b } = await makePair({
      initiator: { certificate: await createDtlsCertificate("rsa") },
      responder: { certificate: await createDtlsCertificate("rsa") },
    });
    try {
      await Promise.all([a.waitConnected(), b.waitConnected()]);
      assert.equal(a.remoteCertificateFingerprint(), b.localFingerprint());
      assert.equal(b.remoteCertificateFingerprint(), a.localFingerprint());
    } finally {
      await a.close();
      await b.close();
    }
  },
});

for (const tamperServerSide of [true, false]) {
  Deno.test({
    ...opts,
    name: `a wrong peer Finished fails the handshake (checked by the DTLS ${
      tamperServerSide ? "server" : "client"
    })`,
    fn: async () => {
      guardTesting.mutateEvidence = (ev) => {
        if ((ev.role === "server") !== tamperServerSide || !ev.peerFinished) return;
        const forged = new Uint8Array(ev.peerFinished);
        forged[0]! ^= 1;
        ev.peerFinished = forged;
        // keep the transcript consistent with what was "received"
        ev.transcript = ev.transcript.map((m) => (m.fromPeer && m.type === 20 ? { ...m, body: forged } : m));
      };
      const { a, b } = await makePair();
      try {
        const results = await Promise.race([outcome(a), outcome(b)]);
        const checker = [a, b].find((p) => p.dtlsRole() === (tamperServerSide ? "server" : "client"))!;
        for (let i = 0; i < 100 && checker.state().dtls !== "failed"; i++) {
          await new Promise((r) => setTimeout(r, 20));
        }
        assert.equal(checker.state().dtls, "failed", JSON.stringify(results));
        assert.match(checker.state().reason ?? "", /peer Finished verify_data mismatch/);
        assert.equal(checker.remoteCertificateFingerprint(), undefined);
      } finally {
        guardTesting.mutateEvidence = undefined;
        await a.close();
        await b.close();
      }
    },
  });
}
