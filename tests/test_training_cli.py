"""The training commands tell the truth: what to install, what they write, and they never delete
what they did not create."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_training_without_torch_says_in_one_line_what_to_install(tmp_path):
    fake = tmp_path / "no_torch" / "torch"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text("raise ModuleNotFoundError(\"No module named 'torch'\", name='torch')\n")
    env = {**os.environ, "PYTHONPATH": f"{fake.parent}{os.pathsep}{ROOT}"}
    for module in ("training.fit", "training.evaluate", "training.demo_model"):
        result = subprocess.run([sys.executable, "-m", module, "--help"], capture_output=True, text=True, env=env,
                                cwd=tmp_path, timeout=120)
        assert (result.returncode, result.stdout) == (2, ""), module
        assert result.stderr == ("Error: training needs PyTorch, which is not installed: pip install torch==2.13.0 "
                                 "(the CPU or CUDA build you want), then pip install -e '.[train]'\n"), module


def test_demo_model_never_deletes_files_it_did_not_create(tmp_path):
    work = tmp_path / "work"
    work.mkdir()
    (work / "thesis.tex").write_text("years of work")
    result = subprocess.run([sys.executable, "-m", "training.demo_model", "--work", str(work), "--out",
                             str(tmp_path / "demo.onnx")], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert (result.returncode, result.stderr) == (
        2, f"Error: --work {work} holds files this command did not create: pass a new or empty folder\n")
    assert (work / "thesis.tex").read_text() == "years of work"


def test_demo_model_replaces_only_what_an_earlier_run_made(tmp_path):
    pytest.importorskip("torch")
    from training.demo_model import MARKER, prepare_work

    work = tmp_path / "work"
    prepare_work(work)  # new folder
    (work / "run").mkdir()
    (work / "run" / "best.pt").write_text("old")
    (work / "notes.txt").write_text("mine")
    prepare_work(work)  # an earlier run's folder: its own folders replaced, nothing else
    assert not (work / "run").exists() and (work / "notes.txt").read_text() == "mine" and (work / MARKER).is_file()
    (tmp_path / "file").write_text("")
    from tagger.errors import UsageError

    with pytest.raises(UsageError, match="is a file"):
        prepare_work(tmp_path / "file")
