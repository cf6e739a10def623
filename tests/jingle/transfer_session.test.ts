import assert from "node:assert/strict";
import {
  canTransferTransition,
  IllegalTransferTransitionError,
  isSupportedAction,
  isTerminal,
  TRANSFER_STATES,
  transferAcceptsAction,
  type TransferRole,
  type TransferState,
  TransferStateMachine,
  type TransferTransition,
} from "../../jingle/transfer_session.ts";
import { JINGLE_ACTIONS, type JingleAction } from "../../jingle/jingle.ts";

/** Every legal edge, written out independently of TRANSFER_TRANSITIONS. */
const LEGAL = new Set([
  "pending>accepted",
  "pending>failed",
  "accepted>negotiating",
  "accepted>transferring",
  "accepted>failed",
  "negotiating>transferring",
  "negotiating>failed",
  "transferring>verifying",
  "transferring>failed",
  "verifying>completed",
  "verifying>failed",
]);

Deno.test("transfer state machine: exactly the listed edges are legal", () => {
  for (const from of TRANSFER_STATES) {
    for (const to of TRANSFER_STATES) {
      assert.equal(canTransferTransition(from, to), LEGAL.has(`${from}>${to}`), `${from} → ${to}`);
    }
  }
  assert.ok(isTerminal("completed") && isTerminal("failed") && !isTerminal("verifying"));
});

Deno.test("transfer state machine: S5B sender path with events and times", () => {
  let clock = 0;
  const m = new TransferStateMachine("initiator", () => ++clock);
  const seen: TransferTransition[] = [];
  m.onTransition((t) => seen.push(t));
  assert.equal(m.state, "pending");
  m.transition("accepted", "session-accept received");
  m.transition("negotiating", "s5b");
  m.transition("transferring", "candidate selected");
  m.transition("verifying", "all bytes sent");
  const last = m.transition("completed");
  assert.equal(m.state, "completed");
  assert.ok(m.ended);
  assert.deepEqual(m.reason, { condition: "success" });
  assert.deepEqual(last.reason, { condition: "success" });
  assert.deepEqual(seen.map((t) => t.to), [
    "accepted",
    "negotiating",
    "transferring",
    "verifying",
    "completed",
  ]);
  assert.deepEqual(seen.map((t) => t.at), [1, 2, 3, 4, 5]);
  assert.equal(m.history.length, 5);
});

Deno.test("transfer state machine: IBB skips negotiating; failure from any live state keeps the reason", () => {
  const ibb = new TransferStateMachine("responder");
  ibb.transition("accepted");
  ibb.transition("transferring");
  ibb.transition("failed", { condition: "media-error", text: "GCM tag mismatch" });
  assert.deepEqual(ibb.reason, { condition: "media-error", text: "GCM tag mismatch" });
  for (
    const state of ["pending", "accepted", "negotiating", "transferring", "verifying"] as TransferState[]
  ) {
    assert.ok(canTransferTransition(state, "failed"), state);
  }
});

Deno.test("transfer state machine: illegal edges, bad reasons and terminal states are refused", () => {
  const m = new TransferStateMachine("initiator");
  assert.throws(() => m.transition("transferring"), IllegalTransferTransitionError);
  assert.throws(() => m.transition("completed"), IllegalTransferTransitionError);
  assert.throws(() => m.transition("failed"), /needs a reason/);
  assert.throws(() => m.transition("failed", "no-such-reason"), /not a Jingle reason/);
  assert.throws(() => m.transition("failed", "success"), /cannot end with success/);
  assert.equal(m.state, "pending", "refused transitions change nothing");
  assert.equal(m.history.length, 0);
  m.transition("failed", "decline");
  assert.throws(() => m.transition("accepted"), IllegalTransferTransitionError);
  assert.throws(() => m.transition("failed", "cancel"), IllegalTransferTransitionError);
  assert.deepEqual(m.reason, { condition: "decline" });

  const v = new TransferStateMachine("responder");
  v.transition("accepted");
  v.transition("transferring");
  v.transition("verifying");
  assert.throws(() => v.transition("completed", { condition: "media-error" }), /ends with success/);
});

/** Expected action table written out per role and state. */
function expected(role: TransferRole, state: TransferState, action: JingleAction): boolean {
  if (state === "completed" || state === "failed") return false;
  if (action === "session-info" || action === "session-terminate") return true;
  if (action === "session-accept") return role === "initiator" && state === "pending";
  if (action === "transport-info") return ["accepted", "negotiating", "transferring"].includes(state);
  if (action === "transport-replace") {
    return role === "responder" && ["accepted", "negotiating"].includes(state);
  }
  if (action === "transport-accept" || action === "transport-reject") {
    return role === "initiator" && state === "negotiating";
  }
  return false;
}

Deno.test("transfer state machine: received actions per role and state", () => {
  for (const role of ["initiator", "responder"] as TransferRole[]) {
    for (const state of TRANSFER_STATES) {
      for (const action of JINGLE_ACTIONS) {
        assert.equal(
          transferAcceptsAction(role, state, action),
          expected(role, state, action),
          `${role} ${state} ${action}`,
        );
      }
    }
  }
  // Spot checks of the cases the I/O layer relies on.
  assert.ok(
    !transferAcceptsAction("responder", "pending", "session-accept"),
    "a responder never gets an accept",
  );
  assert.ok(
    !transferAcceptsAction("initiator", "accepted", "session-accept"),
    "a second accept is out of order",
  );
  assert.ok(
    !transferAcceptsAction("initiator", "pending", "transport-replace"),
    "only the initiator replaces",
  );
  const m = new TransferStateMachine("responder");
  assert.ok(!m.accepts("transport-info"));
  m.transition("accepted");
  assert.ok(m.accepts("transport-info"));
});

Deno.test("transfer state machine: supported actions", () => {
  assert.ok(isSupportedAction("transport-replace"));
  assert.ok(isSupportedAction("session-info"));
  assert.ok(!isSupportedAction("content-add"));
  assert.ok(!isSupportedAction("security-info"));
  assert.ok(!isSupportedAction("description-info"));
});
