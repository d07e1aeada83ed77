"""The labelled real-footage corpus (`../shared/data/corpus/`): its manifest, its labels, its splits.

`MANIFEST.tsv` lists every photo and video with a label and a `group` (files from one recording or
photo shoot share it). Splits are made by group, so one shoot never sits on both sides.

The corpus uses UCF101's names plus `PlayingXxx` for other instruments. `LABEL_POLICY` says what
each corpus label teaches the default model's head:

- a tag of its own (`PlayingSitar`, ...), when the corpus has enough groups to learn and measure it;
- a class the head learns but never tags (`HandPercussion`, `OtherInstrument`): the traps a tag
  must not fire on (bongos read as tabla, a veena or tanpura as a sitar), kept apart so the head
  learns the difference instead of calling them "no instrument";
- `NoInstrument`, the background.
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from tagger.errors import UsageError
from training.tags import CORPUS_LABELS

BACKGROUND = "NoInstrument"
HAND_PERCUSSION = "HandPercussion"  # learned, never tagged: what a tabla tag must not fire on
OTHER_INSTRUMENT = "OtherInstrument"  # learned, never tagged: instruments no tag covers

# corpus label -> head class. A label missing here is an error: a new corpus label needs a decision.
LABEL_POLICY: dict[str, str] = {
    "PlayingSitar": "PlayingSitar",
    "PlayingTabla": "PlayingTabla",
    "PlayingGuitar": "PlayingGuitar",
    "PlayingBassGuitar": "PlayingGuitar",  # a bass guitar is read as guitar (UCF101 has no bass class)
    "PlayingPiano": "PlayingPiano",
    "PlayingViolin": "PlayingViolin",
    "PlayingCello": "PlayingCello",
    "PlayingFlute": "PlayingFlute",
    "Drumming": "Drumming",
    "PlayingBanjo": "PlayingBanjo",
    "PlayingHarp": "PlayingHarp",
    "PlayingAccordion": "PlayingAccordion",
    "PlayingSaxophone": "PlayingSaxophone",
    "PlayingTrumpet": "PlayingTrumpet",
    "PlayingBongo": HAND_PERCUSSION,
    "PlayingTambourine": HAND_PERCUSSION,
    "PlayingSteelDrum": HAND_PERCUSSION,
    "PlayingDhol": OTHER_INSTRUMENT,  # 6 photos, 3 of them doubtful: too few to learn or measure a tag
    "PlayingXylophone": OTHER_INSTRUMENT,
    "PlayingBagpipes": OTHER_INSTRUMENT,
    "PlayingTrombone": OTHER_INSTRUMENT,
    "PlayingOrgan": OTHER_INSTRUMENT,
    "PlayingMarimba": OTHER_INSTRUMENT,
    "PlayingSantoor": OTHER_INSTRUMENT,
    "PlayingVeena": OTHER_INSTRUMENT,  # long-necked lutes: the sitar's traps
    "PlayingTanpura": OTHER_INSTRUMENT,
    "PlayingMandolin": OTHER_INSTRUMENT,
    "PlayingBrassBand": OTHER_INSTRUMENT,
    BACKGROUND: BACKGROUND,
}

# Labels UCF101 has (or the old default tagged) that this corpus cannot teach or measure; the
# model card and `tagger models` say why each is left out.
LEFT_OUT: dict[str, str] = {  # reasons kept short: `tagger models` prints one 80-column line each
    "PlayingDaf": "no example to learn from: needs UCF101",
    "PlayingDhol": "6 photos, 3 doubtful: too few; needs UCF101",
    "PlayingTrombone": "1 photo: too few to learn or measure",
    "PlayingFrenchHorn": "no example to learn from",
    "PlayingOboe": "no example to learn from",
    "PlayingBassoon": "no example to learn from",
    "PlayingOrgan": "1 photo: too few to learn or measure",
    "PlayingMarimba": "1 photo: too few to learn or measure",
    "PlayingHarmonica": "no example to learn from",
}


class CorpusError(UsageError):
    """The corpus's manifest cannot be used as given."""


COLUMNS = ("file", "label", "kind", "group")


TEST_FOLDS = 5  # the test split is fold 0 of 5 (by split group): the one home of this rule
KINDS = ("image", "video")


@dataclass(frozen=True)
class CorpusItem:
    """One manifest row: a photo or video, what it shows, and the shoot it came from."""

    path: Path
    label: str  # the corpus label (`PlayingBongo`, ...)
    kind: str  # "image" or "video"
    group: str  # the manifest's group
    notes: str
    sha256: str = ""
    source: str = ""  # source_repo/source_path, when the manifest gives them
    split_group: str = ""  # the group a split keeps together (see `split_groups`)
    start: float | None = None  # the labelled span inside the file, seconds; None: from the start
    end: float | None = None  # None: to the end
    also: tuple[str, ...] = ()  # other instruments in view ("also: PlayingGuitar, Drumming" in the notes)

    @property
    def span_key(self) -> str:
        """The file and span, for telling several rows of one file apart."""
        return f"{self.path}@{self.start}-{self.end}"

    @property
    def head_class(self) -> str:
        return LABEL_POLICY[self.label]

    @property
    def in_test_split(self) -> bool:
        """True for the test split: no file of it fits, calibrates or chooses anything."""
        return group_fold(self.split_group or self.group, TEST_FOLDS) == 0


