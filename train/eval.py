#!/usr/bin/env python3
"""eval.py: accuracy of the demo model per task, on fresh pictures, through the server.

    train/eval.py --url http://127.0.0.1:8080 [--n 50] [--seed 2026] [--min-accuracy 0.9]
    train/eval.py --mmmamba ./mmmamba --model DIR [--n 50] ...     (no daemon: `mmmamba generate`)

Draws n pictures with train/shapes.py from --seed (training draws from seeds seed*1000+worker,
1000-1099 for the default training seed, and its own final check from 900001; pick any other),
asks one question per task and picture (caption, colour, shape, count, position) with greedy
decoding, and scores the answers word for word (train/shapes.py score()). With --url each question
is a POST /v1/chat/completions with the picture as a data: URL (PNG or JPEG as drawn) and
temperature 0; with --mmmamba it runs `mmmamba generate --image FILE --prompt Q`.

Prints one line per wrong answer (all with --verbose), then a table of accuracy per task.
Exit status: 0, or 1 when a task is below --min-accuracy or a request failed. Needs only the
Python standard library and Pillow.
"""
import argparse
import base64
import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import shapes  # noqa: E402


def ask_http(url, model, data, fmt, question, max_tokens, timeout):
    body = {
        "messages": [{"role": "user", "content": [
            {"type": "image_url",
             "image_url": {"url": "data:image/%s;base64,%s" % (fmt, base64.b64encode(data).decode())}},
            {"type": "text", "text": question}]}],
        "temperature": 0, "max_tokens": max_tokens, "stream": False}
    if model:
        body["model"] = model
    req = urllib.request.Request(url.rstrip("/") + "/v1/chat/completions", data=json.dumps(body).encode(),
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=timeout) as r:
        reply = json.loads(r.read().decode())
    return reply["choices"][0]["message"]["content"]


def ask_cli(mmmamba, model, path, question, max_tokens, timeout):
    r = subprocess.run([mmmamba, "generate", "--model", model, "--image", path, "--prompt", question,
                        "--max-tokens", str(max_tokens)],
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, universal_newlines=True, timeout=timeout)
    if r.returncode != 0:
        raise RuntimeError("mmmamba generate exited %d: %s" % (r.returncode, r.stderr.strip()[-300:]))
    return r.stdout.strip()


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--url", help="daemon base URL, e.g. http://127.0.0.1:8080")
    ap.add_argument("--served-model", default="", help="\"model\" field of the requests (default: none)")
    ap.add_argument("--mmmamba", help="path of the mmmamba binary (instead of --url)")
    ap.add_argument("--model", help="checkpoint directory for --mmmamba")
    ap.add_argument("--n", type=int, default=50, help="pictures (one question per task each)")
    ap.add_argument("--seed", type=int, default=2026)
    ap.add_argument("--max-objects", type=int, default=3)
    ap.add_argument("--max-tokens", type=int, default=32)
    ap.add_argument("--concurrency", type=int, default=4, help="requests in flight")
    ap.add_argument("--timeout", type=float, default=120)
    ap.add_argument("--min-accuracy", type=float, default=0.0, help="fail below this fraction on any task")
    ap.add_argument("--samples", metavar="DIR",
                    help="ask the questions of DIR/answers.tsv (train/samples) instead; exact answers")
    ap.add_argument("--save", help="keep the pictures and a results.json in this folder")
    ap.add_argument("--verbose", action="store_true")
    a = ap.parse_args()
    if bool(a.url) == bool(a.mmmamba and a.model):
        ap.error("give --url, or --mmmamba and --model")

    folder = a.save or tempfile.mkdtemp(prefix="mmmamba_eval_")
    os.makedirs(folder, exist_ok=True)
    jobs = []
    if a.samples:
        with open(os.path.join(a.samples, "answers.tsv"), encoding="utf-8") as f:
            for line in f.read().splitlines()[1:]:
                fn, q, ans = line.split("\t")
                path = os.path.join(a.samples, fn)
                with open(path, "rb") as g:
                    data = g.read()
                jobs.append((0, path, data, "jpeg" if fn.endswith(".jpg") else "png", "exact", q, ans))
    for k, (data, fmt, qs) in enumerate([] if a.samples else shapes.eval_items(a.seed, a.n, a.max_objects)):
        path = os.path.join(folder, "pic%03d.%s" % (k, "jpg" if fmt == "jpeg" else "png"))
        with open(path, "wb") as f:
            f.write(data)
        for task, q, key in qs:
            jobs.append((k, path, data, fmt, task, q, key))

    def run(job):
        k, path, data, fmt, task, q, key = job
        try:
            if a.url:
                ans = ask_http(a.url, a.served_model, data, fmt, q, a.max_tokens, a.timeout)
            else:
                ans = ask_cli(a.mmmamba, a.model, path, q, a.max_tokens, a.timeout)
            return ans, None
        except Exception as e:  # noqa: BLE001 (reported and counted as a failure)
            return None, str(e)

    t0 = time.time()
    with ThreadPoolExecutor(max(1, a.concurrency)) as pool:
        results = list(pool.map(run, jobs))
    elapsed = time.time() - t0

    acc, errors, rows = {}, 0, []
    for (k, path, data, fmt, task, q, key), (ans, err) in zip(jobs, results):
        ok = err is None and (shapes.score(task, key, ans) if task != "exact" else ans.strip() == key)
        errors += err is not None
        c = acc.setdefault(task, [0, 0])
        c[0] += ok
        c[1] += 1
        rows.append({"picture": os.path.basename(path), "task": task, "question": q, "expected": key,
                     "answer": ans, "error": err, "correct": ok})
        if a.verbose or not ok:
            print("%s %s %-8s %r -> %r (want %r)%s" % ("ok " if ok else "BAD", os.path.basename(path), task, q,
                                                      ans, key, " ERROR " + err if err else ""))
    print("\n%s, %d questions in %.1f s via %s" %
          ("samples of " + a.samples if a.samples else "%d pictures (seed %d)" % (a.n, a.seed), len(jobs), elapsed,
           a.url or "mmmamba generate"))
    print("| task | correct | accuracy |\n|---|---:|---:|")
    failed = errors > 0
    for task in shapes.TASKS + ["exact"]:
        if task in acc:
            frac = acc[task][0] / acc[task][1]
            failed |= frac < a.min_accuracy
            print("| %s | %d/%d | %.1f%% |" % (task, acc[task][0], acc[task][1], 100.0 * frac))
    if errors:
        print("%d requests failed" % errors)
    if a.save:
        with open(os.path.join(folder, "results.json"), "w") as f:
            json.dump({"seed": a.seed, "n": a.n, "accuracy": {t: c[0] / c[1] for t, c in acc.items()},
                       "answers": rows}, f, indent=1)
    else:
        for name in os.listdir(folder):
            os.unlink(os.path.join(folder, name))
        os.rmdir(folder)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
