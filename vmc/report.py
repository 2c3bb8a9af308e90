"""``python -m vmc.report RUN_FOLDER``: one self-contained HTML page of what a run did, ``RUN_FOLDER/report.html``.

The page shows the config (``config.json``), each stage's time (``summary.json``), the lap of the best controller
against the reference drivers (``best_lap.json``, ``references.json``), the evaluation tables (``eval*/table.md``),
the curves (``vae_loss.png``, ``mdn_loss.png``, ``controller/curve.png``), the reconstruction grids and the
reference strip, embedded as data URIs, and the videos (``dream.mp4``, ``best_lap.mp4``, ``eval/grid.mp4``) linked by
relative path with their first frame embedded as the poster; and every run folder beside it (same parent) in one
table, the best and worst lap score marked. What a run does not have yet is left out, so the page can be written
at any point (the main job writes it at the end). A small script writes in the page whether every picture loaded
(``#vmc-images``) and whether this browser plays every video (``#vmc-videos``: a muted copy of each is loaded and
seeked to its middle, and that frame decoded), which the tests read back from a headless browser. The videos are
H.264 MP4 (``vmc.video``), which Chromium (Debian's package included), Firefox, Safari and Edge play.
"""

from __future__ import annotations

import base64
import html
import json
import logging
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from vmc import cli
from vmc.cli import Config
from vmc.errors import VmcError

log = logging.getLogger("vmc.report")

CURVES = [("vae_loss.png", "ConvVAE loss"), ("mdn_loss.png", "MDN-RNN loss"), ("controller/curve.png", "CMA-ES fitness")]
VIDEOS = [("dream.mp4", "Real frames (left) beside the MDN-RNN's dream (right)"), ("best_lap.mp4", "The best controller's lap"),
          ("eval/grid.mp4", "Evaluation: first race of each track")]

STYLE = """
body { font-family: system-ui, -apple-system, "DejaVu Sans", Arial, sans-serif; margin: 24px auto; max-width: 1150px;
       color: #1d232a; background: #fafbfc; }
h1 { margin-bottom: 0; } h2 { border-bottom: 2px solid #d9dee4; padding-bottom: 4px; margin-top: 32px; }
.sub { color: #5a6570; margin-top: 4px; }
table { border-collapse: collapse; margin: 8px 0 16px; font-size: 14px; background: white; }
th, td { border: 1px solid #d9dee4; padding: 4px 9px; text-align: left; }
th { background: #eef1f4; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
tr.current td { background: #fff6d8; }
.badge { display: inline-block; padding: 0 6px; border-radius: 8px; font-size: 12px; color: white; margin-left: 4px; }
.best { background: #2a8a3e; } .worst { background: #b8452f; }
.cards { display: flex; flex-wrap: wrap; gap: 12px; }
.card { background: white; border: 1px solid #d9dee4; border-radius: 6px; padding: 10px 16px; min-width: 130px; }
.card .v { font-size: 24px; font-weight: 600; } .card .k { color: #5a6570; font-size: 13px; }
.row { display: flex; flex-wrap: wrap; gap: 18px; align-items: flex-start; }
figure { margin: 0 0 12px; } figcaption { color: #5a6570; font-size: 13px; }
img.curve { width: 360px; border: 1px solid #d9dee4; background: white; }
img.pixels { image-rendering: pixelated; max-width: 100%; border: 1px solid #d9dee4; }
video { max-width: 540px; border: 1px solid #d9dee4; background: black; }
.bar { display: inline-block; height: 12px; background: #4a7fb5; vertical-align: middle; }
pre { background: white; border: 1px solid #d9dee4; padding: 8px; font-size: 12px; max-height: 360px; overflow: auto; }
#vmc-images, #vmc-videos { color: #8a949e; font-size: 12px; }
"""

