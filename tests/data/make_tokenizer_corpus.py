#!/usr/bin/env python3
"""Regenerates tokenizer_train.txt and tokenizer_test.txt, the text the
SentencePiece conformance test (tests/model/check_tokenizer_conformance.sh)
trains on and encodes. The outputs are committed; rerun only to change them.

Sources: excerpts of two public-domain novels shipped as SentencePiece's own
test data (data/botchan.txt, English; data/wagahaiwa_nekodearu.txt, Japanese),
Chinese sentences written for this file, random CJK, emoji and other 4-byte
UTF-8, C and Python code, whitespace runs, very long words, characters that
NFKC changes (full-width forms, ligatures, circled digits, half-width kana),
and, in the test set only, invalid UTF-8.

usage: make_tokenizer_corpus.py BOTCHAN NEKO OUTDIR"""
import random
import sys

botchan, neko, outdir = sys.argv[1:4]
rng = random.Random(20261123)

en = [l.rstrip("\n") for l in open(botchan, encoding="utf-8") if l.strip()]
ja = [l.rstrip("\n")[:80] for l in open(neko, encoding="utf-8") if l.strip()]

zh = [
    "你是由上海人工智能实验室联合商汤科技开发的书生多模态大模型，英文名叫InternVL, 是一个有用无害的人工智能助手。",
    "今天天气很好，我们一起去公园散步吧。",
    "状态空间模型在长序列上的推理速度远快于注意力机制。",
    "请描述这张图片的内容，并给出三个关键词。",
    "服务器在启动时把权重加载到显存中，然后等待客户端的请求。",
    "这个函数返回一个状态码，如果失败，会写入错误信息。",
    "中文分词没有空格，所以字节对编码会学到常见的双字词。",
    "北京、上海、广州和深圳是中国的四个一线城市。",
    "他说：“我明天早上八点到，你在门口等我。”",
    "线性注意力与状态空间模型之间有着深刻的联系。",
]
cjk_common = "的一是在不了有和人这中大为上个国我以要他时来用们生到作地于出就分对成会可主发年动同工也能下过子说产种面而方后多定行学法所民得经十三之进着等部度家电力里如水化高自二理起小物现实加量都两体制机当使点从业本去把性好应开它合还因由其些然前外天政四日那社义事平形相全表间样与关各重新线内数正心反你明看原又么利比或但质气第向道命此变条只没结解问意建月公无系军很情者最立代想已通并提直题党程展五果料象员革位入常文总次品式活设及管特件长求老头基资边流路级少图山统接知较将组见计别她手角期根论运农指几九区强放决西被干做必战先回则任取据处理南给色光门即保治北造百规热领七海口东导器压志世金增争济阶油思术极交受联什认六共权收证改清己美再采转更单风切打白教速花带安场身车例真务具万每目至达走积示议声报斗完类八离华名确才科张信马节话米整空元况今集温传土许步群广石记需段研界拉林律叫且究观越织装影算低持音众书布复容儿须际商非验连断深难近矿千周委素技备半办青省列习响约支般史感劳便团往酸历市克何除消构府称太准精值号率族维划选标写存候毛亲快效斯院查江型眼王按格养易置派层片始却专状育厂京识适属圆包火住调满县局照参红细引听该铁价严"

emoji = ["😀", "😂", "🙏", "🚀", "🎉", "👍🏽", "👨‍👩‍👧", "🇯🇵", "🐍", "🦀", "𝔘𝔫𝔦𝔠𝔬𝔡𝔢", "𠀋𡈽𡌛", "🀄", "🧪", "💡"]
nfkc = ["ｆｕｌｌｗｉｄｔｈ", "ＡＢＣ１２３", "ﬁle ﬂow", "①②③", "ｶﾀｶﾅ", "㍻", "Ⅻ", "ℌ", "x²+y³", "½ ¼",
        "\u3000全角空白\u3000", "e\u0301", "Å", "\u200bzero\u200dwidth", "tab\there", "ｱｲｳｴｵ", "™", "…", "㈱"]
words = ["state", "space", "model", "mamba", "token", "server", "stream", "batch", "prefill",
         "decode", "kernel", "tensor", "image", "tile", "prompt", "sampler"]

code = [
    "int main(int argc, char **argv) { return argc > 1 ? atoi(argv[1]) : 0; }",
    "    for (size_t i = 0; i < n; i++) sum += x[i] * y[i];",
    "def softmax(x):\n    e = np.exp(x - x.max())\n    return e / e.sum()",
    "if (st != MM_OK) goto fail;   /* one cleanup path */",
    "SELECT id, name FROM users WHERE age >= 18 ORDER BY name;",
    "const float scale = 1.0f / sqrtf((float)head_dim);",
    "\tswitch (c) {\n\tcase '\\n': return 1;\n\tdefault: break;\n\t}",
    "{\"model\": \"mmMamba\", \"messages\": [{\"role\": \"user\", \"content\": \"hi\"}], \"stream\": true}",
    "x = [i**2 for i in range(10) if i % 3 == 0]  # squares",
    "https://example.com/path?query=1&key=value#frag",
]


