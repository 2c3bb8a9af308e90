"""The SuperTuxKart asset folder that pystk2 reads, built from two registry packages.

pystk2 would download the game's 1.5 source archive from the internet on first use; that host is not
reachable here, so vmc lays the folder out itself and points pystk2 at it with ``SUPERTUXKART_DATADIR``:

* the game's own ``data/`` for this engine version (shaders, gui, skins, ``stk_config.xml``, the
  ``supertuxkart.1.5`` marker) comes from the pysupertuxkart2 source archive on PyPI;
* the art (``karts tracks textures models library music sfx editor``) comes from Debian's
  ``supertuxkart-data`` package (STK 1.4 art, which the 1.5 engine reads), linked, not copied;
* one file is changed: mines' ``scene.xml`` with its billboards' fade-out turned off (see
  :data:`TRACK_PATCHES`), because pystk2 0.7.4 segfaults on it as soon as it renders.

``python -m vmc.sim.assets`` builds the folder (a no-op when it is already there) and prints its path.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import importlib.metadata
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from collections.abc import Iterator
from pathlib import Path

ART_DIRS = ("karts", "tracks", "textures", "models", "library", "music", "sfx", "editor")
"""Folders of Debian's supertuxkart-data that are linked into the asset folder."""

DEBIAN_ART = Path("/usr/share/games/supertuxkart/data")
"""Where Debian's supertuxkart-data puts the game's art."""

MARKER = "__downloaded__.txt"
"""pystk2's own 'assets are complete' marker, written last so a half-built folder is never trusted."""

LAYOUT = "vmc asset layout 2"
"""Written into the marker; a folder built with another layout (1: ``tracks`` linked whole, mines
unpatched) is rebuilt."""

TRACK_PATCHES: dict[str, tuple[str, str, str]] = {
    "mines": ("scene.xml", 'fadeout="true"', 'fadeout="false"'),
}
"""Track files changed in the asset folder: ``track: (file, text, replacement)``. Why mines: a billboard
that fades out near the camera asks the scene manager for its active camera in
``TrackObjectPresentationBillboard::updateGraphics``, but pystk2 renders each frame into a texture
(``ShaderBasedRenderer::renderToTexture``), which leaves no active camera, so the next step
dereferences null (exit -11 within the countdown; traced with gdb). mines is the only one of the 21
tracks with such billboards (5 light halos); with the fade off they are drawn at every distance
instead of vanishing within 15 m of the camera."""


class AssetError(RuntimeError):
    """A piece of the game's set-up is missing; the message says how to fix it."""


def pystk2_version() -> str:
    """The installed pysupertuxkart2 version, e.g. ``'0.7.4'``."""
    try:
        return importlib.metadata.version("pysupertuxkart2")
    except importlib.metadata.PackageNotFoundError:
        raise AssetError("pysupertuxkart2 is not installed: run `./run.sh setup` (or `pip install pysupertuxkart2==0.7.4`)") from None


