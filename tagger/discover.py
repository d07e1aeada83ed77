"""Find video files under the given paths and fingerprint them.

Files are picked by extension (case-insensitive) or, with `probe=True`, by their first bytes, so a
video without a usual extension is still found. Symlinks are followed only when asked, and then
every folder is visited once (by device and inode), so a cycle cannot loop.
"""

from __future__ import annotations

import fnmatch
import hashlib
import logging
import os
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from tagger.errors import UsageError

log = logging.getLogger(__name__)  # what discovery skipped; the CLI prints these as warnings

VIDEO_EXTENSIONS = frozenset(
    ".avi .mp4 .m4v .mkv .mov .webm .mpg .mpeg .m2v .m2ts .mts .ts .wmv .asf .flv .f4v .3gp .3g2 "
    ".ogv .vob .mxf .dv .divx .rm .rmvb .qt .y4m".split()
)
FINGERPRINT_BYTES = 64 * 1024  # from each end: cheap, and tells apart files of equal size


@dataclass(frozen=True)
class DiscoveryRules:
    """Which files a scan picks up."""

    include: tuple[str, ...] = ()  # globs on the path; empty = every video
    exclude: tuple[str, ...] = ()  # globs on the path, applied after include
    hidden: bool = False  # descend into hidden folders and take hidden files
    follow_symlinks: bool = False  # opt-in: links may point outside the archive
    probe: bool = True  # also sniff files without a video extension


@dataclass(frozen=True)
class FoundVideo:
    """A video file and its identity at discovery time."""

    path: str  # absolute, exactly as on disk
    size: int
    mtime_ns: int


# Magic numbers of containers that show up without a proper extension.
_MAGIC = (
    (4, b"ftyp"),  # MP4 / MOV / 3GP
    (0, b"\x1a\x45\xdf\xa3"),  # Matroska / WebM
    (0, b"\x00\x00\x01\xba"),  # MPEG-PS
    (0, b"FLV"),
    (0, b"\x30\x26\xb2\x75\x8e\x66\xcf\x11"),  # ASF / WMV
)


def looks_like_video(path: str) -> bool:
    """True when the file starts like a video container (RIFF AVI, MP4, MKV, MPEG-PS, FLV, ASF)."""
    try:
        with open(path, "rb") as handle:
            head = handle.read(16)
    except OSError:
        return False
    if head[:4] == b"RIFF" and head[8:11] == b"AVI":
        return True
    return any(head[offset : offset + len(magic)] == magic for offset, magic in _MAGIC)


def _matches(path: str, globs: Sequence[str]) -> bool:
    name = os.path.basename(path)
    return any(fnmatch.fnmatch(path, g) or fnmatch.fnmatch(name, g) for g in globs)


def _is_candidate(path: str, rules: DiscoveryRules) -> bool:
    if rules.include and not _matches(path, rules.include):
        return False
    if rules.exclude and _matches(path, rules.exclude):
        return False
    if Path(path).suffix.lower() in VIDEO_EXTENSIONS:
        return True
    return rules.probe and looks_like_video(path)


def _walk(root: str, rules: DiscoveryRules, skipped: Counter) -> Iterator[str]:
    """Video paths under `root`; counts in `skipped` what was passed over (links not followed,
    special files with a video's name)."""
    seen: set[tuple[int, int]] = set()
    stack = [root]
    while stack:
        folder = stack.pop()
        try:
            info = os.stat(folder)
            if (info.st_dev, info.st_ino) in seen:
                continue  # a symlink cycle, or the same folder reached twice
            seen.add((info.st_dev, info.st_ino))
            entries = sorted(os.scandir(folder), key=lambda e: e.name)
        except OSError as exc:
            log.warning("cannot read folder %s (%s): its videos are not scanned", folder, exc.strerror or exc)
            continue
        subfolders = []
        for entry in entries:
            if not rules.hidden and entry.name.startswith("."):
                continue
            try:
                if entry.is_dir(follow_symlinks=rules.follow_symlinks):
                    subfolders.append(entry.path)
                elif entry.is_file(follow_symlinks=rules.follow_symlinks):
                    if _is_candidate(entry.path, rules):
                        yield entry.path
                elif entry.is_symlink() and not rules.follow_symlinks:
                    if os.path.isdir(entry.path) or (os.path.isfile(entry.path) and _is_candidate(entry.path, rules)):
                        skipped["links"] += 1
                elif Path(entry.name).suffix.lower() in VIDEO_EXTENSIONS:
                    skipped["special"] += 1
            except OSError:
                continue
        stack.extend(reversed(subfolders))


def find_videos(paths: Sequence[str], rules: DiscoveryRules = DiscoveryRules()) -> list[FoundVideo]:
    """Every video under `paths` (folders walked, files taken as they are), sorted, no duplicates.

    Raises:
        UsageError: a given path does not exist.
    """
    found: dict[str, FoundVideo] = {}
    skipped: Counter = Counter()
    for given in paths:
        root = os.path.abspath(os.path.expanduser(given))
        if not os.path.exists(root):
            raise UsageError(f"path not found: {given} (check the spelling, or quote paths with spaces)")
        candidates = _walk(root, rules, skipped) if os.path.isdir(root) else [root]
        for path in candidates:
            try:
                info = os.stat(path)
            except OSError:
                continue  # vanished between listing and stat: nothing to scan
            found.setdefault(path, FoundVideo(path, info.st_size, info.st_mtime_ns))
    if skipped["links"]:
        log.warning("skipped %s to videos or folders: pass --follow-symlinks to follow them",
                    _count(skipped["links"], "symbolic link"))
    if skipped["special"]:
        log.warning("skipped %s named like a video (a FIFO, device or socket): only regular files are scanned",
                    _count(skipped["special"], "special file"))
    return sorted(found.values(), key=lambda v: v.path)


def _count(number: int, noun: str) -> str:
    return f"{number} {noun}{'' if number == 1 else 's'}"


def fingerprint(path: str, size: int) -> str | None:
    """blake2b of the size and the first and last 64 KiB: spots a renamed or copied video cheaply."""
    digest = hashlib.blake2b(str(size).encode(), digest_size=16)
    try:
        with open(path, "rb") as handle:
            digest.update(handle.read(FINGERPRINT_BYTES))
            if size > FINGERPRINT_BYTES:
                handle.seek(max(FINGERPRINT_BYTES, size - FINGERPRINT_BYTES))
                digest.update(handle.read(FINGERPRINT_BYTES))
    except OSError:
        return None
    return digest.hexdigest()
