"""tagger: batch video tagging for media archives (onnxruntime, no torch at run time)."""

__version__ = "0.1.0"
