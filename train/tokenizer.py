"""tokenizer.py: the demo model's tokenizer and chat template in pure Python, for training.

Reads a SentencePiece BPE .model (protobuf parsed by hand, so no sentencepiece package is
needed) and encodes like SentencePiece does: identity normalisation, spaces escaped as U+2581,
optional dummy prefix, then repeatedly merge the adjacent pair whose merged piece exists with the
highest score (leftmost on ties); symbols with no piece become byte pieces <0xXX>.

Token ids follow MODEL.md section 5 and src/model/synthetic.c: the P SentencePiece pieces, then
InternLM2's six added tokens (V_e = P + 6, <|im_end|> = V_e - 2, <|im_start|> = V_e - 1), then
the nine multimodal specials from V_e on (<img>, </img>, <IMG_CONTEXT>, ...).

The chat template (internlm2-chat) is rendered the way src/model/chat_template.c does: text
between template tokens is one SentencePiece segment; an image in a user turn becomes
<img> <IMG_CONTEXT>*(tokens_per_tile*tiles) </img> followed by "\n" and the text.
train/check_engine.py checks the ids against `mmmamba generate --dump-prompt-ids`; the words
against spm_encode were checked when the tokenizer was made (every corpus line).
"""
import struct

ADDED_BASE = ["<|plugin|>", "<|interpreter|>", "<|action_end|>", "<|action_start|>", "<|im_end|>",
              "<|im_start|>"]
ADDED_SPECIAL = ["<img>", "</img>", "<IMG_CONTEXT>", "<quad>", "</quad>", "<ref>", "</ref>", "<box>",
                 "</box>"]
DEFAULT_SYSTEM = ("你是由上海人工智能实验室联合商汤科技开发的书生多模态大模型，英文名叫InternVL, "
                  "是一个有用无害的人工智能助手。")

NORMAL, UNKNOWN, CONTROL, USER_DEFINED, UNUSED, BYTE = 1, 2, 3, 4, 5, 6


def _varint(b, i):
    v = shift = 0
    while True:
        c = b[i]
        i += 1
        v |= (c & 0x7F) << shift
        shift += 7
        if c < 0x80:
            return v, i


def _fields(b):
    """Yields (field number, wire type, value) of one protobuf message."""
    i = 0
    while i < len(b):
        key, i = _varint(b, i)
        num, wire = key >> 3, key & 7
        if wire == 0:
            v, i = _varint(b, i)
        elif wire == 1:
            v, i = b[i:i + 8], i + 8
        elif wire == 2:
            n, i = _varint(b, i)
            v, i = b[i:i + n], i + n
        elif wire == 5:
            v, i = b[i:i + 4], i + 4
        else:
            raise ValueError("unsupported protobuf wire type %d" % wire)
        yield num, wire, v


