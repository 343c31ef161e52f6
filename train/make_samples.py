#!/usr/bin/env python3
"""make_samples.py: the sample pictures shipped for the README and the CI check of the demo model.

    /usr/bin/python3 train/make_samples.py      # rewrites train/samples/*.png|jpg and answers.tsv

Fixed scenes (drawn by train/shapes.py with a fixed seed) and, in answers.tsv, the question and
the exact answer the model was trained to give (tab-separated: file, question, answer).
"""
import os
import random
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import shapes  # noqa: E402

SCENES = [  # file, objects (shape, colour, size, (row, col)), width, height, background, jpeg
    ("red-circle-blue-square.png", [("circle", "red", "medium", (1, 0)), ("square", "blue", "small", (1, 2))],
     480, 320, (250, 250, 250), False),
    ("three-shapes.jpg", [("star", "yellow", "large", (0, 0)), ("triangle", "green", "medium", (2, 1)),
                          ("cross", "purple", "small", (0, 2))], 400, 400, (70, 70, 70), True),
    ("pink-diamond.png", [("diamond", "pink", "large", (2, 2))], 300, 500, (240, 230, 205), False),
]


def main():
    out = os.path.join(HERE, "samples")
    os.makedirs(out, exist_ok=True)
    rows = []
    for k, (fn, spec, w, h, bg, jpeg) in enumerate(SCENES):
        objs = [shapes.Obj(*o) for o in spec]
        style = {"w": w, "h": h, "bg": [bg, bg], "two_tone": False, "split": 0, "jpeg": jpeg, "quality": 90}
        rng = random.Random(5000 + k)
        data, _ = shapes.encode(shapes.render(objs, style, rng), style)
        with open(os.path.join(out, fn), "wb") as f:
            f.write(data)
        rows.append((fn, "Describe the picture.", shapes.caption(objs)))
        for task in ("colour", "shape", "count", "position"):
            q, a, _ = shapes.question(task, objs, rng)
            rows.append((fn, q, a))
    with open(os.path.join(out, "answers.tsv"), "w") as f:
        f.write("file\tquestion\tanswer\n")
        for r in rows:
            f.write("\t".join(r) + "\n")
    print("wrote %d pictures, %d questions to %s" % (len(SCENES), len(rows), out))


if __name__ == "__main__":
    main()
