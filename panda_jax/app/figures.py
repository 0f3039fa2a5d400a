"""Pictures of factors and edits: numpy, PIL and matplotlib only (no generator, no JAX needed).

Images come in as NHWC float in [-1, 1] (the generators' output) or as ``uint8``; maps (parts,
saliency) as ``[K, h, w]`` or ``[N, h, w, K]`` arrays of any scale. Functions named
``*_image`` return ``uint8`` arrays; ``save_*`` functions write files atomically (a temporary
sibling, then a rename) and return the path.

- :func:`parts_grid` - each part min-max normalised, in grey, in a labelled row (the original's
  ``plot_masks``).
- :func:`overlay_parts` / :func:`save_overlays` - parts in colour over sample images (the
  original's ``plot_colours``), with a legend.
- :func:`heatmap_image`, :func:`mask_image`, :func:`cutout_image` - saliency heat maps,
  thresholded masks, background removal.
- :func:`save_labelled_grid` - edit strips and grids with row and column labels.
- :func:`save_gif` - an animated alpha sweep.
- :func:`save_loss_curve` - the loss per step.
- :func:`write_report` - a self-contained HTML page linking the figures.
"""

from __future__ import annotations

import html
from typing import Sequence

import numpy as np
from PIL import Image

from .._io import atomic_write

# Distinct colours for parts (tab10 then the paler tab20 halves, as 0..255 RGB).
_PALETTE = np.array(
    [
        [31, 119, 180], [255, 127, 14], [44, 160, 44], [214, 39, 40], [148, 103, 189],
        [140, 86, 75], [227, 119, 194], [127, 127, 127], [188, 189, 34], [23, 190, 207],
        [174, 199, 232], [255, 187, 120], [152, 223, 138], [255, 152, 150], [197, 176, 213],
        [196, 156, 148], [247, 182, 210], [199, 199, 199], [219, 219, 141], [158, 218, 229],
    ],
    np.uint8,
)


# ---- basics --------------------------------------------------------------------------------


def to_uint8(images) -> np.ndarray:
    """``[-1, 1]`` float images to ``uint8`` as ``(x + 1) * 127.5 + 0.5``, clipped; ``uint8``
    input is returned as is. One grey channel is repeated to RGB."""
    x = np.asarray(images)
    if x.dtype != np.uint8:
        x = np.clip((x.astype(np.float32) + 1.0) * 127.5 + 0.5, 0, 255).astype(np.uint8)
    if x.shape[-1] == 1:
        x = np.repeat(x, 3, axis=-1)
    return x


def palette(n: int, seed: int | None = None) -> np.ndarray:
    """``n`` RGB colours ``[n, 3]`` (uint8): a fixed distinct list, random past it (or with ``seed``)."""
    if seed is None and n <= len(_PALETTE):
        return _PALETTE[:n].copy()
    rng = np.random.default_rng(0 if seed is None else seed)
    extra = rng.integers(0, 256, (max(n - (0 if seed is not None else len(_PALETTE)), 0), 3), dtype=np.uint8)
    return extra[:n] if seed is not None else np.concatenate([_PALETTE, extra])[:n]


def normalise(maps, axes=(-2, -1)) -> np.ndarray:
    """Min-max normalise to [0, 1] over ``axes`` (constant maps become 0)."""
    m = np.asarray(maps, np.float32)
    lo, hi = m.min(axis=axes, keepdims=True), m.max(axis=axes, keepdims=True)
    return (m - lo) / np.where(hi > lo, hi - lo, 1.0)


def resize_map(m, size: tuple[int, int], nearest: bool = False) -> np.ndarray:
    """A float map ``[h, w]`` resized to ``size = (H, W)`` (bilinear, or nearest)."""
    H, W = size
    im = Image.fromarray(np.asarray(m, np.float32), mode="F")
    return np.asarray(im.resize((W, H), Image.NEAREST if nearest else Image.BILINEAR), np.float32)


def resize_image(img: np.ndarray, size: tuple[int, int], nearest: bool = True) -> np.ndarray:
    """A ``uint8`` image ``[h, w, 3]`` resized to ``size = (H, W)``."""
    H, W = size
    if img.shape[:2] == (H, W):
        return img
    return np.asarray(Image.fromarray(img).resize((W, H), Image.NEAREST if nearest else Image.BICUBIC))


