"""Draw the demo's example images procedurally (no third-party photos) and write examples.jsonl.

    python examples/make_examples.py        # rewrites examples/*.jpg and examples/examples.jsonl

Deterministic: the same files every time (fixed seeds, Pillow only).
"""
from __future__ import annotations

import json
import math
import random
from pathlib import Path

from PIL import Image, ImageDraw, ImageFilter

HERE = Path(__file__).resolve().parent


def stage(w: int = 640, h: int = 400) -> Image.Image:
    """A concert stage: dark hall, spotlight cones, a performer silhouette with a microphone, a crowd."""
    img = Image.new("RGB", (w, h), (12, 10, 28))
    light = Image.new("RGB", (w, h), (0, 0, 0))
    d = ImageDraw.Draw(light)
    for x0, colour in ((w * 0.2, (255, 80, 170)), (w * 0.5, (255, 240, 200)), (w * 0.8, (90, 160, 255))):
        d.polygon([(x0 - 12, 0), (x0 + 12, 0), (w * 0.5 + (x0 - w * 0.5) * 0.3 + 90, h * 0.78),
                   (w * 0.5 + (x0 - w * 0.5) * 0.3 - 90, h * 0.78)], fill=colour)
    light = light.filter(ImageFilter.GaussianBlur(18))
    img = Image.blend(img, light, 0.55)
    d = ImageDraw.Draw(img)
    d.rectangle((0, int(h * 0.72), w, int(h * 0.78)), fill=(60, 40, 30))  # stage edge
    cx, base = w // 2, int(h * 0.72)
    d.ellipse((cx - 16, base - 150, cx + 16, base - 118), fill=(8, 8, 12))  # head
    body = [(cx - 30, base - 115), (cx + 30, base - 115), (cx + 22, base - 40), (cx - 22, base - 40)]
    d.polygon(body, fill=(8, 8, 12))
    d.line([(cx - 14, base - 40), (cx - 22, base)], fill=(8, 8, 12), width=12)
    d.line([(cx + 14, base - 40), (cx + 22, base)], fill=(8, 8, 12), width=12)
    d.line([(cx + 28, base - 110), (cx + 50, base - 135)], fill=(8, 8, 12), width=8)  # arm to the mic
    d.line([(cx + 56, base - 140), (cx + 56, base)], fill=(70, 70, 80), width=3)  # mic stand
    rng = random.Random(1)
    for _ in range(70):  # crowd heads
        x, y = rng.randint(0, w), rng.randint(int(h * 0.8), h + 10)
        r = rng.randint(14, 24)
        d.ellipse((x - r, y - r, x + r, y + r), fill=(rng.randint(0, 25),) * 3)
    return img


def city_map(w: int = 640, h: int = 420) -> Image.Image:
    """A street map: blocks, a river with bridges, a park and a location pin."""
    img = Image.new("RGB", (w, h), (236, 232, 222))
    d = ImageDraw.Draw(img)
    rng = random.Random(2)
    for x in range(0, w, 64):
        d.line([(x + rng.randint(-6, 6), 0), (x + rng.randint(-6, 6), h)], fill=(255, 255, 255), width=7)
    for y in range(0, h, 56):
        d.line([(0, y), (w, y + rng.randint(-10, 10))], fill=(255, 255, 255), width=7)
    d.line([(0, h * 0.35), (w, h * 0.65)], fill=(250, 200, 90), width=12)  # avenue
    river = [(x, h * 0.55 + 40 * math.sin(x / 70)) for x in range(0, w + 10, 10)]
    d.line(river, fill=(120, 170, 230), width=34)
    for bx in (150, 330, 520):
        by = h * 0.55 + 40 * math.sin(bx / 70)
        d.rectangle((bx - 8, by - 24, bx + 8, by + 24), fill=(200, 200, 200))
    d.rounded_rectangle((40, 40, 180, 130), radius=12, fill=(160, 210, 140))  # park
    px, py = 430, 150
    d.ellipse((px - 20, py - 20, px + 20, py + 20), fill=(220, 50, 50))
    d.polygon([(px - 17, py + 10), (px + 17, py + 10), (px, py + 48)], fill=(220, 50, 50))
    d.ellipse((px - 7, py - 7, px + 7, py + 7), fill=(255, 255, 255))
    return img


