"""Write assets/icon.png, the browser tab icon (bundled, so nothing is fetched at run time):
`python assets/make_icon.py`. Deterministic: two arrows pressing a block, drawn with Pillow."""
from pathlib import Path

from PIL import Image, ImageDraw

SIZE = 64
OUT = Path(__file__).resolve().parent / "icon.png"


def draw() -> Image.Image:
    img = Image.new("RGBA", (SIZE, SIZE), (0, 0, 0, 0))
    d = ImageDraw.Draw(img)
    d.rounded_rectangle((4, 4, SIZE - 5, SIZE - 5), radius=12, fill=(255, 75, 75, 255))  # Streamlit red
    d.rectangle((24, 14, 40, 50), fill=(255, 255, 255, 255))                             # the squeezed block
    for x0, x1 in ((8, 20), (SIZE - 9, SIZE - 21)):                                      # arrows pressing in
        d.polygon([(x0, 22), (x1, 32), (x0, 42)], fill=(255, 255, 255, 255))
    return img


if __name__ == "__main__":
    draw().save(OUT, optimize=True)
    print(f"wrote {OUT}")
