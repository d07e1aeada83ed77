"""The gate for a new default model: scan held-out real videos with it and with the model it replaces.

    python bench/eval_default.py                                 # exports/default.onnx against the previous default
    python bench/eval_default.py --model new=runs/x.onnx:runs/x_audio.onnx --model old=exports/default.onnx
    python bench/eval_default.py --split all --json out.json     # every labelled video, not only the test groups

Each model (`NAME=VISION[:SOUND]`) scans the videos with `tagger scan` itself (the library call:
discovery, decoding, windows, both streams, fusion, segments), into a database of its own under
`runs/eval/`, so what is measured is what a user gets. A video is tagged with a label when the scan
stored a segment of it. Per label, side by side: the held-out videos showing it, how many each
model tagged with it, and how many videos each tagged with it wrongly (a label a video neither
teaches nor forbids, such as guitar on a ukulele, counts neither way; see `training/tags.py`).

The videos: the video corpus (`training/corpus_videos.tsv`, files under `--root`), the videos of
`../shared/data/corpus` and the shared clips. `--split test` (the default) keeps the test groups
only (fold 0 of 5 by split group: nothing of them trained, calibrated or chose anything); the
shared clips are always held out. A video's truth is the union of its manifest rows.

The gate: the first model passes against each other one when no label with 3 or more held-out
videos has a lower recall or more wrong tags with it. A comparison with nothing in it is refused,
not passed: every held-out video must scan (none failed, every one stored as scanned), and every
model must tag at least one of them. Exit 0 when it passes, 1 when it does not, 2 for a usage
error, 3 when the measurement was refused.
"""

from __future__ import annotations

import argparse
import csv
import json
import sqlite3
import sys
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
EVAL_DIR = ROOT / "runs" / "eval"
PREVIOUS = EVAL_DIR / "v2.onnx"  # the default this one replaces (git show 1e9d463:exports/default.onnx)
MIN_VIDEOS = 3  # labels with fewer held-out videos are shown, not gated


class Unmeasured(Exception):
    """The scans behind a comparison measured nothing trustworthy: a video failed or was not stored,
    or a model tagged none of the videos. Its text is one line for the user."""


@dataclass(frozen=True)
class Labelled:
    """One held-out video file and what it shows, per tag."""

    path: Path
    positives: frozenset[str]
    ignored: frozenset[str]
    background: bool  # NoInstrument only


def labelled_videos(manifest: Path, root: Path, split: str) -> list[Labelled]:
    """Every labelled video of the corpora (see the module docstring), one entry per file."""
    import dataclasses

    from training.corpus import CorpusItem, read_manifest, split_groups
    from training.tags import IGNORED_BY, tag_of

    items: list[CorpusItem] = read_manifest(root, manifest)[0] + read_manifest(SHARED / "corpus")[0]
    items = [i for i in items if i.kind == "video"]
    with (SHARED / "MANIFEST.tsv").open(newline="", encoding="utf-8") as handle:
        for row in csv.DictReader(handle, delimiter="\t"):
            if row["label"] != "broken":
                label = "NoInstrument" if row["label"] == "other" else row["label"]
                items.append(CorpusItem(SHARED / row["file"], label, "video", "shared:" + row["file"], "",
                                        row["sha256"], "", split_group="shared"))
    groups = split_groups(items)
    items = [dataclasses.replace(i, split_group=groups[i.path]) for i in items]
    by_file: dict[Path, list[CorpusItem]] = {}
    for item in items:
        if split == "all" or item.split_group == "shared" or item.in_test_split:
            by_file.setdefault(item.path, []).append(item)
    found = []
    for path, rows in sorted(by_file.items()):
        shown = {tag_of(name) for row in rows for name in (row.label, *row.also) if name != "NoInstrument"}
        ignored = {tag for row in rows for name in (row.label, *row.also) for tag in IGNORED_BY.get(name, ())}
        found.append(Labelled(path, frozenset(shown), frozenset(ignored - shown), not shown))
    return found


