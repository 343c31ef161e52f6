"""dispatch_responses.py: the /v1/responses half of check_dispatch_responses.sh
(standard library only). Each mode drives one daemon and compares its answers
with those of a one-engine daemon (REF); exits 1 on any failure.

  route   PORT REF  three conversations of four turns, turns 2-4 sent
                    concurrently in shuffled order: each continuation runs on
                    the engine of its previous turn (x-mmmamba-engine), resumes
                    (cached_tokens > 0, x-mmmamba-state: resumed) and gives the
                    reference's token ids
  control PORT      the same conversations sent one by one to a daemon without
                    a state cache: placement by load alone moves continuations
                    (so `route` could fail)
  full    PORT REF  two long continuations fill the engine holding a
                    conversation (max_seqs 2); the next continuation goes to the
                    other engine and resumes from the shared host tier
  failed  PORT REF MODE  engine 0 faults (MMMAMBA_FAIL_ENGINE=0:30) during a
                    continuation of its conversation; the next continuation runs
                    on engine 1: MODE `rebuilt` (state only in engine 0's slots:
                    cached_tokens 0) or `resumed` (state_cache_gpu no: from the
                    host tier, cached_tokens > 0); the reference's tokens either way
"""
import json
import random
import sys
import threading
import time
import urllib.error
import urllib.request

fails = []


def fail(msg):
    print("FAIL: " + msg)
    fails.append(msg)