def tile(images: Sequence[np.ndarray], cols: int, pad: int = 2, fill: int = 255) -> np.ndarray:
    """``uint8`` images of one shape ``[h, w, 3]`` tiled in rows of ``cols``."""
    images = [np.asarray(i) for i in images]
    if not images:
        raise ValueError("no images to tile")
    h, w = images[0].shape[:2]
    rows = -(-len(images) // cols)
    out = np.full((rows * h + (rows - 1) * pad, cols * w + (cols - 1) * pad, 3), fill, np.uint8)
    for k, im in enumerate(images):
        r, c = divmod(k, cols)
        out[r * (h + pad): r * (h + pad) + h, c * (w + pad): c * (w + pad) + w] = im
    return out


# ---- image files ---------------------------------------------------------------------------


def save_image(path: str, img: np.ndarray, scale: int = 1) -> str:
    """Write a ``uint8`` ``[H, W, 3]`` (or ``[H, W]``) image as PNG, optionally enlarged ``scale``x."""
    img = np.asarray(img)
    if scale > 1:
        img = np.repeat(np.repeat(img, scale, axis=0), scale, axis=1)
    return atomic_write(path, lambda tmp: Image.fromarray(img).save(tmp, format="PNG"))


def _save_figure(path: str, fig) -> str:
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig)
    return atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", bbox_inches="tight", pad_inches=0.05, dpi=100))


def _figure(width: float, height: float):
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height))


# ---- parts ---------------------------------------------------------------------------------


def parts_grid(part_maps, size: int = 96, cols: int | None = None) -> np.ndarray:
    """Parts ``[R_S, h, w]`` each min-max normalised, grey, enlarged (nearest) to ``size``,
    tiled (``uint8``)."""
    P = normalise(part_maps)
    tiles = []
    for p in P:
        g = (resize_map(p, (size, size), nearest=True) * 255 + 0.5).clip(0, 255).astype(np.uint8)
        tiles.append(np.repeat(g[:, :, None], 3, axis=2))
    return tile(tiles, cols or len(tiles))


