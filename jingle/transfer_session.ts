/**
 * The life cycle of one Jingle file-transfer session (XEP-0234 over XEP-0260/0261, optionally JET) as an
 * explicit, pure state machine. We only offer files (we are the initiator and the sender) or receive offered
 * ones (responder and receiver); file requests (senders='responder') are refused before a session exists.
 *
 *   pending → accepted → [negotiating] → transferring → verifying → completed
 *        ↘──────────↘───────────↘──────────────↘────────────↘─────→ failed
 *
 * - `pending`: session-initiate sent (initiator) / received and waiting for the policy decision (responder).
 * - `accepted`: session-accept received (initiator) / sent (responder).
 * - `negotiating`: the transport is being set up: SOCKS5 candidates tried and reported (candidate-used /
 *   candidate-error), the proxy activated, or a transport-replace to IBB in progress. IBB skips this state.
 * - `transferring`: bytes flow.
 * - `verifying`: receiver: the last byte arrived, the GCM tag / size / hash are checked; sender: everything
 *   was sent, waiting for the receiver's session-terminate (Dino and Conversations: the receiver ends it).
 * - `completed` / `failed`: terminal, with the Jingle reason.
 *
 * No I/O: every edge is listed in {@link TRANSFER_TRANSITIONS}; {@link TransferStateMachine.transition}
 * refuses any other edge, and {@link transferAcceptsAction} says which received Jingle actions fit a state.
 * @module
 */
import { type JingleAction, type JingleReason, toJingleReason } from "./jingle.ts";

/** Our role in the session: initiator = the side that offers (and sends) the file. */
export type TransferRole = "initiator" | "responder";

/** A file-transfer state. */
export type TransferState =
  | "pending"
  | "accepted"
  | "negotiating"
  | "transferring"
  | "verifying"
  | "completed"
  | "failed";

/** All states, in life-cycle order. */
export const TRANSFER_STATES: readonly TransferState[] = [
  "pending",
  "accepted",
  "negotiating",
  "transferring",
  "verifying",
  "completed",
  "failed",
];

/** Legal edges (the same for both roles). `failed` is reachable from every live state; terminals have no exit. */
export const TRANSFER_TRANSITIONS: Readonly<Record<TransferState, readonly TransferState[]>> = {
  pending: ["accepted", "failed"],
  accepted: ["negotiating", "transferring", "failed"],
  negotiating: ["transferring", "failed"],
  transferring: ["verifying", "failed"],
  verifying: ["completed", "failed"],
  completed: [],
  failed: [],
};

/** Is `from → to` a legal edge? */
export function canTransferTransition(from: TransferState, to: TransferState): boolean {
  return TRANSFER_TRANSITIONS[from].includes(to);
}

/** True for `completed` and `failed`. */
export function isTerminal(state: TransferState): boolean {
  return state === "completed" || state === "failed";
}

/**
 * Which received Jingle actions fit a state for a role (anything else is answered with `unexpected-request` +
 * `out-of-order`, or `feature-not-implemented` for actions we never support, see {@link isSupportedAction}).
 *
 * - session-accept: only the initiator, only while `pending`.
 * - transport-info (candidate-used / candidate-error / activated / proxy-error): once the peer knows the
 *   session's transport: the responder from `accepted` on (the initiator's candidate-used can arrive right
 *   after our session-accept), the initiator once accepted; also during `transferring` (a late `activated`).
 * - transport-replace: only the responder (the initiator replaces) while the transport is not settled.
 * - transport-accept / transport-reject: only the initiator, while negotiating.
 * - session-info (checksum, received, pings) and session-terminate: any live state.
 */
