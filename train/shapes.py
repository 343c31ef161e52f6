"""shapes.py: the synthetic picture world of the demo model.

A scene is 1-3 shapes (6 kinds, 8 named colours, 3 sizes) in distinct cells of a 3x3 grid
over the picture, on a plain or two-tone neutral background. From a scene come the picture
(Pillow, PNG or JPEG bytes, varied size and aspect ratio), a caption and short question/answer
pairs; every answer is a function of the scene, so it can be scored word for word.

Also here: the image preprocessing of MODEL.md section 4 (dynamic tiling, Pillow bicubic,
thumbnail), the same algorithm the C server runs, used to feed training.

Only the standard library and Pillow at import time (the evaluator needs nothing else);
numpy is imported where tiles are made.
"""
import io
import math
import random

from PIL import Image, ImageDraw

COLOURS = {  # name -> RGB centre (drawn with a little jitter)
    "red": (215, 35, 35),
    "orange": (250, 140, 10),
    "yellow": (240, 215, 25),
    "green": (40, 165, 55),
    "blue": (35, 75, 215),
    "purple": (135, 55, 175),
    "pink": (250, 125, 190),
    "brown": (125, 75, 30),
}
COLOUR_NAMES = list(COLOURS)
SHAPES = ["circle", "square", "triangle", "star", "diamond", "cross"]
SIZES = {"small": (0.12, 0.16), "medium": (0.20, 0.24), "large": (0.28, 0.32)}  # of shorter side
SIZE_NAMES = list(SIZES)
BACKGROUNDS = [(250, 250, 250), (215, 215, 215), (70, 70, 70), (15, 15, 15), (240, 230, 205)]
NUMBERS = ["zero", "one", "two", "three"]
# cell (row, col) of the 3x3 grid -> answer phrase
POSITIONS = {(0, 0): "in the top left", (0, 1): "at the top", (0, 2): "in the top right",
             (1, 0): "on the left", (1, 1): "in the center", (1, 2): "on the right",
             (2, 0): "in the bottom left", (2, 1): "at the bottom", (2, 2): "in the bottom right"}
# aspect ratios (w/h) pictures are drawn at, so that dynamic tiling picks many grids
ASPECTS = [1.0, 1.0, 1.0, 4 / 3, 3 / 4, 16 / 9, 9 / 16, 2.0, 0.5, 3.0, 1 / 3, 1.5, 2 / 3]

TASKS = ["caption", "colour", "shape", "count", "position"]

GREETINGS = [
    ("Hello!", "Hello! I am a small demo model of mmMamba. Show me a picture of simple shapes and "
               "I can describe it, name the colours and shapes, count them and say where they are."),
    ("Hi", "Hello! I am a small demo model of mmMamba. Show me a picture of simple shapes and "
           "I can describe it, name the colours and shapes, count them and say where they are."),
    ("What can you do?", "I look at pictures of simple shapes: circles, squares, triangles, stars, "
                         "diamonds and crosses in eight colours. I can describe a picture, name the "
                         "colour and the shape of an object, count the shapes and say where they are."),
    ("Who are you?", "I am a small demo model of mmMamba, a multimodal state space model, trained "
                     "by the mmmambad project on pictures of simple shapes."),
    ("Thank you!", "You are welcome!"),
    ("Thanks", "You are welcome!"),
    ("What colours do you know?", "Red, orange, yellow, green, blue, purple, pink and brown."),
    ("What shapes do you know?", "Circles, squares, triangles, stars, diamonds and crosses."),
    ("Goodbye!", "Goodbye!"),
]
NO_IMAGE_QUESTIONS = ["Describe the picture.", "What colour is the circle?", "How many shapes are there?",
                      "Where is the star?", "What shape is the red one?"]
NO_IMAGE_ANSWER = "Please show me a picture first."


# ---- scenes ---------------------------------------------------------------------------------

