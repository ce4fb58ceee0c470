"""Where the app finds its assets: a checkout, or a wheel install's <prefix>/share."""

from __future__ import annotations

import sys

from core import paths


def test_assets_beside_the_checkout(monkeypatch):
    assert (paths.assets_dir() / "catalog.json").is_file()


def test_a_wheel_install_finds_assets_under_its_prefix(tmp_path, monkeypatch):
    site = tmp_path / "site-packages"
    site.mkdir()
    installed = tmp_path / "prefix" / "share" / "memory-r1" / "assets"
    installed.mkdir(parents=True)
    monkeypatch.setattr(paths, "repo_root", lambda: site)
    monkeypatch.setattr(sys, "prefix", str(tmp_path / "prefix"))
    assert paths.assets_dir() == installed
    monkeypatch.setattr(sys, "prefix", str(tmp_path / "elsewhere"))
    assert paths.assets_dir() == site / "assets"  # neither: the checkout path, for a clear "not found"
