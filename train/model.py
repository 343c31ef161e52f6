"""model.py: a batched, differentiable PyTorch mmMamba for training the demo model.

Same semantics as shared/MODEL.md section 3 and tests/reference/mmmamba_ref.py ("pre" pixel
shuffle, no encoder-output normalisation, position grid = patch grid so no resize), but over a
batch of right-padded sequences: padding sits after every real token, and every mixer is causal,
so it never changes the real positions. Parameter names are the checkpoint's tensor names
(dots replaced by "__" inside the module), so export is a rename.
train/check_engine.py checks a trained checkpoint against the reference and the C engine.
"""
import math

import torch
import torch.nn as nn
import torch.nn.functional as F


def rms_norm(x, w, eps):
    xf = x.float()
    return (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + eps)).to(x.dtype) * w.to(x.dtype)


def rope(x, positions, base):
    """x: (B, T, h, d) rotate-half RoPE, tables in fp32."""
    d = x.shape[-1]
    inv = 1.0 / (base ** (torch.arange(0, d, 2, device=x.device, dtype=torch.float32) / d))
    ang = positions.float()[:, None] * inv[None]
    c, s = ang.cos()[None, :, None, :], ang.sin()[None, :, None, :]
    xf = x.float()
    x1, x2 = xf[..., :d // 2], xf[..., d // 2:]
    return torch.cat([x1 * c - x2 * s, x2 * c + x1 * s], -1).to(x.dtype)


def ssd_chunked(x, dt, A, Bm, Cm, L):
    """Batched chunked SSD (fp32). x: (b,T,h,p), dt: (b,T,h), A: (h,), Bm, Cm: (b,T,h,n)."""
    b, T, h, p = x.shape
    n = Bm.shape[-1]
    nc = (T + L - 1) // L
    pad = nc * L - T
    if pad:
        x, dt, Bm, Cm = (F.pad(t, (0, 0) * (t.dim() - 2) + (0, pad)) for t in (x, dt, Bm, Cm))
    x = x.reshape(b, nc, L, h, p)
    Bm = Bm.reshape(b, nc, L, h, n)
    Cm = Cm.reshape(b, nc, L, h, n)
    dt = dt.reshape(b, nc, L, h)
    xdt = x * dt[..., None]
    a = (dt * A).permute(0, 3, 1, 2)                      # (b,h,c,L)
    cum = torch.cumsum(a, -1)
    diff = cum[..., :, None] - cum[..., None, :]           # (b,h,c,L,L): sum_{s<r<=t} a_r
    causal = torch.ones(L, L, dtype=torch.bool, device=x.device).tril()
    decay = torch.exp(diff.masked_fill(~causal, float("-inf")))
    CB = torch.einsum("bclhn,bcshn->bhcls", Cm, Bm)
    y = torch.einsum("bhcls,bcshp->bclhp", CB * decay, xdt)
    to_end = torch.exp(cum[..., -1:] - cum)                # (b,h,c,L)
    add = torch.einsum("bhcs,bcshp,bcshn->bchpn", to_end, xdt, Bm)
    chunk_decay = torch.exp(cum[..., -1])                  # (b,h,c)
    S = x.new_zeros(b, h, p, n)
    states = []
    for c in range(nc):
        states.append(S)
        S = chunk_decay[:, :, c, None, None] * S + add[:, c]
    S_in = torch.stack(states, 1)                          # (b,c,h,p,n)
    y = y + torch.einsum("bclhn,bchpn->bclhp", Cm, S_in) * torch.exp(cum).permute(0, 2, 3, 1)[..., None]
    return y.reshape(b, nc * L, h, p)[:, :T]


def position_init(G, H, scale=0.7):
    """Initial position embedding (1, G*G+1, H): 2-D sine/cosine of the patch row (first half of
    the channels) and column (second half), as in ViT/MAE, so that where a patch lies is readable
    from the first step (a small random one takes hundreds of steps to outgrow the patch content);
    slot 0 (the unused class position) and a little noise as before."""
    q = H // 4
    freq = 1.0 / (100.0 ** (torch.arange(q, dtype=torch.float32) / q))
    r = torch.arange(G, dtype=torch.float32)[:, None] * freq[None]            # (G, q)
    row = torch.cat([r.sin(), r.cos()], 1)[:, None, :].expand(G, G, 2 * q)
    col = torch.cat([r.sin(), r.cos()], 1)[None, :, :].expand(G, G, 2 * q)
    grid = torch.cat([row, col], -1).reshape(G * G, 4 * q)
    pe = torch.randn(1, G * G + 1, H) * 0.02
    pe[0, 1:, :4 * q] += scale * grid
    return pe


class Stack(nn.Module):
    """One layer stack; parameters named like the checkpoint under `prefix`."""

    def __init__(self, prefix, n_layers, H, heads, kv, F_, eps, theta, kinds, chunk):
        super().__init__()
        self.prefix, self.H, self.heads, self.kv, self.d = prefix, H, heads, kv, H // heads
        self.eps, self.theta, self.kinds, self.chunk = eps, theta, kinds, chunk
        self.p = nn.ParameterDict()
        d, C = self.d, 2 * kv * self.d + heads * self.d
        out_std = 0.02 / math.sqrt(2 * n_layers)
        for i, k in enumerate(kinds):
            P = "%d." % i
            self._add(P + "attention_norm.weight", torch.ones(H))
            self._add(P + "ffn_norm.weight", torch.ones(H))
            self._add(P + "feed_forward.w1.weight", torch.randn(F_, H) * 0.02)
            self._add(P + "feed_forward.w3.weight", torch.randn(F_, H) * 0.02)
            self._add(P + "feed_forward.w2.weight", torch.randn(H, F_) * out_std)
            if k == "mamba2":
                self._add(P + "attention.wvkqgdt.weight", torch.randn(C + heads * d + heads, H) * 0.02)
                self._add(P + "attention.conv1d.weight", (torch.rand(C, 1, 2) * 2 - 1) * 0.7)
                self._add(P + "attention.conv1d.bias", torch.zeros(C))
                dt0 = torch.exp(torch.rand(heads) * (math.log(0.1) - math.log(0.001)) + math.log(0.001))
                self._add(P + "attention.dt_bias", dt0 + torch.log(-torch.expm1(-dt0)))
                self._add(P + "attention.A_log_bias", torch.log(torch.empty(heads).uniform_(1, 16)))
                self._add(P + "attention.g_norm_swish_gate.weight", torch.ones(d))
                self._add(P + "attention.o_proj.weight", torch.randn(H, heads * d) * out_std)
            else:
                self._add(P + "attention.wqkv.weight", torch.randn((heads + 2 * kv) * d, H) * 0.02)
                self._add(P + "attention.wo.weight", torch.randn(H, heads * d) * out_std)

    def _add(self, name, t):
        self.p[name.replace(".", "__")] = nn.Parameter(t)

    def w(self, i, name):
        return self.p[("%d." % i + name).replace(".", "__")]

    def named_tensors(self):
        return {self.prefix + k.replace("__", "."): v for k, v in self.p.items()}

    def attention(self, i, u, pos):
        B, T, _ = u.shape
        h, kv, d = self.heads, self.kv, self.d
        g = h // kv
        qkv = F.linear(u, self.w(i, "attention.wqkv.weight")).view(B, T, kv, g + 2, d)
        q = rope(qkv[:, :, :, :g].reshape(B, T, h, d), pos, self.theta)
        k = rope(qkv[:, :, :, g], pos, self.theta)
        v = qkv[:, :, :, g + 1]
        q, k, v = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)
        k = k.repeat_interleave(g, 1)
        v = v.repeat_interleave(g, 1)
        if hasattr(F, "scaled_dot_product_attention"):
            o = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        else:
            s = (q.float() @ k.float().transpose(-1, -2)) / math.sqrt(d)
            s = s.masked_fill(torch.ones(T, T, dtype=torch.bool, device=u.device).triu(1), float("-inf"))
            o = (torch.softmax(s, -1) @ v.float()).to(q.dtype)
        o = o.transpose(1, 2).reshape(B, T, h * d)
        return F.linear(o, self.w(i, "attention.wo.weight"))

    def mamba2(self, i, u):
        B, T, _ = u.shape
        h, kv, d = self.heads, self.kv, self.d
        g = h // kv
        C = 2 * kv * d + h * d
        z = F.linear(u, self.w(i, "attention.wvkqgdt.weight"))
        vkq, gate, dt_raw = z[..., :C].float(), z[..., C:C + h * d], z[..., C + h * d:]
        cw = self.w(i, "attention.conv1d.weight").float()
        prev = F.pad(vkq, (0, 0, 1, 0))[:, :T]
        out = F.silu(prev * cw[:, 0, 0] + vkq * cw[:, 0, 1] + self.w(i, "attention.conv1d.bias").float())
        v = out[..., :kv * d].reshape(B, T, kv, d).repeat_interleave(g, 2)
        k = out[..., kv * d:2 * kv * d].reshape(B, T, kv, d).repeat_interleave(g, 2)
        q = out[..., 2 * kv * d:].reshape(B, T, h, d)
        dt = F.softplus(dt_raw.float() + self.w(i, "attention.dt_bias").float())
        A = -torch.exp(self.w(i, "attention.A_log_bias").float())
        with torch.autocast(u.device.type, enabled=False):  # the scan stays in fp32
            y = ssd_chunked(v, dt, A, k, q, self.chunk)
        gf = gate.float().reshape(B, T, h, d)
        o = y * torch.rsqrt(y.pow(2).mean(-1, keepdim=True) + 1e-5) \
            * self.w(i, "attention.g_norm_swish_gate.weight").float() * (gf * torch.sigmoid(gf))
        return F.linear(o.reshape(B, T, h * d).to(u.dtype), self.w(i, "attention.o_proj.weight"))

    def forward(self, x):
        pos = torch.arange(x.shape[1], device=x.device)
        for i, k in enumerate(self.kinds):
            u = rms_norm(x, self.w(i, "attention_norm.weight"), self.eps)
            x = x + (self.attention(i, u, pos) if k == "mha" else self.mamba2(i, u))
            u = rms_norm(x, self.w(i, "ffn_norm.weight"), self.eps)
            x = x + F.linear(F.silu(F.linear(u, self.w(i, "feed_forward.w1.weight")))
                             * F.linear(u, self.w(i, "feed_forward.w3.weight")),
                             self.w(i, "feed_forward.w2.weight"))
        return x


