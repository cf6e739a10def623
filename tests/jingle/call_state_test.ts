import assert from "node:assert/strict";
import {
  acceptsAction,
  CALL_STATES,
  type CallDirection,
  type CallState,
  CallStateMachine,
  type CallTransition,
  canTransition,
  IllegalTransitionError,
  initialState,
  TRANSITIONS,
} from "../../jingle/session.ts";
import type { JingleAction } from "../../jingle/jingle.ts";

/** Every legal edge, written out independently of TRANSITIONS. */
const LEGAL: Record<CallDirection, string[]> = {
  outgoing: [
    "proposed>ringing",
    "proposed>proceeding",
    "proposed>ended",
    "ringing>proceeding",
    "ringing>ended",
    "proceeding>initiated",
    "proceeding>ended",
    "initiated>accepted",
    "initiated>ended",
    "accepted>active",
    "accepted>ended",
    "active>ended",
  ],
  incoming: [
    "ringing>proceeding",
    "ringing>ended",
    "proceeding>initiated",
    "proceeding>ended",
    "initiated>accepted",
    "initiated>ended",
    "accepted>active",
    "accepted>ended",
    "active>ended",
  ],
};

for (const direction of ["outgoing", "incoming"] as const) {
  Deno.test(`call state: full edge table (${direction})`, () => {
    for (const from of CALL_STATES) {
      for (const to of CALL_STATES) {
        const legal = LEGAL[direction].includes(`${from}>${to}`);
        assert.equal(canTransition(direction, from, to), legal, `${direction} ${from}→${to}`);
        assert.equal(TRANSITIONS[direction][from].includes(to), legal);
      }
    }
  });
}

/** Drive a machine to `state` along the happy path. */
function at(direction: CallDirection, state: CallState): CallStateMachine {
  const m = new CallStateMachine(direction, () => 0);
  const path: CallState[] = direction === "outgoing"
    ? ["proposed", "proceeding", "initiated", "accepted", "active"]
    : ["ringing", "proceeding", "initiated", "accepted", "active"];
  if (state === "ringing" && direction === "outgoing") {
    m.transition("ringing", "peer ringing");
    return m;
  }
  for (const s of path.slice(1, path.indexOf(state) + 1)) m.transition(s, "test");
  if (state === "ended") m.transition("ended", "success");
  return m;
}

Deno.test("call state: transition() applies legal edges, refuses illegal ones, emits exactly one event", () => {
  for (const direction of ["outgoing", "incoming"] as const) {
    for (const from of CALL_STATES) {
      if (direction === "incoming" && from === "proposed") continue;
      for (const to of CALL_STATES) {
        const m = at(direction, from);
        assert.equal(m.state, from);
        const events: CallTransition[] = [];
        m.onTransition((t) => events.push(t));
        if (canTransition(direction, from, to)) {
          const t = m.transition(to, to === "ended" ? "cancel" : "why");
          assert.equal(m.state, to);
          assert.equal(events.length, 1);
          assert.deepEqual(events[0], t);
          assert.equal(t.from, from);
          assert.equal(t.to, to);
        } else {
          assert.throws(() => m.transition(to, to === "ended" ? "cancel" : "why"), IllegalTransitionError);
          assert.equal(m.state, from, "state unchanged");
          assert.equal(events.length, 0, "no event");
        }
      }
    }
  }
});

Deno.test("call state: initial states; ended carries the Jingle reason and is final", () => {
  assert.equal(initialState("outgoing"), "proposed");
  assert.equal(initialState("incoming"), "ringing");
  const m = new CallStateMachine("incoming", () => 42);
  m.transition("proceeding", "accepted locally");
  assert.throws(() => m.transition("ended"), /needs a reason/);
  assert.throws(() => m.transition("ended", "not-a-reason"), /not a Jingle reason/);
  assert.equal(m.state, "proceeding");
  const t = m.transition("ended", { condition: "security-error", text: "fingerprint mismatch" });
  assert.deepEqual(t.reason, { condition: "security-error", text: "fingerprint mismatch" });
  assert.equal(t.at, 42);
  assert.deepEqual(m.reason, { condition: "security-error", text: "fingerprint mismatch" });
  assert.ok(m.ended);
  for (const s of CALL_STATES) assert.throws(() => m.transition(s, "success"), IllegalTransitionError);
  assert.deepEqual(m.history.map((h) => h.to), ["proceeding", "ended"]);
  const m2 = new CallStateMachine("outgoing");
  m2.transition("ended", "busy");
  assert.deepEqual(m2.reason, { condition: "busy" });
});

Deno.test("call state: which received Jingle actions each state accepts", () => {
  const rows: [CallDirection, CallState, JingleAction, boolean][] = [
    ["incoming", "ringing", "session-initiate", false],
    ["incoming", "proceeding", "session-initiate", true],
    ["incoming", "initiated", "session-initiate", false],
    ["incoming", "accepted", "session-accept", false],
    ["incoming", "proceeding", "transport-info", false],
    ["incoming", "initiated", "transport-info", true],
    ["incoming", "active", "transport-info", true],
    ["incoming", "proceeding", "session-terminate", true],
    ["incoming", "ringing", "session-terminate", false],
    ["outgoing", "proposed", "session-accept", false],
    ["outgoing", "initiated", "session-accept", true],
    ["outgoing", "accepted", "session-accept", false],
    ["outgoing", "active", "session-accept", false],
    ["outgoing", "initiated", "session-initiate", false],
    ["outgoing", "initiated", "transport-info", true],
    ["outgoing", "proceeding", "session-terminate", true],
    ["outgoing", "active", "session-info", true],
    ["outgoing", "active", "content-add", true],
    ["incoming", "active", "content-add", true],
    ["incoming", "accepted", "content-add", false],
    ["outgoing", "initiated", "content-accept", false],
    ["outgoing", "active", "content-reject", true],
    ["incoming", "active", "content-remove", true],
    ["incoming", "active", "content-modify", true],
    ["incoming", "initiated", "content-modify", false],
    ["incoming", "ended", "content-add", false],
    ["outgoing", "ended", "session-terminate", false],
    ["incoming", "ended", "transport-info", false],
  ];
  for (const [d, s, a, want] of rows) assert.equal(acceptsAction(d, s, a), want, `${d} ${s} ${a}`);
});
