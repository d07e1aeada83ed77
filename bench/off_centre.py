"""Does seeing the whole frame (3 crops) find held-out players placed off-centre in a wide frame?

    python bench/off_centre.py                      # exports/default.onnx, ../shared/data/corpus
    python bench/off_centre.py --scales 1.0,0.6,0.4 --threads 2 --json bench/off_centre.json

The corpus's photos are centred, so its held-out numbers cannot show what the default model's
3 crops (`tagger.crops` = 3) buy. This bench builds the frames that would: 16:9 composites of
398x224 (already the scan's short side of 224, so the scan does not rescale them), a background
taken from one held-out `NoInstrument` photo (scaled to cover 398x224, centre-cropped) with a
subject photo pasted at the LEFT edge, the RIGHT edge, and (the control) the CENTRE, scaled so its
height is 224*s (its width follows its aspect ratio, capped at 398), vertically centred.

Subjects are the held-out photos (test split: fold 0 of 5 by `group`, as `training/build_default.py`
holds it out; nothing of those groups trained or calibrated the model): every photo whose head class
is a tag of the model (players), and every `NoInstrument` photo (each on a background from a
different `NoInstrument` group, so no composite ever contains an instrument). A subject keeps one
background (a seeded rng picks it) for all its placements and scales, so rows differ only in where
and how large the subject is.

Resizing (subject and background) is PyAV's `VideoFrame.to_ndarray(width=, height=, format="rgb24")`,
swscale with PyAV's default (bilinear) interpolation: the call the scan's PyAV decoder makes. Each
composite is written as a JPEG with PyAV's image2 muxer (mjpeg, yuvj420p, default quality) and
scored as a scan scores it: `tagger.step.window_inputs(VideoJob.for_model(contract, path))` (a photo
is a one-frame video) and `LoadedModel.scores`, best window per file. Every input is scored twice
by the same model:

- (a) as shipped: the frame's 3 crops, the graph takes the best crop per frame;
- (b) centre only: all 3 crop slots replaced by crop 1 of each frame, which is the centre crop
  (`crop_origins` of a 398x224 frame puts crop 1 at x = 87 = `centre_crop`'s (398 - 224) // 2);
  the max over 3 identical crops is that crop, so this is exactly what a centre-crop model with
  the same backbone and head would say.

A file gets a tag where a label's score reaches `contract.threshold_for(label)`. Players: share
with their own label, share with a wrong label (any other tag). `NoInstrument`: share with any tag.
Controls scored the same two ways: the photos as they are ("photo") and the bare backgrounds.
About 3 minutes on 2 cores (996 files, each scored twice). Writes the table's counts and one line
per player file to `bench/off_centre.json`. Needs numpy, onnxruntime, PyAV, the tagger package and
`training.corpus` (no torch).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np

from tagger.decode import crop_origins
from tagger.model import LoadedModel, load_model
from tagger.step import VideoJob, window_inputs
from training.corpus import BACKGROUND, CorpusItem, read_manifest

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_MODEL = ROOT / "exports" / "default.onnx"
CORPUS = ROOT.parent / "shared" / "data" / "corpus"
FRAME_W, FRAME_H = 398, 224  # 16:9 at the scan's short side of 224
PLACEMENTS = ("left", "centre", "right")
CENTRE = 1  # the crop index that is the centre crop when crops = 3


@dataclass
class Scored:
    """One scored file: its subject, how it was built, and the tags of (a) 3 crops and (b) centre only."""

    subject: str  # corpus file name
    head_class: str
    placement: str  # left / centre / right, "photo" (as photographed) or "background" (bare)
    scale: float
    centre_share: float  # share of the subject's width inside the centre crop
    tags_3: dict[str, float]
    tags_c: dict[str, float]
    own_3: float  # the subject's own label's best score (players), else the best tag score
    own_c: float


def read_rgb(path: Path, width: int | None = None, height: int | None = None) -> np.ndarray:
    """The first frame of `path` as (H, W, 3) uint8, scaled by swscale to width x height if given."""
    with av.open(str(path)) as container:
        frame = next(container.decode(video=0))
        if width is None:
            width, height = frame.width, frame.height
        return frame.to_ndarray(width=width, height=height, format="rgb24")


def photo_size(path: Path) -> tuple[int, int]:
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        return stream.width, stream.height


def background(path: Path) -> np.ndarray:
    """`path` scaled to cover FRAME_W x FRAME_H (aspect kept) and centre-cropped to it."""
    w, h = photo_size(path)
    f = max(FRAME_W / w, FRAME_H / h)
    sw, sh = max(FRAME_W, round(w * f)), max(FRAME_H, round(h * f))
    image = read_rgb(path, sw, sh)
    top, left = (sh - FRAME_H) // 2, (sw - FRAME_W) // 2
    return image[top:top + FRAME_H, left:left + FRAME_W]


def subject(path: Path, scale: float) -> np.ndarray:
    """`path` scaled to height 224*scale (aspect kept; width capped at FRAME_W)."""
    w, h = photo_size(path)
    f = FRAME_H * scale / h
    if w * f > FRAME_W:
        f = FRAME_W / w
    return read_rgb(path, max(2, round(w * f)), max(2, round(h * f)))


def composite(back: np.ndarray, fore: np.ndarray, placement: str) -> tuple[np.ndarray, float]:
    """`fore` pasted on a copy of `back` at `placement`, and the share of its width in the centre crop."""
    h, w = fore.shape[:2]
    x = {"left": 0, "centre": (FRAME_W - w) // 2, "right": FRAME_W - w}[placement]
    y = (FRAME_H - h) // 2
    frame = back.copy()
    frame[y:y + h, x:x + w] = fore
    c0 = crop_origins(FRAME_H, FRAME_W, (224, 224), 3)[CENTRE][1]
    inside = max(0, min(x + w, c0 + 224) - max(x, c0))
    return frame, inside / w


def write_jpeg(path: Path, image: np.ndarray) -> None:
    """`image` (H, W, 3) uint8, H and W even, as a JPEG by PyAV's image2 muxer at default quality."""
    with av.open(str(path), "w", format="image2") as container:
        stream = container.add_stream("mjpeg")
        stream.width, stream.height, stream.pix_fmt = image.shape[1], image.shape[0], "yuvj420p"
        container.mux(stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="rgb24")))
        container.mux(stream.encode(None))


