"""The video corpus: real footage from public repositories, rebuilt from a manifest, kept out of git.

    python -m training.video_corpus build DIR      # fetch every file the manifest lists into DIR
    python -m training.video_corpus counts DIR     # clips and sources per label against the targets

`training/corpus_videos.tsv` lists every clip: the file (relative to the corpus folder), its label,
the shoot it comes from (`group`: keep a group on one side of any split), the source repository,
commit and path, the licence as the source states it, the file's sha256, and optionally a span
(`start`, `end` in seconds) when the label holds for part of the file only. A file may have several
rows (one per span). `build` takes each file from a local snapshot of its repository (a bare git
directory under `--mirrors`, as the `fetch` tool leaves them) or else clones the repository from
GitHub (needs the network), checks its sha256, and refuses rows that `corpus-guard` names:
sources kept aside to measure the default model on footage it never saw.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import os
import subprocess
import sys
import tempfile
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MANIFEST = ROOT / "training" / "corpus_videos.tsv"
GUARD = ROOT.parent / "shared" / "tools" / "corpus-guard"
MIRRORS = Path(os.environ.get("TAGGER_MIRRORS", "/work/.mirror"))
COLUMNS = ("file", "label", "kind", "group", "source_repo", "commit", "source_path", "bytes", "sha256",
           "licence", "start", "end", "duration", "width", "height", "fps", "audio", "view", "notes")
# The targets for the corpus (issue 22): what `counts` checks.
TARGET_CLIPS, TARGET_SOURCES = 400, 60
TARGET_PER_LABEL, TARGET_GROUPS_PER_LABEL = 25, 8
TARGET_NEGATIVES = 200
BACKGROUND = "NoInstrument"


@dataclass(frozen=True)
class Row:
    """One manifest row."""

    values: dict[str, str]

    def __getitem__(self, key: str) -> str:
        return self.values.get(key, "")


def read_rows(manifest: Path = MANIFEST) -> list[Row]:
    with manifest.open(newline="", encoding="utf-8") as handle:
        return [Row(row) for row in csv.DictReader(handle, delimiter="\t")]


def write_rows(rows: list[Row], manifest: Path = MANIFEST) -> None:
    with manifest.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=COLUMNS, delimiter="\t", lineterminator="\n", extrasaction="ignore")
        writer.writeheader()
        for row in rows:
            writer.writerow({key: row[key] for key in COLUMNS})


def guard(manifest: Path) -> set[int]:
    """Manifest line numbers corpus-guard names (sources kept for evaluation); empty without the tool."""
    if not GUARD.is_file():
        return set()
    done = subprocess.run([sys.executable, str(GUARD), str(manifest)], capture_output=True, text=True)
    named = set()
    for line in done.stdout.splitlines():
        location = line.split(" ", 1)[0]
        if ":" in location and location.rsplit(":", 1)[1].isdigit():
            named.add(int(location.rsplit(":", 1)[1]))
    return named


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _git_dir(repo: str) -> Path | None:
    """The local snapshot of `repo` (OWNER/NAME) under MIRRORS, if there is one."""
    base = MIRRORS / repo.replace("/", "+")
    for candidate in (base / "repo" / ".git", base / "repo", base):
        if (candidate / "objects").is_dir():
            return candidate
    return None


def _blob(git_dir: Path, commit: str, path: str) -> bytes | None:
    for ref in (commit, "HEAD"):
        done = subprocess.run(["git", "--git-dir", str(git_dir), "cat-file", "blob", f"{ref}:{path}"],
                              capture_output=True)
        if done.returncode == 0:
            return done.stdout
    return None


def _clone(repo: str, into: Path) -> Path | None:
    done = subprocess.run(["git", "clone", "--quiet", "--bare", "--filter=blob:limit=64m",
                           f"https://github.com/{repo}.git", str(into)], capture_output=True)
    return into if done.returncode == 0 else None


def build(into: Path, manifest: Path = MANIFEST) -> int:
    """Write every file of `manifest` into `into`; returns how many files could not be had."""
    rows = read_rows(manifest)
    reserved = guard(manifest)
    if reserved:
        print(f"corpus-guard names {len(reserved)} rows of {manifest}: they are left out", file=sys.stderr)
    missing = 0
    clones: dict[str, Path | None] = {}
    with tempfile.TemporaryDirectory() as scratch:
        for line, row in enumerate(rows, start=2):
            target = into / row["file"]
            if line in reserved or (target.is_file() and sha256_of(target) == row["sha256"]):
                continue
            git_dir = _git_dir(row["source_repo"])
            if git_dir is None:
                if row["source_repo"] not in clones:
                    clones[row["source_repo"]] = _clone(row["source_repo"], Path(scratch) / str(len(clones)))
                git_dir = clones[row["source_repo"]]
            data = _blob(git_dir, row["commit"], row["source_path"]) if git_dir is not None else None
            if data is None or hashlib.sha256(data).hexdigest() != row["sha256"]:
                print(f"missing: {row['file']} ({row['source_repo']}:{row['source_path']})", file=sys.stderr)
                missing += 1
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(data)
    return missing


def merge(parts: list[Path]) -> list[Row]:
    """The rows of several gatherers' manifests, each clip (file sha256 and span) once, by label then file."""
    seen: set[tuple[str, str, str]] = set()
    merged = []
    for part in parts:
        for row in read_rows(part):
            key = (row["sha256"], row["start"], row["end"])
            if row["file"] and key not in seen:
                seen.add(key)
                merged.append(row)
    return sorted(merged, key=lambda r: (r["label"], r["file"], r["start"]))