# Writes into #vmc-videos whether this browser plays every <video>: a muted copy of each is loaded and seeked to the
# middle, where a frame must be decoded. On each <video>: data-plays ("yes" or why not), data-duration (s),
# data-size and data-middle-mean (mean RGB value of that frame; "unreadable" where the browser forbids reading
# pixels, as for file:// pages unless Chromium runs with --allow-file-access-from-files).
VIDEO_CHECK_SCRIPT = """
window.addEventListener("load", function () {
  var videos = Array.prototype.slice.call(document.querySelectorAll("video")), left = videos.length, ok = 0;
  var out = document.getElementById("vmc-videos");
  function done(v, plays, why) {
    v.setAttribute("data-plays", plays ? "yes" : why);
    if (plays) ok++;
    if (--left === 0) out.textContent = (ok === videos.length ? "all videos play" : "videos that do not play here") +
      ": " + ok + "/" + videos.length + (ok === videos.length ? "" : " (H.264 MP4: open them with a video player)");
  }
  if (!out) return;
  if (!videos.length) { out.textContent = "no videos"; return; }
  videos.forEach(function (v) {
    var p = document.createElement("video");
    p.muted = true;
    p.preload = "auto";
    if (!p.canPlayType('video/mp4; codecs="avc1.64001E"')) return done(v, false, "no H.264 in this browser");
    p.addEventListener("error", function () { done(v, false, "error " + (p.error && p.error.code)); });
    p.addEventListener("loadeddata", function () {
      v.setAttribute("data-duration", p.duration.toFixed(2));
      v.setAttribute("data-size", p.videoWidth + "x" + p.videoHeight);
      p.currentTime = p.duration / 2;
    }, {once: true});
    p.addEventListener("seeked", function () {
      if (p.readyState < 2) return done(v, false, "no frame at " + p.currentTime + " s");
      var c = document.createElement("canvas"), g = c.getContext("2d"), mean = "unreadable";
      c.width = p.videoWidth; c.height = p.videoHeight;
      g.drawImage(p, 0, 0);
      try {
        var d = g.getImageData(0, 0, c.width, c.height).data, sum = 0;
        for (var i = 0; i < d.length; i += 4) sum += d[i] + d[i + 1] + d[i + 2];
        mean = (sum / (d.length / 4 * 3)).toFixed(1);
      } catch (e) { /* pixels of a file:// video are not readable by default */ }
      v.setAttribute("data-middle-mean", mean);
      done(v, true);
    }, {once: true});
    p.src = v.getAttribute("src");
  });
});
"""

# Writes into #vmc-images whether every <img> decoded (and each one's natural width in data-natural-width),
# after the load event: read back by the tests through chromium --dump-dom.
CHECK_SCRIPT = """
window.addEventListener("load", function () {
  var imgs = Array.prototype.slice.call(document.images), ok = 0;
  imgs.forEach(function (i) { i.setAttribute("data-natural-width", i.naturalWidth); if (i.complete && i.naturalWidth > 0) ok++; });
  document.getElementById("vmc-images").textContent =
    (ok === imgs.length ? "all images loaded" : "images missing") + ": " + ok + "/" + imgs.length;
});
""" + VIDEO_CHECK_SCRIPT


@dataclass
class ReportConfig(Config):
    """Write ``report.html`` of a run folder."""

    run: str = "runs/lighthouse-small"
    """The run folder (also accepted as the first argument: ``python -m vmc.report runs/NAME``)."""
    out: str = ""
    """Output file (default: ``report.html`` in the run folder)."""


def esc(x: Any) -> str:
    return html.escape(str(x))


def read_json(path: Path) -> Optional[Any]:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None


def data_uri(path: Path, mime: str = "image/png") -> str:
    return f"data:{mime};base64," + base64.b64encode(path.read_bytes()).decode("ascii")


def img(path: Path, alt: str, cls: str, width: Optional[int] = None) -> str:
    w = f' style="width:{width}px"' if width else ""
    return f'<img class="{cls}" alt="{esc(alt)}" src="{data_uri(path)}"{w}>'