class Obj:
    def __init__(self, shape, colour, size, cell):
        self.shape, self.colour, self.size, self.cell = shape, colour, size, cell

    def phrase(self, article="a"):
        words = [article] + ([self.size] if self.size != "medium" else []) + [self.colour, self.shape]
        return " ".join(words)


def random_scene(rng, max_objects=3):
    """Objects with distinct cells and distinct (colour, shape) pairs, plus the drawing style."""
    n = min(max_objects, rng.choice([1, 1, 2, 2, 2, 3, 3, 3]))
    cells = rng.sample(sorted(POSITIONS), n)
    objs, pairs = [], set()
    while len(objs) < n:
        shape, colour = rng.choice(SHAPES), rng.choice(COLOUR_NAMES)
        if (shape, colour) in pairs:
            continue
        pairs.add((shape, colour))
        objs.append(Obj(shape, colour, rng.choice(SIZE_NAMES), cells[len(objs)]))
    aspect = rng.choice(ASPECTS) * math.exp(rng.uniform(-0.08, 0.08))
    longer = rng.randint(160, 640)
    w, h = (longer, max(48, round(longer / aspect))) if aspect >= 1 else (max(48, round(longer * aspect)), longer)
    bg = rng.sample(BACKGROUNDS, 2)
    style = {"w": w, "h": h, "bg": bg, "two_tone": rng.random() < 0.4, "split": rng.randint(0, 2),
             "jpeg": rng.random() < 0.5, "quality": rng.randint(60, 95)}
    return objs, style


def _star(cx, cy, r, rot):
    pts = []
    for k in range(10):
        rad = r if k % 2 == 0 else r * 0.45
        a = rot - math.pi / 2 + k * math.pi / 5
        pts.append((cx + rad * math.cos(a), cy + rad * math.sin(a)))
    return pts


def _rotated(pts, cx, cy, rot):
    c, s = math.cos(rot), math.sin(rot)
    return [(cx + (x - cx) * c - (y - cy) * s, cy + (x - cx) * s + (y - cy) * c) for x, y in pts]


