#!/usr/bin/env python3
"""mmmamba_ref.py: an independent float32 PyTorch reference of the mmMamba forward pass.

Written from docs/model.md alone (section numbers below refer to it). It is the oracle the C
server is tested against, so it favours the obvious over the fast: every weight is converted to
float32, every step recomputes the whole sequence, and greedy generation re-runs the full forward
pass over prompt + generated tokens. Only torch, numpy and the standard library are used; the
safetensors files are parsed by hand.

How sequence positions are counted
----------------------------------
Let G = force_image_size / patch_size (patch grid side of one tile), f = 1 / downsample_ratio
(pixel-shuffle factor, 2 for mmMamba) and tokens_per_tile = (G / f)^2 (256 for mmMamba).
--ids always holds tokens_per_tile <IMG_CONTEXT> ids per tile, in tile order.

* pixel_shuffle_loc == "pre" (the expected layout): the sequence in --ids (plus generated tokens)
  is what both stacks see. The k-th prompt <IMG_CONTEXT> position gets shuffled+projected image
  token k mod tokens_per_tile of tile k // tokens_per_tile. RoPE position of a token (in the "mha"
  layers of both stacks) is its 0-based index in that sequence (BOS = 0, image tokens count).

* pixel_shuffle_loc == "post": before the embedding stack every prompt <IMG_CONTEXT> id is
  replaced by f*f consecutive <IMG_CONTEXT> ids (this is the reference's "hd" prompt, G*G image
  positions per tile); the k-th image position of that expanded sequence gets patch token
  k mod G^2 (row-major) of tile k // G^2.
    - embedding stack: positions (RoPE, and the causal order of conv / scan / attention) are
      indices in this EXPANDED sequence;
    - after the embedding stack, the G*G image outputs of each tile are pixel-shuffled and
      projected to tokens_per_tile vectors, which fill the <IMG_CONTEXT> positions of the
      CONTRACTED sequence (= the --ids order); text outputs keep their order;
    - optional normalisation (normalize_encoder_output), then the LLM stack, whose positions are
      indices in the contracted sequence.

Generated tokens are text in both modes: a generated id equal to <IMG_CONTEXT> is embedded as
text, never treated as an image position (§3.6).
"""

import argparse
import json
import math
import os
import struct
import subprocess
import sys
import tempfile
import time

import numpy as np
import torch
import torch.nn.functional as F

DEFAULT_SSD_CHUNK = 128

# --------------------------------------------------------------------------------------------
# safetensors (§1): 8-byte little-endian header length, JSON header, then the raw data.
# --------------------------------------------------------------------------------------------

_ST_ITEMSIZE = {"BF16": 2, "F16": 2, "F32": 4}


def bf16_bits_to_f32(u16):
    """bf16 -> fp32: the 16 bits become the high half of a 32-bit float."""
    return (u16.astype(np.uint32) << np.uint32(16)).view(np.float32)


def f32_to_bf16_bits(a):
    """fp32 -> bf16 bits, round to nearest even (used only by the self-test's writer)."""
    u = np.ascontiguousarray(a, dtype=np.float32).view(np.uint32).astype(np.uint64)
    return ((u + 0x7FFF + ((u >> 16) & 1)) >> 16).astype(np.uint16)


class SafetensorsFile:
    """One .safetensors file; tensors are read on demand and returned as float32 numpy arrays."""

    def __init__(self, path):
        self.path = path
        with open(path, "rb") as f:
            head = f.read(8)
            if len(head) != 8:
                raise ValueError("%s: too short for a safetensors file" % path)
            (n,) = struct.unpack("<Q", head)
            header = json.loads(f.read(n).decode("utf-8"))
        self.data_start = 8 + n
        self.meta = {k: v for k, v in header.items() if k != "__metadata__"}
        self.file_size = os.path.getsize(path)

    def names(self):
        return list(self.meta)

    def shape(self, name):
        return [int(s) for s in self.meta[name]["shape"]]

    def load(self, name):
        info = self.meta[name]
        dtype, shape = info["dtype"], [int(s) for s in info["shape"]]
        begin, end = (int(o) for o in info["data_offsets"])
        if dtype not in _ST_ITEMSIZE:
            raise ValueError("%s: tensor %s has unsupported dtype %s" % (self.path, name, dtype))
        count = int(np.prod(shape)) if shape else 1
        if end - begin != count * _ST_ITEMSIZE[dtype] or self.data_start + end > self.file_size:
            raise ValueError("%s: tensor %s has inconsistent offsets" % (self.path, name))
        with open(self.path, "rb") as f:
            f.seek(self.data_start + begin)
            raw = f.read(end - begin)
        if dtype == "BF16":
            out = bf16_bits_to_f32(np.frombuffer(raw, dtype="<u2"))
        elif dtype == "F16":
            out = np.frombuffer(raw, dtype="<f2").astype(np.float32)
        else:
            out = np.frombuffer(raw, dtype="<f4").astype(np.float32)
        return out.reshape(shape)


def write_safetensors(path, tensors):
    """tensors: name -> (dtype in BF16/F16/F32, float array). Self-test helper."""
    header, blobs, offset = {}, [], 0
    for name in sorted(tensors):
        dtype, arr = tensors[name]
        arr = np.asarray(arr, dtype=np.float32)
        if dtype == "BF16":
            blob = f32_to_bf16_bits(arr).astype("<u2").tobytes()
        elif dtype == "F16":
            blob = arr.astype("<f2").tobytes()
        elif dtype == "F32":
            blob = arr.astype("<f4").tobytes()
        else:
            raise ValueError(dtype)
        header[name] = {"dtype": dtype, "shape": list(arr.shape),
                        "data_offsets": [offset, offset + len(blob)]}
        offset += len(blob)
        blobs.append(blob)
    header["__metadata__"] = {"format": "pt"}
    hb = json.dumps(header).encode("utf-8")
    hb += b" " * ((8 - len(hb) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(hb)))
        f.write(hb)
        for blob in blobs:
            f.write(blob)


class Checkpoint:
    """All tensors of a checkpoint directory (single file or shards + index), loaded lazily
    (the unused tok_embeddings is never read) and kept as float32 on `device`."""

    def __init__(self, model_dir, device="cpu"):
        self.device = device
        self.where = {}
        index = os.path.join(model_dir, "model.safetensors.index.json")
        single = os.path.join(model_dir, "model.safetensors")
        if os.path.exists(index):
            with open(index) as f:
                weight_map = json.load(f)["weight_map"]
            files = {fn: SafetensorsFile(os.path.join(model_dir, fn))
                     for fn in sorted(set(weight_map.values()))}
            for name, fn in weight_map.items():
                if name not in files[fn].meta:
                    raise ValueError("index says %s is in %s but it is not" % (name, fn))
                self.where[name] = files[fn]
        elif os.path.exists(single):
            st = SafetensorsFile(single)
            for name in st.names():
                self.where[name] = st
        else:
            raise FileNotFoundError("%s: no model.safetensors(.index.json)" % model_dir)
        self.cache = {}

    def has(self, name):
        return name in self.where

    def shape(self, name):
        if name not in self.where:
            raise KeyError("checkpoint has no tensor %s" % name)
        return self.where[name].shape(name)

    def get(self, name):
        if name not in self.cache:
            if name not in self.where:
                raise KeyError("checkpoint has no tensor %s" % name)
            arr = self.where[name].load(name)
            self.cache[name] = torch.from_numpy(arr.copy()).to(self.device)
        return self.cache[name]


# --------------------------------------------------------------------------------------------
# Building blocks (§3.2 - §3.5). Linear layers: y = x · Wᵀ (F.linear).
# --------------------------------------------------------------------------------------------

def rms_norm(x, w, eps):
    # §3.2: RMSNorm(x) = x · rsqrt(mean(x²) + eps) · weight
    return x * torch.rsqrt(x.pow(2).mean(dim=-1, keepdim=True) + eps) * w