def poster(video: Path) -> str:
    """The video's first frame as a PNG data URI ('' when it cannot be read)."""
    try:
        import io

        import imageio
        from PIL import Image

        with imageio.get_reader(str(video), "ffmpeg") as r:
            frame = r.get_data(0)
        buf = io.BytesIO()
        Image.fromarray(frame).save(buf, format="PNG")
        return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")
    except Exception as err:  # a poster is a nicety; the link stays
        log.debug("no poster for %s: %s", video, err)
        return ""


def fmt(v: Any, digits: int = 1) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.{digits}f}"
    return str(v)


def duration(s: Optional[float]) -> str:
    if s is None:
        return "-"
    return f"{s:.0f} s" if s < 120 else f"{int(s // 60)} min {s % 60:02.0f} s"


def markdown_to_html(md: str) -> str:
    """The Markdown of ``vmc.evaluate``'s tables: ``**title**`` lines and pipe tables (cells are escaped)."""
    out, rows = [], []

    def flush() -> None:
        if not rows:
            return
        head, body = rows[0], [r for r in rows[1:] if not re.fullmatch(r"\s*:?-+:?\s*", r[0] if r else "-")]
        out.append("<table><tr>" + "".join(f"<th>{esc(c)}</th>" for c in head) + "</tr>"
                   + "".join("<tr>" + "".join(f"<td>{esc(c)}</td>" for c in r) + "</tr>" for r in body) + "</table>")
        rows.clear()

    for line in md.splitlines():
        s = line.strip()
        if s.startswith("|"):
            rows.append([c.strip() for c in s.strip("|").split("|")])
            continue
        flush()
        if s:
            m = re.fullmatch(r"\*\*(.*)\*\*", s)
            out.append(f"<p><b>{esc(m.group(1))}</b></p>" if m else f"<p>{esc(s)}</p>")
    flush()
    return "\n".join(out)


def table(head: list[str], rows: list[list[str]], classes: Optional[list[str]] = None) -> str:
    """An HTML table; cells are already HTML; a cell starting with a number gets right-aligned."""
    def td(c: str) -> str:
        return f'<td class="num">{c}</td>' if re.match(r"^-?[\d.]+", c) else f"<td>{c}</td>"

    classes = classes or [""] * len(rows)
    return ("<table><tr>" + "".join(f"<th>{esc(h)}</th>" for h in head) + "</tr>"
            + "".join(f'<tr class="{k}">' + "".join(td(c) for c in r) + "</tr>" for r, k in zip(rows, classes)) + "</table>")


def run_row(folder: Path) -> Optional[dict]:
    """What the across-runs table shows of a run folder (None: not a run folder)."""
    summary, config = read_json(folder / "summary.json"), read_json(folder / "config.json")
    if summary is None and config is None:
        return None
    cfg = (config or {}).get("config", {})
    lap = (summary or {}).get("lap") or read_json(folder / "best_lap.json") or {}
    stages = [n for n, f in [("vae", "vae.pt"), ("mdn", "mdn.pt"), ("controller", "controller/best.pt"), ("lap", "best_lap.mp4")]
              if (folder / f).exists()]
    evaluation = (summary or {}).get("evaluation") or []
    return {"name": folder.name, "preset": (summary or {}).get("preset", cfg.get("preset", "-")),
            "tracks": " ".join(cfg.get("tracks", [])) or "-", "score": lap.get("score"), "steps": lap.get("steps"),
            "end": lap.get("end"), "wall_s": (summary or {}).get("wall_s"), "workers": (summary or {}).get("workers"),
            "eval_mean": (sum(r["mean"] for r in evaluation) / len(evaluation)) if evaluation else None,
            "complete": summary is not None, "stages": stages}