def centre_only(inputs: np.ndarray, crops: int) -> np.ndarray:
    """(W, T*C, H, W, 3) scan inputs with every crop slot of a frame replaced by its centre crop."""
    n, tc = inputs.shape[:2]
    frames = inputs.reshape(n, tc // crops, crops, *inputs.shape[2:])
    return np.repeat(frames[:, :, CENTRE:CENTRE + 1], crops, axis=2).reshape(inputs.shape)


def score_file(model: LoadedModel, path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Best-window scores (K,) of `path` as the scan feeds it: (a) 3 crops, (b) centre only."""
    c = model.contract
    inputs = window_inputs(VideoJob.for_model(c, path))
    n = len(inputs)
    scores = model.scores(np.concatenate([inputs, centre_only(inputs, c.crops)]))
    return scores[:n].max(axis=0), scores[n:].max(axis=0)


def tags_of(model: LoadedModel, best: np.ndarray) -> dict[str, float]:
    c = model.contract
    return {name: round(float(best[k]), 4) for k, name in enumerate(c.labels)
            if name in c.tag_labels and best[k] >= c.threshold_for(name)}


def summarise(rows: list[Scored]) -> list[dict]:
    """Per (kind, placement, scale): n, own-label and wrong-label shares (players), any-tag share."""
    groups: dict[tuple[str, str, float], list[Scored]] = {}
    for r in rows:
        kind = "NoInstrument" if r.head_class == BACKGROUND else "players"
        groups.setdefault((kind, r.placement, r.scale), []).append(r)
    out = []
    for (kind, placement, scale), rs in groups.items():
        entry = {"kind": kind, "placement": placement, "scale": scale, "n": len(rs),
                 "centre_share_mean": round(float(np.mean([r.centre_share for r in rs])), 3)}
        for mode, get in (("3crops", lambda r: r.tags_3), ("centre", lambda r: r.tags_c)):
            if kind == "players":
                entry[f"own_{mode}"] = sum(r.head_class in get(r) for r in rs)
                entry[f"wrong_{mode}"] = sum(bool(set(get(r)) - {r.head_class}) for r in rs)
            else:
                entry[f"any_{mode}"] = sum(bool(get(r)) for r in rs)
        out.append(entry)
    order = {"photo": 0, "background": 1, "left": 2, "centre": 3, "right": 4}
    return sorted(out, key=lambda e: (e["kind"] != "players", e["placement"] not in ("photo", "background"),
                                      -e["scale"], order[e["placement"]]))


def pct(k: int, n: int) -> str:
    return f"{100 * k / n:5.1f}%" if n else "    -"


def print_table(summary: list[dict]) -> None:
    print("\nplayers (held-out photos whose class is a tag)      (a) 3 crops      (b) centre only")
    print(f"{'placement':12s} {'scale':>5s} {'n':>4s} {'in ctr':>6s}   {'own':>6s} {'wrong':>6s}   {'own':>6s} {'wrong':>6s}")
    for e in summary:
        if e["kind"] == "players":
            scale = "-" if e["placement"] == "photo" else f"{e['scale']:.1f}"
            print(f"{e['placement']:12s} {scale:>5s} {e['n']:4d} {100 * e['centre_share_mean']:5.0f}%   "
                  f"{pct(e['own_3crops'], e['n'])} {pct(e['wrong_3crops'], e['n'])}   "
                  f"{pct(e['own_centre'], e['n'])} {pct(e['wrong_centre'], e['n'])}")
    print("\nNoInstrument (held-out photos on other NoInstrument backgrounds)   (a) 3 crops   (b) centre only")
    print(f"{'placement':12s} {'scale':>5s} {'n':>4s} {'in ctr':>6s}   {'any tag':>7s}   {'any tag':>7s}")
    for e in summary:
        if e["kind"] == "NoInstrument":
            scale = "-" if e["placement"] in ("photo", "background") else f"{e['scale']:.1f}"
            print(f"{e['placement']:12s} {scale:>5s} {e['n']:4d} {100 * e['centre_share_mean']:5.0f}%   "
                  f"{pct(e['any_3crops'], e['n']):>7s}   {pct(e['any_centre'], e['n']):>7s}")


def write_json(path: Path, head: dict, rows: list[Scored]) -> None:
    """`head`, then one line per player file and per tagged NoInstrument file (the rest only counted)."""
    columns = ["subject", "class", "placement", "scale", "centre_share", "score_3crops", "score_centre",
               "tags_3crops", "tags_centre"]
    kept = [r for r in rows if r.head_class != BACKGROUND or r.tags_3 or r.tags_c]
    lines = [json.dumps([r.subject, r.head_class, r.placement, r.scale, r.centre_share, r.own_3, r.own_c,
                         r.tags_3, r.tags_c]) for r in kept]
    head = {**head, "files_note": "players and any NoInstrument file with a tag; score = own label's best "
                                  "window score (NoInstrument: the best tag's)", "files_columns": columns}
    text = json.dumps(head, indent=1)[:-2] + ',\n "files": [\n  ' + ",\n  ".join(lines) + "\n ]\n}\n"
    json.loads(text)  # stays valid JSON
    path.write_text(text)


def _scales(text: str) -> list[float]:
    try:
        values = [float(part) for part in text.split(",")]
    except ValueError:
        values = []
    if not values or not all(0 < v <= 1 for v in values):
        raise argparse.ArgumentTypeError(f"{text!r} is not a comma-separated list of numbers in (0, 1], e.g. 1.0,0.6")
    return values


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, default=DEFAULT_MODEL)
    parser.add_argument("--corpus", type=Path, default=CORPUS)
    parser.add_argument("--scales", type=_scales, default=_scales("1.0,0.6,0.4"),
                        help="subject heights as shares of 224, comma-separated, each in (0, 1]")
    parser.add_argument("--seed", type=int, default=0, help="seeds the choice of backgrounds")
    parser.add_argument("--threads", type=int, default=2, help="onnxruntime intra-op threads")
    parser.add_argument("--json", type=Path, default=ROOT / "bench" / "off_centre.json")
    args = parser.parse_args(argv)
    scales = args.scales

    model = load_model(args.model, device="cpu", threads=args.threads)
    c = model.contract
    if c.crops != 3:
        print(f"{args.model} has tagger.crops = {c.crops}, not 3: this bench compares 3 crops with the centre one",
              file=sys.stderr)
        return 2
    origins = crop_origins(FRAME_H, FRAME_W, tuple(c.size), c.crops)
    assert tuple(c.size) == (224, 224) and c.resize == FRAME_H, (c.size, c.resize)
    assert origins[CENTRE] == (0, (FRAME_W - 224) // 2), origins  # crop 1 is the centre crop

    listed, missing = read_manifest(args.corpus)  # (items whose file exists, listed files that do not)
    held_out = [i for i in listed
                if i.in_test_split and i.kind == "image"]
    if missing:
        print(f"note: {len(missing)} files listed in the manifest are missing and left out", file=sys.stderr)
    players = [i for i in held_out if i.head_class in c.tag_labels]
    empties = [i for i in held_out if i.head_class == BACKGROUND]
    rng = np.random.default_rng(args.seed)
    backs: dict[str, CorpusItem] = {}
    for item in players + empties:
        choices = [b for b in empties if b.group != item.group]
        backs[item.path.name] = choices[rng.integers(len(choices))]
    print(f"{args.model.name}: crops {c.crops} at x = {[o[1] for o in origins]} of a {FRAME_W}x{FRAME_H} frame; "
          f"{len(players)} held-out player photos, {len(empties)} held-out NoInstrument photos; "
          f"scales {scales}; thresholds {sorted({c.threshold_for(t) for t in c.tag_labels})}", flush=True)

    rows: list[Scored] = []
    start = time.perf_counter()

    def add(item: CorpusItem, path: Path, placement: str, scale: float, share: float) -> None:
        best_3, best_c = score_file(model, path)
        own = c.labels.index(item.head_class) if item.head_class in c.tag_labels else None
        tagged = [k for k, name in enumerate(c.labels) if name in c.tag_labels]
        pick = (lambda b: float(b[own])) if own is not None else (lambda b: float(b[tagged].max()))
        rows.append(Scored(item.path.name, item.head_class, placement, scale, round(share, 3),
                           tags_of(model, best_3), tags_of(model, best_c),
                           round(pick(best_3), 4), round(pick(best_c), 4)))

    with tempfile.TemporaryDirectory(prefix="off_centre_") as tmp:
        tmpdir = Path(tmp)
        for item in empties:  # bare backgrounds, each once
            path = tmpdir / f"bg-{item.path.stem}.jpg"
            write_jpeg(path, background(item.path))
            add(item, path, "background", 0.0, 0.0)
        for i, item in enumerate(players + empties):
            add(item, item.path, "photo", 0.0, 1.0)
            back = background(backs[item.path.name].path)
            for scale in scales:
                fore = subject(item.path, scale)
                for placement in PLACEMENTS:
                    frame, share = composite(back, fore, placement)
                    path = tmpdir / f"{i:03d}-{placement}-{scale:.2f}.jpg"
                    write_jpeg(path, frame)
                    add(item, path, placement, scale, share)
                    path.unlink()
    seconds = time.perf_counter() - start

    summary = summarise(rows)
    print_table(summary)
    wrong = [r for r in rows if r.head_class != BACKGROUND and (set(r.tags_3) | set(r.tags_c)) - {r.head_class}]
    if wrong:
        print("\nplayer files with a wrong label: (a) 3 crops | (b) centre only")
    for r in wrong:
        print(f"  {r.subject[:30]:30s} {r.head_class:16s} {r.placement:6s} {r.scale:.1f}  "
              f"{r.tags_3 or '-'} | {r.tags_c or '-'}")
    print(f"\n{len(rows)} files scored twice in {seconds:.0f} s ({args.threads} onnxruntime threads); "
          f"'in ctr' = mean share of the subject's width inside the centre crop (x 87..311)")
    if args.json:
        write_json(args.json, {
            "model": str(args.model.relative_to(ROOT) if args.model.is_relative_to(ROOT) else args.model),
            "frame": [FRAME_W, FRAME_H], "crop_x": [o[1] for o in origins], "scales": scales, "seed": args.seed,
            "resize": "PyAV to_ndarray(width, height, format='rgb24'): swscale, PyAV's default (bilinear)",
            "thresholds": {t: c.threshold_for(t) for t in c.tag_labels},
            "seconds": round(seconds, 1),
            "summary": summary,
            "backgrounds": {name: item.path.name for name, item in backs.items()},
        }, rows)
    return 0


def run(argv: list[str] | None = None) -> int:
    """`main`, with the tagger's errors (a missing model, an unusable corpus) as one line and their exit code."""
    from tagger.errors import TaggerError

    try:
        return main(argv)
    except TaggerError as exc:
        print(f"Error: {exc}", file=sys.stderr)
        return exc.exit_code


if __name__ == "__main__":
    raise SystemExit(run())