def mlp(x, w1, w2, w3):
    # §3.2: MLP(x) = w2( SiLU(w1·x) ⊙ (w3·x) )
    return F.linear(F.silu(F.linear(x, w1)) * F.linear(x, w3), w2)


def rope_cos_sin(positions, d, base):
    # §3.5: θ_i = pos · base^(−2i/d), i = 0 .. d/2−1; tables computed in fp32
    inv_freq = 1.0 / (float(base) ** (torch.arange(0, d, 2, dtype=torch.float32,
                                                   device=positions.device) / d))
    angles = positions.to(torch.float32)[:, None] * inv_freq[None, :]  # (T, d/2)
    return angles.cos(), angles.sin()


def apply_rope(x, cos, sin):
    # §3.5, rotate-half (non-interleaved), x: (T, heads, d):
    #   x'_i       = x_i cos θ_i − x_{i+d/2} sin θ_i
    #   x'_{i+d/2} = x_{i+d/2} cos θ_i + x_i sin θ_i
    half = x.shape[-1] // 2
    x1, x2 = x[..., :half], x[..., half:]
    c, s = cos[:, None, :], sin[:, None, :]
    return torch.cat([x1 * c - x2 * s, x2 * c + x1 * s], dim=-1)


def attention_mixer(u, wqkv, wo, n_heads, n_kv, d, rope_base, positions):
    """§3.5 causal softmax attention with GQA over u: (T, H)."""
    T = u.shape[0]
    groups = n_heads // n_kv
    # §2: wqkv rows grouped per kv head j: [q head g·j … q head g·j+g−1, k_j, v_j], d rows each
    qkv = F.linear(u, wqkv).view(T, n_kv, groups + 2, d)
    q = qkv[:, :, :groups, :].reshape(T, n_heads, d)  # head h = g·j + i
    k = qkv[:, :, groups, :]
    v = qkv[:, :, groups + 1, :]
    cos, sin = rope_cos_sin(positions, d, rope_base)
    q = apply_rope(q, cos, sin)
    k = apply_rope(k, cos, sin)
    # softmax(q·kᵀ / √d) over s ≤ t; q head h reads kv head h / groups
    scale = 1.0 / math.sqrt(d)
    future = torch.ones(T, T, dtype=torch.bool, device=u.device).triu(1)
    out = torch.empty(T, n_heads, d, dtype=u.dtype, device=u.device)
    for h in range(n_heads):
        j = h // groups
        scores = (q[:, h, :] @ k[:, j, :].t()) * scale
        scores = scores.masked_fill(future, float("-inf"))
        out[:, h, :] = torch.softmax(scores, dim=-1) @ v[:, j, :]
    return F.linear(out.reshape(T, n_heads * d), wo)


def causal_conv_silu(x, w, b):
    # §3.3 step 2, depthwise causal conv then SiLU, x: (T, C), w: (C, 1, K):
    #   out_c[t] = SiLU( Σ_k w_ck · x_c[t−(K−1)+k] + b_c ),  x_c[<0] = 0
    #   (K = 2: out_c[t] = SiLU(w_c0·x_c[t−1] + w_c1·x_c[t] + b_c))
    T, C = x.shape
    K = w.shape[-1]
    xp = torch.cat([x.new_zeros(K - 1, C), x], dim=0)
    acc = w[:, 0, 0][None, :] * xp[0:T]
    for k in range(1, K):
        acc = acc + w[:, 0, k][None, :] * xp[k:k + T]
    return F.silu(acc + b[None, :])


def ssd_recurrent(x, dt, A, B, C):
    """§3.3 step 6, the plain recurrence, state starting at zero.
    x: (T, nh, p), dt: (T, nh), A: (nh,), B, C: (T, nh, n). Returns y (T, nh, p), S (nh, p, n)."""
    T, nh, p = x.shape
    n = B.shape[-1]
    S = x.new_zeros(nh, p, n)
    y = x.new_empty(T, nh, p)
    for t in range(T):
        # S_h[t] = exp(Δ_h[t]·A_h) · S_h[t−1] + Δ_h[t] · x[t] ⊗ B[t]
        decay = torch.exp(dt[t] * A)[:, None, None]
        S = decay * S + dt[t][:, None, None] * (x[t][:, :, None] * B[t][:, None, :])
        # y_h[t][p] = Σ_n C[t][n] · S_h[t][p,n]
        y[t] = torch.einsum("hpn,hn->hp", S, C[t])
    return y, S


def segment_sum(a):
    """a: (..., L) -> (..., L, L) with out[t, s] = Σ_{r=s+1..t} a_r for s ≤ t, −inf for s > t.
    Built from masked cumulative sums (not differences of prefix sums) to avoid cancellation."""
    L = a.shape[-1]
    strictly_lower = torch.ones(L, L, dtype=torch.bool, device=a.device).tril(-1)
    lower = torch.ones(L, L, dtype=torch.bool, device=a.device).tril(0)
    X = a[..., :, None].expand(*a.shape, L)            # X[r, s] = a_r
    X = X.masked_fill(~strictly_lower, 0.0)            # keep r > s
    out = torch.cumsum(X, dim=-2)                      # Σ_{s < r ≤ t} a_r
    return out.masked_fill(~lower, float("-inf"))


def ssd_chunked(x, dt, A, B, C, chunk):
    """The same recurrence as ssd_recurrent evaluated chunk by chunk (SSD form).
    With a_t = Δ_t·A and, inside a chunk, cum_t = Σ_{r ≤ t} a_r:
      y[t] = Σ_{s ≤ t in chunk} exp(Σ_{s<r≤t} a_r) (C_t·B_s) Δ_s x_s      (intra-chunk)
           + exp(cum_t) · S_in · C_t                                       (state entering chunk)
      S_out = exp(cum_last) · S_in + Σ_s exp(Σ_{s<r≤last} a_r) Δ_s x_s ⊗ B_s
    Padding the tail with a = 0, x = 0 leaves outputs and the final state unchanged."""
    T, nh, p = x.shape
    n = B.shape[-1]
    nc = (T + chunk - 1) // chunk
    pad = nc * chunk - T

    def chunks(t):
        if pad:
            t = torch.cat([t, t.new_zeros(pad, *t.shape[1:])], dim=0)
        return t.reshape(nc, chunk, *t.shape[1:])

    xc, Bc, Cc, dtc = chunks(x), chunks(B), chunks(C), chunks(dt)   # (nc, L, nh, ·)
    xdt = xc * dtc[..., None]                                         # Δ_s x_s
    a = (dtc * A[None, None, :]).permute(0, 2, 1)                     # (nc, nh, L)
    seg = segment_sum(a)                                              # (nc, nh, L, L)
    decay_in = torch.exp(torch.cumsum(a, dim=-1))                     # exp(cum_t)
    decay_to_end = torch.exp(seg[:, :, -1, :])                        # exp(Σ_{s<r≤last} a_r)
    chunk_decay = decay_in[:, :, -1]                                  # exp(cum_last), (nc, nh)

    # intra-chunk: M[t, s] = exp(segsum[t, s]) · (C_t·B_s)
    M = torch.exp(seg) * torch.einsum("cthn,cshn->chts", Cc, Bc)
    y_diag = torch.einsum("chts,cshp->cthp", M, xdt)

    # what each chunk adds to the state, then the state entering each chunk
    S_add = torch.einsum("chs,cshp,cshn->chpn", decay_to_end, xdt, Bc)
    S = x.new_zeros(nh, p, n)
    S_in = []
    for c in range(nc):
        S_in.append(S)
        S = chunk_decay[c][:, None, None] * S + S_add[c]
    S_in = torch.stack(S_in, dim=0)                                   # (nc, nh, p, n)

    y_off = torch.einsum("cthn,chpn->cthp", Cc, S_in) * decay_in.permute(0, 2, 1)[..., None]
    y = (y_diag + y_off).reshape(nc * chunk, nh, p)[:T]
    return y, S