def across_runs(run: Path) -> str:
    """Every run folder beside ``run`` (and ``run`` itself), best and worst lap score and shortest wall time marked."""
    rows = [r for f in sorted(p for p in run.resolve().parent.iterdir() if p.is_dir()) if (r := run_row(f)) is not None]
    if not rows:
        return ""
    scored = [r for r in rows if r["score"] is not None]
    best = max(scored, key=lambda r: r["score"])["name"] if scored else None
    worst = min(scored, key=lambda r: r["score"])["name"] if len(scored) > 1 else None
    timed = [r for r in rows if r["wall_s"] is not None]
    fastest = min(timed, key=lambda r: r["wall_s"])["name"] if len(timed) > 1 else None
    body, classes = [], []
    for r in rows:
        mark = (' <span class="badge best">best</span>' if r["name"] == best else "") + \
               (' <span class="badge worst">worst</span>' if r["name"] == worst else "")
        fast = ' <span class="badge best">fastest</span>' if r["name"] == fastest else ""
        body.append([esc(r["name"]) + ("" if r["complete"] else " (incomplete: " + esc(", ".join(r["stages"]) or "nothing yet") + ")"),
                     esc(r["preset"]), esc(r["tracks"]), fmt(r["score"]) + mark, fmt(r["steps"]), esc(fmt(r["end"])),
                     fmt(r["eval_mean"]), duration(r["wall_s"]) + fast, fmt(r["workers"])])
        classes.append("current" if r["name"] == run.resolve().name else "")
    return table(["run", "preset", "tracks", "lap score", "lap steps", "lap end", "evaluation mean", "wall time", "workers"],
                 body, classes)


def references_table(run: Path, lap: dict) -> str:
    refs = read_json(run / "references.json") or {}
    if not refs and not lap:
        return ""
    rows = []
    for track, by in refs.items():
        mine = lap if lap.get("track", track) == track and lap else {}
        rows.append([esc(track)] + [f"{fmt(by[d]['score'])} ({by[d]['steps']} steps, {esc(by[d]['end'])})" if d in by else "-"
                                    for d in ("centreline", "ai")]
                    + [f"{fmt(mine['score'])} ({mine['steps']} steps, {esc(mine['end'])})" if mine else "-"])
    return "<p><b>One lap, seed 0</b></p>" + table(["track", "centre-line driver", "game AI", "evolved controller"], rows)