class DemoModel(nn.Module):
    def __init__(self, c, chunk=64):
        """c: the config dict written to config.json."""
        super().__init__()
        ec, lc = c["embedding_config"], c["llm_config"]
        H = lc["hidden_size"]
        self.H, self.patch = H, ec["patch_size"]
        self.G = c["force_image_size"] // self.patch
        self.img_id = ec["img_context_token_id"]
        self.Ve, self.V = ec["llm_vocab_size"], lc["vocab_size"]
        self.llm_eps = lc["rms_norm_eps"]
        g2 = (ec["image_size"] // self.patch) ** 2
        assert g2 == self.G * self.G, "the demo model keeps image_size == force_image_size"
        self.front = nn.ParameterDict()
        f = {
            "embedding_model.vision_embeddings.patch_embedding.weight":
                torch.randn(H, 3, self.patch, self.patch) / math.sqrt(3 * self.patch ** 2),
            "embedding_model.vision_embeddings.patch_embedding.bias": torch.zeros(H),
            "embedding_model.vision_embeddings.position_embedding": position_init(self.G, H),
            "embedding_model.llm_text_embeddings.weight": torch.randn(self.Ve, H) * 0.02,
            "embedding_model.special_text_embeddings.weight": torch.randn(self.V - self.Ve, H) * 0.02,
            "embedding_model.pixel_shuffle_proj.0.weight": torch.randn(H, 4 * H) * 0.02,
            "embedding_model.pixel_shuffle_proj.0.bias": torch.zeros(H),
            "embedding_model.pixel_shuffle_proj.2.weight": torch.randn(H, H) * 0.02,
            "embedding_model.pixel_shuffle_proj.2.bias": torch.zeros(H),
            "language_model.model.norm.weight": torch.ones(H),
            "language_model.output.weight": torch.randn(self.V, H) * 0.02,
        }
        for k, v in f.items():
            self.front[k.replace(".", "__")] = nn.Parameter(v)
        self.emb = Stack("embedding_model.encoder.", ec["num_hidden_layers"], H, ec["num_attention_heads"],
                         ec["num_key_value_heads"], ec["intermediate_size"], ec["rms_norm_eps"],
                         ec["rope_theta"], ec["layers_block_type"], chunk)
        self.llm = Stack("language_model.model.layers.", lc["num_hidden_layers"], H, lc["num_attention_heads"],
                         lc["num_key_value_heads"], lc["intermediate_size"], lc["rms_norm_eps"],
                         lc["rope_theta"], lc["layers_block_type"], chunk)

    def fw(self, name):
        return self.front[name.replace(".", "__")]

    def checkpoint_tensors(self):
        """name -> fp32 tensor, every tensor of the published layout."""
        out = {k.replace("__", "."): v.detach().float() for k, v in self.front.items()}
        out.update({k: v.detach().float() for k, v in self.emb.named_tensors().items()})
        out.update({k: v.detach().float() for k, v in self.llm.named_tensors().items()})
        out["embedding_model.vision_embeddings.class_embedding"] = torch.zeros(1, 1, self.H)
        # stored but unused by the model (MODEL.md section 2): a copy of the text embedding
        out["language_model.model.tok_embeddings.weight"] = torch.cat(
            [out["embedding_model.llm_text_embeddings.weight"],
             out["embedding_model.special_text_embeddings.weight"]], 0)
        return out

    def load_tensors(self, get):
        """Copies every trained tensor from get(name) (a checkpoint of the published layout)."""
        with torch.no_grad():
            for name, p in list(self.front.items()):
                p.copy_(get(name.replace("__", ".")))
            for st in (self.emb, self.llm):
                for name, p in st.p.items():
                    p.copy_(get(st.prefix + name.replace("__", ".")))

    def image_tokens(self, tiles):
        """tiles (N,3,S,S) normalised -> (N*G*G/4, H)."""
        w = self.fw("embedding_model.vision_embeddings.patch_embedding.weight")
        p = F.conv2d(tiles, w, self.fw("embedding_model.vision_embeddings.patch_embedding.bias"), stride=self.patch)
        p = p.flatten(2).transpose(1, 2)
        p = p + self.fw("embedding_model.vision_embeddings.position_embedding")[:, 1:].to(p.dtype)
        N, G, H = p.shape[0], self.G, self.H
        x = p.reshape(N, G // 2, 2, G // 2, 2, H).permute(0, 1, 3, 2, 4, 5).reshape(N, (G // 2) ** 2, 4 * H)
        x = F.linear(x, self.fw("embedding_model.pixel_shuffle_proj.0.weight"),
                     self.fw("embedding_model.pixel_shuffle_proj.0.bias"))
        x = F.linear(F.gelu(x), self.fw("embedding_model.pixel_shuffle_proj.2.weight"),
                     self.fw("embedding_model.pixel_shuffle_proj.2.bias"))
        return x.reshape(-1, H)

    def forward(self, ids, tiles=None, n_prompt_img=None, image_hidden=False, image_rows=None):
        """ids (B,T) long, tiles (N,3,S,S): the <IMG_CONTEXT> positions of ids, in row-major
        order, take the image tokens of the tiles in order; n_prompt_img, when given, says which
        positions instead: a (B,T) bool mask, or the flat positions b*T+t as a long tensor (no
        device sync); image_rows, when given, which image token (among the tiles') each of those
        positions takes, so that tiles shared by several sequences are embedded once. -> logits
        (B,T,V) fp32; with image_hidden, (logits, the embedding stack's output at the image
        positions)."""
        B, T = ids.shape
        table = torch.cat([self.fw("embedding_model.llm_text_embeddings.weight"),
                           self.fw("embedding_model.special_text_embeddings.weight")], 0)
        h = F.embedding(ids, table).reshape(B * T, self.H)
        at = None
        if tiles is not None and tiles.shape[0]:
            at = ids == self.img_id if n_prompt_img is None else n_prompt_img
            if at.dtype == torch.bool:
                at = at.reshape(-1).nonzero().squeeze(1)
            img = self.image_tokens(tiles)
            if image_rows is not None:
                img = img.index_select(0, image_rows)
            h = h.index_put((at,), img.to(h.dtype))
        h = self.emb(h.reshape(B, T, self.H))
        seen = h.reshape(B * T, self.H).index_select(0, at) if image_hidden and at is not None else h[:0, 0]
        h = self.llm(h)
        h = rms_norm(h, self.fw("language_model.model.norm.weight"), self.llm_eps)
        logits = F.linear(h, self.fw("language_model.output.weight")).float()
        return (logits, seen) if image_hidden else logits
