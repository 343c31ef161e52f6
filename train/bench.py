#!/usr/bin/env python3
"""bench.py: where a training step's time goes (data workers or the device), for train.py.

    python3 train/bench.py [--workers 14] [--data-seconds 12] [--device cuda] [train.py model flags]

1. the cost of one picture in one process, stage by stage (draw, encode, decode, tiling, token
   labels, conversations);
2. the rate of the data loader alone (--workers processes, as train.py runs them);
3. the time of one optimiser step on the device for batches of 1x, 2x and 4x --batch-tokens
   (the same batch repeated, so no data wait), and the number of kernels one step launches.
If (2) delivers fewer batches per second than (3) consumes, the workers starve the device.
"""
import argparse
import os
import random
import sys
import time

import torch
import torch.nn.functional as F

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import shapes  # noqa: E402
import tokenizer as tokmod  # noqa: E402
import train as T  # noqa: E402
from model import DemoModel  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data-seconds", type=float, default=12)
    ap.add_argument("--steps", type=int, default=20)
    T.add_recipe_args(ap)
    a = ap.parse_args()
    a.seed, a.via_pipe = 1, False
    tk = tokmod.Tokenizer(os.path.join(HERE, "tokenizer.model"))
    tpt = (a.image_size // 14) ** 2 // 4

    # 1. one picture, stage by stage
    rng = random.Random(7)
    names = ["scene", "draw", "encode", "decode", "tiles", "labels", "conversations"]
    cost = dict.fromkeys(names, 0.0)
    n, n_tiles = 40, 0
    for _ in range(n):
        t = [time.perf_counter()]
        objs, style = shapes.random_scene(rng, a.max_objects)
        t.append(time.perf_counter())
        img = shapes.render(objs, style, rng)
        t.append(time.perf_counter())
        data, _ = shapes.encode(img, style)
        t.append(time.perf_counter())
        pic = shapes.decode(data)
        t.append(time.perf_counter())
        tiles = shapes.tiles_u8(pic, a.image_size, 1, a.max_tiles)
        t.append(time.perf_counter())
        shapes.token_labels(objs, style["w"], style["h"], a.image_size, 1, a.max_tiles, a.image_size // 28)
        t.append(time.perf_counter())
        for _ in range(a.reuse):
            turns = shapes.conversation(objs, rng, rng.randint(1, a.max_turns), None, a.count_weight)
            tk.render(turns, len(tiles), tpt)
        t.append(time.perf_counter())
        n_tiles += len(tiles)
        for k, name in enumerate(names):
            cost[name] += t[k + 1] - t[k]
    print("one picture (%.1f tiles on average): %s; total %.1f ms" % (
        n_tiles / n, ", ".join("%s %.2f ms" % (k, 1e3 * v / n) for k, v in cost.items()),
        1e3 * sum(cost.values()) / n), flush=True)

    # 2. the data loader alone
    loader = torch.utils.data.DataLoader(T.Batches(a, tk, tpt), batch_size=None, num_workers=a.workers,
                                         persistent_workers=a.workers > 0, prefetch_factor=4 if a.workers else None,
                                         multiprocessing_context="fork" if a.workers else None)
    it = iter(loader)
    batch = next(it)
    t0 = time.time()
    nb = seqs = toks = tile_bytes = 0
    while time.time() - t0 < a.data_seconds:
        b = next(it)
        nb += 1
        seqs += b[0].shape[0]
        toks += b[0].numel()
        tile_bytes += b[2].numel()
        if b[2].shape[0] and b[0].numel() > batch[0].numel() // 2:
            batch = b
    el = time.time() - t0
    print("data loader, %d workers: %.1f batches/s, %.0f sequences/s, %.0f tokens/s (%.0f sequences, %.0f tokens, "
          "%.1f MB of tiles a batch)" % (a.workers, nb / el, seqs / el, toks / el, seqs / max(1, nb), toks / max(1, nb),
                                         tile_bytes / max(1, nb) / 1e6), flush=True)
    del it, loader

    # 3. the device alone
    dev = torch.device(a.device)
    if dev.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
    cfg = T.make_config(a, tk)
    model = DemoModel(cfg).to(dev)
    head = torch.nn.Linear(a.hidden, sum(shapes.AUX_CLASSES)).to(dev)
    opt = torch.optim.AdamW(list(model.parameters()) + list(head.parameters()), lr=1e-4)

    def step(ids, labels, tiles_u8, seen, rows):
        at = (ids.reshape(-1) == tk.img_context).nonzero().squeeze(1).to(dev)
        ids, labels, rows = ids.to(dev), labels.to(dev), rows.to(dev)
        tiles = T.normalise(tiles_u8, dev)
        with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=dev.type == "cuda"):
            logits, h = model(ids, tiles, at, image_hidden=True, image_rows=rows)
            z = head(h).float()
        seen = seen.to(dev).long().index_select(0, rows)
        loss = F.cross_entropy(logits.view(-1, logits.shape[-1]), labels.view(-1), ignore_index=-1) \
            + sum(F.cross_entropy(zk, seen[:, k]) for k, zk in enumerate(z.split(shapes.AUX_CLASSES, 1)))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()

    def sync():
        if dev.type == "cuda":
            torch.cuda.synchronize()

    for rep in (1, 2, 4):
        ids, labels, tiles, seen, rows = batch  # rep x the sequences, same tiles
        b = (torch.cat([ids] * rep), torch.cat([labels] * rep), tiles, seen, torch.cat([rows] * rep))
        for _ in range(3):
            step(*b)
        sync()
        t0 = time.time()
        for _ in range(a.steps):
            step(*b)
        sync()
        el = (time.time() - t0) / a.steps
        print("device step, %d sequences x %d tokens, %d tiles: %.1f ms (%.1f steps/s, %.0f tokens/s)"
              % (b[0].shape[0], b[0].shape[1], b[2].shape[0], 1e3 * el, 1 / el, b[0].numel() / el), flush=True)
    if dev.type == "cuda":
        try:
            with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as prof:
                step(*batch)
                sync()
            avg = prof.key_averages()
            print("one step launches %d kernels; the costliest:" % sum(e.count for e in avg))
            for key in ("cuda_time_total", "device_time_total"):
                try:
                    print(avg.table(sort_by=key, row_limit=12, max_name_column_width=60))
                    break
                except Exception:  # noqa: BLE001 (the sort key's name depends on the torch version)
                    continue
        except Exception as e:  # noqa: BLE001 (the profile is a bonus)
            print("no profile: %s" % e)

if __name__ == "__main__":
    main()
