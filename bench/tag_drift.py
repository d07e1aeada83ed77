"""Did decoding less move a tag? Scan videos twice in one process, the old way and the new, and
compare their tags video by video.

    python bench/tag_drift.py FOLDER [FOLDER ...] [--json OUT] [--model PATH] [--audio-model PATH]

Each folder is scanned by `tagger scan`, run in this process (`typer.testing.CliRunner`), with
the shipped default models (or those given) and default settings, into two fresh databases:

- before: `--decoders tagger.decode:SequentialPyAVSource,decord`, every frame decoded and each
  sample showing the frame on screen, as every scan decoded before `tagger.decode_plan`;
- after: the default decoders, decoding only what the windows need, keyframes standing in for
  the frames on screen where every time has one within half a sample interval.

Per video it prints how the new path decoded it (its strategy, frames decoded per frame used),
its label set and segments before and after, the largest change of a window's video score, and
every change: a label gained or lost, a segment bound that moved by more than one window, a
segment with no counterpart, a video that failed on one side only.
"""

from __future__ import annotations

import argparse
import json
import sqlite3
import sys
import tempfile
from pathlib import Path

import numpy as np

OLD_DECODERS = "tagger.decode:SequentialPyAVSource,decord"


def scan(folder: Path, db: Path, decoders: str | None, extra: list[str]) -> dict:
    """`tagger scan FOLDER --db DB --json` in this process; its JSON summary."""
    from typer.testing import CliRunner

    from tagger.cli import app

    args = ["scan", str(folder), "--db", str(db), "--json", *extra]
    if decoders:
        args += ["--decoders", decoders]
    result = CliRunner().invoke(app, args)
    if result.exit_code not in (0, 3):  # 3: finished, some videos failed (compared below)
        raise SystemExit(f"tagger scan {folder} exited {result.exit_code}: {result.output.strip()[-500:]}")
    return json.loads(result.stdout)


def stored(db: Path) -> dict[str, dict]:
    """path -> status, segments (label, start, end, source) and video window scores, as stored."""
    with sqlite3.connect(db) as conn:
        kinds = {i: json.loads(meta or "{}").get("tagger.kind", "video") for i, meta in conn.execute(
            "select id, meta from models")}
        found = {}
        for video_id, path, status, error in conn.execute("select id, path, status, error from videos order by path"):
            segments = conn.execute("select label, start, end, source from segments where video_id = ? "
                                    "order by label, start", (video_id,)).fetchall()
            scores = [np.frombuffer(blob, "<f4") for model_id, blob in conn.execute(
                "select model_id, scores from windows where video_id = ? order by start", (video_id,))
                if kinds[model_id] == "video"]
            found[path] = {"status": status, "error": error, "segments": segments,
                           "labels": sorted({s[0] for s in segments}), "scores": scores}
    return found


def segment_changes(before: list, after: list, window: float) -> list[str]:
    """Every label gained or lost, bound moved by more than `window` seconds, unmatched segment."""
    changes = []
    for label in sorted({s[0] for s in before} | {s[0] for s in after}):
        old = [s for s in before if s[0] == label]
        new = [s for s in after if s[0] == label]
        if not old or not new:
            changes.append(f"label {label} {'gained' if new else 'lost'}")
            continue
        unmatched = list(new)
        for segment in old:
            overlap = [(min(segment[2], n[2]) - max(segment[1], n[1]), n) for n in unmatched]
            best = max(overlap, default=(0.0, None))
            if best[1] is None or best[0] <= 0:
                changes.append(f"{label} {segment[1]:.1f}-{segment[2]:.1f} s lost")
                continue
            match = best[1]
            unmatched.remove(match)
            if abs(match[1] - segment[1]) > window + 1e-6 or abs(match[2] - segment[2]) > window + 1e-6:
                changes.append(f"{label} {segment[1]:.1f}-{segment[2]:.1f} s moved to {match[1]:.1f}-{match[2]:.1f} s")
        changes += [f"{label} {n[1]:.1f}-{n[2]:.1f} s new" for n in unmatched]
    return changes


def video_changes(old: dict | None, new: dict | None, window: float) -> list[str]:
    """What changed for one video between two `stored` records (None: absent on that side): its
    status, or else its segments (`segment_changes`)."""
    if old is None or new is None or old["status"] != new["status"]:
        return [f"status {old and old['status']} -> {new and new['status']}"]
    return segment_changes(old["segments"], new["segments"], window)


