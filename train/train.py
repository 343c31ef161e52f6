#!/usr/bin/env python3
"""train.py: trains the demo mmMamba (pictures of simple shapes) and writes the checkpoint.

    python3 train/train.py --out DIR [--steps N | --time-budget S] [--device cuda] ...

Data are made on the fly by --workers processes (train/shapes.py: picture, PNG/JPEG round trip,
MODEL.md section 4 tiling; train/tokenizer.py: chat template ids and answer labels), bucketed by
tile count so that batches hold about --batch-tokens tokens. The loss is the cross entropy of
the assistant answers (and their <|im_end|>), plus --aux times the auxiliary loss that teaches
the front end to see (the colour, shape, size and picture cell each image token shows, from the
embedding stack's output, by a linear head that is not exported). AdamW: linear warm-up, the peak lr until step
--hold, then cosine decay to 10 % at step --steps. With --steps 0 and --time-budget S the
run measures its speed from step 100 to --hold and fixes --steps there (printed: pass it as
--steps to repeat the run); the time budget also caps the run and, should the steps be slower than
measured, the decay follows elapsed time instead (the log says which bound ended the run; with
the step bound the run is a function of --seed and --steps). At the end: DIR holds config.json,
model.safetensors (bf16), the tokenizer files, loss.tsv and README.md (the model card, with the
loss curve and the accuracy measured here by greedy decoding of the exported bf16 weights on
--eval-n fresh pictures).
"""
import argparse
import json
import math
import os
import random
import shutil
import struct
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import shapes  # noqa: E402
import tokenizer as tokmod  # noqa: E402
from model import DemoModel  # noqa: E402

MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)
EVAL_SEED = 900001  # pictures never used in training (workers use seed*1000+worker)


def make_config(a, tk):
    def stack(layers, kinds, eps, theta):
        return {"num_hidden_layers": layers, "hidden_size": a.hidden, "num_attention_heads": a.heads,
                "num_key_value_heads": a.kv_heads, "intermediate_size": a.intermediate,
                "rms_norm_eps": eps, "rope_theta": theta, "hidden_act": "silu",
                "layers_block_type": kinds}
    emb = stack(len(a.emb_layers.split(",")), a.emb_layers.split(","), 1e-6, 10000.0)
    emb.update({"patch_size": 14, "image_size": a.image_size, "num_channels": 3,
                "llm_vocab_size": tk.Ve, "llm_hidden_size": a.hidden,
                "img_context_token_id": tk.img_context, "pixel_shuffle_loc": "pre",
                "use_pixel_shuffle_proj": True,
                "special_token_maps": {n: tk.added[n] for n in tokmod.ADDED_SPECIAL}})
    llm = stack(len(a.llm_layers.split(",")), a.llm_layers.split(","), 1e-5, 1000000.0)
    llm.update({"vocab_size": tk.vocab_size, "rope_scaling": None})
    return {"architectures": ["mmMambaChatModel"], "model_type": "mmMamba_chat",
            "force_image_size": a.image_size, "downsample_ratio": 0.5, "template": "internlm2-chat",
            "normalize_encoder_output": False, "use_thumbnail": True, "min_dynamic_patch": 1,
            "max_dynamic_patch": a.max_tiles, "dynamic_image_size": True, "torch_dtype": "bfloat16",
            "embedding_config": emb, "llm_config": llm}


# ---- data ----------------------------------------------------------------------------------------