def emblem(w: int = 420, h: int = 420) -> Image.Image:
    """A logo-like emblem: a ring, a shield, a star and a ribbon, on a plain background."""
    img = Image.new("RGB", (w, h), (245, 245, 240))
    d = ImageDraw.Draw(img)
    cx, cy = w // 2, h // 2 - 10
    d.ellipse((cx - 170, cy - 170, cx + 170, cy + 170), fill=(20, 60, 130))
    d.ellipse((cx - 150, cy - 150, cx + 150, cy + 150), fill=(245, 245, 240))
    d.polygon([(cx - 90, cy - 100), (cx + 90, cy - 100), (cx + 90, cy + 10), (cx, cy + 120), (cx - 90, cy + 10)],
              fill=(200, 30, 45))
    star = [(cx + 55 * math.cos(math.pi / 2 + k * math.pi / 5) * (1 if k % 2 == 0 else 0.42),
             cy - 20 - 55 * math.sin(math.pi / 2 + k * math.pi / 5) * (1 if k % 2 == 0 else 0.42)) for k in range(10)]
    d.polygon(star, fill=(250, 210, 60))
    d.polygon([(cx - 200, cy + 120), (cx + 200, cy + 120), (cx + 180, cy + 170), (cx - 180, cy + 170)],
              fill=(20, 60, 130))
    for i in range(7):  # stylised lettering on the ribbon
        x = cx - 150 + i * 45
        d.rectangle((x, cy + 132, x + 28, cy + 158), fill=(245, 245, 240))
    return img


def stadium(w: int = 360, h: int = 480) -> Image.Image:
    """A portrait view of a football pitch with stands and floodlights (tests a tall aspect ratio)."""
    img = Image.new("RGB", (w, h), (30, 30, 40))
    d = ImageDraw.Draw(img)
    d.polygon([(40, 170), (w - 40, 170), (w, h), (0, h)], fill=(40, 140, 60))
    for k in range(6):
        y = 170 + k * (h - 170) / 6
        if k % 2:
            d.polygon([(40 - 40 * k / 6, y), (w - 40 + 40 * k / 6, y), (w - 40 + 40 * (k + 1) / 6, y + (h - 170) / 6),
                       (40 - 40 * (k + 1) / 6, y + (h - 170) / 6)], fill=(50, 155, 70))
    d.line([(w / 2 - 120, 330), (w / 2 + 120, 330)], fill="white", width=3)
    d.ellipse((w / 2 - 50, 295, w / 2 + 50, 365), outline="white", width=3)
    d.rectangle((w / 2 - 60, 172, w / 2 + 60, 200), outline="white", width=3)
    rng = random.Random(3)
    for _ in range(500):  # crowd in the stands
        x, y = rng.randint(0, w), rng.randint(70, 165)
        d.point((x, y), fill=rng.choice([(200, 30, 40), (240, 240, 240), (30, 60, 160)]))
    for x in (30, w - 30):
        d.line([(x, 10), (x, 80)], fill=(150, 150, 150), width=4)
        d.rectangle((x - 22, 0, x + 22, 18), fill=(255, 255, 210))
    return img


# (file, drawing, tweet). No caption overrides: only the `given` caption source reads one, and no shipped model does.
EXAMPLES = [
    ("stage.jpg", stage, "Taylor Swift brought the house down at Madison Square Garden last night ! #concert"),
    ("map.jpg", city_map, "Road closures near the Thames in London this weekend , plan ahead"),
    ("emblem.jpg", emblem, "RT @sportsdesk : Arsenal unveil new crest ahead of the Premier League season"),
    ("stadium.jpg", stadium, "Messi scores twice as Barcelona beat Real Madrid at Camp Nou"),
]


def main() -> None:
    rows = []
    for name, draw, text in EXAMPLES:
        draw().save(HERE / name, quality=88)
        rows.append({"image": name, "text": text})
    (HERE / "examples.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    print(f"wrote {len(rows)} examples to {HERE}")


if __name__ == "__main__":
    main()