def cache_root() -> Path:
    """``$VMC_CACHE``, else ``$XDG_CACHE_HOME/vmc``, else ``~/.cache/vmc``."""
    if os.environ.get("VMC_CACHE"):
        return Path(os.environ["VMC_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "vmc"


def assets_dir() -> Path:
    """The folder handed to pystk2 as ``SUPERTUXKART_DATADIR`` (it holds ``data/``)."""
    return cache_root() / f"supertuxkart-{pystk2_version()}"


def art_dir() -> Path:
    """Where the game's art is read from: ``$VMC_STK_ART`` or Debian's folder."""
    return Path(os.environ.get("VMC_STK_ART", DEBIAN_ART))


def _built_from(art: Path) -> str:
    """The end of the marker's text, which names the art and the layout the folder was built with."""
    return f" and {art} ({LAYOUT})"


def is_complete(root: Path) -> bool:
    """True when ``root`` is a finished asset folder built from :func:`art_dir` (marker present and every art link
    resolves); a folder built from other art (``VMC_STK_ART`` changed, the same ``VMC_CACHE``) is built again."""
    data, marker = root / "data", root / MARKER
    return marker.is_file() and _built_from(art_dir()) in marker.read_text() and (
        data / "stk_config.xml").is_file() and all((data / d).is_dir() for d in ART_DIRS)


def _link_tracks(art_tracks: Path, dest: Path) -> None:
    """``dest``: one link per track of ``art_tracks``, and for each of :data:`TRACK_PATCHES` a folder of
    links to the track's files with the patched file written in place of its link."""
    dest.mkdir()
    for track in sorted(art_tracks.iterdir()):
        if track.name not in TRACK_PATCHES:
            (dest / track.name).symlink_to(track, target_is_directory=track.is_dir())
            continue
        name, old, new = TRACK_PATCHES[track.name]
        (dest / track.name).mkdir()
        for f in sorted(track.iterdir()):
            (dest / track.name / f.name).symlink_to(f, target_is_directory=f.is_dir())
        text = (track / name).read_text()
        if old not in text:
            raise AssetError(f"{track / name} has no {old}: this art is not the one vmc patches; report it")
        (dest / track.name / name).unlink()
        (dest / track.name / name).write_text(text.replace(old, new))


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """Serialise builders across processes: many workers may start on a fresh machine at once."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _source_archive(version: str) -> Path:
    """The pysupertuxkart2 source archive from PyPI, downloaded once into the cache."""
    downloads = cache_root() / "downloads"
    found = sorted(downloads.glob(f"pysupertuxkart2-{version}.tar.gz"))
    if found:
        return found[0]
    downloads.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--no-binary", ":all:",
           f"pysupertuxkart2=={version}", "-d", str(downloads)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    found = sorted(downloads.glob(f"pysupertuxkart2-{version}.tar.gz"))
    if proc.returncode != 0 or not found:
        last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        raise AssetError(f"could not download the pysupertuxkart2=={version} source archive from PyPI ({last})")
    return found[0]


def _extract_game_data(archive: Path, dest: Path) -> None:
    """Extract ``<name>/data/**`` of the source archive into ``dest`` (the archive's own data folder)."""
    with tarfile.open(archive, "r:gz") as tf:
        for member in tf:
            parts = Path(member.name).parts
            if len(parts) < 3 or parts[1] != "data" or not (member.isfile() or member.isdir()):
                continue
            member.name = str(Path(*parts[2:]))
            tf.extract(member, dest, filter="data") if sys.version_info >= (3, 12) else tf.extract(member, dest)


def ensure_assets(quiet: bool = True) -> Path:
    """Build the asset folder if needed, export ``SUPERTUXKART_DATADIR`` and return the folder.

    Quick when the folder exists (a few ``stat`` calls). Raises :class:`AssetError` with a one-line
    fix when a piece is missing.
    """
    root = assets_dir()
    if not is_complete(root):
        art = art_dir()
        missing = [d for d in ART_DIRS if not (art / d).is_dir()]
        if missing:
            raise AssetError(
                f"SuperTuxKart art not found in {art} (missing {', '.join(missing)}): "
                "run `./run.sh setup` or `apt-get install supertuxkart-data`"
            )
        with _locked(cache_root() / ".assets.lock"):
            if not is_complete(root):
                _build(root, art, quiet)
    os.environ["SUPERTUXKART_DATADIR"] = str(root)
    return root


def _build(root: Path, art: Path, quiet: bool) -> None:
    version = pystk2_version()
    if not quiet:
        print(f"vmc: building the SuperTuxKart asset folder in {root}", file=sys.stderr)
    archive = _source_archive(version)
    tmp = Path(tempfile.mkdtemp(prefix=root.name + ".", dir=root.parent))
    try:
        data = tmp / "data"
        data.mkdir()
        _extract_game_data(archive, data)
        if not (data / "stk_config.xml").is_file():
            raise AssetError(f"{archive} holds no data/stk_config.xml: delete it and run `python -m vmc.sim.assets` again")
        for d in ART_DIRS:
            if d == "tracks":
                _link_tracks(art / d, data / d)
            else:
                (data / d).symlink_to(art / d, target_is_directory=True)
        (tmp / MARKER).write_text(f"built by vmc from {archive.name}{_built_from(art)}\n")
        if root.exists():
            shutil.rmtree(root)
        tmp.rename(root)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def main(argv: list[str] | None = None) -> int:
    """``python -m vmc.sim.assets``: build (or check) the asset folder and print its path."""
    parser = argparse.ArgumentParser(prog="python -m vmc.sim.assets", description=__doc__.splitlines()[0])
    parser.add_argument("--rebuild", action="store_true", help="delete the folder and build it again")
    args = parser.parse_args(argv)
    try:
        if args.rebuild and assets_dir().exists():
            shutil.rmtree(assets_dir())
        print(ensure_assets(quiet=False))
    except AssetError as err:
        print(f"vmc: error: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