def rand_cjk(n):
    return "".join(rng.choice(cjk_common) for _ in range(n))


def rand_word():
    k = rng.random()
    if k < 0.6:
        return rng.choice(words)
    if k < 0.8:
        return str(rng.randint(0, 10 ** rng.randint(1, 12)))
    return "".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(rng.randint(1, 12)))


def ws():
    return rng.choice([" ", " ", " ", "  ", "   ", "\t", " \t ", "      "])


def mixed_line():
    parts = []
    for _ in range(rng.randint(1, 7)):
        k = rng.random()
        if k < 0.35:
            parts.append(rand_word())
        elif k < 0.5:
            parts.append(rand_cjk(rng.randint(1, 8)))
        elif k < 0.6:
            parts.append(rng.choice(emoji))
        elif k < 0.7:
            parts.append(rng.choice(nfkc))
        elif k < 0.8:
            parts.append(rng.choice(zh))
        elif k < 0.9:
            parts.append(rng.choice(ja)[:rng.randint(1, 20)])
        else:
            parts.append(rng.choice(code).split("\n")[0])
        parts.append(ws())
    s = "".join(parts)
    if rng.random() < 0.3:
        s = ws() + s
    if rng.random() < 0.5:
        s = s.rstrip(" \t")
    return s


def long_word():
    k = rng.random()
    if k < 0.3:
        return "".join(rng.choice(words) for _ in range(rng.randint(20, 80)))
    if k < 0.5:
        return rand_cjk(rng.randint(100, 400))
    if k < 0.7:
        return "a" * rng.randint(50, 500)
    if k < 0.8:
        return "".join(rng.choice(emoji) for _ in range(rng.randint(10, 60)))
    return "".join(rng.choice("0123456789") for _ in range(rng.randint(30, 200)))


# ---- training corpus (~150 KB) ----
train = []
train += en[:700]
train += ja[:300]
train += zh * 3
train += [rand_cjk(rng.randint(10, 60)) for _ in range(200)]
train += [mixed_line() for _ in range(400)]
for c in code:
    train += c.split("\n")
train += [" ".join(rng.choice(emoji) for _ in range(8)) for _ in range(20)]
train += ["  ".join(rng.choice(nfkc) for _ in range(4)) for _ in range(40)]
train += [long_word()[:300] for _ in range(10)]
train += ["    " + rng.choice(code).split("\n")[0] for _ in range(60)]
with open(f"{outdir}/tokenizer_train.txt", "w", encoding="utf-8", newline="\n") as f:
    for l in train:
        f.write(l + "\n")

# ---- test set (thousands of lines; many not in the training corpus) ----
test = []
test += rng.sample(train, 400)
test += en[900:1700]
test += ja[500:1100]
test += [mixed_line() for _ in range(1100)]
test += [long_word()[:600] for _ in range(40)]
test += ["", " ", "  ", "\t", "   x   ", " leading", "trailing ", "a  b   c    d", "▁", "▁▁x",
         "<s>", "</s>", "<unk>", "<0x41>", "<|im_end|>", "\u3000", "\u3000\u3000a\u3000", "\u00a0nbsp\u00a0",
         "\r", "carriage\rreturn", "x\u0000y", "1234567890", "3.14159", "x" * 3000]
test += [rng.choice(code) .replace("\n", " ") for _ in range(50)]
lines = [l.encode("utf-8") for l in test]
# invalid UTF-8: stray continuation bytes, truncated sequences, overlongs, surrogates, > U+10FFFF
bad = [b"\xff", b"\xfe\xff", b"\x80abc", b"abc\xc3", b"\xe4\xb8", b"\xe4\xb8 \xad", b"\xf0\x9f\x98",
       b"\xc0\xaf", b"\xe0\x80\xaf", b"\xed\xa0\x80", b"\xf4\x90\x80\x80", b"\xf8\x88\x80\x80\x80",
       b"ok \xe2\x96 \xe2\x96\x81 end", b"\xef\xbf\xbd literal replacement", b"mixed \xb0\xb1\xb2 \xd0\xb0\xd0"]
for b in bad:
    lines.append(b)
for _ in range(300):
    s = bytearray(mixed_line().encode("utf-8"))
    for _ in range(rng.randint(1, 4)):
        s.insert(rng.randint(0, len(s)), rng.randint(0x80, 0xff))
    lines.append(bytes(s))
rng.shuffle(lines)
with open(f"{outdir}/tokenizer_test.txt", "wb") as f:
    for l in lines:
        f.write(l + b"\n")
