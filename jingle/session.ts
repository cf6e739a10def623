/**
 * The life cycle of one 1:1 Jingle RTP call (JMI + Jingle) as an explicit, pure state machine.
 *
 * Caller (`outgoing`): proposed → [ringing] → proceeding → initiated → accepted → active → ended
 * Callee (`incoming`): ringing → proceeding → initiated → accepted → active → ended
 *
 * - `proposed`: JMI `<propose/>` sent (caller only).
 * - `ringing`: caller: peer sent `<ringing/>`; callee: a `<propose/>` arrived and waits for a decision.
 * - `proceeding`: JMI `<proceed/>` sent (callee) / received (caller); Jingle session not yet initiated.
 * - `initiated`: session-initiate sent (caller) / received (callee).
 * - `accepted`: session-accept received (caller) / sent (callee); ICE + DTLS running.
 * - `active`: DTLS connected and the peer certificate matched the signalled fingerprint.
 * - `ended`: terminal; carries the Jingle reason.
 *
 * No I/O: every edge is listed in {@link TRANSITIONS}; {@link CallStateMachine.transition} refuses any other edge.
 * @module
 */
import { type JingleAction, type JingleReason, toJingleReason } from "./jingle.ts";

/** Who placed the call, from our side. */
export type CallDirection = "outgoing" | "incoming";

/** A call state. */
export type CallState = "proposed" | "ringing" | "proceeding" | "initiated" | "accepted" | "active" | "ended";

/** All states, in life-cycle order. */
export const CALL_STATES: readonly CallState[] = [
  "proposed",
  "ringing",
  "proceeding",
  "initiated",
  "accepted",
  "active",
  "ended",
];

/** Legal edges per direction. `ended` is reachable from every non-terminal state and has no exit. */
export const TRANSITIONS: Readonly<Record<CallDirection, Readonly<Record<CallState, readonly CallState[]>>>> =
  {
    outgoing: {
      proposed: ["ringing", "proceeding", "ended"],
      ringing: ["proceeding", "ended"],
      proceeding: ["initiated", "ended"],
      initiated: ["accepted", "ended"],
      accepted: ["active", "ended"],
      active: ["ended"],
      ended: [],
    },
    incoming: {
      proposed: [],
      ringing: ["proceeding", "ended"],
      proceeding: ["initiated", "ended"],
      initiated: ["accepted", "ended"],
      accepted: ["active", "ended"],
      active: ["ended"],
      ended: [],
    },
  };

/** The state a call starts in. */
export function initialState(direction: CallDirection): CallState {
  return direction === "outgoing" ? "proposed" : "ringing";
}

/** One state change. */
export interface CallTransition {
  /** State before the change. */
  from: CallState;
  /** State after the change. */
  to: CallState;
  /** Why (free text for logs; for `ended` the Jingle reason condition). */
  why: string;
  /** Set when `to === "ended"`. */
  reason?: JingleReason;
  /** ms since the time origin of the clock. */
  at: number;
}

/** Thrown by {@link CallStateMachine.transition} for an edge not in {@link TRANSITIONS}. */
export class IllegalTransitionError extends Error {
  /**
   * Creates the error for the refused edge.
   * @param direction the call's direction (the two directions have different graphs)
   * @param from the current state
   * @param to the refused target state
   */
  constructor(readonly direction: CallDirection, readonly from: CallState, readonly to: CallState) {
    super(`illegal call transition ${from} → ${to} (${direction})`);
    this.name = "IllegalTransitionError";
  }
}

/** Is `from → to` a legal edge? */
export function canTransition(direction: CallDirection, from: CallState, to: CallState): boolean {
  return TRANSITIONS[direction][from].includes(to);
}

/**
 * Which received Jingle actions are acceptable in a state (anything else is answered with
 * `<unexpected-request/>` + `<out-of-order/>`). session-terminate and session-info are acceptable as long as
 * a Jingle session can exist (from `proceeding` on); transport-info once the remote side knows the session;
 * content modifications (content-add/accept/reject/remove/modify, XEP-0166 §7.2) only on an `active` call, i.e. after
 * the media path was authenticated (whether a content-accept/reject answers one of ours is the caller's check).
 */
export function acceptsAction(direction: CallDirection, state: CallState, action: JingleAction): boolean {
  if (state === "ended") return false;
  const live = state === "proceeding" || state === "initiated" || state === "accepted" || state === "active";
  switch (action) {
    case "session-initiate":
      return direction === "incoming" && state === "proceeding";
    case "session-accept":
      return direction === "outgoing" && state === "initiated";
    case "transport-info":
      return state === "initiated" || state === "accepted" || state === "active";
    case "session-terminate":
    case "session-info":
      return live;
    case "content-add":
    case "content-accept":
    case "content-reject":
    case "content-remove":
    case "content-modify":
      return state === "active";
    default:
      return false;
  }
}

/** The call state machine: the current state, the reason once ended, and one event per transition. */
export class CallStateMachine {
  #state: CallState;
  #reason?: JingleReason;
  readonly #listeners = new Set<(t: CallTransition) => void>();
  /** Every transition so far, oldest first. */
  readonly history: CallTransition[] = [];

  /**
   * Starts in {@link initialState} of `direction`.
   * @param direction outgoing (we propose) or incoming (we ring)
   * @param now clock for {@link CallTransition.at}, ms; default `performance.now()`
   */
  constructor(readonly direction: CallDirection, readonly now: () => number = () => performance.now()) {
    this.#state = initialState(direction);
  }

  /** The current state. */
  get state(): CallState {
    return this.#state;
  }

  /** The terminal reason (only once `ended`). */
  get reason(): JingleReason | undefined {
    return this.#reason;
  }

  /** Whether the call is over (state `ended`). */
  get ended(): boolean {
    return this.#state === "ended";
  }

  /** Can we move to `to` now? */
  can(to: CallState): boolean {
    return canTransition(this.direction, this.#state, to);
  }

  /**
   * Move to `to`. `reason` is required for `ended` (a Jingle reason or a condition name) and is free text otherwise.
   * Throws {@link IllegalTransitionError} for an illegal edge; emits exactly one event on success.
   */
  transition(to: CallState, reason?: JingleReason | string): CallTransition {
    const from = this.#state;
    if (!canTransition(this.direction, from, to)) throw new IllegalTransitionError(this.direction, from, to);
    let r: JingleReason | undefined;
    if (to === "ended") {
      if (reason === undefined) throw new Error("ending a call needs a reason");
      r = toJingleReason(reason);
      this.#reason = r;
    }
    this.#state = to;
    const t: CallTransition = {
      from,
      to,
      why: typeof reason === "string" ? reason : reason?.condition ?? "",
      at: this.now(),
    };
    if (r) t.reason = r;
    this.history.push(t);
    for (const l of this.#listeners) l(t);
    return t;
  }

  /** Subscribe to transitions; returns an unsubscribe function. */
  onTransition(listener: (t: CallTransition) => void): () => void {
    this.#listeners.add(listener);
    return () => this.#listeners.delete(listener);
  }
}