def gated_rms_norm(y, g, w, eps=1e-5):
    # §3.3 step 7, per head of d channels, eps fixed at 1e-5, w shared by all heads:
    #   o = y · rsqrt(mean(y²) + 1e-5) · w · g·sigmoid(g)
    return y * torch.rsqrt(y.pow(2).mean(dim=-1, keepdim=True) + eps) * w * (g * torch.sigmoid(g))


def mamba2_mixer(u, W, conv_w, conv_b, dt_bias, A_log, norm_w, wo, n_heads, n_kv, d,
                 ssd="chunked", chunk=DEFAULT_SSD_CHUNK):
    """§3.3 Mamba-2 mixer over u: (T, H), state starting at zero."""
    T = u.shape[0]
    groups = n_heads // n_kv
    n_vkq = 2 * n_kv * d + n_heads * d
    # 1. z = u·Wᵀ, columns: vkq | g (heads·d) | dt_raw (heads)
    z = F.linear(u, W)
    if z.shape[1] != n_vkq + n_heads * d + n_heads:
        raise ValueError("wvkqgdt has %d rows, expected %d" % (z.shape[1], n_vkq + n_heads * d + n_heads))
    vkq = z[:, :n_vkq]
    g = z[:, n_vkq:n_vkq + n_heads * d].reshape(T, n_heads, d)
    dt_raw = z[:, n_vkq + n_heads * d:]
    # 2. causal conv (kernel from the tensor's shape) + SiLU over the vkq channels
    out = causal_conv_silu(vkq, conv_w, conv_b)
    # 3. split into v (kv·d), k (kv·d), q (heads·d)
    v = out[:, :n_kv * d].reshape(T, n_kv, d)
    k = out[:, n_kv * d:2 * n_kv * d].reshape(T, n_kv, d)
    q = out[:, 2 * n_kv * d:].reshape(T, n_heads, d)
    # 4. head h: x = v[h/groups], B = k[h/groups], C = q[h]
    x = v.repeat_interleave(groups, dim=1)
    B = k.repeat_interleave(groups, dim=1)
    C = q
    # 5. Δ = softplus(dt_raw + dt_bias) (identity above 20), A = −exp(A_log_bias)
    dt = F.softplus(dt_raw + dt_bias[None, :], beta=1.0, threshold=20.0)
    A = -torch.exp(A_log)
    # 6. the selective scan
    if ssd == "chunked":
        y, _ = ssd_chunked(x, dt, A, B, C, chunk)
    elif ssd == "recurrent":
        y, _ = ssd_recurrent(x, dt, A, B, C)
    else:
        raise ValueError("unknown ssd mode %r" % ssd)
    # 7. gated RMSNorm per head; 8. heads concatenated head-major -> o_proj
    o = gated_rms_norm(y, g, norm_w)
    return F.linear(o.reshape(T, n_heads * d), wo)


# --------------------------------------------------------------------------------------------
# Vision front end (§3.1 items 3-4)
# --------------------------------------------------------------------------------------------

def patch_tokens(tiles, conv_w, conv_b):
    # §3.1 item 3: Conv2d(kernel = stride = patch, bias); tokens row-major (token = row·G + col)
    patch = conv_w.shape[-1]
    y = F.conv2d(tiles, conv_w, conv_b, stride=patch)    # (N, H, G, G)
    return y.flatten(2).transpose(1, 2)                   # (N, G·G, H)


def position_grid(pos_emb, G):
    """§3.1 item 3: drop slot 0, view the rest as a g×g grid, bicubic-resize to G×G if g ≠ G
    (PyTorch's bicubic: A = −0.75, align_corners=False, clamped borders, fp32). -> (G·G, H)."""
    grid = pos_emb[0, 1:, :]
    g = int(round(math.sqrt(grid.shape[0])))
    if g * g != grid.shape[0]:
        raise ValueError("position_embedding has %d patch slots, not a square" % grid.shape[0])
    if g == G:
        return grid
    H = grid.shape[1]
    img = grid.reshape(g, g, H).permute(2, 0, 1)[None]
    img = F.interpolate(img, size=(G, G), mode="bicubic", align_corners=False)
    return img[0].permute(1, 2, 0).reshape(G * G, H)


def pixel_shuffle(p, G, f):
    """§3.1 item 4, p: (N, G·G, D) -> (N, (G/f)², f²·D). Output token t = R·(G/f) + C is the
    concatenation over i (row offset, outer) and j (column offset, inner) of P(f·R+i, f·C+j);
    for f = 2: [P(2R,2C), P(2R,2C+1), P(2R+1,2C), P(2R+1,2C+1)]."""
    N, _, D = p.shape
    G2 = G // f
    x = p.reshape(N, G2, f, G2, f, D)        # [n, R, i, C, j] = P(f·R+i, f·C+j)
    x = x.permute(0, 1, 3, 2, 4, 5)          # [n, R, C, i, j]
    return x.reshape(N, G2 * G2, f * f * D)


def shuffle_projection(x, w0, b0, w2, b2):
    # §3.1 item 4: Linear(f²H → H) -> GELU (exact erf form) -> Linear(H → H)
    return F.linear(F.gelu(F.linear(x, w0, b0)), w2, b2)


# --------------------------------------------------------------------------------------------
# The model
# --------------------------------------------------------------------------------------------

class StackConfig:
    """Hyper-parameters of one layer stack (embedding or LLM), from its config section."""

    def __init__(self, cfg, prefix, name):
        self.name = name
        self.prefix = prefix
        self.n_layers = int(cfg["num_hidden_layers"])
        self.hidden = int(cfg["hidden_size"])
        self.n_heads = int(cfg["num_attention_heads"])
        self.n_kv = int(cfg.get("num_key_value_heads", self.n_heads))
        self.d = self.hidden // self.n_heads
        self.eps = float(cfg["rms_norm_eps"])
        self.rope_theta = float(cfg.get("rope_theta", 10000.0))
        types = cfg.get("layers_block_type")
        if types is None:
            raise ValueError("%s config has no layers_block_type" % name)
        if len(types) != self.n_layers:
            raise ValueError("%s: layers_block_type has %d entries for %d layers"
                             % (name, len(types), self.n_layers))
        for t in types:
            if t not in ("mamba2", "mha"):
                raise ValueError("%s: unknown block type %r" % (name, t))
        self.block_types = list(types)
        if self.n_heads % self.n_kv:
            raise ValueError("%s: heads %d not a multiple of kv heads %d" % (name, self.n_heads, self.n_kv))

    def layer_prefix(self, i):
        return self.prefix + "%d." % i


