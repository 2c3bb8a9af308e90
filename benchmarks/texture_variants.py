"""A copy of the game's art in which some tracks wear other textures: domain randomisation in the game itself.

Every image of the named tracks' folders and of the shared ``textures/`` and ``library/`` folders is replaced by a
random image of the pool (the changed tracks' own images, ``--pool-tracks``, and the shared ``textures/``; no
held-out or kept-aside track's folder), scaled to the original's size, with the original's transparency kept, so that the
road, the grass, the walls and the sky of a track change colour and pattern independently while the geometry,
the centre line and the driver's labels stay the same (Tobin et al. 2017 randomise textures the same way). The
rest of the art is linked. Model files of the changed folders are copied, not linked: the game looks for a
model's textures beside the file a link leads to.

The game reads such a copy through vmc's own asset set-up (:mod:`vmc.sim.assets`), given another art folder and
another cache for the asset folder built from it (a ``VMC_CACHE`` for each copy: one cache would build its asset
folder again at every change of art), e.g. a collection for ``benchmarks/track_scaling.py
--train-data`` from two copies (``--episodes`` counts the folder's episodes, so the second copy adds 30 more)::

    python benchmarks/texture_variants.py /tmp/art1 --seed 1
    VMC_STK_ART=/tmp/art1 VMC_CACHE=/tmp/cache1 python -m vmc.collect --out data/texrand --episodes 30 \\
        --tracks lighthouse zengarden hacienda scotland cornfield_crossing snowmountain --max-steps 600
    python benchmarks/texture_variants.py /tmp/art2 --seed 2
    VMC_STK_ART=/tmp/art2 VMC_CACHE=/tmp/cache2 python -m vmc.collect --out data/texrand --episodes 60 \\
        --tracks lighthouse zengarden hacienda scotland cornfield_crossing snowmountain --max-steps 600
"""

from __future__ import annotations

import argparse
import random
import shutil
from pathlib import Path

from PIL import Image

from vmc.main import TRAIN_TRACKS
from vmc.sim.assets import art_dir

IMAGES = (".png", ".jpg", ".jpeg")


def images(folder: Path) -> list[Path]:
    """The image files under ``folder``, sorted."""
    return sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGES and p.is_file())


class Randomiser:
    """Writes each image it is given again with the pixels of a random image of ``pool`` (seeded)."""

    def __init__(self, pool: list[Path], seed: int) -> None:
        self.pool, self.rng, self.cache = pool, random.Random(seed), {}

    def source(self, path: Path) -> Image.Image:
        if path not in self.cache:  # a pool image is read once, at most 256 pixels a side
            im = Image.open(path).convert("RGB")
            im.info = {}  # a palette image's transparency index would follow it into an RGB file and fail the save
            im.thumbnail((256, 256))
            self.cache[path] = im
        return self.cache[path]

    def write(self, original: Path, dest: Path) -> None:
        """``dest``: a random pool image at ``original``'s size and format, with its transparency."""
        with Image.open(original) as orig:
            transparent = orig.mode in ("RGBA", "LA", "PA") or "transparency" in orig.info
            alpha = orig.convert("RGBA").getchannel("A") if transparent else None
            new = self.source(self.rng.choice(self.pool)).resize(orig.size)
        if alpha is not None:
            new = new.convert("RGBA")
            new.putalpha(alpha)
        new.save(dest, "PNG" if original.suffix.lower() == ".png" else "JPEG", quality=90)

    def mirror(self, src: Path, dest: Path) -> int:
        """``dest``: ``src``'s files with its images randomised and the rest copied; returns the images written."""
        written = 0
        dest.mkdir(parents=True)
        for f in sorted(src.iterdir()):
            if f.is_dir():
                written += self.mirror(f, dest / f.name)
            elif f.suffix.lower() in IMAGES:
                try:
                    self.write(f, dest / f.name)
                    written += 1
                except (OSError, ValueError) as e:  # an image PIL cannot read or write stays as it is
                    print(f"kept {f}: {e}")
                    shutil.copy2(f, dest / f.name)
            else:
                shutil.copy2(f, dest / f.name)
        return written


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("out", type=Path, help="the new art folder (must not exist)")
    p.add_argument("--seed", type=int, default=0, help="which random textures")
    p.add_argument("--tracks", nargs="+", default=TRAIN_TRACKS[:6],
                   help="tracks whose textures change (default: the six track_scaling learns from)")
    p.add_argument("--pool-tracks", nargs="+", default=None,
                   help="tracks whose own images the new textures are drawn from, beside the shared textures/ "
                        "(default: --tracks; keep the tracks a screen leaves out away from it)")
    a = p.parse_args()
    art = art_dir().resolve()
    if a.out.exists():
        raise SystemExit(f"{a.out} exists: name a new folder")
    unknown = [t for t in a.tracks + (a.pool_tracks or []) if not (art / "tracks" / t).is_dir()]
    if unknown:
        raise SystemExit(f"no such track in {art}: {', '.join(unknown)}")
    pool = [im for t in a.pool_tracks or a.tracks for im in images(art / "tracks" / t)] + images(art / "textures")
    rnd = Randomiser(pool, a.seed)
    a.out.mkdir(parents=True)
    for d in sorted(art.iterdir()):
        if d.name == "tracks":
            (a.out / "tracks").mkdir()
            for t in sorted(d.iterdir()):
                if t.name in a.tracks:
                    print(f"{t.name}: {rnd.mirror(t, a.out / 'tracks' / t.name)} images")
                else:
                    (a.out / "tracks" / t.name).symlink_to(t, target_is_directory=t.is_dir())
        elif d.name in ("textures", "library"):
            print(f"{d.name}: {rnd.mirror(d, a.out / d.name)} images")
        else:
            (a.out / d.name).symlink_to(d, target_is_directory=d.is_dir())
    print(f"{a.out}: {len(pool)} images in the pool, seed {a.seed}")


if __name__ == "__main__":
    main()