class Batches(torch.utils.data.IterableDataset):
    """Endless batches, see collate()."""

    def __init__(self, a, tk, tokens_per_tile):
        self.a, self.tk, self.tpt = a, tk, tokens_per_tile
        self.tasks = a.tasks.split(",") if a.tasks else None

    def samples(self, rng):
        a = self.a
        while True:
            if rng.random() < a.text_only:
                turns = shapes.text_only(rng)
                ids, labels = self.tk.render(turns, 0, self.tpt)
                yield ids, labels, None, None
                continue
            objs, style = shapes.random_scene(rng, a.max_objects)
            data, _ = shapes.encode(shapes.render(objs, style, rng), style)
            tiles = shapes.tiles_u8(shapes.decode(data), a.image_size, 1, a.max_tiles)
            seen = shapes.token_labels(objs, style["w"], style["h"], a.image_size, 1, a.max_tiles,
                                       a.image_size // 28)
            for _ in range(a.reuse):  # the same arrays: collate() sends them once
                turns = shapes.conversation(objs, rng, rng.randint(1, a.max_turns), self.tasks, a.count_weight)
                ids, labels = self.tk.render(turns, len(tiles), self.tpt)
                yield ids, labels, tiles, seen

    def __iter__(self):
        info = torch.utils.data.get_worker_info()
        wid = info.id if info else 0
        rng = random.Random(self.a.seed * 1000 + wid)
        buckets = {}
        last = 1
        for item in self.samples(rng):
            # text-only conversations ride in the bucket of the last picture: alone in a bucket
            # of their own they would wait for a whole batch of them, which few runs ever reach
            n = last if item[2] is None else len(item[2])
            last = n
            b = buckets.setdefault(n, [])
            b.append(item)
            T = max(len(x[0]) for x in b)
            if T * (len(b) + 1) > self.a.batch_tokens:
                buckets[n] = []
                batch = collate(b)
                # numpy arrays travel pickled through the worker's pipe, tensors through /dev/shm
                yield tuple(t.numpy() for t in batch) if self.a.via_pipe else batch


def collate(b):
    """[(ids, labels, tiles u8 (n,S,S,3) or None, token labels or None)] -> (ids (B,T) long,
    labels (B,T) long, tiles (N,S,S,3) uint8, seen (N*G*G/4, 4) uint8: what each image token
    shows (shapes.token_labels, for the auxiliary loss), rows long: for each <IMG_CONTEXT>
    position of ids in row-major order, its image token among the N tiles'). The conversations
    about one picture (--reuse) share its tiles (the same array): they travel and are embedded once."""
    T = max(len(x[0]) for x in b)
    ids = torch.zeros(len(b), T, dtype=torch.long)
    labels = torch.full((len(b), T), -1, dtype=torch.long)
    for k, x in enumerate(b):
        ids[k, :len(x[0])] = torch.tensor(x[0])
        labels[k, :len(x[1])] = torch.tensor(x[1])
    start, t, s, rows = {}, [], [], []
    n = 0
    for x in b:
        if x[2] is None:
            continue
        if id(x[2]) not in start:
            start[id(x[2])] = n
            t.append(x[2])
            s.append(x[3])
            n += len(x[3])
        rows.append(torch.arange(start[id(x[2])], start[id(x[2])] + len(x[3])))
    tiles = torch.from_numpy(np.concatenate(t)) if t else torch.zeros(0, 1, 1, 3, dtype=torch.uint8)
    seen = torch.from_numpy(np.concatenate(s)) if s else torch.zeros(0, len(shapes.AUX_CLASSES), dtype=torch.uint8)
    rows = torch.cat(rows) if rows else torch.zeros(0, dtype=torch.long)
    return ids, labels, tiles, seen, rows


def keep_as_is(batch):
    """collate_fn for the pipe mode: the default one would turn numpy arrays into tensors in
    the worker, which then travel through shared memory again."""
    return batch


def normalise(tiles_u8, device):
    t = tiles_u8.to(device, non_blocking=True).permute(0, 3, 1, 2).float() / 255.0
    mean = torch.tensor(MEAN, device=device)[None, :, None, None]
    std = torch.tensor(STD, device=device)[None, :, None, None]
    return (t - mean) / std


# ---- checkpoint ----------------------------------------------------------------------------------

def write_safetensors(path, tensors):
    header, blobs, off = {}, [], 0
    for name in sorted(tensors):
        t = tensors[name].detach().to("cpu", torch.float32).contiguous()
        blob = t.to(torch.bfloat16).view(torch.int16).numpy().astype("<i2").tobytes()
        header[name] = {"dtype": "BF16", "shape": list(t.shape), "data_offsets": [off, off + len(blob)]}
        off += len(blob)
        blobs.append(blob)
    header["__metadata__"] = {"format": "pt"}
    hb = json.dumps(header).encode()
    hb += b" " * ((8 - len(hb) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(hb)))
        f.write(hb)
        for blob in blobs:
            f.write(blob)


def write_tokenizer_files(out, tk, model_path):
    shutil.copyfile(model_path, os.path.join(out, "tokenizer.model"))
    decoder, added = {}, {}
    for k, name in enumerate(["<unk>", "<s>", "</s>"]):
        decoder[str(k)] = {"content": name}
    for name in tokmod.ADDED_BASE + tokmod.ADDED_SPECIAL:
        decoder[str(tk.added[name])] = {"content": name}
        added[name] = tk.added[name]
    for v in decoder.values():
        v.update({"lstrip": False, "normalized": False, "rstrip": False, "single_word": False,
                  "special": True})
    tcfg = {"added_tokens_decoder": decoder, "bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>",
            "pad_token": None, "add_bos_token": True, "add_eos_token": False,
            "tokenizer_class": "InternLM2Tokenizer", "model_max_length": 1000000}
    smap = {"additional_special_tokens": tokmod.ADDED_BASE + tokmod.ADDED_SPECIAL, "bos_token": "<s>",
            "eos_token": "</s>", "unk_token": "<unk>"}
    gen = {"bos_token_id": 1, "eos_token_id": [tk.im_end]}
    for fn, obj in (("added_tokens.json", added), ("tokenizer_config.json", tcfg),
                    ("special_tokens_map.json", smap), ("generation_config.json", gen)):
        with open(os.path.join(out, fn), "w") as f:
            json.dump(obj, f, indent=2, ensure_ascii=False)
            f.write("\n")


# ---- greedy evaluation in PyTorch ------------------------------------------------------------------

@torch.no_grad()
def greedy_answers(model, tk, prompts, tiles_list, device, max_new=24, batch=32):
    """Greedy continuations (text) of prompts, by full recomputation over right-padded batches."""
    out = [None] * len(prompts)
    order = sorted(range(len(prompts)), key=lambda k: len(prompts[k]))
    for s in range(0, len(order), batch):
        idx = order[s:s + batch]
        seqs = [list(prompts[k]) for k in idx]
        n0 = [len(x) for x in seqs]
        tiles = [tiles_list[k] for k in idx if tiles_list[k] is not None]
        tl = normalise(torch.from_numpy(np.concatenate(tiles)), device) if tiles else None
        done = [False] * len(idx)
        for _ in range(max_new):
            T = max(len(x) for x in seqs)
            ids = torch.zeros(len(seqs), T, dtype=torch.long)
            mask = torch.zeros(len(seqs), T, dtype=torch.bool)
            for k, x in enumerate(seqs):
                ids[k, :len(x)] = torch.tensor(x)
                mask[k, :n0[k]] = torch.tensor(x[:n0[k]]) == tk.img_context
            logits = model(ids.to(device), tl, mask.to(device))
            for k, x in enumerate(seqs):
                if not done[k]:
                    t = int(torch.argmax(logits[k, len(x) - 1]))
                    x.append(t)
                    done[k] = t == tk.im_end
            if all(done):
                break
        for k, x in zip(idx, seqs):
            gen = x[len(prompts[k]):]
            if tk.im_end in gen:
                gen = gen[:gen.index(tk.im_end)]
            out[k] = tk.decode(gen)
    return out


def evaluate(model, tk, cfg, device, n, max_objects=3, seed=EVAL_SEED):
    S = cfg["force_image_size"]
    tpt = (S // 14) ** 2 // 4
    prompts, tiles_list, keys = [], [], []
    for data, fmt, qs in shapes.eval_items(seed, n, max_objects):
        tiles = shapes.tiles_u8(shapes.decode(data), S, 1, cfg["max_dynamic_patch"])
        for task, q, key in qs:
            prompts.append(tk.prompt(q, len(tiles), tpt))
            tiles_list.append(tiles)
            keys.append((task, q, key))
    answers = greedy_answers(model, tk, prompts, tiles_list, device)
    acc, examples = {}, []
    for (task, q, key), ans in zip(keys, answers):
        ok = shapes.score(task, key, ans)
        c = acc.setdefault(task, [0, 0])
        c[0] += ok
        c[1] += 1
        if len(examples) < 10:
            examples.append((q, ans, key, ok))
    return acc, examples


def make_probe(tk, cfg, n, max_objects, seed=EVAL_SEED + 1):
    """Batches of one-turn conversations (one per task and picture) about n held-out pictures,
    grouped by tile count: [(ids, labels, tiles u8, tasks)]."""
    S = cfg["force_image_size"]
    rng = random.Random(seed)
    groups = {}
    for _ in range(n):
        objs, style = shapes.random_scene(rng, max_objects)
        data, _ = shapes.encode(shapes.render(objs, style, rng), style)
        tiles = shapes.tiles_u8(shapes.decode(data), S, 1, cfg["max_dynamic_patch"])
        for task in shapes.TASKS:
            q, ans, key = shapes.question(task, objs, rng)
            ids, labels = tk.render([(q, ans)], len(tiles), (S // 14) ** 2 // 4)
            seen = np.zeros((len(tiles) * (S // 28) ** 2, 1), np.uint8)  # only its length matters
            groups.setdefault(len(tiles), []).append((ids, labels, tiles, seen, shapes.task_of(key)))
    return [collate(g) + ([x[4] for x in g],) for g in groups.values()]


@torch.no_grad()
def run_probe(model, probe, device):
    """{task: [right, asked]}: an answer is right when every answer token (and <|im_end|>) is the
    model's first choice given the ones before, i.e. greedy decoding gives exactly that answer."""
    acc = {}
    for ids, labels, tiles_u8, _, rows, tasks in probe:
        labels = labels.to(device)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
            logits = model(ids.to(device), normalise(tiles_u8, device), image_rows=rows.to(device))
        ok = ((logits.argmax(-1) == labels) | (labels < 0)).all(1).tolist()
        for t, k in zip(tasks, ok):
            c = acc.setdefault(t, [0, 0])
            c[0] += k
            c[1] += 1
    return acc


# ---- main ----------------------------------------------------------------------------------------

def add_recipe_args(ap):
    """The flags that say what is trained and on what data, and where the work runs: train.py's
    and bench.py's (which times the same model on the same batches)."""
    ap.add_argument("--batch-tokens", type=int, default=49152)
    ap.add_argument("--workers", type=int, default=max(1, (os.cpu_count() or 2) - 2))
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--hidden", type=int, default=256)
    ap.add_argument("--heads", type=int, default=4)
    ap.add_argument("--kv-heads", type=int, default=2)
    ap.add_argument("--intermediate", type=int, default=512)
    ap.add_argument("--emb-layers", default="mha,mamba2")
    ap.add_argument("--llm-layers", default="mamba2,mha,mamba2,mamba2")
    ap.add_argument("--image-size", type=int, default=224)
    ap.add_argument("--max-tiles", type=int, default=4)
    ap.add_argument("--max-turns", type=int, default=3)
    ap.add_argument("--reuse", type=int, default=4, help="conversations per rendered picture")
    ap.add_argument("--count-weight", type=int, default=1,
                    help="weight of count questions in the task mix (the other tasks weigh 2 each)")
    ap.add_argument("--text-only", type=float, default=0.03)
    ap.add_argument("--tasks", default="", help="train only these tasks (comma list; quick CPU checks)")
    ap.add_argument("--max-objects", type=int, default=3, help="at most this many shapes (quick CPU checks)")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--steps", type=int, default=3000, help="optimiser steps (0: fit them to --time-budget)")
    ap.add_argument("--time-budget", type=float, default=0, help="seconds of training at most (0: no bound)")
    ap.add_argument("--lr", type=float, default=1.5e-3)
    ap.add_argument("--warmup", type=int, default=200)
    ap.add_argument("--hold", type=int, default=400, help="steps at the peak lr before the decay")
    add_recipe_args(ap)
    ap.add_argument("--aux", type=float, default=0.5,
                    help="weight of the auxiliary loss: the colour, shape, size and picture cell each image "
                         "token shows, read from the embedding stack's output by a linear head that is not exported")
    ap.add_argument("--tokenizer", default=os.path.join(HERE, "tokenizer.model"))
    ap.add_argument("--eval-n", type=int, default=100, help="fresh pictures for the final check")
    ap.add_argument("--init", default="",
                    help="start from this checkpoint (a folder this script wrote, same architecture flags) "
                         "instead of random weights: a second training session continues the first (give it "
                         "another --seed, or it sees the first session's pictures again)")
    ap.add_argument("--log-every", type=int, default=25)
    ap.add_argument("--probe-every", type=int, default=0,
                    help="every N steps, teacher-forced exact-answer accuracy per task on 100 held-out pictures")
    a = ap.parse_args()
    a.via_pipe = False
    if a.steps <= 0 and (a.time_budget <= 0 or a.hold <= 100):
        ap.error("--steps 0 needs --time-budget and --hold > 100")
    if a.hold < a.warmup:
        ap.error("need --warmup <= --hold")

    t_start = time.time()
    random.seed(a.seed)
    torch.manual_seed(a.seed)
    dev = torch.device(a.device)
    if dev.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    tk = tokmod.Tokenizer(a.tokenizer)
    cfg = make_config(a, tk)
    tpt = (a.image_size // 14) ** 2 // 4
    model = DemoModel(cfg)
    if a.init:
        with open(os.path.join(a.init, "config.json")) as f:
            if json.load(f) != json.loads(json.dumps(cfg)):
                sys.exit("--init %s: its config.json differs from the one these flags give" % a.init)
        sys.path.insert(0, os.path.join(os.path.dirname(HERE), "tests", "reference"))
        import mmmamba_ref  # noqa: E402 (the independent reader of the published layout)
        model.load_tensors(mmmamba_ref.Checkpoint(a.init).get)
        print("initialised from %s" % a.init, flush=True)
    model = model.to(dev)
    n_params = sum(p.numel() for p in model.parameters())
    aux_head = torch.nn.Linear(a.hidden, sum(shapes.AUX_CLASSES)).to(dev)
    if a.init:  # a random head on trained features starts with a huge loss that would swamp the answers'
        torch.nn.init.zeros_(aux_head.weight)
        torch.nn.init.zeros_(aux_head.bias)
    print("model: %d parameters, hidden %d, emb %s, llm %s, vocab %d, %d tokens/tile, device %s, torch %s"
          % (n_params, a.hidden, a.emb_layers, a.llm_layers, tk.vocab_size, tpt, dev, torch.__version__),
          flush=True)
    decay = [p for n, p in model.named_parameters() if p.dim() >= 2] + [aux_head.weight]
    no_decay = [p for n, p in model.named_parameters() if p.dim() < 2] + [aux_head.bias]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.05}, {"params": no_decay, "weight_decay": 0.0}],
                            lr=a.lr, betas=(0.9, 0.95), eps=1e-8)
    # Batches go through shared memory (/dev/shm) unless it is small (a container's default
    # 64 MB would kill the workers): then through the workers' pipes, slower but safe.
    try:
        st = os.statvfs("/dev/shm")
        shm = st.f_bavail * st.f_frsize
    except OSError:
        shm = 0
    a.via_pipe = a.workers > 0 and shm < (8 << 30)
    print("/dev/shm: %.1f GB free; batches via %s" % (shm / 2**30, "pipes" if a.via_pipe else "shared memory"),
          flush=True)
    par = {}
    if a.workers > 0:
        par = {"persistent_workers": True, "prefetch_factor": 2 if a.via_pipe else 4,
               "multiprocessing_context": "fork"}
    loader = torch.utils.data.DataLoader(Batches(a, tk, tpt), batch_size=None, num_workers=a.workers,
                                         collate_fn=keep_as_is if a.via_pipe else None,
                                         pin_memory=dev.type == "cuda", **par)
    os.makedirs(a.out, exist_ok=True)
    log = open(os.path.join(a.out, "loss.tsv"), "w")
    log.write("step\tseconds\tloss\tlr\tsequences\ttokens\taux_loss\n")
    probe = make_probe(tk, cfg, 100, a.max_objects) if a.probe_every else None
    curve = []
    t0 = time.time()
    acc_loss = acc_aux = acc_n = 0.0
    seqs = toks = 0
    step = 0
    ended_by = "steps"
    it = iter(loader)
    t_100 = t_hold = None
    while a.steps <= 0 or step < a.steps:
        el = time.time() - t0
        if step == 100:
            t_100 = el
        if step == a.hold:
            t_hold = el
            if a.steps <= 0:  # fit the steps to the time left, at the speed since step 100
                rate = (a.hold - 100) / max(1e-3, el - t_100)
                a.steps = a.hold + max(1, int(0.9 * rate * (a.time_budget - el)))
                print("speed %.1f steps/s: --steps %d fits --time-budget %g" % (rate, a.steps, a.time_budget),
                      flush=True)
        if a.time_budget and el >= a.time_budget:
            ended_by = "time"
            break
        prog = 0.0
        if a.hold < step < a.steps:
            prog = (step - a.hold) / (a.steps - a.hold)
            if a.time_budget:
                prog = max(prog, (el - t_hold) / max(1e-3, a.time_budget - t_hold))
        lr = a.lr * min(1.0, (step + 1) / a.warmup) * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(prog, 1.0))))
        for g in opt.param_groups:
            g["lr"] = lr
        ids, labels, tiles_u8, seen, rows = (torch.from_numpy(t) if isinstance(t, np.ndarray) else t
                                             for t in next(it))
        at = (ids.reshape(-1) == tk.img_context).nonzero().squeeze(1).to(dev, non_blocking=True)
        ids, labels = ids.to(dev, non_blocking=True), labels.to(dev, non_blocking=True)
        rows = rows.to(dev, non_blocking=True)
        tiles = normalise(tiles_u8, dev) if tiles_u8.shape[0] else None
        with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=dev.type == "cuda"):
            logits, img_h = model(ids, tiles, at, image_hidden=True, image_rows=rows)
            z = aux_head(img_h).float()
        loss = F.cross_entropy(logits.view(-1, logits.shape[-1]), labels.view(-1), ignore_index=-1)
        aux = torch.zeros((), device=dev)
        if z.shape[0]:
            seen = seen.to(dev, non_blocking=True).long().index_select(0, rows)
            aux = sum(F.cross_entropy(zk, seen[:, k]) for k, zk in enumerate(z.split(shapes.AUX_CLASSES, 1)))
        opt.zero_grad(set_to_none=True)
        (loss + a.aux * aux).backward()
        torch.nn.utils.clip_grad_norm_(list(model.parameters()) + list(aux_head.parameters()), 1.0)
        opt.step()
        step += 1
        acc_loss += loss.detach()  # tensors: no device sync per step
        acc_aux += aux.detach()
        acc_n += 1
        seqs += ids.shape[0]
        toks += ids.numel()
        if step % a.log_every == 0 or step == a.steps:
            el = time.time() - t0
            row = (step, el, float(acc_loss) / acc_n, lr, seqs, toks, float(acc_aux) / acc_n)
            curve.append(row)
            log.write("%d\t%.1f\t%.4f\t%.2e\t%d\t%d\t%.4f\n" % row)
            log.flush()
            print("step %5d  %6.1fs  loss %.4f  lr %.2e  seqs %d  tokens %d  aux %.4f" % row, flush=True)
            acc_loss = acc_aux = acc_n = 0.0
        if probe and step % a.probe_every == 0:
            model.eval()
            acc = run_probe(model, probe, dev)
            model.train()
            print("probe step %d: %s" % (step, "  ".join("%s %.0f%%" % (t, 100.0 * acc[t][0] / acc[t][1])
                                                        for t in shapes.TASKS if t in acc)), flush=True)
    train_s = time.time() - t0
    if acc_n:  # the steps since the last log row
        row = (step, train_s, float(acc_loss) / acc_n, lr, seqs, toks, float(acc_aux) / acc_n)
        curve.append(row)
        log.write("%d\t%.1f\t%.4f\t%.2e\t%d\t%d\t%.4f\n" % row)
        print("step %5d  %6.1fs  loss %.4f  lr %.2e  seqs %d  tokens %d  aux %.4f" % row, flush=True)
    print("training ended by the %s bound after %d steps, %.1f s" % (ended_by, step, train_s), flush=True)
    del it, loader

    # export, then reload the bf16 weights for the check
    write_safetensors(os.path.join(a.out, "model.safetensors"), model.checkpoint_tensors())
    with open(os.path.join(a.out, "config.json"), "w") as f:
        json.dump(cfg, f, indent=2)
        f.write("\n")
    write_tokenizer_files(a.out, tk, a.tokenizer)
    if dev.type == "cuda":  # the check runs in true fp32, like the reference
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(p.to(torch.bfloat16).float())
    model.eval()
    acc, examples = evaluate(model, tk, cfg, dev, a.eval_n, a.max_objects)
    for task in shapes.TASKS:
        if task in acc:
            print("eval %-9s %3d/%3d = %.1f%%" % (task, acc[task][0], acc[task][1], 100.0 * acc[task][0] / acc[task][1]))
    for q, ans, key, ok in examples:
        print("  %s %r -> %r (want %r)" % ("ok " if ok else "BAD", q, ans, key))
    size = os.path.getsize(os.path.join(a.out, "model.safetensors"))
    write_card(a, cfg, n_params, curve, train_s, ended_by, step, seqs, toks, acc, size, time.time() - t_start,
               torch.cuda.get_device_name(0) if dev.type == "cuda" else "CPU")
    log.close()
    print("wrote %s (model.safetensors %.1f MB), total %.1f s" % (a.out, size / 1e6, time.time() - t_start))


def write_card(a, cfg, n_params, curve, train_s, ended_by, steps, seqs, toks, acc, size, total_s, device):
    lc, ec = cfg["llm_config"], cfg["embedding_config"]
    pick = curve if len(curve) <= 16 else [curve[round(k * (len(curve) - 1) / 15)] for k in range(16)]
    lines = [
        "# mmmamba-shapes: a small mmMamba that sees simple shapes",
        "",
        "The out-of-the-box model of mmmambad: an mmMamba-architecture checkpoint trained by the project",
        "itself (real mmMamba weights cannot be downloaded here) to describe synthetic pictures of simple",
        "shapes and answer short questions about them. Same layout as the published checkpoints",
        "(config.json, bf16 model.safetensors, InternLM2-style tokenizer files, template internlm2-chat).",
        "",
        "## Architecture",
        "",
        "- hidden %d, %d heads (head dim %d), %d kv heads, MLP %d; %d parameters (%.1f MB in bf16)"
        % (lc["hidden_size"], lc["num_attention_heads"], lc["hidden_size"] // lc["num_attention_heads"],
           lc["num_key_value_heads"], lc["intermediate_size"], n_params, size / 1e6),
        "- embedding stack: %s; LLM stack: %s (hybrid: Mamba-2 plus softmax attention)"
        % (", ".join(ec["layers_block_type"]), ", ".join(lc["layers_block_type"])),
        "- images: tiles of %d px, patch 14, pixel shuffle \"pre\" -> %d tokens per tile; dynamic tiling "
        "up to %d tiles plus a thumbnail" % (cfg["force_image_size"], (cfg["force_image_size"] // 28) ** 2,
                                             cfg["max_dynamic_patch"]),
        "- tokenizer: SentencePiece BPE with byte fallback, %d pieces + InternLM2's 6 added tokens + 9 "
        "multimodal specials (vocab %d), trained by train/make_tokenizer.sh" % (ec["llm_vocab_size"] - 6,
                                                                               lc["vocab_size"]),
        "",
        "## Data",
        "",
        "Generated on the fly by train/shapes.py: 1-3 shapes (circle, square, triangle, star, diamond,",
        "cross) in 8 colours (red, orange, yellow, green, blue, purple, pink, brown), 3 sizes, in distinct",
        "cells of a 3x3 grid; plain or two-tone neutral backgrounds; PNG or JPEG (quality 60-95); longer",
        "side 160-640 px at aspect ratios from 1:3 to 3:1. Conversations of 1-%d turns about one picture:"
        % a.max_turns,
        "captions, colour, shape, count and position questions; %.0f%% text-only turns (greetings, what the"
        % (100 * a.text_only),
        "model can do, a request for a picture). The default system prompt is always used.",
        "",
        "## Training run",
        "",
        "`%s` on %s: %d steps (ended by the %s bound), %.0f s of training (%.0f s in all),"
        % (" ".join(["train/train.py"] + sys.argv[1:]), device, steps, ended_by, train_s, total_s),
        "%d conversations, %d tokens (padding included); AdamW lr %g, warm-up %d, peak until step %d, cosine"
        % (seqs, toks, a.lr, a.warmup, a.hold),
        "to 10%% at step %d; seed %d; auxiliary loss weight %g (see train/train.py)." % (a.steps, a.seed, a.aux),
        "",
        "Loss (cross entropy of the answer tokens, mean over the last %d steps):" % a.log_every,
        "",
        "| step | seconds | loss |",
        "|---:|---:|---:|",
    ]
    lines += ["| %d | %.0f | %.4f |" % (r[0], r[1], r[2]) for r in pick]
    lines += [
        "",
        "## Accuracy",
        "",
        "Greedy answers of the exported bf16 weights (PyTorch, this training script) on %d fresh pictures"
        % a.eval_n,
        "(seed %d, never used in training), one question per task and picture; scored by" % EVAL_SEED,
        "train/shapes.py's score(): the whole caption; the colour/shape/number word and no other; the",
        "position phrase.",
        "",
        "| task | correct | accuracy |",
        "|---|---:|---:|",
    ]
    for task in shapes.TASKS:
        if task in acc:
            lines.append("| %s | %d/%d | %.1f%% |" % (task, acc[task][0], acc[task][1],
                                                       100.0 * acc[task][0] / acc[task][1]))
    lines += [
        "",
        "The same evaluation through the server: `train/eval.py` (see its --help).",
        "",
        "## What it can't do",
        "",
        "It knows only this synthetic world: six shapes, eight colours, three sizes, a 3x3 grid of",
        "positions, at most three objects, the question phrasings of train/shapes.py. Photographs, other",
        "objects, text in images, several images, long conversations, other languages or free-form",
        "questions get confident nonsense. It is a demo and an end-to-end test, not an assistant.",
        "",
    ]
    with open(os.path.join(a.out, "README.md"), "w") as f:
        f.write("\n".join(lines))


if __name__ == "__main__":
    main()
