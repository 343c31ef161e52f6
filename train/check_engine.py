#!/usr/bin/env python3
"""check_engine.py: a trained demo checkpoint gives the same answers in three implementations.

    /usr/bin/python3 train/check_engine.py --model DIR [--mmmamba ./mmmamba] [--n 6] [--seed S]
        [--no-reference]

For n fresh pictures (seed S) and one question per task it checks that
  1. the prompt ids `mmmamba generate --dump-prompt-ids` renders equal train/tokenizer.py's
     (tokenizer, chat template, tile count of the C preprocessing);
  2. the greedy answer of the C engine (`mmmamba generate --print-ids`) equals the greedy answer
     of the training model (train/model.py) loaded from the checkpoint, and their first-token
     logits differ by at most 1e-4 of the largest (both fp32 on the bf16 weights);
  3. and equals tests/reference/mmmamba_ref.py --greedy on the same ids, with the tiles of the
     Python preprocessing (skipped with --no-reference).
Prints one line per question and a summary; exit status 0 when everything agrees.
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile

import numpy as np
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(ROOT, "tests", "reference"))
import shapes  # noqa: E402
import tokenizer as tokmod  # noqa: E402
from model import DemoModel  # noqa: E402
import mmmamba_ref  # noqa: E402
from train import greedy_answers, normalise  # noqa: E402


def load_demo(model_dir):
    with open(os.path.join(model_dir, "config.json")) as f:
        cfg = json.load(f)
    m = DemoModel(cfg)
    m.load_tensors(mmmamba_ref.Checkpoint(model_dir).get)
    m.eval()
    return cfg, m


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True)
    ap.add_argument("--mmmamba", default=os.path.join(ROOT, "mmmamba"))
    ap.add_argument("--n", type=int, default=6)
    ap.add_argument("--seed", type=int, default=424242)
    ap.add_argument("--max-tokens", type=int, default=24)
    ap.add_argument("--no-reference", action="store_true")
    a = ap.parse_args()
    torch.set_grad_enabled(False)
    cfg, model = load_demo(a.model)
    tk = tokmod.Tokenizer(os.path.join(a.model, "tokenizer.model"))
    S = cfg["force_image_size"]
    tpt = (S // 14) ** 2 // 4
    bad = total = 0
    worst = 0.0
    ref = None if a.no_reference else mmmamba_ref.load_model(a.model, "cpu", "chunked", 128)
    with tempfile.TemporaryDirectory() as tmp:
        items = shapes.eval_items(a.seed, a.n)
        for k, (data, fmt, qs) in enumerate(items):
            path = os.path.join(tmp, "pic%d.%s" % (k, "jpg" if fmt == "jpeg" else "png"))
            with open(path, "wb") as f:
                f.write(data)
            tiles = shapes.tiles_u8(shapes.decode(data), S, 1, cfg["max_dynamic_patch"])
            tiles_f = normalise(torch.from_numpy(tiles), "cpu")
            tiles_path = os.path.join(tmp, "tiles.f32")
            tiles_f.numpy().astype("<f4").tofile(tiles_path)
            prompts = [tk.prompt(q, len(tiles), tpt) for _, q, _ in qs]
            py = greedy_answers(model, tk, prompts, [tiles] * len(qs), "cpu", max_new=a.max_tokens)
            for (task, q, key), prompt, py_ans in zip(qs, prompts, py):
                total += 1
                ids_path = os.path.join(tmp, "prompt.ids")
                logits_path = os.path.join(tmp, "logits.f32")
                r = subprocess.run([a.mmmamba, "generate", "--model", a.model, "--image", path, "--prompt", q,
                                    "--print-ids", "--max-tokens", str(a.max_tokens),
                                    "--dump-prompt-ids", ids_path, "--dump-logits", logits_path],
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE, universal_newlines=True)
                c_ids = [int(t) for t in r.stdout.split()] if r.returncode == 0 else None
                with open(ids_path) as f:
                    c_prompt = [int(t) for t in f.read().split()]
                if c_ids and c_ids[-1] == tk.im_end:
                    c_ids = c_ids[:-1]
                c_ans = tk.decode(c_ids) if c_ids is not None else "(rc %d: %s)" % (r.returncode, r.stderr[-200:])
                ok = c_prompt == prompt and c_ans == py_ans
                if r.returncode == 0:  # first-token logits, C engine vs the training model
                    c_l = torch.from_numpy(np.fromfile(logits_path, dtype="<f4"))
                    mask = torch.tensor(prompt)[None] == tk.img_context
                    t_l = model(torch.tensor([prompt]), tiles_f, mask)[0, -1]
                    worst = max(worst, float((c_l - t_l).abs().max()) / max(1.0, float(t_l.abs().max())))
                ref_ans = ""
                if ref is not None:
                    rt = mmmamba_ref.load_tiles(tiles_path, len(tiles), ref)
                    gen = ref.greedy(prompt, a.max_tokens, tiles=rt)
                    if tk.im_end in gen:
                        gen = gen[:gen.index(tk.im_end)]
                    ref_ans = tk.decode(gen)
                    ok = ok and ref_ans == c_ans
                bad += not ok
                print("%s pic%d %-8s prompt %s  C %r  torch %r%s  (want %r)"
                      % ("ok " if ok else "BAD", k, task, "same" if c_prompt == prompt else "DIFFERS", c_ans, py_ans,
                         "" if ref is None else "  reference %r" % ref_ans, key), flush=True)
    print("%d of %d answers agree; first-token logits C vs torch: max |diff| / max |logit| = %.2e"
          % (total - bad, total, worst))
    return 1 if bad or worst > 1e-4 else 0


if __name__ == "__main__":
    sys.exit(main())