def render(objs, style, rng):
    """Draws the scene 2x supersampled, returns an RGB Pillow image of style w x h. Each object
    keeps its outline in picture pixels as o.outline: ("ellipse", box) or ("polygon", points)."""
    W, H = style["w"], style["h"]
    ss = 2
    img = Image.new("RGB", (W * ss, H * ss), style["bg"][0])
    d = ImageDraw.Draw(img)
    if style["two_tone"]:
        b = style["bg"][1]
        if style["split"] == 0:
            d.rectangle([0, 0, W * ss // 2, H * ss], fill=b)
        elif style["split"] == 1:
            d.rectangle([0, 0, W * ss, H * ss // 2], fill=b)
        else:
            d.polygon([(0, 0), (W * ss, 0), (0, H * ss)], fill=b)
    short = min(W, H) * ss
    for o in objs:
        lo, hi = SIZES[o.size]
        size = rng.uniform(lo, hi) * short
        r = size / 2
        row, col = o.cell
        cw, ch = W * ss / 3, H * ss / 3
        cx = (col + 0.5) * cw + rng.uniform(-1, 1) * max(0.0, (cw - size) / 2) * 0.7
        cy = (row + 0.5) * ch + rng.uniform(-1, 1) * max(0.0, (ch - size) / 2) * 0.7
        base = COLOURS[o.colour]
        fill = tuple(max(0, min(255, c + rng.randint(-18, 18))) for c in base)
        rot = math.radians(rng.uniform(-10, 10))
        if o.shape == "circle":
            kind, pts = "ellipse", [cx - r, cy - r, cx + r, cy + r]
        elif o.shape == "square":
            s = r * 0.9
            kind, pts = "polygon", _rotated([(cx - s, cy - s), (cx + s, cy - s), (cx + s, cy + s), (cx - s, cy + s)],
                                            cx, cy, rot)
        elif o.shape == "triangle":
            pts = [(cx + r * math.cos(a), cy + r * math.sin(a))
                   for a in (-math.pi / 2, math.pi / 6, 5 * math.pi / 6)]
            kind, pts = "polygon", _rotated([(x, y + r * 0.15) for x, y in pts], cx, cy, rot)
        elif o.shape == "star":
            kind, pts = "polygon", _star(cx, cy, r, rot)
        elif o.shape == "diamond":
            kind, pts = "polygon", _rotated([(cx, cy - r), (cx + r * 0.75, cy), (cx, cy + r), (cx - r * 0.75, cy)],
                                            cx, cy, rot)
        else:  # cross
            t = r * 0.33
            pts = [(cx - t, cy - r), (cx + t, cy - r), (cx + t, cy - t), (cx + r, cy - t), (cx + r, cy + t),
                   (cx + t, cy + t), (cx + t, cy + r), (cx - t, cy + r), (cx - t, cy + t), (cx - r, cy + t),
                   (cx - r, cy - t), (cx - t, cy - t)]
            kind, pts = "polygon", _rotated(pts, cx, cy, rot)
        if kind == "ellipse":
            d.ellipse(pts, fill=fill)
            o.outline = (kind, [v / ss for v in pts])
        else:
            d.polygon(pts, fill=fill)
            o.outline = (kind, [(x / ss, y / ss) for x, y in pts])
    return img.resize((W, H), Image.BOX)


def encode(img, style):
    """The picture as file bytes (PNG or JPEG) and its format name."""
    buf = io.BytesIO()
    if style["jpeg"]:
        img.save(buf, "JPEG", quality=style["quality"])
        return buf.getvalue(), "jpeg"
    img.save(buf, "PNG", compress_level=1)
    return buf.getvalue(), "png"


# ---- language ---------------------------------------------------------------------------------

def _cap(s):
    return s[0].upper() + s[1:]


def caption(objs):
    """'A small red circle in the top left.' / 'A red circle to the left of a blue square.' /
    'A red circle, a blue square and a large green star.' (objects left to right, then top down)."""
    o = sorted(objs, key=lambda x: (x.cell[1], x.cell[0]))
    if len(o) == 1:
        return _cap(o[0].phrase()) + " " + POSITIONS[o[0].cell] + "."
    if len(o) == 2:
        rel = "to the left of" if o[0].cell[1] != o[1].cell[1] else "above"
        return _cap(o[0].phrase()) + " " + rel + " " + o[1].phrase() + "."
    return _cap(o[0].phrase()) + ", " + o[1].phrase() + " and " + o[2].phrase() + "."


def _name(o, objs):
    """The shortest unambiguous name of o: 'circle', 'red shape' or 'red circle'."""
    if sum(x.shape == o.shape for x in objs) == 1:
        return o.shape
    if sum(x.colour == o.colour for x in objs) == 1:
        return o.colour + " shape"
    return o.colour + " " + o.shape


def _plural(shape):
    return shape + "es" if shape == "cross" else shape + "s"


def question(task, objs, rng, variant=None):
    """(question, answer, key) for task; key holds the words the answer is scored on."""
    o = rng.choice(objs)
    if task == "caption":
        q = rng.choice(["Describe the picture.", "Describe this image.", "What do you see?",
                        "Describe the image in one sentence."] if variant is None else [variant])
        a = caption(objs)
        return q, a, a
    if task == "colour":
        cands = [x for x in objs if sum(y.shape == x.shape for y in objs) == 1]
        if not cands:
            return question("count", objs, rng)
        o = rng.choice(cands)
        nm = "shape" if len(objs) == 1 and rng.random() < 0.5 else o.shape
        q = rng.choice(["What colour is the %s?", "What color is the %s?"]) % nm
        return q, _cap(o.colour) + ".", o.colour
    if task == "shape":
        cands = [x for x in objs if sum(y.colour == x.colour for y in objs) == 1]
        if not cands:
            return question("count", objs, rng)
        o = rng.choice(cands)
        if len(objs) == 1 and rng.random() < 0.5:
            q = rng.choice(["What shape is this?", "What shape do you see?", "What shape is in the picture?"])
        else:
            q = rng.choice(["What shape is the %s one?", "What is the %s shape?"]) % o.colour
        return q, "A " + o.shape + ".", o.shape
    if task == "count":
        r = rng.random()
        if r < 0.4:
            q, n = rng.choice(["How many shapes are there?", "How many shapes are in the picture?"]), len(objs)
        elif r < 0.75:
            s = rng.choice([o.shape, rng.choice(SHAPES)])
            q, n = "How many %s are there?" % _plural(s), sum(x.shape == s for x in objs)
        else:
            c = rng.choice([o.colour, rng.choice(COLOUR_NAMES)])
            q, n = "How many %s shapes are there?" % c, sum(x.colour == c for x in objs)
        return q, _cap(NUMBERS[n]) + ".", NUMBERS[n]
    if task == "position":
        nm = _name(o, objs)
        q = rng.choice(["Where is the %s?", "Where is the %s in the picture?"]) % nm
        return q, _cap(POSITIONS[o.cell]) + ".", POSITIONS[o.cell]
    raise ValueError(task)


def conversation(objs, rng, turns, tasks=None, count_weight=1):
    """[(question, answer)] about one picture: a first question of a random task, then more.
    Tasks are drawn with weight 2 each, count with weight count_weight."""
    out, seen = [], set()
    mix = tasks or TASKS + ["caption", "colour", "shape", "position"] + ["count"] * (count_weight - 1)
    for _ in range(turns * 3):
        if len(out) == turns:
            break
        task = rng.choice(mix)
        q, a, _ = question(task, objs, rng)
        if q in seen:
            continue
        seen.add(q)
        out.append((q, a))
    return out


def text_only(rng):
    if rng.random() < 0.75:
        return [rng.choice(GREETINGS)]
    return [(rng.choice(NO_IMAGE_QUESTIONS), NO_IMAGE_ANSWER)]


def corpus_lines(rng, n):
    """Sentences for training the tokenizer: every template string the data can produce."""
    lines = [g for pair in GREETINGS for g in pair] + NO_IMAGE_QUESTIONS + [NO_IMAGE_ANSWER]
    for _ in range(n):
        objs, _ = random_scene(rng)
        for task in TASKS:
            q, a, _ = question(task, objs, rng)
            lines += [q, a]
    return lines


# ---- preprocessing (MODEL.md section 4) -------------------------------------------------------

def grid_for(w, h, lo, hi, size):
    """Dynamic tiling: (cols, rows) with lo <= cols*rows <= hi closest to the aspect ratio."""
    ratios = sorted({(i, j) for n in range(lo, hi + 1) for i in range(1, n + 1) for j in range(1, n + 1)
                     if lo <= i * j <= hi}, key=lambda x: x[0] * x[1])
    best, best_diff, aspect = (1, 1), float("inf"), w / h
    for i, j in ratios:
        diff = abs(aspect - i / j)
        if diff < best_diff:
            best, best_diff = (i, j), diff
        elif diff == best_diff and w * h > 0.5 * size * size * i * j:
            best = (i, j)
    return best


def tiles_u8(img, size, lo, hi, thumbnail=True):
    """uint8 tiles (N, size, size, 3) of an RGB picture, row-major, thumbnail last."""
    import numpy as np
    cols, rows = grid_for(img.width, img.height, lo, hi, size)
    big = img.resize((size * cols, size * rows), Image.BICUBIC)
    a = np.asarray(big, dtype=np.uint8)
    out = [a[r * size:(r + 1) * size, c * size:(c + 1) * size] for r in range(rows) for c in range(cols)]
    if thumbnail and len(out) > 1:
        out.append(np.asarray(img.resize((size, size), Image.BICUBIC), dtype=np.uint8))
    return np.stack(out)


AUX_CLASSES = (1 + len(COLOURS), 1 + len(SHAPES), 1 + len(SIZES), 9)  # token_labels' columns


def token_labels(objs, w, h, size, lo, hi, per_side, thumbnail=True, cover=0.2):
    """What each image token of the tiles of a w x h picture shows (tiles_u8's order; a token is
    one cell of a per_side x per_side grid over a tile), for the training loss that teaches the
    front end to see (not part of the model): a uint8 array (tokens, 4) of classes (AUX_CLASSES):
    colour, shape and size of the object covering at least `cover` of the token (0: none, else 1 +
    the index in COLOUR_NAMES / SHAPES / SIZE_NAMES), and the cell of the picture's 3x3 grid
    (row * 3 + col) the token lies in (the object's cell on its tokens). Needs the outlines
    render() leaves on the objects."""
    import numpy as np
    cols, rows = grid_for(w, h, lo, hi, size)
    thumb = thumbnail and cols * rows > 1
    out = np.zeros((cols * rows * per_side ** 2 + (per_side ** 2 if thumb else 0), 4), np.uint8)
    k = (np.arange(per_side) + 0.5) / per_side   # token centres within a tile, 0..1
    cells = []
    for r in range(rows):
        for c in range(cols):
            y = np.minimum(2, (3 * (r + k) / rows).astype(int))
            x = np.minimum(2, (3 * (c + k) / cols).astype(int))
            cells.append((y[:, None] * 3 + x[None, :]).reshape(-1))
    if thumb:
        y = np.minimum(2, (3 * k).astype(int))
        cells.append((y[:, None] * 3 + y[None, :]).reshape(-1))
    out[:, 3] = np.concatenate(cells)
    for o in objs:
        m = Image.new("L", (w, h), 0)
        kind, pts = o.outline
        getattr(ImageDraw.Draw(m), kind)(pts, fill=255)
        big = np.asarray(m.resize((per_side * cols, per_side * rows), Image.BOX))
        parts = [big[r * per_side:(r + 1) * per_side, c * per_side:(c + 1) * per_side].reshape(-1)
                 for r in range(rows) for c in range(cols)]
        if thumb:
            parts.append(np.asarray(m.resize((per_side, per_side), Image.BOX)).reshape(-1))
        hit = np.concatenate(parts) >= cover * 255
        out[hit] = (1 + COLOUR_NAMES.index(o.colour), 1 + SHAPES.index(o.shape), 1 + SIZE_NAMES.index(o.size),
                    o.cell[0] * 3 + o.cell[1])
    return out


def task_of(key):
    """The task a question was scored on, from its key (question() may fall back)."""
    if key in COLOURS:
        return "colour"
    if key in SHAPES:
        return "shape"
    if key in NUMBERS:
        return "count"
    if key in POSITIONS.values():
        return "position"
    return "caption"


def eval_items(seed, n, max_objects=3):
    """n fresh pictures from seed: [(file bytes, format, [(task, question, key)])], one question
    per task and picture (the task a question falls back to counts as itself)."""
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        objs, style = random_scene(rng, max_objects)
        data, fmt = encode(render(objs, style, rng), style)
        qs = []
        for task in TASKS:
            q, _, key = question(task, objs, rng)
            qs.append((task_of(key), q, key))
        out.append((data, fmt, qs))
    return out


def _words(s):
    return "".join(c if c.isalnum() else " " for c in s.lower()).split()


def score(task, key, answer):
    """True when answer gives exactly the expected words: the whole caption; the colour, shape
    or number word and no other of its kind; the position phrase."""
    w = _words(answer)
    if task in ("caption", "position"):
        return w == _words(key)
    vocab = {"colour": COLOUR_NAMES, "shape": SHAPES, "count": NUMBERS}[task]
    found = [x for x in w if x in vocab]
    return found == [key]


def decode(data):
    return Image.open(io.BytesIO(data)).convert("RGB")