def scan_tags(name: str, vision: Path, sound: Path | None, videos: list[Labelled]) -> dict[Path, set[str]]:
    """path -> the labels `tagger scan` stored segments of, with this vision and sound model."""
    from tagger.config import ScanSettings
    from tagger.model import file_sha256
    from tagger.pipeline import scan

    EVAL_DIR.mkdir(parents=True, exist_ok=True)
    key = file_sha256(vision)[:12] + (f"-{file_sha256(sound)[:12]}" if sound else "")
    db = EVAL_DIR / f"{name}-{key}.db"
    settings = ScanSettings(db=str(db), model=str(vision), audio_model=str(sound) if sound else None,
                            streams="both" if sound else "video")
    missing = [v.path for v in videos if not v.path.is_file()]
    if missing:
        raise Unmeasured(f"{name}: {len(missing)} of {len(videos)} held-out videos are not on disk "
                         f"(first: {missing[0]}): rebuild the corpus with python -m training.video_corpus build DIR")
    summary = scan([str(v.path) for v in videos], settings)  # a re-run scans only what is not stored yet
    if summary.failed:
        first = summary.failed[0]
        raise Unmeasured(f"{name}: {len(summary.failed)} of {len(videos)} held-out videos failed to scan "
                         f"(first: {first.path}: {first.reason}); nothing is compared until every one scans")
    tags: dict[Path, set[str]] = {v.path: set() for v in videos}
    with sqlite3.connect(db) as conn:
        stored = {Path(path) for path, in conn.execute("select path from videos where status = 'ok'")}
        for path, label in conn.execute("select v.path, s.label from segments s join videos v on v.id = s.video_id"):
            if Path(path) in tags:
                tags[Path(path)].add(label)
    unscanned = [path for path in tags if path not in stored]
    if unscanned:
        raise Unmeasured(f"{name}: {len(unscanned)} of {len(videos)} held-out videos are not stored as scanned in "
                         f"{db} (first: {unscanned[0]}); delete that database and run again")
    if not any(tags.values()):
        raise Unmeasured(f"{name}: tagged none of the {len(videos)} held-out videos, so nothing was measured; "
                         f"scan one of them with tagger scan --model {vision} to see why")
    return tags


def label_table(videos: list[Labelled], tags: dict[Path, set[str]]) -> dict:
    """Per label: held-out videos showing it, tagged with it, tagged with it wrongly; and totals."""
    labels = sorted({t for v in videos for t in v.positives} | {t for got in tags.values() for t in got})
    table = {}
    for label in labels:
        shows = [v for v in videos if label in v.positives]
        wrong = [v for v in videos if label in tags[v.path] and label not in v.positives | v.ignored]
        table[label] = {"videos": len(shows), "tagged": sum(label in tags[v.path] for v in shows),
                        "wrong": len(wrong), "wrong_on": [v.path.name for v in wrong][:10]}
    players = [v for v in videos if v.positives]
    return {"labels": table, "videos": len(videos), "instrument_videos": len(players),
            "instrument_videos_tagged": sum(bool(tags[v.path] & v.positives) for v in players),
            "videos_with_a_wrong_tag": sum(bool(tags[v.path] - v.positives - v.ignored) for v in videos),
            "no_instrument_videos": sum(v.background for v in videos),
            "no_instrument_videos_tagged": sum(bool(tags[v.path]) for v in videos if v.background)}


def gate(new: dict, old: dict) -> list[str]:
    """The labels (3 or more held-out videos) where `new` is worse than `old`, each as one line."""
    worse = []
    for label, row in new["labels"].items():
        before = old["labels"].get(label, {"tagged": 0, "wrong": 0, "videos": row["videos"]})
        if row["videos"] < MIN_VIDEOS:
            continue
        if row["tagged"] < before["tagged"]:
            worse.append(f"{label}: tagged {row['tagged']} of {row['videos']}, the other {before['tagged']}")
        if row["wrong"] > before["wrong"]:
            worse.append(f"{label}: {row['wrong']} wrong tags, the other {before['wrong']}")
    return worse


