import assert from "node:assert/strict";
import { scramCredentials, startProsody } from "../../scripts/prosody.ts";

Deno.test("scramCredentials() matches what prosodyctl stores for a known salt", async () => {
  // Captured from `prosodyctl register alice localhost secret` (Prosody 0.12.3).
  const creds = await scramCredentials("secret", "359dcac1-a184-4138-938c-1f14accefeac", 10000);
  assert.equal(creds.storedKey, "e6105c645055840e7f6f3582769ad6c1912f1331");
  assert.equal(creds.serverKey, "e3d9ae9ebccfd9fb10cc3bcdcaf5635554d6159d");
});

Deno.test("startProsody() serves STARTTLS on loopback and stop() removes its folder", async () => {
  const server = await startProsody();
  try {
    const conn = await Deno.connect({ hostname: server.host, port: server.c2sPort });
    const enc = new TextEncoder();
    await conn.write(
      enc.encode(
        `<?xml version='1.0'?><stream:stream to='${server.domain}' xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' version='1.0'>`,
      ),
    );
    let text = "";
    const buf = new Uint8Array(4096);
    while (!text.includes("</stream:features>")) {
      const n = await conn.read(buf);
      if (n === null) break;
      text += new TextDecoder().decode(buf.subarray(0, n));
    }
    conn.close();
    assert.match(text, /<starttls xmlns=['"]urn:ietf:params:xml:ns:xmpp-tls['"]><required/);
    assert.match(server.certificatePem, /BEGIN CERTIFICATE/);
  } finally {
    await server.stop();
  }
  await assert.rejects(Deno.stat(server.dir));
});
