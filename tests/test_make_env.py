"""The Makefile's virtual environment belongs to one checkout: a .venv installed for another folder
(a copied or moved checkout, a venv shared between clones) is installed again, never imported from
the other folder."""

from __future__ import annotations

import shutil
import subprocess

from experiments.config import ROOT


def _checkout(tmp_path, pth_text: str):
    shutil.copy(ROOT / "Makefile", tmp_path)
    shutil.copy(ROOT / "pyproject.toml", tmp_path)
    venv = tmp_path / ".venv"
    site = venv / "lib" / "python3.11" / "site-packages"
    site.mkdir(parents=True)
    (site / "pes-repro-checkout.pth").write_text(pth_text)
    for stamp in (".extra-core", ".extra-suite", ".extras-suite"):  # newer than pyproject.toml
        (venv / stamp).touch()
    return venv


def _make_n(folder):
    return subprocess.run(
        ["make", "-n", ".venv/.extras-suite"], cwd=folder, capture_output=True, text=True, timeout=60
    )


def test_a_venv_installed_for_another_checkout_is_installed_again(tmp_path):
    venv = _checkout(tmp_path, "/some/other/checkout\n")
    out = _make_n(tmp_path)
    assert out.returncode == 0, out.stderr
    assert ".venv was installed for another checkout; installing it again for" in out.stdout
    assert not list(venv.glob(".extra*"))  # every stamp dropped
    assert "pip install --quiet -e" in out.stdout  # and the install planned


def test_the_venv_of_this_checkout_is_kept(tmp_path):
    here = tmp_path.resolve()
    venv = _checkout(here, f"{here}\n")
    out = _make_n(here)
    assert out.returncode == 0, out.stderr
    assert "another checkout" not in out.stdout and "pip install" not in out.stdout
    assert sorted(p.name for p in venv.glob(".extra*")) == [".extra-core", ".extra-suite", ".extras-suite"]
