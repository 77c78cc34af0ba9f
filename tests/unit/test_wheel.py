"""A non-editable install (issue 12, item 6): the wheel carries the XML templates and the guest's
sources, and the installed package renders the default lab from anywhere."""

from __future__ import annotations

import subprocess
import sys

from ..conftest import REPO

CHECK = """
import labkit, sys
from pathlib import Path
from labkit import commands, images, model, paths, pipeline, render
site = Path(sys.argv[1]).resolve()
assert Path(labkit.__file__).resolve().is_relative_to(site), labkit.__file__
assert paths.TEMPLATE_DIR.is_relative_to(site) and paths.REPO_IMAGES.is_relative_to(site)
assert (images.GUEST_SRC / "init").is_file() and (images.HOST_SRC / "labkit-tsc-khz.c").is_file()
docs = render.render_all(model.resolve(pipeline.load(None)), render.Adaptation.ahv())
assert "NTNX-DRM-3060-G4-1-1-CVM" in docs and commands.default_lab_name() == "seed"
print("ok")
"""


def test_the_installed_wheel_renders_the_default_lab(tmp_path):
    pip = [sys.executable, "-m", "pip", "-q"]
    subprocess.run([*pip, "wheel", "--no-deps", "-w", str(tmp_path / "dist"), str(REPO)], check=True,
                   capture_output=True)
    (wheel,) = (tmp_path / "dist").glob("labkit-*.whl")
    site = tmp_path / "site"
    subprocess.run([*pip, "install", "--no-deps", "--target", str(site), str(wheel)], check=True, capture_output=True)
    run = subprocess.run([sys.executable, "-c", CHECK, str(site)], cwd=tmp_path, capture_output=True, text=True,
                         env={"PYTHONPATH": str(site), "PATH": "/usr/bin:/bin"})
    assert run.stdout.strip() == "ok", run.stderr