export function transferAcceptsAction(
  role: TransferRole,
  state: TransferState,
  action: JingleAction,
): boolean {
  if (isTerminal(state)) return false;
  switch (action) {
    case "session-accept":
      return role === "initiator" && state === "pending";
    case "transport-info":
      return state === "accepted" || state === "negotiating" || state === "transferring";
    case "transport-replace":
      return role === "responder" && (state === "accepted" || state === "negotiating");
    case "transport-accept":
    case "transport-reject":
      return role === "initiator" && state === "negotiating";
    case "session-info":
    case "session-terminate":
      return true;
    default:
      return false;
  }
}

/** Actions a file-transfer session handles at all (others: `feature-not-implemented`). */
export function isSupportedAction(action: JingleAction): boolean {
  return [
    "session-initiate",
    "session-accept",
    "session-info",
    "session-terminate",
    "transport-info",
    "transport-replace",
    "transport-accept",
    "transport-reject",
  ].includes(action);
}

/** One state change. */
export interface TransferTransition {
  /** State before the change. */
  from: TransferState;
  /** State after the change. */
  to: TransferState;
  /** Why (free text for logs; for terminal states the reason condition). */
  why: string;
  /** Set when `to` is terminal. */
  reason?: JingleReason;
  /** ms since the time origin of the clock. */
  at: number;
}

/** Thrown by {@link TransferStateMachine.transition} for an edge not in {@link TRANSFER_TRANSITIONS}. */
export class IllegalTransferTransitionError extends Error {
  /**
   * Creates the error for the refused edge.
   * @param from the current state
   * @param to the refused target state
   */
  constructor(readonly from: TransferState, readonly to: TransferState) {
    super(`illegal file-transfer transition ${from} → ${to}`);
    this.name = "IllegalTransferTransitionError";
  }
}

/** The file-transfer state machine: current state, terminal reason, and one event per transition. */
export class TransferStateMachine {
  #state: TransferState = "pending";
  #reason?: JingleReason;
  readonly #listeners = new Set<(t: TransferTransition) => void>();
  /** Every transition so far, oldest first. */
  readonly history: TransferTransition[] = [];

  /**
   * Starts in `pending`.
   * @param role initiator (we offer and send the file) or responder
   * @param now clock for {@link TransferTransition.at}, ms; default `performance.now()`
   */
  constructor(readonly role: TransferRole, readonly now: () => number = () => performance.now()) {}

  /** The current state. */
  get state(): TransferState {
    return this.#state;
  }

  /** The terminal reason (only once `completed` or `failed`). */
  get reason(): JingleReason | undefined {
    return this.#reason;
  }

  /** Whether the transfer is over (`completed` or `failed`). */
  get ended(): boolean {
    return isTerminal(this.#state);
  }

  /** Can we move to `to` now? */
  can(to: TransferState): boolean {
    return canTransferTransition(this.#state, to);
  }

  /** Does a received `action` fit the current state? */
  accepts(action: JingleAction): boolean {
    return transferAcceptsAction(this.role, this.#state, action);
  }

  /**
   * Move to `to`. `completed` always carries `success`; `failed` needs a reason (a Jingle reason or a
   * condition name other than `success`); other states take free text. Throws
   * {@link IllegalTransferTransitionError} for an illegal edge; emits exactly one event on success.
   */
  transition(to: TransferState, reason?: JingleReason | string): TransferTransition {
    const from = this.#state;
    if (!canTransferTransition(from, to)) throw new IllegalTransferTransitionError(from, to);
    let r: JingleReason | undefined;
    if (to === "completed") {
      r = typeof reason === "object" ? reason : { condition: "success" };
      if (r.condition !== "success") throw new Error("a completed transfer ends with success");
    } else if (to === "failed") {
      if (reason === undefined) throw new Error("failing a transfer needs a reason");
      r = toJingleReason(reason);
      if (r.condition === "success") throw new Error("a failed transfer cannot end with success");
    }
    if (r) this.#reason = r;
    this.#state = to;
    const t: TransferTransition = {
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
  onTransition(listener: (t: TransferTransition) => void): () => void {
    this.#listeners.add(listener);
    return () => this.#listeners.delete(listener);
  }
}