def format_tables(names: list[str], tables: list[dict]) -> str:
    """The models' tables side by side, one label a line."""
    head = f"{'label':<22} {'videos':>6}  " + "  ".join(f"{n[:14]:>14}" for n in names)
    lines = [head, f"{'':<22} {'':>6}  " + "  ".join(f"{'tagged wrong':>14}" for _ in names)]
    for label in sorted({label for t in tables for label in t["labels"]}):
        rows = [t["labels"].get(label, {"videos": 0, "tagged": 0, "wrong": 0}) for t in tables]
        lines.append(f"{label:<22} {rows[0]['videos']:>6}  " +
                     "  ".join(f"{r['tagged']:>7} {r['wrong']:>6}" for r in rows))
    for key, text in (("instrument_videos_tagged", "instrument videos tagged with their label"),
                      ("videos_with_a_wrong_tag", "videos with a wrong tag"),
                      ("no_instrument_videos_tagged", "NoInstrument videos with a tag")):
        total = {"instrument_videos_tagged": "instrument_videos", "videos_with_a_wrong_tag": "videos",
                 "no_instrument_videos_tagged": "no_instrument_videos"}[key]
        lines.append(f"{text}: " + ", ".join(f"{n} {t[key]} of {t[total]}" for n, t in zip(names, tables)))
    return "\n".join(lines)


def _model(text: str) -> tuple[str, Path, Path | None]:
    name, _, files = text.partition("=")
    vision, _, sound = files.partition(":")
    if not name or not vision:
        raise argparse.ArgumentTypeError(f"--model {text!r}: give NAME=VISION.onnx[:SOUND.onnx]")
    return name, Path(vision), Path(sound) if sound else None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python bench/eval_default.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", action="append", type=_model, metavar="NAME=VISION[:SOUND]",
                        help="a model to scan with (repeatable; the first is gated against the others) "
                             "[default: new=exports/default.onnx, previous=runs/eval/v2.onnx]")
    parser.add_argument("--manifest", type=Path, default=ROOT / "training" / "corpus_videos.tsv")
    parser.add_argument("--root", type=Path, default=Path("/work/videocorpus"), help="the video corpus folder")
    parser.add_argument("--split", choices=("test", "all"), default="test")
    parser.add_argument("--json", type=Path, help="also write the tables here")
    args = parser.parse_args(argv)
    models = args.model or [("new", ROOT / "exports" / "default.onnx", ROOT / "exports" / "default_audio.onnx"),
                            ("previous", PREVIOUS, EVAL_DIR / "v2_musicnn.onnx")]
    if not args.manifest.is_file():
        print(f"Error: no manifest at {args.manifest}: pass --manifest FILE", file=sys.stderr)
        return 2
    for name, vision, sound in models:
        for path in filter(None, (vision, sound)):
            if not path.is_file():
                print(f"Error: --model {name}: {path} not found", file=sys.stderr)
                return 2
    videos = labelled_videos(args.manifest, args.root, args.split)
    try:
        tables = [label_table(videos, scan_tags(name, vision, sound, videos)) for name, vision, sound in models]
    except Unmeasured as exc:
        print(f"Error: {exc}", file=sys.stderr)
        return 3
    names = [name for name, _, _ in models]
    print(format_tables(names, tables))
    failures = {other: gate(tables[0], table) for other, table in zip(names[1:], tables[1:])}
    for other, worse in failures.items():
        print(f"gate against {other}: " + ("passed" if not worse else "FAILED: " + "; ".join(worse)))
    if args.json:
        args.json.write_text(json.dumps({"split": args.split, "models": dict(zip(names, tables)),
                                         "gate": failures}, indent=1) + "\n", encoding="utf-8")
    return 1 if any(failures.values()) else 0


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    sys.exit(main())
