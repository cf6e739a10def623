/**
 * One signed-in account: the XMPP connection, disco/caps, carbons and OMEMO 0.3 wired together.
 * Calls, file transfer and the apps are built on top of this.
 *
 * @module
 */
import {
  bare,
  type ConnectOptions,
  connectXmpp,
  type Disco,
  type Element,
  type Logger,
  notifyFeature,
  onPepEvent,
  publish,
  retrieveItems,
  setupCarbons,
  setupDisco,
  StanzaError,
  xml,
  type XmppConnection,
} from "../xmpp/mod.ts";
import {
  NODE_DEVICELIST,
  NS_OMEMO,
  OmemoManager,
  type OmemoPepTransport,
  OmemoStore,
  type TrustState,
} from "../omemo/mod.ts";

const NS_EME = "urn:xmpp:eme:0";
const NS_HINTS = "urn:xmpp:hints";
const NS_PING = "urn:xmpp:ping";
/** The fallback body real clients send with OMEMO messages. */
export const OMEMO_FALLBACK_BODY =
  "I sent you an OMEMO encrypted message but your client doesn't seem to support that.";

/** Options for {@link createEndpoint}. */
export interface EndpointOptions extends Omit<ConnectOptions, "logger"> {
  /** Directory of the OMEMO store (created 0700; one process at a time). */
  storeDir: string;
  /** `blind`: blind trust before verification (default); `manual`: new devices start untrusted. */
  trust?: "blind" | "manual";
  /** Refuse messages from and encryption to untrusted devices. */
  requireTrusted?: boolean;
  /** Where logs go. */
  logger?: Logger;
  /** Extra disco features of the modules built on top. */
  features?: string[];
}

/** A decrypted OMEMO chat message. */
export interface ChatMessage {
  /** Sender full JID (for our own sent carbons: our own JID). */
  from: string;
  /** The other party of the conversation (bare JID). */
  peer: string;
  /** The decrypted body. */
  body: string;
  /** The sender's OMEMO device id. */
  senderDeviceId: number;
  /** Identity key fingerprint of that device (Conversations/Dino format). */
  identityFingerprint: string;
  /** That device's trust state. */
  trust: TrustState;
  /** Set for carbons of our own other devices' traffic. */
  carbon?: "received" | "sent";
  /** The message `id`. */
  id?: string;
}

/** A received OMEMO key-transport element (no payload): the key material for JET or similar. */
export interface KeyTransport {
  /** Sender full JID. */
  from: string;
  /** The transported 16-byte key. */
  key: Uint8Array;
  /** The 12-byte IV. */
  iv: Uint8Array;
  /** The sender's OMEMO device id. */
  senderDeviceId: number;
  /** That device's trust state. */
  trust: TrustState;
}

/** A message that arrived OMEMO-encrypted and could not be decrypted. */
export interface ChatFailure {
  /** Sender JID. */
  from: string;
  /** Why it could not be decrypted. */
  error: Error;
}

/** A signed-in account with OMEMO. */
export interface Endpoint {
  /** The XMPP connection. */
  readonly conn: XmppConnection;
  /** Our disco/caps state (modules add their features here). */
  readonly disco: Disco;
  /** The OMEMO layer of this account. */
  readonly omemo: OmemoManager;
  /** Our OMEMO device id. */
  readonly deviceId: number;
  /** Sends an OMEMO-encrypted chat message to `to` (bare JID): all their devices and our other ones. */
  sendChat(to: string, body: string): Promise<{ id: string; devices: number }>;
  /** Subscribes to decrypted chat messages; returns an unsubscribe function. */
  onChat(handler: (message: ChatMessage) => void): () => void;
  /** Sends a key-transport element (no payload) to all devices of `to`; returns the key material. */
  sendKeyTransport(to: string): Promise<{ key: Uint8Array; iv: Uint8Array; devices: number }>;
  /** Subscribes to received key-transport elements. */
  onKeyTransport(handler: (transport: KeyTransport) => void): () => void;
  /** Subscribes to messages that could not be decrypted. */
  onChatFailure(handler: (failure: ChatFailure) => void): () => void;
  /** Closes the connection and the store (releasing its lock). */
  close(): Promise<void>;
}

function pepTransport(conn: XmppConnection): OmemoPepTransport {
  return {
    async publish(node, item, itemId, options) {
      await publish(conn, node, item, { id: itemId, publishOptions: options });
    },
    async fetchItems(jid, node) {
      try {
        const items = await retrieveItems(conn, jid, node);
        return items.flatMap((item) => item.payload ? [item.payload] : []);
      } catch (err) {
        // A contact without OMEMO simply has no such node.
        if (err instanceof StanzaError && err.condition === "item-not-found") return [];
        throw err;
      }
    },
  };
}