def build(run: Path) -> str:
    """The page's HTML."""
    from PIL import Image

    run = Path(run)
    summary = read_json(run / "summary.json") or {}
    config = read_json(run / "config.json") or {}
    lap = summary.get("lap") or read_json(run / "best_lap.json") or {}
    timings: dict[str, float] = summary.get("timings", {})
    evolve_log = (run / "controller" / "log.csv")
    parts = [f"<h1>{esc(run.resolve().name)}</h1>",
             f'<p class="sub">vmc {esc(config.get("vmc_version", "?"))} · report written {time.strftime("%Y-%m-%d %H:%M")} · '
             f'{esc(run.resolve())}</p>', '<p id="vmc-images">images not checked</p>',
             '<p id="vmc-videos">videos not checked</p>']

    cards = []
    if lap:
        cards += [(fmt(lap.get("score")), f"lap score ({esc(lap.get('track', ''))})"), (fmt(lap.get("steps")), f"steps ({esc(lap.get('end'))})")]
    if summary.get("wall_s") is not None:
        cards.append((duration(summary["wall_s"]), f"wall time, {summary.get('workers', '?')} workers"))
    if evolve_log.exists():
        lines = evolve_log.read_text().splitlines()
        if len(lines) > 1:
            last = dict(zip(lines[0].split(","), lines[-1].split(",")))
            cards.append((fmt(float(last.get("best_so_far") or "nan")), f"best fitness, generation {esc(last.get('generation'))}"))
    if cards:
        parts.append('<div class="cards">' + "".join(f'<div class="card"><div class="v">{v}</div><div class="k">{k}</div></div>'
                                                    for v, k in cards) + "</div>")

    parts.append("<h2>Stages</h2>")
    if timings:
        longest = max(timings.values()) or 1.0
        rows = [[esc(k), f"{v:.1f}", f'<span class="bar" style="width:{int(300 * v / longest)}px"></span>'] for k, v in timings.items()]
        rows.append(["<b>all</b>", f"<b>{summary.get('wall_s', sum(timings.values())):.1f}</b>", ""])
        parts.append(table(["stage", "seconds", ""], rows))
    else:
        parts.append("<p>No <code>summary.json</code> yet (the main job writes it at the end).</p>")

    parts.append("<h2>Results</h2>")
    evals = sorted(run.glob("eval*/table.md"))
    parts.append('<div class="row"><div>' + references_table(run, lap) + "</div>"
                 + "".join(f"<div>{markdown_to_html(t.read_text())}</div>" for t in evals) + "</div>")

    others = across_runs(run)
    if others:
        parts.append(f"<h2>All runs in {esc(run.resolve().parent.name)}/</h2>{others}")

    curves = [(run / f, c) for f, c in CURVES if (run / f).exists()]
    if curves:
        parts.append("<h2>Curves</h2><div class=\"row\">" + "".join(
            f"<figure>{img(p, c, 'curve')}<figcaption>{esc(c)} ({esc(p.relative_to(run))})</figcaption></figure>" for p, c in curves)
            + "</div>")

    grids = sorted(run.glob("vae_recon_epoch*.png"))
    pictures = ([grids[0]] if len(grids) > 1 else []) + grids[-1:]
    pictures += [p for p in (run / "eval" / "grid.png", run / "reference_strip.png") if p.exists()]
    if pictures:
        parts.append("<h2>Pictures</h2>")
        for p in pictures:
            caption = {"reference_strip.png": "Reference laps: centre-line driver (top), game AI (bottom)",
                       "grid.png": "Evaluation races"}.get(
                p.name, f"Validation frames (top) and their ConvVAE reconstructions (bottom), {p.stem[-8:]}")
            with Image.open(p) as im:
                w = im.width
            parts.append(f"<figure>{img(p, caption, 'pixels', min(1100, w * (2 if w <= 600 else 1)))}"
                         f"<figcaption>{esc(caption)} ({esc(p.relative_to(run))})</figcaption></figure>")

    videos = [(run / f, c) for f, c in VIDEOS if (run / f).exists()]
    if videos:
        parts.append("<h2>Videos</h2><div class=\"row\">")
        for p, c in videos:
            rel = p.relative_to(run).as_posix()
            pst = poster(p)
            parts.append(f'<figure><video controls preload="none" src="{esc(rel)}"' + (f' poster="{pst}"' if pst else "")
                         + f'></video><figcaption>{esc(c)}: <a href="{esc(rel)}">{esc(rel)}</a></figcaption></figure>')
        parts.append("</div>")

    if config:
        parts.append("<h2>Config</h2><pre>" + esc(json.dumps(config, indent=2)) + "</pre>")
    parts.append("<p class=\"sub\">TensorBoard: <code>tensorboard --logdir " + esc(run.resolve().parent) + "</code></p>")

    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>vmc run {esc(run.resolve().name)}</title><style>{STYLE}</style>"
            f"<script>{CHECK_SCRIPT}</script></head><body>\n" + "\n".join(parts) + "\n</body></html>\n")


def write_report(run: Path, out: Optional[Path] = None) -> Path:
    """Write the page (default ``run/report.html``); returns its path."""
    run = Path(run)
    if not run.is_dir():
        raise VmcError(f"{run} is not a run folder")
    out = Path(out) if out else run / "report.html"
    tmp = out.with_suffix(".html.tmp")
    tmp.write_text(build(run))
    tmp.replace(out)
    return out


def main(argv: Optional[list[str]] = None) -> int:
    import sys

    cli.setup_logging()
    args = list(sys.argv[1:] if argv is None else argv)
    if args and not args[0].startswith("-"):  # python -m vmc.report RUN_FOLDER
        args = ["--run", *args]
    cfg = cli.parse(ReportConfig, args, "python -m vmc.report")
    return cli.run("vmc.report", lambda: print(write_report(Path(cfg.run), Path(cfg.out) if cfg.out else None)))


if __name__ == "__main__":
    raise SystemExit(main())