def decoding(path: str, contract) -> str:
    """How the new path decodes `path` for `contract`: strategy, frames decoded per frame used."""
    from tagger.decode import DECODERS, open_video
    from tagger.errors import DecodeError
    from tagger.windows import plan_windows

    try:
        source = open_video(path, contract.resize, DECODERS, threads=1)
        plan = plan_windows(source.timestamps, source.info.duration, contract.clip_len, contract.frame_interval,
                            keyframes=source.keyframes)
        for _ in source.read(plan.needed_frames):
            pass
    except DecodeError as exc:
        return f"fails: {exc}"[:60]
    return f"{source.strategy} {source.frames_decoded}/{len(plan.needed_frames)}"


def compare(folder: Path, extra: list[str], contract) -> list[dict]:
    """Scan `folder` both ways and compare video by video."""
    with tempfile.TemporaryDirectory() as tmp:
        scan(folder, Path(tmp) / "before.db", OLD_DECODERS, extra)
        scan(folder, Path(tmp) / "after.db", None, extra)
        before, after = stored(Path(tmp) / "before.db"), stored(Path(tmp) / "after.db")
    rows = []
    for path in sorted(set(before) | set(after)):
        old, new = before.get(path), after.get(path)
        changes = video_changes(old, new, contract.window_seconds)
        drift = 0.0
        if old and new and len(old["scores"]) == len(new["scores"]) and old["scores"]:
            drift = float(max(np.abs(a - b).max() for a, b in zip(old["scores"], new["scores"])))
        rows.append({"path": path, "decoding": decoding(path, contract),
                     "before": old and {"status": old["status"], "labels": old["labels"], "segments": old["segments"]},
                     "after": new and {"status": new["status"], "labels": new["labels"], "segments": new["segments"]},
                     "max_score_change": drift, "changes": changes})
    return rows


def show(rows: list[dict], root: Path) -> None:
    for row in rows:
        name = str(Path(row["path"]).relative_to(root)) if Path(row["path"]).is_relative_to(root) else row["path"]
        old, new = row["before"], row["after"]
        labels = (f"{','.join(old['labels']) or '-'} -> {','.join(new['labels']) or '-'}" if old and new
                  else "missing on one side")
        print(f"{name[:52]:52} {row['decoding']:>18}  {labels}  max |d score| {row['max_score_change']:.3f}")
        for side, found in (("before", old), ("after", new)):
            if found and found["segments"] and (row["changes"] or side == "before"):
                bounds = "; ".join(f"{s[0]} {s[1]:.1f}-{s[2]:.1f} ({s[3]})" for s in found["segments"])
                print(f"{'':8}{side}: {bounds}")
        for change in row["changes"]:
            print(f"{'':8}CHANGE: {change}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("folders", nargs="+", type=Path)
    parser.add_argument("--model", default=None, help="video model [default: the shipped one]")
    parser.add_argument("--audio-model", default=None, help="sound model [default: the shipped one]")
    parser.add_argument("--json", type=Path, default=None, help="also write every row here")
    args = parser.parse_args()

    from tagger.model import load_model

    extra = [*(["--model", args.model] if args.model else []), *(["--audio-model", args.audio_model]
                                                                   if args.audio_model else [])]
    contract = load_model(args.model).contract
    everything = []
    for folder in args.folders:
        rows = compare(folder, extra, contract)
        print(f"\n{folder}: {len(rows)} videos (window {contract.window_seconds:g} s)")
        show(rows, folder)
        changed = [row for row in rows if row["changes"]]
        same_labels = sum(1 for r in rows
                          if r["before"] and r["after"] and r["before"]["labels"] == r["after"]["labels"])
        print(f"{folder}: {same_labels} of {len(rows)} videos keep their label set; "
              f"{sum(len(r['changes']) for r in rows)} changes in {len(changed)} videos; largest window score "
              f"change {max((r['max_score_change'] for r in rows), default=0):.3f}")
        everything += rows
    if args.json:
        args.json.write_text(json.dumps(everything, indent=1) + "\n")
    sys.exit(0)


if __name__ == "__main__":
    main()