/** Signs in, publishes the OMEMO device and bundle, and starts handling OMEMO messages. */
export async function createEndpoint(options: EndpointOptions): Promise<Endpoint> {
  const { storeDir, trust, requireTrusted, features, ...connectOptions } = options;
  const store = await OmemoStore.open(storeDir);
  let conn: XmppConnection;
  try {
    conn = await connectXmpp({ ...connectOptions, logger: options.logger });
  } catch (err) {
    await store.close();
    throw err;
  }
  const logger = conn.logger;
  const omemo = await OmemoManager.create({
    store,
    transport: pepTransport(conn),
    ownJid: conn.bareJid,
    logger,
    trust: trust ?? "blind",
    requireTrusted: requireTrusted ?? false,
  });
  const disco = await setupDisco(conn, {
    features: [NS_PING, notifyFeature(NODE_DEVICELIST), ...(features ?? [])],
  });
  const stopCarbons = setupCarbons(conn);
  const chatHandlers = new Set<(message: ChatMessage) => void>();
  const failureHandlers = new Set<(failure: ChatFailure) => void>();
  const keyTransportHandlers = new Set<(transport: KeyTransport) => void>();

  const stopDeviceLists = onPepEvent(conn, NODE_DEVICELIST, async (event) => {
    const item = event.items.at(-1);
    if (!item?.payload) return;
    const result = await omemo.handleDeviceList(event.from, item.payload);
    logger.debug("device list updated", { jid: event.from, devices: result.devices.length });
  });

  const stopMessages = conn.onMessage(NS_OMEMO, async (encrypted, ctx) => {
    if (encrypted.name !== "encrypted") return;
    const sender = bare(ctx.from);
    try {
      const result = await omemo.decrypt(sender, encrypted);
      // Key-transport messages (no payload) carry session-completion or JET keys, not chat.
      if (result.plaintext === null) {
        if (!result.key) return;
        const transport: KeyTransport = {
          from: ctx.from,
          key: result.key,
          iv: result.iv,
          senderDeviceId: result.senderDeviceId,
          trust: result.trust,
        };
        for (const handler of keyTransportHandlers) handler(transport);
        return;
      }
      const message: ChatMessage = {
        from: ctx.from,
        peer: ctx.carbon === "sent" ? bare(ctx.stanza.attrs.to ?? sender) : sender,
        body: result.plaintext,
        senderDeviceId: result.senderDeviceId,
        identityFingerprint: result.identityFingerprint,
        trust: result.trust,
        ...(ctx.carbon ? { carbon: ctx.carbon } : {}),
        ...(ctx.stanza.attrs.id ? { id: ctx.stanza.attrs.id } : {}),
      };
      for (const handler of chatHandlers) handler(message);
    } catch (err) {
      const error = err instanceof Error ? err : new Error(String(err));
      logger.warn("cannot decrypt OMEMO message", { from: ctx.from, error: error.message });
      for (const handler of failureHandlers) handler({ from: ctx.from, error });
    }
  });

  const published = await omemo.publishOwn();
  logger.info("OMEMO device published", { jid: conn.bareJid, deviceId: published.deviceId });
  conn.onOnline(() => conn.sendPresence());

  const encryptFor = async (peer: string, body: string | null) => {
    const encrypted = await omemo.encrypt([peer], body);
    if (encrypted.devices.length === 0) {
      throw new Error(
        `Cannot encrypt for ${peer}: no usable OMEMO device (${
          encrypted.skipped.map((s) => `${s.deviceId}: ${s.reason}`).join(", ") || "none published"
        })`,
      );
    }
    return encrypted;
  };

  return {
    conn,
    disco,
    omemo,
    deviceId: published.deviceId,
    async sendChat(to, body) {
      const peer = bare(to);
      const encrypted = await encryptFor(peer, body);
      const id = crypto.randomUUID();
      await conn.send(xml(
        "message",
        { to: peer, type: "chat", id },
        xml("body", {}, OMEMO_FALLBACK_BODY),
        encrypted.element as unknown as Element,
        xml("encryption", { xmlns: NS_EME, namespace: NS_OMEMO, name: "OMEMO" }),
        xml("store", { xmlns: NS_HINTS }),
      ));
      return { id, devices: encrypted.devices.length };
    },
    async sendKeyTransport(to) {
      const peer = bare(to);
      const encrypted = await encryptFor(peer, null);
      await conn.send(xml(
        "message",
        { to: peer, type: "chat", id: crypto.randomUUID() },
        encrypted.element as unknown as Element,
        xml("store", { xmlns: NS_HINTS }),
      ));
      return { key: encrypted.key, iv: encrypted.iv, devices: encrypted.devices.length };
    },
    onKeyTransport(handler) {
      keyTransportHandlers.add(handler);
      return () => keyTransportHandlers.delete(handler);
    },
    onChat(handler) {
      chatHandlers.add(handler);
      return () => chatHandlers.delete(handler);
    },
    onChatFailure(handler) {
      failureHandlers.add(handler);
      return () => failureHandlers.delete(handler);
    },
    async close() {
      stopMessages();
      stopDeviceLists();
      stopCarbons();
      disco.dispose();
      await conn.close();
      await store.close();
    },
  };
}
