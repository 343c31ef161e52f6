# temporary: cross-checks on the GPU machine (removed afterwards)
import os, sys, time, json, subprocess, tempfile
import numpy as np, torch
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import mmmamba_ref as R
torch.set_grad_enabled(False)
tmp = tempfile.mkdtemp()
cfg = R.tiny_config("pre")
ec, lc = cfg["embedding_config"], cfg["llm_config"]
ec.update(hidden_size=2048, num_attention_heads=16, num_key_value_heads=8, intermediate_size=8192,
          image_size=448, llm_vocab_size=92544, llm_hidden_size=2048, img_context_token_id=92546)
lc.update(hidden_size=2048, num_attention_heads=16, num_key_value_heads=8, intermediate_size=8192, vocab_size=92553)
cfg["force_image_size"] = 448
t0 = time.time()
T = R.tiny_tensors(cfg, 7)
T["embedding_model.special_text_embeddings.weight"] = T["embedding_model.special_text_embeddings.weight"][:8]
d = os.path.join(tmp, "mid"); R.write_checkpoint(d, cfg, T, shards=2)
print("wrote mid checkpoint %.1fs" % (time.time() - t0), flush=True)
from safetensors.numpy import load_file
ck = R.Checkpoint(d, "cpu"); bad = 0
for fn in sorted(f for f in os.listdir(d) if f.endswith(".safetensors")):
    for k, v in load_file(os.path.join(d, fn)).items():
        if not np.array_equal(np.asarray(v, dtype=np.float32) if v.dtype != np.uint16 else R.bf16_bits_to_f32(v), ck.where[k].load(k)):
            bad += 1
print("reader vs safetensors package: %d mismatching tensors" % bad, flush=True)
rng = np.random.RandomState(0)
ids = [1] + rng.randint(0, 92544, 150).tolist() + [92544] + [92546] * 256 + [92545] + rng.randint(0, 92544, 120).tolist()
tiles = os.path.join(tmp, "t.f32"); rng.standard_normal((1, 3, 448, 448)).astype("<f4").tofile(tiles)
def run(extra, out):
    t = time.time()
    r = subprocess.run([sys.executable, R.__file__, "--model", d, "--ids", " ".join(map(str, ids)), "--tiles", tiles, "--num-tiles", "1", "--out", out] + extra, capture_output=True, text=True)
    print(" ".join(extra), "rc", r.returncode, "%.1fs" % (time.time() - t), r.stdout.strip(), r.stderr[-500:], flush=True)
    return np.fromfile(out, dtype="<f4")
a = run(["--device", "cuda", "--greedy", "3"], os.path.join(tmp, "a"))
b = run(["--device", "cuda", "--ssd", "recurrent"], os.path.join(tmp, "b"))
c = run(["--device", "cpu"], os.path.join(tmp, "c"))
for n, x in (("cuda recurrent", b), ("cpu chunked", c)):
    print("cuda chunked vs %s: max|diff| %.2e, max|logit| %.2f" % (n, np.abs(a - x).max(), np.abs(a).max()))
cfgp = json.load(open(os.path.join(d, "config.json"))); cfgp["embedding_config"]["pixel_shuffle_loc"] = "post"
json.dump(cfgp, open(os.path.join(d, "config.json"), "w"))
p = run(["--device", "cuda"], os.path.join(tmp, "p"))
print("post finite", np.isfinite(p).all(), "diff vs pre %.2e" % np.abs(p - a).max())
