"""Rewrite tests/golden/* from a fresh scan of the generated library: python tests/regenerate_golden.py"""

import os
import sys

import pytest

if __name__ == "__main__":
    os.environ["TAGGER_REGEN_GOLDEN"] = "1"
    sys.exit(pytest.main([os.path.join(os.path.dirname(__file__), "test_read_side.py"), "-q", "-k", "golden"]))
