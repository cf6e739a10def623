#!/usr/bin/python3
"""Self-test for omemo_peer.py: starts a real Prosody (scripts/prosody.ts), runs two peers (alice, bob)
and checks messages both ways, a key transport (key+iv match) and encrypt_element/decrypt_element,
including a fresh-session (prekey='true') element. Exit code 0 == OK.

    /usr/bin/python3 tests/interop/omemo_peer_selftest.py      (from /work/main; needs deno + prosody)
"""
import json, os, queue, subprocess, sys, threading, time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
PEER = os.path.join(HERE, "omemo_peer.py")


def main() -> int:
    server = subprocess.Popen(["deno", "run", "-A", os.path.join(ROOT, "scripts/prosody.ts"),
                               "--user", "alice:pw", "--user", "bob:pw", "--user", "carol:pw"],
                              stdout=subprocess.PIPE, text=True, cwd=ROOT)
    procs = []
    try:
        info = json.loads(server.stdout.readline())

        def start(user):
            p = subprocess.Popen(["/usr/bin/python3", PEER, "--jid", f"{user}@{info['domain']}", "--password", "pw",
                                  "--host", info["host"], "--port", str(info["c2sPort"]), "--ca", info["certificate"]],
                                 stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
            procs.append(p)
            q = queue.Queue()

            def rd():
                for line in p.stdout:
                    print(user, "<-", line.strip()[:200], flush=True)
                    q.put(json.loads(line))
                q.put(None)
            threading.Thread(target=rd, daemon=True).start()
            return p, q

        def wait(q, ev, pred=lambda e: True, t=20):
            end = time.time() + t
            while time.time() < end:
                try:
                    e = q.get(timeout=max(0.01, end - time.time()))
                except queue.Empty:
                    break
                if e is None:
                    raise AssertionError("peer exited")
                if e["event"] == ev and pred(e):
                    return e
            raise AssertionError(f"timeout waiting for {ev}")

        def cmd(p, **c):
            p.stdin.write(json.dumps(c) + "\n")
            p.stdin.flush()

        d = info["domain"]
        (a, aq), (b, bq), (c, cq) = start("alice"), start("bob"), start("carol")
        ra, rb, rc = wait(aq, "ready"), wait(bq, "ready"), wait(cq, "ready")
        cmd(a, cmd="send", to=f"bob@{d}", body="hello bob ✓")
        m = wait(bq, "message")
        assert m["body"] == "hello bob ✓" and m["sender_device"] == ra["device_id"], m
        cmd(b, cmd="send", to=f"alice@{d}", body="hi alice")
        assert wait(aq, "message")["body"] == "hi alice"
        cmd(a, cmd="key_transport", to=f"bob@{d}")
        ks = wait(aq, "key_transport_sent")
        kt = wait(bq, "key_transport", lambda e: e["key"] == ks["key"])
        assert kt["iv"] == ks["iv"]
        cmd(b, cmd="encrypt_element", to=f"alice@{d}", device=ra["device_id"], plaintext="fp-1")
        x = wait(bq, "encrypted_element")
        cmd(a, cmd="decrypt_element", **{"from": f"bob@{d}"}, xml=x["xml"])
        assert wait(aq, "decrypted")["plaintext"] == "fp-1"
        cmd(c, cmd="encrypt_element", to=f"alice@{d}", device=ra["device_id"], plaintext="fp-2")
        x = wait(cq, "encrypted_element")
        assert 'prekey="true"' in x["xml"], x
        cmd(a, cmd="decrypt_element", **{"from": f"carol@{d}"}, xml=x["xml"])
        assert wait(aq, "decrypted")["plaintext"] == "fp-2"
        cmd(a, cmd="quit")
        for p in (b, c):
            p.stdin.close()  # EOF must end the peer
        for p in procs:
            assert p.wait(10) == 0
        print("ALL OK")
        return 0
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
        server.terminate()
        try:
            server.wait(10)
        except subprocess.TimeoutExpired:
            server.kill()


if __name__ == "__main__":
    sys.exit(main())
