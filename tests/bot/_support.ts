/** Shared set-up for tests that sign accounts in to a test Prosody. */
import { createEndpoint, type Endpoint, type EndpointOptions } from "../../bot/endpoint.ts";
import type { ProsodyServer } from "../../scripts/prosody.ts";
import { connectXmpp, type XmppConnection } from "../../xmpp/mod.ts";

/** A logger that drops everything. */
export const quiet = { debug() {}, info() {}, warn() {}, error() {} };

/** Creates `user` (password "pw") on `server` and signs it in as `user@domain/bot`, store under `storeRoot`. */
export async function endpointOn(
  server: ProsodyServer,
  user: string,
  storeRoot: string,
  extra: Partial<EndpointOptions> = {},
): Promise<Endpoint> {
  await server.createAccount(user, "pw");
  return await createEndpoint({
    jid: `${user}@${server.domain}/bot`,
    password: "pw",
    server: { host: server.host, port: server.c2sPort },
    caPem: server.certificatePem,
    storeDir: `${storeRoot}/${user}`,
    logger: quiet,
    ...extra,
  });
}

/**
 * Creates `user` (password "pw", if not there yet) on `server` and signs in a plain XMPP connection as
 * `user@domain/resource`: no OMEMO, no reconnect; for tests that play the other party by hand.
 */
export async function connectionOn(
  server: ProsodyServer,
  user: string,
  resource: string,
): Promise<XmppConnection> {
  await server.createAccount(user, "pw").catch(() => {});
  return await connectXmpp({
    jid: `${user}@${server.domain}/${resource}`,
    password: "pw",
    server: { host: server.host, port: server.c2sPort },
    caPem: server.certificatePem,
    logger: quiet,
    reconnect: false,
  });
}