def save_parts_grid(path: str, part_maps, cols: int | None = None, size: float = 1.4) -> str:
    """The parts as a labelled grid (``Part k`` titles) of grey maps."""
    P = normalise(part_maps)
    n = len(P)
    cols = min(cols or n, n)
    rows = -(-n // cols)
    fig = _figure(size * cols, size * rows + 0.3)
    for k, p in enumerate(P):
        ax = fig.add_subplot(rows, cols, k + 1)
        ax.imshow(p, cmap="gray", vmin=0, vmax=1, interpolation="nearest")
        ax.set_title(f"Part {k}", fontsize=9)
        ax.axis("off")
    return _save_figure(path, fig)


def overlay_parts(image, part_maps, alpha: float = 0.7, colours=None, size: int | None = None,
                  mode: str = "argmax") -> np.ndarray:
    """Parts ``[R_S, h, w]`` painted over one image in colour (``uint8 [H, W, 3]``).

    Each part is min-max normalised and upsampled (bilinear). ``mode="argmax"``: every pixel
    takes the colour of its strongest part, at opacity ``alpha`` times that part's value (a
    clean segmentation-like view). ``mode="layers"``: the parts are laid over the image in
    turn, each at opacity ``alpha * part`` (as the original's ``plot_colours``).
    """
    img = to_uint8(image)
    if size:
        img = resize_image(img, (size, size), nearest=False)
    H, W = img.shape[:2]
    P = np.stack([np.clip(resize_map(p, (H, W)), 0, 1) for p in normalise(part_maps)])
    cols = (palette(len(P)) if colours is None else np.asarray(colours, np.uint8)).astype(np.float32)
    out = img.astype(np.float32)
    if mode == "argmax":
        k = np.argmax(P, axis=0)
        a = alpha * np.max(P, axis=0)[:, :, None]
        out = out * (1 - a) + a * cols[k]
    elif mode == "layers":
        for p, c in zip(P, cols):
            a = alpha * p[:, :, None]
            out = out * (1 - a) + a * c[None, None, :]
    else:
        raise ValueError(f"mode must be 'argmax' or 'layers'; got {mode!r}")
    return (out + 0.5).clip(0, 255).astype(np.uint8)


def save_overlays(path: str, images, part_maps, alpha: float = 0.7, titles: Sequence[str] | None = None,
                  size: int = 128, cols: int | None = None, mode: str = "argmax") -> str:
    """Colour overlays of the parts on several images (:func:`overlay_parts`), with a legend.

    ``part_maps``: ``[R_S, h, w]`` (the same parts on every image) or ``[N, R_S, h, w]`` (per
    image, e.g. refined parts).
    """
    from matplotlib.patches import Patch

    imgs = to_uint8(images)
    P = np.asarray(part_maps, np.float32)
    if P.ndim == 3:
        P = np.broadcast_to(P[None], (len(imgs),) + P.shape)
    R = P.shape[1]
    cols_ = palette(R)
    n = len(imgs)
    cols = min(cols or n, n)
    rows = -(-n // cols)
    fig = _figure(1.6 * cols + 1.4, 1.6 * rows + (0.25 if titles else 0))
    for i in range(n):
        ax = fig.add_subplot(rows, cols, i + 1)
        ax.imshow(overlay_parts(imgs[i], P[i], alpha, cols_, size=size, mode=mode))
        if titles:
            ax.set_title(titles[i], fontsize=8)
        ax.axis("off")
    handles = [Patch(color=c / 255.0, label=f"Part {k}") for k, c in enumerate(cols_)]
    fig.subplots_adjust(left=0.01, right=0.84, wspace=0.05, hspace=0.15)
    fig.legend(handles=handles, loc="center left", bbox_to_anchor=(0.85, 0.5), fontsize=8, title="Parts",
               title_fontsize=8, frameon=False)
    return _save_figure(path, fig)


# ---- saliency, masks, background -----------------------------------------------------------


def _colormap(name: str):
    import matplotlib

    return matplotlib.colormaps[name]


def heatmap_image(image, m, alpha: float = 0.55, cmap: str = "jet", vmin=None, vmax=None) -> np.ndarray:
    """A saliency map ``[h, w]`` as a colour heat map over ``image`` (``uint8``); the map is
    scaled to [0, 1] by ``vmin``/``vmax`` (default its own min and max)."""
    img = to_uint8(image)
    H, W = img.shape[:2]
    m = resize_map(m, (H, W))
    lo = m.min() if vmin is None else vmin
    hi = m.max() if vmax is None else vmax
    t = np.clip((m - lo) / (hi - lo if hi > lo else 1.0), 0, 1)
    heat = _colormap(cmap)(t)[:, :, :3] * 255.0
    return (img * (1 - alpha) + heat * alpha + 0.5).clip(0, 255).astype(np.uint8)


def mask_image(image, mask, colour=(255, 40, 40), alpha: float = 0.5, dim: float = 0.35) -> np.ndarray:
    """A boolean mask ``[h, w]`` (any resolution; nearest) shown on ``image``: outside dimmed,
    inside tinted with ``colour``."""
    img = to_uint8(image).astype(np.float32)
    H, W = img.shape[:2]
    m = resize_map(np.asarray(mask, np.float32), (H, W), nearest=True)[:, :, None] >= 0.5
    inside = img * (1 - alpha) + np.asarray(colour, np.float32) * alpha
    outside = img * dim
    return (np.where(m, inside, outside) + 0.5).clip(0, 255).astype(np.uint8)


def cutout_image(image, keep, fill=(255, 255, 255)) -> np.ndarray:
    """``image`` with the pixels where ``keep`` (``[h, w]`` bool, any resolution; nearest) is
    false replaced by ``fill``: background removal for display."""
    img = to_uint8(image)
    H, W = img.shape[:2]
    k = resize_map(np.asarray(keep, np.float32), (H, W), nearest=True)[:, :, None] >= 0.5
    return np.where(k, img, np.asarray(fill, np.uint8)[None, None, :]).astype(np.uint8)


# ---- labelled grids, GIFs, curves ---------------------------------------------------------


def save_labelled_grid(path: str, cells, row_labels: Sequence[str] = (), col_labels: Sequence[str] = (),
                       cell: float = 1.2, title: str | None = None, fontsize: int = 8) -> str:
    """A grid of ``uint8`` images ``cells[r][c]`` (``None`` leaves a blank) with labels: edit
    strips (one row) and edit grids."""
    rows = len(cells)
    cols = max(len(r) for r in cells)
    head = (0.3 if col_labels else 0.05) + (0.3 if title else 0)  # inches above the grid
    height = cell * rows + head
    fig = _figure(cell * cols + (1.0 if row_labels else 0), height)
    if title:
        fig.suptitle(title, fontsize=fontsize + 1, y=1 - 0.05 / height, va="top")
    for r in range(rows):
        for c in range(cols):
            ax = fig.add_subplot(rows, cols, r * cols + c + 1)
            ax.set_xticks([])
            ax.set_yticks([])
            for s in ax.spines.values():
                s.set_visible(False)
            im = cells[r][c] if c < len(cells[r]) else None
            if im is not None:
                ax.imshow(to_uint8(im))
            if r == 0 and c < len(col_labels):
                ax.set_title(col_labels[c], fontsize=fontsize)
            if c == 0 and r < len(row_labels):
                ax.set_ylabel(row_labels[r], fontsize=fontsize, rotation=0, ha="right", va="center")
    fig.subplots_adjust(left=0.0, right=1.0, bottom=0.0, top=1 - head / height, wspace=0.04, hspace=0.08)
    return _save_figure(path, fig)


def save_gif(path: str, frames, duration_ms: int = 80, boomerang: bool = True, scale: int = 1) -> str:
    """An animated GIF of ``uint8`` frames ``[T, H, W, 3]`` (or [-1, 1] floats), looping;
    ``boomerang`` plays it forwards then backwards."""
    fr = [to_uint8(f) for f in frames]
    if scale > 1:
        fr = [np.repeat(np.repeat(f, scale, axis=0), scale, axis=1) for f in fr]
    if boomerang and len(fr) > 2:
        fr = fr + fr[-2:0:-1]
    ims = [Image.fromarray(f) for f in fr]

    def write(tmp):
        ims[0].save(tmp, format="GIF", save_all=True, append_images=ims[1:], duration=duration_ms, loop=0)

    return atomic_write(path, write)


def save_loss_curve(path: str, losses, title: str = "loss", ylabel: str = "summed loss") -> str:
    """The loss per step (log scale where positive)."""
    y = np.asarray(losses, np.float64)
    fig = _figure(5.0, 3.0)
    ax = fig.add_subplot(1, 1, 1)
    ax.plot(np.arange(len(y)), y, lw=1.5)
    if len(y) and np.all(y > 0):
        ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    return _save_figure(path, fig)


# ---- HTML report ---------------------------------------------------------------------------


def _table(rows: Sequence[Sequence], header: Sequence[str] | None) -> str:
    out = ["<table>"]
    if header:
        out.append("<tr>" + "".join(f"<th>{html.escape(str(h))}</th>" for h in header) + "</tr>")
    for r in rows:
        out.append("<tr>" + "".join(f"<td>{html.escape(str(v))}</td>" for v in r) + "</tr>")
    out.append("</table>")
    return "\n".join(out)


def write_report(path: str, title: str, sections: Sequence[dict]) -> str:
    """A self-contained HTML page. Each section is a dict with optional keys ``heading``,
    ``text`` (paragraph, escaped), ``code`` (preformatted), ``images`` (list of
    ``(relative path, caption)``), ``table`` (rows) with ``header``. Image paths are written
    as given (relative to the page)."""
    css = (
        "body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}"
        "figure{display:inline-block;margin:0 1em 1em 0;vertical-align:top}"
        "figcaption{font-size:.85em;color:#555;max-width:600px}"
        "img{max-width:100%}"
        "table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #ccc;padding:.2em .6em;"
        "font-size:.9em;text-align:right}th{background:#f4f4f4}"
        "pre{background:#f6f6f6;padding:.6em;overflow-x:auto}"
    )
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{html.escape(title)}</title><style>{css}</style></head><body>",
        f"<h1>{html.escape(title)}</h1>",
    ]
    for s in sections:
        if s.get("heading"):
            parts.append(f"<h2>{html.escape(s['heading'])}</h2>")
        if s.get("text"):
            parts.append(f"<p>{html.escape(s['text'])}</p>")
        if s.get("code"):
            parts.append(f"<pre><code>{html.escape(s['code'])}</code></pre>")
        for src, caption in s.get("images", ()):
            parts.append(
                f'<figure><a href="{html.escape(src)}"><img src="{html.escape(src)}" alt="{html.escape(caption)}"></a>'
                f"<figcaption>{html.escape(caption)}</figcaption></figure>"
            )
        if s.get("table"):
            parts.append(_table(s["table"], s.get("header")))
        for src, caption in s.get("links", ()):
            parts.append(f'<p><a href="{html.escape(src)}">{html.escape(caption)}</a></p>')
    parts.append("</body></html>")
    text = "\n".join(parts) + "\n"

    def write(tmp):
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)

    return atomic_write(path, write)
