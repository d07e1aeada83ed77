"""What each corpus label teaches the default model's tags (the label policy of model v3).

A corpus label names what a clip shows (UCF101's names, `PlayingXxx` for other instruments,
`NoInstrument`). Each of the model's tags learns from its own clips as positives and from every
other clip as negatives, except where a clip must neither teach nor forbid a tag: a ukulele or a
mandolin looks like a small guitar, and whether an archive calls it guitar is its own business, so
those clips are ignored by the guitar tag (and are negatives for every other tag: a ukulele must
never be a sitar). A bass guitar is a guitar (UCF101 has no bass class).

Tags ImageNet covers (`training/imagenet_map.py`) start from ImageNet's opinion; tags it does not
(Sitar, Tabla, Dhol, Daf) learn from the corpus alone.
"""

from __future__ import annotations

BACKGROUND = "NoInstrument"

# Every label a corpus row may carry: the tags below, the look-alikes and other instruments, and
# the background. A new corpus label needs a decision here.
CORPUS_LABELS = (
    "Drumming", "PlayingGuitar", "PlayingSitar", "PlayingTabla", "PlayingViolin", "PlayingCello", "PlayingFlute",
    "PlayingPiano", "PlayingDhol", "PlayingDaf", "PlayingBanjo", "PlayingHarp", "PlayingAccordion",
    "PlayingSaxophone", "PlayingTrumpet", "PlayingBassoon", "PlayingOboe", "PlayingClarinet", "PlayingTrombone",
    "PlayingFrenchHorn", "PlayingTuba", "PlayingMarimba", "PlayingXylophone", "PlayingHarmonica", "PlayingOrgan",
    "PlayingUkulele", "PlayingBassGuitar", "PlayingMandolin", "PlayingVeena", "PlayingSarod", "PlayingTanpura",
    "PlayingSantoor", "PlayingErhu", "PlayingBongo", "PlayingTambourine", "PlayingSteelDrum", "PlayingBagpipes",
    "PlayingBrassBand", "PlayingOtherInstrument", BACKGROUND,
)

# corpus label -> the tag it is a positive for (labels absent here are negatives for every tag)
POSITIVE_FOR = {
    "PlayingBassGuitar": "PlayingGuitar",
    "PlayingXylophone": "PlayingMarimba",  # one ImageNet class: "marimba, xylophone"
    "PlayingBongo": "Drumming",  # hand drums played are drumming (UCF101's Drumming has them); tabla is its own tag
}
# corpus label -> tags it neither teaches nor forbids
IGNORED_BY = {
    "PlayingUkulele": ("PlayingGuitar",),
    "PlayingMandolin": ("PlayingGuitar",),
    "PlayingSteelDrum": ("Drumming",),
    "PlayingTambourine": ("Drumming",),
    "PlayingBrassBand": ("PlayingTrumpet", "PlayingTrombone", "PlayingTuba", "PlayingSaxophone", "Drumming"),
}


def tag_of(label: str) -> str:
    """The tag a corpus label is a positive for: itself, or its entry in POSITIVE_FOR."""
    return POSITIVE_FOR.get(label, label)


def targets(label: str, also: tuple[str, ...], tags: tuple[str, ...]) -> list[int]:
    """Per tag: 1 positive, 0 negative, -1 ignored, for a clip of `label` showing `also` too."""
    positive = {tag_of(label), *(tag_of(a) for a in also)}
    ignored = {tag for name in (label, *also) for tag in IGNORED_BY.get(name, ())}
    return [1 if tag in positive else -1 if tag in ignored else 0 for tag in tags]
