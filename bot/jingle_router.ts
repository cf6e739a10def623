/**
 * One `<jingle/>` IQ handler per connection, shared by the Jingle applications (calls, file
 * transfer): a stanza goes to the application that owns its sid, and a session-initiate for a new
 * sid to the first application that takes its descriptions.
 *
 * @module
 */
import {
  type Element,
  type IqHandler,
  type Logger,
  StanzaError,
  xml,
  type XmppConnection,
} from "../xmpp/mod.ts";
import { NS_JINGLE, NS_JINGLE_ERRORS } from "../jingle/mod.ts";

/** A Jingle application (XEP-0166 "application format") registered with {@link jingleRouter}. */
export interface JingleApp {
  /** For logs. */
  readonly name: string;
  /** True when `sid` is one of this application's sessions (whoever the sender is). */
  owns(sid: string): boolean;
  /** True when this application takes a session-initiate with this `<jingle/>` payload. */
  takesInitiate(jingle: Element): boolean;
  /** Handles the IQ: the same contract as {@link IqHandler}. */
  handle: IqHandler;
}

/** The router of one connection. */
export interface JingleRouter {
  /** Adds an application; returns the function that removes it. */
  register(app: JingleApp): () => void;
}

const routers = new WeakMap<XmppConnection, JingleRouter>();

/** The router of `conn`, created (and its IQ handler installed) on first use. */
export function jingleRouter(conn: XmppConnection, logger: Logger = conn.logger): JingleRouter {
  const existing = routers.get(conn);
  if (existing) return existing;
  const apps = new Set<JingleApp>();
  let stopIq: (() => void) | undefined;
  const handler: IqHandler = (payload, ctx) => {
    const sid = payload.attrs.sid as string | undefined;
    const action = payload.attrs.action as string | undefined;
    if (!sid || !action) {
      logger.warn("malformed jingle: no sid or action", { from: ctx.from });
      throw new StanzaError("bad-request", "modify", { text: "jingle without sid or action" });
    }
    for (const app of apps) if (app.owns(sid)) return app.handle(payload, ctx);
    if (action === "session-initiate") {
      for (const app of apps) if (app.takesInitiate(payload)) return app.handle(payload, ctx);
      const kinds = payload.getChildren("content").map((c) =>
        c.getChildElements().find((e) => e.name === "description")?.attrs.xmlns ?? "none"
      );
      logger.warn("session-initiate for no application we run", { sid, from: ctx.from, descriptions: kinds });
      throw new StanzaError("feature-not-implemented", "cancel", {
        text: "no application for these contents",
        application: xml("unsupported-applications", { xmlns: NS_JINGLE_ERRORS }),
      });
    }
    logger.warn("jingle for unknown session", { sid, action, from: ctx.from });
    throw new StanzaError("item-not-found", "cancel", {
      application: xml("unknown-session", { xmlns: NS_JINGLE_ERRORS }),
    });
  };
  const router: JingleRouter = {
    register(app) {
      apps.add(app);
      stopIq ??= conn.handleIq("set", "jingle", NS_JINGLE, handler);
      return () => {
        apps.delete(app);
        if (apps.size === 0) {
          stopIq?.();
          stopIq = undefined;
        }
      };
    },
  };
  routers.set(conn, router);
  return router;
}

/** True when some `<content/>` of a `<jingle/>` payload has a `<description/>` in `ns`. */
export function hasDescription(jingle: Element, ns: string | ((ns: string) => boolean)): boolean {
  const match = typeof ns === "string" ? (x: string) => x === ns : ns;
  return jingle.getChildren("content").some((c) =>
    c.getChildElements().some((e) => e.name === "description" && match(String(e.attrs.xmlns)))
  );
}

export type { Element };
