"""Which ImageNet-1k classes mean which instrument tag: the default model's ImageNet prior.

The default model's head (`training/head.py`) starts each label from the log of these summed
probabilities and learns the rest from the corpus; v1 of the default model was this table alone.

Tags use UCF101's naming (`PlayingGuitar`, `Drumming`, ...) so the default model and models trained
on UCF101 speak the same labels. Every index and name below was checked against the standard
ImageNet-1k class list (the `labels_map.txt` of lukemelas/EfficientNet-PyTorch, which is the usual
Keras/torchvision ordering); the names are the first synonyms of that list.

A tag's score is the sum of its classes' softmax probabilities. Classes are only mapped when they
show the instrument itself or something that exists only to play it (a drumstick, a guitar pick);
scene classes such as `stage` (819) or `microphone` (650) are left out because they appear in
lectures and talk shows just as much as in concerts.

`tier` says how much a tag is trusted: "core" tags are the instruments UCF101 has and that the
shipped thresholds were measured on; "extra" tags are instruments ImageNet knows but none of our
calibration clips show, and some of their classes fire on everyday objects (marimba on slatted
wood, harmonica on things held at the mouth, organ on facades), so they get a stricter threshold.
"""

from __future__ import annotations

from dataclasses import dataclass

IMAGENET_CLASSES = 1000
BACKGROUND = "NoInstrument"  # the label for "none of the mapped classes"; never stored as a tag


@dataclass(frozen=True)
class TagClasses:
    """One tag and the ImageNet classes whose probabilities add up to its score."""

    tag: str
    classes: tuple[tuple[int, str], ...]  # (ImageNet index, class name)
    tier: str  # "core" or "extra" (see the module docstring)


INSTRUMENT_TAGS: tuple[TagClasses, ...] = (
    TagClasses("PlayingGuitar", ((402, "acoustic guitar"), (546, "electric guitar"),
                                 (714, "pick, plectrum, plectron")), "core"),
    TagClasses("PlayingPiano", ((579, "grand piano, grand"), (881, "upright, upright piano")), "core"),
    TagClasses("PlayingViolin", ((889, "violin, fiddle"),), "core"),
    TagClasses("PlayingCello", ((486, "cello, violoncello"),), "core"),
    TagClasses("PlayingFlute", ((558, "flute, transverse flute"),), "core"),
    TagClasses("Drumming", ((541, "drum, membranophone, tympan"), (542, "drumstick"),
                            (822, "steel drum")), "core"),
    TagClasses("PlayingBanjo", ((420, "banjo"),), "extra"),
    TagClasses("PlayingHarp", ((594, "harp"),), "extra"),
    TagClasses("PlayingAccordion", ((401, "accordion, piano accordion, squeeze box"),), "extra"),
    TagClasses("PlayingSaxophone", ((776, "sax, saxophone"),), "extra"),
    TagClasses("PlayingTrumpet", ((513, "cornet, horn, trumpet, trump"),), "extra"),
    TagClasses("PlayingTrombone", ((875, "trombone"),), "extra"),
    TagClasses("PlayingFrenchHorn", ((566, "French horn, horn"),), "extra"),
    TagClasses("PlayingOboe", ((683, "oboe, hautboy, hautbois"),), "extra"),
    TagClasses("PlayingBassoon", ((432, "bassoon"),), "extra"),
    TagClasses("PlayingOrgan", ((687, "organ, pipe organ"),), "extra"),
    TagClasses("PlayingMarimba", ((642, "marimba, xylophone"),), "extra"),
    TagClasses("PlayingHarmonica", ((593, "harmonica, mouth organ, harp, mouth harp"),), "extra"),
)

TIERS = ("core", "extra")


def tag_names() -> tuple[str, ...]:
    """The instrument tags in table order (the background label not included)."""
    return tuple(row.tag for row in INSTRUMENT_TAGS)


def labels() -> tuple[str, ...]:
    """The default model's output labels: every instrument tag, then the background label."""
    return (*tag_names(), BACKGROUND)


def class_to_tag_matrix() -> list[list[float]]:
    """A 1000 x len(tags) 0/1 matrix: row i has a 1 in the column of the tag class i belongs to.

    Multiplying ImageNet probabilities `(N, 1000)` by it gives tag scores `(N, tags)`.
    """
    matrix = [[0.0] * len(INSTRUMENT_TAGS) for _ in range(IMAGENET_CLASSES)]
    for column, row in enumerate(INSTRUMENT_TAGS):
        for index, _name in row.classes:
            matrix[index][column] = 1.0
    return matrix


def as_card() -> list[dict]:
    """The table as JSON-ready rows, for the model card and `tagger.train` metadata."""
    return [
        {"tag": row.tag, "tier": row.tier,
         "imagenet": [{"index": index, "name": name} for index, name in row.classes]}
        for row in INSTRUMENT_TAGS
    ]
