"""The README as a user reads it: its Python example runs, its links lead somewhere, and it
stays a short front door that names no development machine's path."""

from __future__ import annotations

import re
from pathlib import Path

from tests.conftest import image_folder, tiny_run

ROOT = Path(__file__).parents[1]
README = (ROOT / "README.md").read_text()


def test_the_python_example_runs(tmp_path, monkeypatch, capsys):
    (block,) = re.findall(r"```python\n(.*?)```", README, re.S)
    tiny_run(tmp_path, "runs/quick")
    image_folder(tmp_path / "mine", classes=2, per_class=4)
    monkeypatch.chdir(tmp_path)
    capsys.readouterr()
    exec(compile(block, "README.md", "exec"), {})
    shape, classes = capsys.readouterr().out.strip().split(" [")
    assert shape == "torch.Size([16, 1, 16, 16])" and classes == "'k0', 'k1']"


def test_links_lead_to_files_that_exist():
    for doc in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        for target in re.findall(r"\]\(([^)#]+?)\)", doc.read_text()):
            if not target.startswith(("http://", "https://")):
                assert (doc.parent / target).exists(), f"{doc.name} links to {target}"


def test_a_short_front_door_without_machine_paths():
    assert len(README.splitlines()) < 350
    assert "../shared" not in README and "/work/" not in README