def split_groups(items: list[CorpusItem]) -> dict[Path, str]:
    """path -> the group a split must keep whole: manifest groups joined wherever two rows share a
    file (sha256) or a source (repository and path). The manifest gives one video from
    intel-iot-devkit/sample-videos two groups (`intel-car-detection`, `intel:car-detection`); a
    split by the manifest's groups alone put it on both sides."""
    parent: dict[str, str] = {}

    def find(key: str) -> str:
        while parent.setdefault(key, key) != key:
            parent[key] = parent[parent[key]]
            key = parent[key]
        return key

    for item in items:
        for key in (f"sha:{item.sha256}" if item.sha256 else "", f"src:{item.source}" if item.source else ""):
            if key:
                a, b = find("group:" + item.group), find(key)
                parent[max(a, b)] = min(a, b)
    roots: dict[str, str] = {}
    for item in items:  # name each component after its smallest manifest group
        root = find("group:" + item.group)
        roots[root] = min(roots.get(root, item.group), item.group)
    return {item.path: roots[find("group:" + item.group)] for item in items}


def read_manifest(root: Path, manifest: Path | None = None) -> tuple[list[CorpusItem], list[str]]:
    """Every row of `manifest` (default `root/MANIFEST.tsv`; file paths relative to `root`) whose
    file exists, in manifest order, and the listed files that do not exist.

    Raises:
        CorpusError: the manifest is missing, lacks a column, or a row's label has no entry in
            LABEL_POLICY.
    """
    manifest = manifest or root / "MANIFEST.tsv"
    if not manifest.is_file():
        raise CorpusError(f"{root} has no MANIFEST.tsv: the corpus lists its files there "
                          f"(tab-separated columns {', '.join(COLUMNS)})")
    items, missing = [], []
    try:
        with manifest.open(newline="", encoding="utf-8") as handle:
            reader = csv.DictReader(handle, delimiter="\t")
            absent = [name for name in COLUMNS if name not in (reader.fieldnames or [])]
            if absent:
                raise CorpusError(f"{manifest} has no column {absent[0]!r}: it needs {', '.join(COLUMNS)}")
            for line, row in enumerate(reader, start=2):
                empty = [name for name in COLUMNS if not (row.get(name) or "").strip()]
                if empty:
                    raise CorpusError(f"{manifest} line {line}: no {empty[0]}: every row needs {', '.join(COLUMNS)}")
                if row["label"] not in CORPUS_LABELS:
                    raise CorpusError(f"{manifest} line {line}: label {row['label']!r} has no place in the default "
                                      "model's classes: add it to training.tags.CORPUS_LABELS")
                if row["kind"] not in KINDS:
                    raise CorpusError(f"{manifest} line {line}: kind {row['kind']!r} is not one of {', '.join(KINDS)}")
                path = root / row["file"]
                if path.is_file():
                    source = "/".join(filter(None, (row.get("source_repo"), row.get("source_path"))))
                    notes = row.get("notes") or ""
                    items.append(CorpusItem(path, row["label"], row["kind"], row["group"], notes,
                                            row.get("sha256") or "", source if row.get("source_path") else "",
                                            start=_seconds(row.get("start")), end=_seconds(row.get("end")),
                                            also=also_in_view(notes)))
                else:
                    missing.append(row["file"])
    except UnicodeDecodeError as exc:
        raise CorpusError(f"{manifest} is not UTF-8 text ({exc.reason} at byte {exc.start}): save it as UTF-8") from None
    groups = split_groups(items)
    return [dataclasses.replace(item, split_group=groups[item.path]) for item in items], missing


def _seconds(text: str | None) -> float | None:
    return float(text) if text and text.strip() else None


_ALSO = re.compile(r"also:\s*([A-Za-z][A-Za-z, ]*)")


def also_in_view(notes: str) -> tuple[str, ...]:
    """The other corpus labels a row's notes say are in view: "also: PlayingGuitar, Drumming"."""
    found = _ALSO.search(notes)
    names = [name.strip() for name in found.group(1).split(",")] if found else []
    return tuple(name for name in names if name in CORPUS_LABELS)


def group_fold(group: str, folds: int, salt: str = "tagger-default") -> int:
    """The fold (0 .. folds-1) a group belongs to: a hash, so stable across runs and machines."""
    digest = hashlib.sha256(f"{salt}:{group}".encode()).digest()
    return int.from_bytes(digest[:8], "big") % folds


def class_counts(items: list[CorpusItem]) -> Counter:
    """Items per head class."""
    return Counter(item.head_class for item in items)
