"""Rewrite tests/golden/*: python tests/regenerate_golden.py

The read-side files come from a fresh scan of the generated library, `shared_clips.json` from a
scan of ../shared/data/clips with the shipped models (what `tests/stored_tags.py` describes). The
tests that compare them skip while regenerating, so a regeneration never counts as a pass.
"""

import os
import sys

import pytest

if __name__ == "__main__":
    os.environ["TAGGER_REGEN_GOLDEN"] = "1"
    here = os.path.dirname(__file__)
    sys.exit(pytest.main([os.path.join(here, "test_read_side.py"), os.path.join(here, "test_default_scan.py"),
                          "-q", "-k", "golden or default_scan_tags"]))