def counts(rows: list[Row]) -> dict:
    """Clips, sources and groups per label, and the issue's targets met or not."""
    clips: Counter = Counter()
    groups: dict[str, set] = defaultdict(set)
    sources: set = set()
    for row in rows:
        clips[row["label"]] += 1
        groups[row["label"]].add(row["group"])
        if row["label"] != BACKGROUND:
            sources.add(row["group"])
    instrument = sum(n for label, n in clips.items() if label != BACKGROUND)
    return {"instrument_clips": instrument, "instrument_sources": len(sources), "negatives": clips[BACKGROUND],
            "labels": {label: {"clips": clips[label], "groups": len(groups[label])} for label in sorted(clips)}}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training.video_corpus", description=__doc__.split("\n\n")[0])
    parser.add_argument("action", choices=("build", "counts", "merge"),
                        help="build: fetch the files into FOLDER; counts: per label; merge: FOLDER/parts/*.tsv into the manifest")
    parser.add_argument("folder", type=Path, help="the corpus folder")
    parser.add_argument("--manifest", type=Path, default=MANIFEST, help="default: %(default)s")
    args = parser.parse_args(argv)
    if args.action == "merge":
        rows = merge(sorted((args.folder / "parts").glob("*.tsv")))
        write_rows(rows, args.manifest)
        print(f"{len(rows)} rows written to {args.manifest}")
        return 0
    if not args.manifest.is_file():
        print(f"Error: no manifest at {args.manifest}: pass --manifest FILE", file=sys.stderr)
        return 2
    if args.action == "build":
        missing = build(args.folder, args.manifest)
        print(f"{len(read_rows(args.manifest))} rows; {missing} files could not be had")
        return 1 if missing else 0
    found = counts(read_rows(args.manifest))
    print(f"instrument clips {found['instrument_clips']} (target {TARGET_CLIPS}) from "
          f"{found['instrument_sources']} sources (target {TARGET_SOURCES}); negatives {found['negatives']} "
          f"(target {TARGET_NEGATIVES})")
    for label, numbers in found["labels"].items():
        print(f"  {label:24} {numbers['clips']:4} clips {numbers['groups']:4} groups")
    return 0


if __name__ == "__main__":
    sys.exit(main())