class MMMambaRef:
    def __init__(self, config, ckpt, ssd="chunked", chunk=DEFAULT_SSD_CHUNK):
        self.ck = ckpt
        self.ssd = ssd
        self.chunk = int(chunk)
        if self.chunk < 1:
            raise ValueError("ssd chunk must be >= 1")
        ec, lc = config["embedding_config"], config["llm_config"]
        self.emb = StackConfig(ec, "embedding_model.encoder.", "embedding")
        self.llm = StackConfig(lc, "language_model.model.layers.", "llm")
        self.normalize = bool(config.get("normalize_encoder_output", False))
        self.img_id = int(ec["img_context_token_id"])
        self.loc = ec.get("pixel_shuffle_loc", "pre") or "pre"
        if self.loc not in ("pre", "post"):
            raise ValueError("unknown pixel_shuffle_loc %r" % self.loc)
        if not ec.get("use_pixel_shuffle_proj", True):
            raise NotImplementedError("use_pixel_shuffle_proj = false is not described by docs/model.md")
        self.vocab = int(lc["vocab_size"])

        # image geometry: config values, checked against the tensor shapes
        self.image_size = int(config.get("force_image_size") or ec["image_size"])
        self.patch = int(ec["patch_size"])
        conv_shape = ckpt.shape("embedding_model.vision_embeddings.patch_embedding.weight")
        if conv_shape[2] != self.patch or conv_shape[3] != self.patch:
            raise ValueError("patch_embedding kernel %s != patch_size %d" % (conv_shape, self.patch))
        self.channels = conv_shape[1]
        if self.image_size % self.patch:
            raise ValueError("force_image_size %d not a multiple of patch_size" % self.image_size)
        self.G = self.image_size // self.patch
        ratio = float(config.get("downsample_ratio", ec.get("downsample_ratio", 0.5)))
        self.f = int(round(1.0 / ratio))
        if abs(self.f * ratio - 1.0) > 1e-6 or self.G % self.f:
            raise ValueError("downsample_ratio %g does not divide the %d-patch grid" % (ratio, self.G))
        self.tokens_per_tile = (self.G // self.f) ** 2

        H = self.emb.hidden
        if self.llm.hidden != H:
            raise ValueError("embedding hidden %d != llm hidden %d" % (H, self.llm.hidden))
        if ckpt.shape("embedding_model.pixel_shuffle_proj.0.weight") != [H, self.f * self.f * H]:
            raise ValueError("pixel_shuffle_proj.0.weight shape does not match f²·H")
        out_shape = ckpt.shape("language_model.output.weight")
        if out_shape != [self.vocab, H]:
            raise ValueError("output.weight %s != [vocab_size %d, %d]" % (out_shape, self.vocab, H))
        self._check_layer_shapes(self.emb)
        self._check_layer_shapes(self.llm)

    def _check_layer_shapes(self, st):
        H, nh, kv, d = st.hidden, st.n_heads, st.n_kv, st.d
        for i, t in enumerate(st.block_types):
            P = st.layer_prefix(i)
            if t == "mamba2":
                want = {"attention.wvkqgdt.weight": [2 * kv * d + 2 * nh * d + nh, H],
                        "attention.g_norm_swish_gate.weight": [d],
                        "attention.o_proj.weight": [H, nh * d],
                        "attention.dt_bias": [nh], "attention.A_log_bias": [nh]}
                cs = self.ck.shape(P + "attention.conv1d.weight")
                if cs[:2] != [2 * kv * d + nh * d, 1]:
                    raise ValueError("%sattention.conv1d.weight has shape %s" % (P, cs))
            else:
                want = {"attention.wqkv.weight": [(nh + 2 * kv) * d, H],
                        "attention.wo.weight": [H, nh * d]}
            for name, shape in want.items():
                if self.ck.shape(P + name) != shape:
                    raise ValueError("%s%s has shape %s, expected %s"
                                     % (P, name, self.ck.shape(P + name), shape))

    # -- inputs ---------------------------------------------------------------------------------

    def text_embed(self, ids):
        """§3.1 item 2: id < V_e -> llm_text_embeddings[id]; id ≥ V_e -> special[id − V_e]."""
        table = self.ck.get("embedding_model.llm_text_embeddings.weight")
        Ve = table.shape[0]
        special_name = "embedding_model.special_text_embeddings.weight"
        special = self.ck.get(special_name) if self.ck.has(special_name) else None
        n_special = 0 if special is None else special.shape[0]
        idx = torch.tensor(ids, dtype=torch.long, device=table.device)
        bad = (idx < 0) | (idx >= Ve + n_special)
        if bool(bad.any()):
            raise ValueError("token id %d has no embedding (V_e %d, %d special)"
                             % (int(idx[bad][0]), Ve, n_special))
        out = table[idx.clamp(max=Ve - 1)]
        is_special = idx >= Ve
        if bool(is_special.any()):
            out[is_special] = special[idx[is_special] - Ve]
        return out

    def image_patch_tokens(self, tiles):
        """§3.1 item 3: (N, 3, S, S) -> (N, G·G, H) patch tokens + position embedding."""
        pre = "embedding_model.vision_embeddings."
        p = patch_tokens(tiles, self.ck.get(pre + "patch_embedding.weight"),
                         self.ck.get(pre + "patch_embedding.bias"))
        if p.shape[1] != self.G * self.G:
            raise ValueError("tiles give %d patches, expected %d" % (p.shape[1], self.G * self.G))
        return p + position_grid(self.ck.get(pre + "position_embedding"), self.G)[None]

    def shuffle_and_project(self, p):
        """§3.1 item 4: (N, G·G, H) -> (N·tokens_per_tile, H)."""
        pre = "embedding_model.pixel_shuffle_proj."
        x = pixel_shuffle(p, self.G, self.f)
        x = shuffle_projection(x, self.ck.get(pre + "0.weight"), self.ck.get(pre + "0.bias"),
                               self.ck.get(pre + "2.weight"), self.ck.get(pre + "2.bias"))
        return x.reshape(-1, x.shape[-1])

    # -- layers -----------------------------------------------------------------------------------

    def mixer(self, st, i, u):
        P = st.layer_prefix(i)
        g = self.ck.get
        positions = torch.arange(u.shape[0], device=u.device)
        if st.block_types[i] == "mha":
            return attention_mixer(u, g(P + "attention.wqkv.weight"), g(P + "attention.wo.weight"),
                                   st.n_heads, st.n_kv, st.d, st.rope_theta, positions)
        return mamba2_mixer(u, g(P + "attention.wvkqgdt.weight"), g(P + "attention.conv1d.weight"),
                            g(P + "attention.conv1d.bias"), g(P + "attention.dt_bias"),
                            g(P + "attention.A_log_bias"), g(P + "attention.g_norm_swish_gate.weight"),
                            g(P + "attention.o_proj.weight"), st.n_heads, st.n_kv, st.d,
                            ssd=self.ssd, chunk=self.chunk)

    def run_stack(self, st, h):
        # §3.2, every layer:
        #   h = h + Mixer(RMSNorm(h; attention_norm))
        #   h = h + MLP(RMSNorm(h; ffn_norm))
        g = self.ck.get
        for i in range(st.n_layers):
            P = st.layer_prefix(i)
            h = h + self.mixer(st, i, rms_norm(h, g(P + "attention_norm.weight"), st.eps))
            h = h + mlp(rms_norm(h, g(P + "ffn_norm.weight"), st.eps),
                        g(P + "feed_forward.w1.weight"), g(P + "feed_forward.w2.weight"),
                        g(P + "feed_forward.w3.weight"))
        return h

    # -- forward ----------------------------------------------------------------------------------

    def forward(self, ids, n_prompt=None, tiles=None, all_positions=False):
        """Logits (fp32) of the last position (1, V), or of every position (T, V).
        ids: list of int; positions < n_prompt holding <IMG_CONTEXT> are image positions."""
        T = len(ids)
        if T == 0:
            raise ValueError("empty token sequence")
        n_prompt = T if n_prompt is None else n_prompt
        is_img = [k < n_prompt and tok == self.img_id for k, tok in enumerate(ids)]
        n_tiles = 0 if tiles is None else tiles.shape[0]
        if sum(is_img) != self.tokens_per_tile * n_tiles:
            raise ValueError("prompt has %d <IMG_CONTEXT> ids (id %d) but %d tiles need %d"
                             % (sum(is_img), self.img_id, n_tiles, self.tokens_per_tile * n_tiles))
        dev = self.ck.device
        img_mask = torch.tensor(is_img, dtype=torch.bool, device=dev)

        if self.loc == "pre":
            # §3.1: shuffled + projected tokens replace <IMG_CONTEXT> positions in order
            h = self.text_embed([0 if m else t for t, m in zip(ids, is_img)])
            if n_tiles:
                h[img_mask] = self.shuffle_and_project(self.image_patch_tokens(tiles))
            h = self.run_stack(self.emb, h)
        else:
            # "post": the embedding stack sees f² image positions per <IMG_CONTEXT> (see top)
            ff = self.f * self.f
            hd_ids, hd_img = [], []
            for t, m in zip(ids, is_img):
                hd_ids.extend([0] * ff if m else [t])
                hd_img.extend([True] * ff if m else [False])
            hd_mask = torch.tensor(hd_img, dtype=torch.bool, device=dev)
            h_hd = self.text_embed(hd_ids)
            if n_tiles:
                h_hd[hd_mask] = self.image_patch_tokens(tiles).reshape(-1, self.emb.hidden)
            h_hd = self.run_stack(self.emb, h_hd)
            h = h_hd.new_empty(T, self.emb.hidden)
            h[~img_mask] = h_hd[~hd_mask]
            if n_tiles:
                p = h_hd[hd_mask].reshape(n_tiles, self.G * self.G, self.emb.hidden)
                h[img_mask] = self.shuffle_and_project(p)

        # §3.2: optional x ← x / ‖x‖₂ per token between the stacks
        if self.normalize:
            h = h / h.norm(dim=-1, keepdim=True)
        h = self.run_stack(self.llm, h)
        if not all_positions:
            h = h[-1:]
        h = rms_norm(h, self.ck.get("language_model.model.norm.weight"), self.llm.eps)
        return F.linear(h, self.ck.get("language_model.output.weight"))

    def greedy(self, prompt, n_new, tiles=None, first_logits=None):
        """§3.6 by recomputation: argmax (lowest id among ties) of the full forward each step."""
        ids = list(prompt)
        out = []
        for step in range(n_new):
            if step == 0 and first_logits is not None:
                row = first_logits
            else:
                row = self.forward(ids, n_prompt=len(prompt), tiles=tiles)[-1]
            tok = argmax_lowest(row)
            out.append(tok)
            ids.append(tok)
        return out


def argmax_lowest(row):
    if torch.isnan(row).any():
        raise ValueError("NaN in logits")
    return int(torch.nonzero(row == row.max())[0, 0])


# --------------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------------

def setup_torch(device):
    torch.set_grad_enabled(False)
    if device == "cuda":
        if not torch.cuda.is_available():
            raise SystemExit("--device cuda given but CUDA is not available")
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.backends.cuda.matmul.allow_tf32 = False   # true fp32 matmuls and convs
        torch.backends.cudnn.allow_tf32 = False
        torch.backends.cudnn.deterministic = True
        torch.backends.cudnn.benchmark = False
    try:
        torch.use_deterministic_algorithms(True, warn_only=True)
    except TypeError:  # very old torch without warn_only
        pass


def load_model(model_dir, device, ssd, chunk):
    with open(os.path.join(model_dir, "config.json")) as f:
        config = json.load(f)
    return MMMambaRef(config, Checkpoint(model_dir, device), ssd=ssd, chunk=chunk)


def load_tiles(path, n_tiles, model):
    S = model.image_size
    count = n_tiles * model.channels * S * S
    size = os.path.getsize(path)
    if size != 4 * count:
        raise ValueError("%s: %d bytes, expected %d tiles x %d x %d x %d float32 = %d bytes"
                         % (path, size, n_tiles, model.channels, S, S, 4 * count))
    arr = np.fromfile(path, dtype="<f4").astype(np.float32).reshape(n_tiles, model.channels, S, S)
    return torch.from_numpy(arr).to(model.ck.device)


def main(argv=None):
    ap = argparse.ArgumentParser(description="Independent fp32 PyTorch reference of mmMamba.")
    ap.add_argument("--model", help="checkpoint directory (config.json + safetensors)")
    ap.add_argument("--ids", help="prompt token ids, space separated, image positions expanded")
    ap.add_argument("--tiles", help="raw little-endian float32 tiles, N x 3 x S x S, normalised")
    ap.add_argument("--num-tiles", type=int, default=0, help="number of tiles in --tiles")
    ap.add_argument("--out", help="write float32 logits of the last prompt position here")
    ap.add_argument("--all-positions", action="store_true", help="--out gets T x vocab logits")
    ap.add_argument("--greedy", type=int, default=0, metavar="N",
                    help="generate N tokens greedily, print their ids on one line")
    ap.add_argument("--ssd-chunk", type=int, default=DEFAULT_SSD_CHUNK, metavar="N",
                    help="chunk length of the chunked SSD scan (default %d)" % DEFAULT_SSD_CHUNK)
    ap.add_argument("--ssd", choices=("chunked", "recurrent"), default="chunked",
                    help="Mamba-2 scan form (default chunked)")
    ap.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    ap.add_argument("--self-test", action="store_true", help="run the built-in self-check")
    args = ap.parse_args(argv)

    setup_torch(args.device)
    if args.self_test:
        return self_test(args)
    if not args.model or args.ids is None:
        ap.error("--model and --ids are required (or --self-test)")
    try:
        ids = [int(t) for t in args.ids.replace(",", " ").split()]
    except ValueError:
        ap.error("--ids must be integers separated by spaces")
    if not ids:
        ap.error("--ids is empty")
    if (args.tiles is None) != (args.num_tiles == 0):
        ap.error("--tiles and --num-tiles N (N > 0) go together")
    if args.greedy < 0:
        ap.error("--greedy must be >= 0")

    try:
        model = load_model(args.model, args.device, args.ssd, args.ssd_chunk)
        tiles = load_tiles(args.tiles, args.num_tiles, model) if args.tiles else None
        logits = model.forward(ids, tiles=tiles, all_positions=args.all_positions)
    except (ValueError, KeyError, OSError, NotImplementedError) as e:
        print("error: %s" % e, file=sys.stderr)
        return 2
    if args.out:
        logits.cpu().numpy().astype("<f4").tofile(args.out)
    if args.greedy:
        new = model.greedy(ids, args.greedy, tiles=tiles, first_logits=logits[-1])
        print(" ".join(str(t) for t in new))
        sys.stdout.flush()
    return 0


# --------------------------------------------------------------------------------------------
# Self-test: a tiny random bf16 checkpoint written in the §2 layout, then checks.
# --------------------------------------------------------------------------------------------

def tiny_config(loc="pre", normalize=False):
    return {
        "architectures": ["mmMambaChatModel"],
        "force_image_size": 56, "downsample_ratio": 0.5, "template": "internlm2-chat",
        "normalize_encoder_output": normalize, "use_thumbnail": True,
        "min_dynamic_patch": 1, "max_dynamic_patch": 12, "dynamic_image_size": True,
        "embedding_config": {
            "num_hidden_layers": 2, "hidden_size": 64, "num_attention_heads": 4,
            "num_key_value_heads": 2, "intermediate_size": 128, "rms_norm_eps": 1e-6,
            "rope_theta": 10000.0, "patch_size": 14, "image_size": 42, "num_channels": 3,
            "llm_vocab_size": 120, "llm_hidden_size": 64, "img_context_token_id": 125,
            "pixel_shuffle_loc": loc, "use_pixel_shuffle_proj": True, "downsample_ratio": 0.5,
            "special_token_maps": {"<|im_end|>": 120, "<|im_start|>": 121, "<img>": 122,
                                   "</img>": 123, "<IMG_CONTEXT>": 125},
            "layers_block_type": ["mha", "mamba2"],
        },
        "llm_config": {
            "vocab_size": 128, "hidden_size": 64, "intermediate_size": 96,
            "num_hidden_layers": 3, "num_attention_heads": 4, "num_key_value_heads": 2,
            "rms_norm_eps": 1e-5, "rope_theta": 1000000.0, "rope_scaling": None,
            "layers_block_type": ["mamba2", "mha", "mamba2"],
        },
    }


def tiny_tensors(config, seed):
    """Random weights in the §2 names and shapes, as float32 arrays (stored as bf16)."""
    rng = np.random.RandomState(seed)
    ec, lc = config["embedding_config"], config["llm_config"]
    H = ec["hidden_size"]
    p, C = ec["patch_size"], ec["num_channels"]
    g = ec["image_size"] // p
    f = int(round(1 / ec["downsample_ratio"]))
    n_special = 8

    def normal(shape, std):
        return (rng.standard_normal(shape) * std).astype(np.float32)

    def linear(rows, cols):
        return normal((rows, cols), 1.0 / math.sqrt(cols))

    T = {}
    ve = "embedding_model.vision_embeddings."
    T[ve + "patch_embedding.weight"] = normal((H, C, p, p), 1.0 / math.sqrt(C * p * p))
    T[ve + "patch_embedding.bias"] = normal((H,), 0.1)
    T[ve + "position_embedding"] = normal((1, g * g + 1, H), 0.5)
    T[ve + "class_embedding"] = normal((1, 1, H), 0.5)
    T["embedding_model.llm_text_embeddings.weight"] = normal((ec["llm_vocab_size"], H), 1.0)
    T["embedding_model.special_text_embeddings.weight"] = normal((n_special, H), 1.0)
    T["embedding_model.pixel_shuffle_proj.0.weight"] = linear(H, f * f * H)
    T["embedding_model.pixel_shuffle_proj.0.bias"] = normal((H,), 0.1)
    T["embedding_model.pixel_shuffle_proj.2.weight"] = linear(H, H)
    T["embedding_model.pixel_shuffle_proj.2.bias"] = normal((H,), 0.1)
    T["language_model.model.tok_embeddings.weight"] = normal((lc["vocab_size"], H), 1.0)
    T["language_model.model.norm.weight"] = 1.0 + normal((H,), 0.1)
    T["language_model.output.weight"] = linear(lc["vocab_size"], H)

    for cfg, prefix in ((ec, "embedding_model.encoder."), (lc, "language_model.model.layers.")):
        nh, kv = cfg["num_attention_heads"], cfg["num_key_value_heads"]
        d, Fi = cfg["hidden_size"] // nh, cfg["intermediate_size"]
        for i, kind in enumerate(cfg["layers_block_type"]):
            P = prefix + "%d." % i
            T[P + "attention_norm.weight"] = 1.0 + normal((H,), 0.1)
            T[P + "ffn_norm.weight"] = 1.0 + normal((H,), 0.1)
            T[P + "feed_forward.w1.weight"] = linear(Fi, H)
            T[P + "feed_forward.w3.weight"] = linear(Fi, H)
            T[P + "feed_forward.w2.weight"] = linear(H, Fi)
            if kind == "mamba2":
                conv_dim = 2 * kv * d + nh * d
                T[P + "attention.wvkqgdt.weight"] = linear(2 * kv * d + 2 * nh * d + nh, H)
                T[P + "attention.conv1d.weight"] = normal((conv_dim, 1, 2), 0.5)
                T[P + "attention.conv1d.bias"] = normal((conv_dim,), 0.1)
                dt0 = np.exp(rng.uniform(math.log(0.01), math.log(0.5), nh))
                T[P + "attention.dt_bias"] = (dt0 + np.log(-np.expm1(-dt0))).astype(np.float32)
                T[P + "attention.A_log_bias"] = normal((nh,), 0.5)
                T[P + "attention.g_norm_swish_gate.weight"] = 1.0 + normal((d,), 0.1)
                T[P + "attention.o_proj.weight"] = linear(H, nh * d)
            else:
                T[P + "attention.wqkv.weight"] = linear((nh + 2 * kv) * d, H)
                T[P + "attention.wo.weight"] = linear(H, nh * d)
    return T


def write_checkpoint(dirname, config, tensors, shards=1):
    os.makedirs(dirname, exist_ok=True)
    with open(os.path.join(dirname, "config.json"), "w") as f:
        json.dump(config, f, indent=1)
    names = sorted(tensors)
    if shards == 1:
        write_safetensors(os.path.join(dirname, "model.safetensors"),
                          {n: ("BF16", tensors[n]) for n in names})
        return
    weight_map = {}
    for k in range(shards):
        fn = "model-%05d-of-%05d.safetensors" % (k + 1, shards)
        part = names[k::shards]
        write_safetensors(os.path.join(dirname, fn), {n: ("BF16", tensors[n]) for n in part})
        weight_map.update({n: fn for n in part})
    with open(os.path.join(dirname, "model.safetensors.index.json"), "w") as f:
        json.dump({"metadata": {"total_size": 0}, "weight_map": weight_map}, f, indent=1)


def bicubic_manual(img, out_size, A=-0.75):
    """docs/model.md's resize written out: separable cubic convolution (A = −0.75), align_corners =
    False (src = (dst + 0.5)·in/out − 0.5, not clamped), border indices clamped. float64."""
    def weights(t):
        def w(x):
            x = abs(x)
            if x <= 1:
                return (A + 2) * x ** 3 - (A + 3) * x ** 2 + 1
            if x < 2:
                return A * x ** 3 - 5 * A * x ** 2 + 8 * A * x - 4 * A
            return 0.0
        return [w(t + 1), w(t), w(1 - t), w(2 - t)]

    def resize_axis(a, axis, n_out):
        n_in = a.shape[axis]
        a = np.moveaxis(a, axis, -1)
        out = np.zeros(a.shape[:-1] + (n_out,))
        for o in range(n_out):
            src = (o + 0.5) * n_in / n_out - 0.5
            i0 = math.floor(src)
            for k, wk in zip(range(-1, 3), weights(src - i0)):
                out[..., o] += wk * a[..., min(max(i0 + k, 0), n_in - 1)]
        return np.moveaxis(out, -1, axis)

    return resize_axis(resize_axis(np.asarray(img, dtype=np.float64), -2, out_size), -1, out_size)


def naive_attention(u, wqkv, wo, nh, kv, d, base):
    """§3.5 read literally, float64 loops (self-test only)."""
    T = u.shape[0]
    gs = nh // kv
    qkv = u @ wqkv.T

    def head(kind, j, i=0):
        row = (j * (gs + 2) + (i if kind == "q" else gs if kind == "k" else gs + 1)) * d
        return qkv[:, row:row + d]

    def rope(x):
        y = np.empty_like(x)
        for t in range(T):
            for i in range(d // 2):
                th = t * base ** (-2.0 * i / d)
                y[t, i] = x[t, i] * math.cos(th) - x[t, i + d // 2] * math.sin(th)
                y[t, i + d // 2] = x[t, i + d // 2] * math.cos(th) + x[t, i] * math.sin(th)
        return y

    out = np.zeros((T, nh * d))
    for h in range(nh):
        j, i = h // gs, h % gs
        q, k, v = rope(head("q", j, i)), rope(head("k", j)), head("v", j)
        for t in range(T):
            s = np.array([q[t] @ k[r] / math.sqrt(d) for r in range(t + 1)])
            w = np.exp(s - s.max())
            w /= w.sum()
            out[t, h * d:(h + 1) * d] = w @ v[:t + 1]
    return out @ wo.T


def naive_mamba2(u, W, conv_w, conv_b, dt_bias, A_log, norm_w, wo, nh, kv, d):
    """§3.3 read literally, float64 loops (self-test only)."""
    T = u.shape[0]
    gs = nh // kv
    n_vkq = 2 * kv * d + nh * d
    z = u @ W.T
    conv = np.zeros((T, n_vkq))
    for t in range(T):
        for c in range(n_vkq):
            prev = z[t - 1, c] if t > 0 else 0.0
            a = conv_w[c, 0, 0] * prev + conv_w[c, 0, 1] * z[t, c] + conv_b[c]
            conv[t, c] = a / (1.0 + math.exp(-a))
    out = np.zeros((T, nh * d))
    for h in range(nh):
        j = h // gs
        S = np.zeros((d, d))
        A = -math.exp(A_log[h])
        for t in range(T):
            x = conv[t, j * d:(j + 1) * d]
            B = conv[t, kv * d + j * d:kv * d + (j + 1) * d]
            C = conv[t, 2 * kv * d + h * d:2 * kv * d + (h + 1) * d]
            raw = z[t, n_vkq + nh * d + h] + dt_bias[h]
            dt = raw if raw > 20 else math.log1p(math.exp(raw))
            S = math.exp(dt * A) * S + dt * np.outer(x, B)
            y = S @ C
            g = z[t, n_vkq + h * d:n_vkq + (h + 1) * d]
            o = y / math.sqrt(np.mean(y * y) + 1e-5) * norm_w * g / (1.0 + np.exp(-g))
            out[t, h * d:(h + 1) * d] = o
    return out @ wo.T


def self_test(args):
    t_start = time.time()
    device = args.device
    chunk = args.ssd_chunk
    failures = []

    def check(name, ok, detail):
        print("[%s] %s: %s" % ("PASS" if ok else "FAIL", name, detail))
        sys.stdout.flush()
        if not ok:
            failures.append(name)

    def as64(a):
        if isinstance(a, torch.Tensor):
            return a.detach().to("cpu", torch.float64)
        return torch.from_numpy(np.asarray(a, dtype=np.float64))

    def maxdiff(a, b):
        return float((as64(a) - as64(b)).abs().max())

    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(1)
    print("self-test: tiny random checkpoint, ssd chunk %d, device %s, torch %s"
          % (chunk, device, torch.__version__))

    with tempfile.TemporaryDirectory(prefix="mmmamba_ref_") as tmp:
        # 0. safetensors reader round trip: BF16 (round to nearest even), F16, F32
        vals = np.array([[0.0, -1.5, 3.14159265, 1e-3], [65504.0, -2.0 ** -20, 1.0 / 3, 7.0]],
                        dtype=np.float32)
        rt = os.path.join(tmp, "rt.safetensors")
        write_safetensors(rt, {"a": ("BF16", vals), "b": ("F16", vals), "c": ("F32", vals)})
        st = SafetensorsFile(rt)
        ok = (np.array_equal(st.load("a"), torch.from_numpy(vals).to(torch.bfloat16).float().numpy())
              and np.array_equal(st.load("b"), vals.astype(np.float16).astype(np.float32))
              and np.array_equal(st.load("c"), vals))
        check("safetensors BF16/F16/F32 parse", ok, "values match torch's own conversions")

        config = tiny_config("pre")
        tensors = tiny_tensors(config, seed=1234)
        single, sharded = os.path.join(tmp, "single"), os.path.join(tmp, "sharded")
        write_checkpoint(single, config, tensors, shards=1)
        write_checkpoint(sharded, config, tensors, shards=3)
        post_dir = os.path.join(tmp, "post")
        write_checkpoint(post_dir, tiny_config("post"), tensors, shards=1)
        ck = Checkpoint(single, device)
        model = MMMambaRef(config, ck, ssd="chunked", chunk=chunk)
        model_rec = MMMambaRef(config, ck, ssd="recurrent", chunk=chunk)
        V, img_id, tpt = model.vocab, model.img_id, model.tokens_per_tile
        S = model.image_size

        def rand_ids(n):
            ids = torch.randint(0, V, (n,), generator=gen).tolist()
            return [t if t != img_id else 7 for t in ids]

        # (a) chunked SSD == recurrence, kernel level and whole model
        lengths = sorted(set([1, max(chunk - 1, 1), chunk, chunk + 1, 3 * chunk + 5]))
        worst = 0.0
        for T in lengths:
            nh, p, n = 3, 8, 8
            x = torch.randn(T, nh, p, generator=gen)
            Bm = torch.randn(T, nh, n, generator=gen)
            Cm = torch.randn(T, nh, n, generator=gen)
            dt = torch.rand(T, nh, generator=gen) * torch.tensor([0.05, 0.5, 3.0])
            A = -torch.exp(torch.tensor([-1.0, 0.0, 1.0]))
            y1, S1 = ssd_recurrent(x.to(device), dt.to(device), A.to(device), Bm.to(device), Cm.to(device))
            y2, S2 = ssd_chunked(x.to(device), dt.to(device), A.to(device), Bm.to(device), Cm.to(device), chunk)
            scale = max(float(y1.abs().max()), float(S1.abs().max()), 1.0)
            worst = max(worst, max(maxdiff(y1, y2), maxdiff(S1, S2)) / scale)
        check("(a) SSD kernel chunked == recurrence", worst < 1e-5,
              "lengths %s, max |diff| / max |value| = %.2e (y and final state)" % (lengths, worst))

        details, ok = [], True
        for T in lengths:
            ids = [1] + rand_ids(T - 1)
            la = model.forward(ids, all_positions=True)
            lb = model_rec.forward(ids, all_positions=True)
            dmax = maxdiff(la, lb)
            ok &= dmax < 1e-4
            details.append("T=%d %.1e" % (T, dmax))
        check("(a) model logits chunked == recurrence", ok,
              "max |diff| over all positions: " + ", ".join(details))

        # (b) --all-positions last row == single-position logits, and causality (prefixes)
        ids = [1] + rand_ids(40) + [121, 122] + [img_id] * (2 * tpt) + [123] + rand_ids(9)
        tiles = torch.randn(2, 3, S, S, generator=gen).to(device)
        all_l = model.forward(ids, tiles=tiles, all_positions=True)
        last = model.forward(ids, tiles=tiles)
        d_last = maxdiff(all_l[-1], last[0])
        check("(b) all-positions last row == last-position logits",
              all_l.shape == (len(ids), V) and d_last < 1e-5,
              "shape %s, max |diff| %.1e" % (tuple(all_l.shape), d_last))
        worst = 0.0
        for t in (0, 1, 7, 20, 40):
            worst = max(worst, maxdiff(model.forward(ids[:t + 1])[0], all_l[t]))
        check("(b) prefix logits == rows of the full pass (causality)", worst < 1e-4,
              "text prefixes of length 1..41, max |diff| %.1e" % worst)

        # (c) greedy, in process and through the command line (also --out / --all-positions)
        gen_ids = model.greedy(ids, 5, tiles=tiles)
        ok = len(gen_ids) == 5 and gen_ids[0] == argmax_lowest(last[0])
        check("(c) greedy runs", ok, "5 tokens %s, first == argmax of prompt logits" % gen_ids)
        tiles_path = os.path.join(tmp, "tiles.f32")
        tiles.cpu().numpy().astype("<f4").tofile(tiles_path)
        out_path = os.path.join(tmp, "logits.f32")
        base_cmd = [sys.executable, os.path.abspath(__file__), "--model", sharded,
                    "--ids", " ".join(map(str, ids)), "--tiles", tiles_path, "--num-tiles", "2",
                    "--device", device, "--ssd-chunk", str(chunk)]
        r = subprocess.run(base_cmd + ["--out", out_path, "--greedy", "5"],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, universal_newlines=True)
        cli_ids = [int(t) for t in r.stdout.split()] if r.returncode == 0 else None
        cli_last = np.fromfile(out_path, dtype="<f4") if r.returncode == 0 else None
        ok = r.returncode == 0 and cli_ids == gen_ids and cli_last.shape == (V,)
        d_cli = maxdiff(cli_last, last[0]) if ok else float("nan")
        check("(c) CLI --greedy/--out on the sharded checkpoint", ok and d_cli < 1e-5,
              "rc %d, ids %s, logits max |diff| vs in-process %.1e %s"
              % (r.returncode, cli_ids, d_cli, r.stderr.strip()[-300:]))
        r = subprocess.run(base_cmd + ["--out", out_path, "--all-positions"],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, universal_newlines=True)
        ok = r.returncode == 0 and os.path.getsize(out_path) == 4 * len(ids) * V
        d_all = maxdiff(np.fromfile(out_path, dtype="<f4").reshape(len(ids), V), all_l) if ok else float("nan")
        check("(c) CLI --all-positions", ok and d_all < 1e-5,
              "rc %d, %d x %d floats, max |diff| %.1e" % (r.returncode, len(ids), V, d_all))

        # (d) pixel shuffle "pre" and "post" both run with an image; normalisation on and off
        results = {}
        for loc in ("pre", "post"):
            for norm in (False, True):
                m = MMMambaRef(tiny_config(loc, norm), ck, chunk=chunk)
                results[(loc, norm)] = m.forward(ids, tiles=tiles, all_positions=True)
        ok = all(bool(torch.isfinite(v).all()) and v.shape == (len(ids), V) for v in results.values())
        distinct = min(maxdiff(a, b) for i, a in enumerate(results.values())
                       for j, b in enumerate(results.values()) if i < j)
        check("(d) image prompt, pixel_shuffle_loc pre/post x normalize off/on", ok and distinct > 1e-3,
              "all finite, 4 variants pairwise distinct (min max|diff| %.2e)" % distinct)
        m_post = MMMambaRef(tiny_config("post"), ck, chunk=chunk)
        text_pos = [k for k, t in enumerate(ids) if t != img_id and k < ids.index(img_id)]
        d_pre_text = maxdiff(results[("post", False)][text_pos], results[("pre", False)][text_pos])
        check("(d) post == pre on the text before the image", d_pre_text < 1e-4,
              "positions 0..%d, max |diff| %.1e" % (text_pos[-1], d_pre_text))
        r = subprocess.run([sys.executable, os.path.abspath(__file__), "--model", post_dir,
                            "--ids", " ".join(map(str, ids)), "--tiles", tiles_path,
                            "--num-tiles", "2", "--device", device, "--greedy", "2",
                            "--ssd-chunk", str(chunk)],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, universal_newlines=True)
        want = m_post.greedy(ids, 2, tiles=tiles)
        ok = r.returncode == 0 and [int(t) for t in r.stdout.split()] == want
        check("(d) CLI with a post-mode config", ok, "rc %d, greedy %s" % (r.returncode, r.stdout.strip()))
        try:
            model.forward(ids[:-12] + ids[-10:], tiles=tiles)
            raised = False
        except ValueError:
            raised = True
        try:
            model.forward(ids, tiles=tiles[:1])
            raised &= False
        except ValueError:
            pass
        check("(d) <IMG_CONTEXT> count mismatch is an error", raised, "ValueError raised")

        # (e) pixel shuffle layout and bicubic resize vs docs/model.md written out
        G, f = model.G, model.f
        P = torch.randn(2, G * G, 5, generator=gen)
        out = pixel_shuffle(P, G, f)
        ok = out.shape == (2, (G // f) ** 2, 4 * 5)
        for nimg in range(2):
            for R in range(G // f):
                for Cc in range(G // f):
                    parts = [P[nimg, (2 * R) * G + 2 * Cc], P[nimg, (2 * R) * G + 2 * Cc + 1],
                             P[nimg, (2 * R + 1) * G + 2 * Cc], P[nimg, (2 * R + 1) * G + 2 * Cc + 1]]
                    ok &= bool(torch.equal(out[nimg, R * (G // f) + Cc], torch.cat(parts)))
        check("(e) pixel shuffle == [P(2R,2C), P(2R,2C+1), P(2R+1,2C), P(2R+1,2C+1)]", ok,
              "G=%d, exact" % G)
        worst = 0.0
        for g_in, g_out in ((3, 4), (2, 4), (6, 4), (5, 7), (32, 32), (16, 32)):
            grid = torch.randn(1, g_in * g_in + 1, 6, generator=gen)
            got = position_grid(grid, g_out).reshape(g_out, g_out, 6).permute(2, 0, 1)
            ref = bicubic_manual(grid[0, 1:].reshape(g_in, g_in, 6).permute(2, 0, 1).numpy(), g_out)
            worst = max(worst, maxdiff(got, ref))
        check("(e) F.interpolate bicubic == A=-0.75 cubic convolution, clamped borders", worst < 1e-5,
              "grids 3->4, 2->4, 6->4, 5->7, 32->32, 16->32, max |diff| %.1e" % worst)

        # (f) special_text_embeddings, attention vs a literal float64 loop, RoPE relativity
        emb = model.text_embed([5, 120, 127])
        ok = (torch.equal(emb[0], ck.get("embedding_model.llm_text_embeddings.weight")[5])
              and torch.equal(emb[1], ck.get("embedding_model.special_text_embeddings.weight")[0])
              and torch.equal(emb[2], ck.get("embedding_model.special_text_embeddings.weight")[7]))
        check("(f) ids >= V_e use special_text_embeddings[id - V_e]", ok, "ids 5, 120, 127")
        st = model.llm
        wqkv = ck.get("language_model.model.layers.1.attention.wqkv.weight")
        wo = ck.get("language_model.model.layers.1.attention.wo.weight")
        u = torch.randn(9, st.hidden, generator=gen).to(device)
        got = attention_mixer(u, wqkv, wo, st.n_heads, st.n_kv, st.d, st.rope_theta,
                              torch.arange(9, device=device))
        ref = naive_attention(u.double().cpu().numpy(), wqkv.double().cpu().numpy(),
                              wo.double().cpu().numpy(), st.n_heads, st.n_kv, st.d, st.rope_theta)
        d_att = maxdiff(got, ref)
        check("(f) GQA attention == literal float64 loop of §2/§3.5", d_att < 1e-4,
              "heads %d, kv %d, d %d, T 9, max |diff| %.1e" % (st.n_heads, st.n_kv, st.d, d_att))
        P0 = "language_model.model.layers.0.attention."
        names = ["wvkqgdt.weight", "conv1d.weight", "conv1d.bias", "dt_bias", "A_log_bias",
                 "g_norm_swish_gate.weight", "o_proj.weight"]
        wts = [ck.get(P0 + nm) for nm in names]
        d_m = 0.0
        for scale in (1.0, 10.0):  # 10: many Δ inputs beyond softplus's linear threshold
            u = (scale * torch.randn(11, st.hidden, generator=gen)).to(device)
            ref = naive_mamba2(u.double().cpu().numpy(), *[w.double().cpu().numpy() for w in wts],
                               st.n_heads, st.n_kv, st.d)
            rel = max(np.abs(ref).max(), 1.0)
            d_m = max([d_m] + [maxdiff(mamba2_mixer(u, *wts, st.n_heads, st.n_kv, st.d,
                                                    ssd=mode, chunk=c), ref) / rel
                               for mode, c in (("recurrent", chunk), ("chunked", chunk), ("chunked", 4))])
        check("(f) Mamba-2 mixer == literal float64 loop of §3.3", d_m < 1e-4,
              "heads %d, kv %d, d %d, T 11, input scale 1 and 10, recurrent / chunk %d / chunk 4, "
              "max |diff| / max |value| %.1e" % (st.n_heads, st.n_kv, st.d, chunk, d_m))
        q = torch.randn(1, 1, 16, generator=gen)
        k = torch.randn(1, 1, 16, generator=gen)

        def dot_at(pq, pk):
            cq, sq = rope_cos_sin(torch.tensor([pq]), 16, 10000.0)
            ck_, sk = rope_cos_sin(torch.tensor([pk]), 16, 10000.0)
            return float((apply_rope(q, cq, sq) * apply_rope(k, ck_, sk)).sum())
        d_rel = abs(dot_at(5, 2) - dot_at(105, 102))
        check("(f) RoPE scores depend on relative position only", d_rel < 1e-4,
              "q·k at (5,2) vs (105,102): |diff| %.1e" % d_rel)

    elapsed = time.time() - t_start
    if failures:
        print("self-test FAILED (%d): %s  [%.1f s]" % (len(failures), ", ".join(failures), elapsed))
        return 1
    print("self-test passed  [%.1f s]" % elapsed)
    return 0


if __name__ == "__main__":
    sys.exit(main())