def post(port, path, body, timeout=60):
    req = urllib.request.Request("http://127.0.0.1:%s%s" % (port, path),
                                 data=json.dumps(body).encode(),
                                 headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, dict((k.lower(), v) for k, v in r.getheaders()), json.load(r)
    except urllib.error.HTTPError as e:
        return e.code, dict((k.lower(), v) for k, v in e.headers.items()), json.load(e)


def turn_body(conv, turn, prev, max_tokens=12, **extra):
    words = ["apple", "river", "stone", "cloud", "ember", "north", "violet"]
    b = {"model": "m", "temperature": 0, "max_output_tokens": max_tokens,
         "return_token_ids": True,
         "input": "conversation %d, turn %d: tell me about the %s and the %s" %
                  (conv, turn, words[(conv * 3 + turn) % 7], words[(conv + turn * 5) % 7])}
    if prev:
        b["previous_response_id"] = prev
    b.update(extra)
    return b


def send(port, body):
    """One response: (status, engine, state header, cached tokens, output ids, id)."""
    code, h, o = post(port, "/v1/responses", body)
    if code != 200:
        return code, h.get("x-mmmamba-engine"), None, None, None, json.dumps(o)[:300]
    cached = o["usage"]["input_tokens_details"]["cached_tokens"]
    return (code, h.get("x-mmmamba-engine"), h.get("x-mmmamba-state"), cached,
            o["output_token_ids"], o["id"])


def reference_chain(ref, n_conv, n_turn):
    out = {}
    for c in range(n_conv):
        prev = None
        for t in range(n_turn):
            code, _, _, _, ids, rid = send(ref, turn_body(c, t, prev))
            if code != 200:
                fail("reference conversation %d turn %d: %s %s" % (c, t, code, rid))
                return out
            out[(c, t)] = ids
            prev = rid
    return out


def per_engine(port, name, engine):
    with urllib.request.urlopen("http://127.0.0.1:%s/metrics" % port, timeout=10) as r:
        for line in r.read().decode().splitlines():
            if line.startswith("mmmamba:per_engine_%s{" % name) and \
                    ('engine="%s"' % engine) in line:
                return float(line.rsplit(" ", 1)[1])
    return None


def mode_route(port, ref):
    n_conv, n_turn = 3, 4
    want = reference_chain(ref, n_conv, n_turn)
    prev, engine = {}, {}
    for c in range(n_conv):  # turn 0, one by one: spread by load
        code, e, _, _, ids, rid = send(port, turn_body(c, 0, None))
        if code != 200:
            fail("conversation %d turn 0: %s %s" % (c, code, rid))
            return
        if ids != want.get((c, 0)):
            fail("conversation %d turn 0: tokens differ from one engine's" % c)
        prev[c], engine[c] = rid, e
    if len(set(engine.values())) != 2:
        fail("the first turns did not use both engines: %s" % engine)
    rng = random.Random(7)
    same = total = 0
    for t in range(1, n_turn):
        order = list(range(n_conv))
        rng.shuffle(order)
        res = {}

        def one(c):
            res[c] = send(port, turn_body(c, t, prev[c]))
        th = [threading.Thread(target=one, args=(c,)) for c in order]
        for x in th:
            x.start()
        for x in th:
            x.join()
        for c in order:
            code, e, state, cached, ids, rid = res[c]
            total += 1
            if code != 200:
                fail("conversation %d turn %d: %s %s" % (c, t, code, rid))
                continue
            if e == engine[c]:
                same += 1
            else:
                fail("conversation %d turn %d ran on engine %s, its state is on %s" %
                     (c, t, e, engine[c]))
            if not cached or cached <= 0 or state != "resumed":
                fail("conversation %d turn %d: cached_tokens %s, state %s" % (c, t, cached, state))
            if ids != want.get((c, t)):
                fail("conversation %d turn %d: tokens differ from one engine's" % (c, t))
            prev[c], engine[c] = rid, e
    print("route: %d of %d continuations on the engine of their previous turn" % (same, total))


def mode_control(port):
    n_conv, n_turn = 3, 4
    prev, engine = {}, {}
    moved = total = 0
    for t in range(n_turn):
        for c in range(n_conv):
            code, e, _, cached, _, rid = send(port, turn_body(c, t, prev.get(c)))
            if code != 200 or cached != 0:
                fail("control: conversation %d turn %d: %s cached %s" % (c, t, code, cached))
                return
            if t > 0:
                total += 1
                moved += e != engine[c]
            prev[c], engine[c] = rid, e
    print("control (no state cache): %d of %d continuations moved engine" % (moved, total))
    if moved == 0:
        fail("without a state cache no continuation moved: the route check could not fail")


def reference_short(ref):
    """Conversation 9's first turn and its short continuation, on one engine."""
    code, _, _, _, _, rid = send(ref, turn_body(9, 0, None, 8))
    code2, _, _, _, ids, _ = send(ref, turn_body(9, 1, rid, 8))
    if code != 200 or code2 != 200:
        fail("reference for conversation 9: %s %s" % (code, code2))
    return ids


def mode_full(port, ref):
    want = reference_short(ref)
    code, h, r0 = post(port, "/v1/responses", turn_body(9, 0, None, 8))
    if code != 200:
        fail("full: turn 0: %s %s" % (code, r0))
        return
    home, rid = h.get("x-mmmamba-engine"), r0["id"]
    # a long request with n = 2 whose prompt begins with the conversation's
    # history fills the engine holding it (max_seqs 2): both its choices run
    # there (n > 1 stays on one engine), and the state moves to the host tier
    hist = r0["prompt_token_ids"] + r0["output_token_ids"]
    body = {"model": "m", "prompt": hist + [5, 6, 7], "max_tokens": 30000, "n": 2,
            "temperature": 0, "ignore_eos": True, "stream": True}
    req = urllib.request.Request("http://127.0.0.1:%s/v1/completions" % port,
                                 data=json.dumps(body).encode(),
                                 headers={"Content-Type": "application/json"})
    stream = urllib.request.urlopen(req, timeout=120)
    stream.readline()
    filler = stream.headers.get("x-mmmamba-engine")
    deadline = time.time() + 20
    while per_engine(port, "requests_running", filler) != 1 and time.time() < deadline:
        time.sleep(0.02)
    slots = per_engine(port, "state_slots_used", filler)
    code, e, state, cached, ids, rid2 = send(port, turn_body(9, 1, rid, 8))
    still = per_engine(port, "state_slots_used", filler)
    stream.close()  # cancels it
    print("full: engine %s held the conversation, the n=2 filler ran on %s (%s slots used); "
          "the continuation ran on %s (state %s, cached %s)" % (home, filler, slots, e, state,
                                                                cached))
    if filler != home:
        fail("full: the filler sharing the conversation's history ran on %s, not %s" %
             (filler, home))
    if slots != 2 or still != 2:
        fail("full: engine %s was not full while the continuation was placed (%s, %s)" %
             (filler, slots, still))
    if code != 200:
        fail("full: continuation: %s %s" % (code, rid2))
        return
    if e == filler:
        fail("full: the continuation was placed on the full engine %s" % filler)
    if not cached or cached <= 0 or state != "resumed":
        fail("full: not resumed from the host tier (cached %s, state %s)" % (cached, state))
    if ids != want:
        fail("full: tokens differ from one engine's")


def mode_failed(port, ref, expect):
    want = reference_short(ref)
    code, home, _, _, _, rid = send(port, turn_body(9, 0, None, 8))
    if code != 200 or home != "0":
        fail("failed: turn 0 went to engine %s (%s), the test wants engine 0" % (home, code))
        return
    if expect == "resumed":  # the next tie goes to engine 1: take it with another request
        c, e, _, _, _, _ = send(port, turn_body(8, 0, None, 4))
        if c != 200 or e != "1":
            fail("failed: the filler request ran on engine %s (%s)" % (e, c))
    code, e, _, _, _, msg = send(port, turn_body(9, 7, rid, 200, ignore_eos=True))
    if code != 500 or e != "0":
        fail("failed: the continuation on engine 0 was not failed by its fault: %s on %s %s" %
             (code, e, msg))
    code, e, state, cached, ids, rid2 = send(port, turn_body(9, 1, rid, 8))
    print("failed: after engine 0's fault the continuation ran on %s (state %s, cached %s)" %
          (e, state, cached))
    if code != 200 or e != "1":
        fail("failed: continuation after the fault: %s on engine %s %s" % (code, e, rid2))
        return
    if state != expect or (cached > 0) != (expect == "resumed"):
        fail("failed: state %s with cached %s, want %s" % (state, cached, expect))
    if ids != want:
        fail("failed: tokens differ from one engine's")


def main():
    mode = sys.argv[1]
    if mode == "route":
        mode_route(sys.argv[2], sys.argv[3])
    elif mode == "control":
        mode_control(sys.argv[2])
    elif mode == "full":
        mode_full(sys.argv[2], sys.argv[3])
    elif mode == "failed":
        mode_failed(sys.argv[2], sys.argv[3], sys.argv[4])
    sys.exit(1 if fails else 0)


main()