class Tokenizer:
    def __init__(self, path):
        with open(path, "rb") as f:
            data = f.read()
        self.pieces = []  # (piece, score, type)
        self.add_dummy_prefix, self.escape_whitespaces = True, True
        for num, wire, v in _fields(data):
            if num == 1:
                piece, score, typ = "", 0.0, NORMAL
                for n2, w2, v2 in _fields(v):
                    if n2 == 1:
                        piece = v2.decode("utf-8")
                    elif n2 == 2:
                        score = struct.unpack("<f", v2)[0]
                    elif n2 == 3:
                        typ = v2
                self.pieces.append((piece, score, typ))
            elif num == 3:
                for n2, w2, v2 in _fields(v):
                    if n2 == 1 and v2 != b"identity":
                        raise ValueError("only the identity normaliser is supported")
                    if n2 == 3:
                        self.add_dummy_prefix = bool(v2)
                    if n2 == 5:
                        self.escape_whitespaces = bool(v2)
        self.merge = {p: (s, i) for i, (p, s, t) in enumerate(self.pieces) if t in (NORMAL, USER_DEFINED)}
        self.byte_id = {}
        for i, (p, s, t) in enumerate(self.pieces):
            if t == BYTE:
                self.byte_id[int(p[3:5], 16)] = i
        self.P = len(self.pieces)
        self.Ve = self.P + len(ADDED_BASE)
        self.vocab_size = self.Ve + len(ADDED_SPECIAL)
        self.added = {name: self.Ve - len(ADDED_BASE) + k for k, name in enumerate(ADDED_BASE)}
        self.added.update({name: self.Ve + k for k, name in enumerate(ADDED_SPECIAL)})
        self.im_start, self.im_end = self.added["<|im_start|>"], self.added["<|im_end|>"]
        self.img, self.img_end, self.img_context = (self.added["<img>"], self.added["</img>"],
                                                    self.added["<IMG_CONTEXT>"])
        self.bos, self.eos = 1, 2
        self._cache = {}

    def encode(self, text):
        """One SentencePiece segment -> ids (no BOS)."""
        hit = self._cache.get(text)
        if hit is not None:
            return hit
        s = text.replace(" ", "\u2581") if self.escape_whitespaces else text
        if self.add_dummy_prefix and s:
            s = "\u2581" + s
        sym = list(s)
        while len(sym) > 1:
            best, at = None, -1
            for k in range(len(sym) - 1):
                m = self.merge.get(sym[k] + sym[k + 1])
                if m is not None and (best is None or m[0] > best):
                    best, at = m[0], k
            if at < 0:
                break
            sym[at:at + 2] = [sym[at] + sym[at + 1]]
        ids = []
        for p in sym:
            m = self.merge.get(p)
            if m is not None:
                ids.append(m[1])
            else:
                ids.extend(self.byte_id[b] for b in p.encode("utf-8"))
        if len(self._cache) < 200000:
            self._cache[text] = ids
        return ids

    def decode(self, ids):
        out = bytearray()
        for i in ids:
            if i >= self.P:
                continue
            p, _, t = self.pieces[i]
            if t == BYTE:
                out.append(int(p[3:5], 16))
            elif t in (NORMAL, USER_DEFINED):
                out += p.replace("\u2581", " ").encode("utf-8")
        return out.decode("utf-8", errors="replace")

    def render(self, turns, tiles, tokens_per_tile, system=DEFAULT_SYSTEM):
        """A whole training conversation -> (ids, labels): labels[k] = the id to predict at
        position k (the next token) where it is an assistant answer token or its <|im_end|>,
        else -1. turns: [(user text, assistant text)]; the image (tiles > 0) goes in the first
        user turn. The last position predicts nothing."""
        ids = [self.bos]
        train = []

        def seg(text, learn=False):
            t = self.encode(text)
            ids.extend(t)
            train.extend([learn] * len(t))

        def tok(i, n=1, learn=False):
            ids.extend([i] * n)
            train.extend([learn] * n)

        train.append(False)
        tok(self.im_start)
        seg("system\n" + system)
        tok(self.im_end)
        for k, (q, a) in enumerate(turns):
            tok(self.im_start)
            if k == 0 and tiles:
                seg("user\n")
                tok(self.img)
                tok(self.img_context, tokens_per_tile * tiles)
                tok(self.img_end)
                seg("\n" + q)
            else:
                seg("user\n" + q)
            tok(self.im_end)
            tok(self.im_start)
            # "assistant\n" then the answer: one segment in the template, and "\n" is a byte
            # piece that never merges, so the answer's ids are those generated after the prompt.
            head = self.encode("assistant\n")
            full = self.encode("assistant\n" + a)
            assert full[:len(head)] == head, "answer merged into the template"
            ids.extend(full)
            train.extend([False] * len(head) + [True] * (len(full) - len(head)))
            tok(self.im_end, learn=True)
        labels = [-1] * len(ids)
        for k in range(len(ids) - 1):
            if train[k + 1]:
                labels[k] = ids[k + 1]
        return ids, labels

    def prompt(self, question, tiles, tokens_per_tile, system=DEFAULT_SYSTEM):
        """The generation prompt of one user turn, as `mmmamba generate` renders it."""
        ids = [self.bos, self.im_start] + self.encode("system\n" + system) + [self.im_end, self.im_start]
        if tiles:
            ids += self.encode("user\n") + [self.img] + [self.img_context] * (tokens_per_tile * tiles)
            ids += [self.img_end] + self.encode("\n" + question)
        else:
            ids += self.encode("user\n" + question)
        return ids + [self.im_end, self.im_start] + self.encode("assistant\n")
