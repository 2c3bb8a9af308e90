"""TensorBoard records (read back with TensorBoard's own reader) and the run report (rendered by headless Chromium).

The run folder is built without the game: a synthetic collection, the two trainers and CMA-ES in the dream; one
test marked ``game`` checks the records of collect and evaluate.
"""

import json
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from conftest import tiny_collection

from vmc import evolve, records, train_mdn, train_vae
from vmc.evaluate import markdown_table
from vmc.models import MDNRNNConfig, VAEConfig
from vmc.report import write_report
from vmc.video import write_video

VAE_EPOCHS, MDN_EPOCHS, MDN_STEPS, GENERATIONS = 2, 2, 3, 2
DREAM_STEPS, LAP_FRAMES = 10, 20


def accumulator(run: Path, stage: str):
    """TensorBoard's own reader on the stage's run (it drops what a restart marker says is stale)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(records.folder(run, stage)), size_guidance={"scalars": 0, "images": 0, "tensors": 0})
    acc.Reload()
    return acc


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    """A run folder with VAE, MDN-RNN and a dream-evolved controller (records closed), and the main job's files."""
    root = tmp_path_factory.mktemp("records")
    run = root / "runs" / "tiny-synthetic"
    data = tiny_collection(root / "data")
    vcfg = train_vae.TrainVAEConfig(data=str(data), run=str(run), epochs=VAE_EPOCHS, batch_size=32, val_fraction=0.25,
                                    model=VAEConfig(z_dim=8, channels=(8, 16, 16, 32)))
    train_vae.train(vcfg, progress=False)
    train_vae.encode(vcfg)
    mcfg = train_mdn.TrainMDNConfig(run=str(run), epochs=MDN_EPOCHS, steps_per_epoch=MDN_STEPS, seq_len=8, batch_size=4,
                                    model=MDNRNNConfig(z_dim=8, hidden=16, gaussians=2))
    train_mdn.train(mcfg, progress=False)
    train_mdn.dream_video(mcfg.vae_path, mcfg.out, mcfg.latents_path, run / "dream.mp4", steps=DREAM_STEPS)
    evolve.evolve(evolve.EvolveConfig(run=str(run), dream=True, init="fit", eval_every=0, popsize=4, rollouts=2,
                                      dream_steps=10, generations=GENERATIONS, workers=1), progress=False)
    config = {"tracks": ["lighthouse"], "preset": "debug", "name": run.name}
    records.hparams(run, config, {"summary/lap_score": 123.4})
    records.close(run)

    # What the main job adds: config, summary, reference laps, an evaluation table; and a finished run beside it.
    lap = {"track": "lighthouse", "score": 123.4, "steps": 200, "end": "stuck"}
    (run / "config.json").write_text(json.dumps({"vmc_version": "0.1.0", "config": config}))
    (run / "best_lap.json").write_text(json.dumps(lap))
    (run / "summary.json").write_text(json.dumps({"timings": {"collect": 5.0, "train_vae": 20.0, "evolve": 40.0},
                                                  "wall_s": 65.0, "lap": lap, "preset": "debug", "workers": 2}))
    (run / "references.json").write_text(json.dumps({"lighthouse": {"centreline": {"score": 959.8, "steps": 402, "end": "lap"},
                                                                    "ai": {"score": 964.0, "steps": 360, "end": "lap"}}}))
    (run / "eval").mkdir()
    (run / "eval" / "table.md").write_text(markdown_table([{
        "track": "lighthouse", "laps": 3, "episodes": 4, "mean": 700.5, "std": 10.0, "median_lap_steps": 420.0, "ai_steps": 360,
        "ai_end": "lap", "ratio": 1.17, "centreline": 959.8, "centreline_end": "lap", "ai_score": 964.0,
        "ends": {"lap": 3, "stuck": 1}}], "a controller: 4 episodes per track"))
    # A lap video whose frames are known: grey levels rising 0, 10, ... 190 over 20 frames at 10 fps.
    write_video(run / "best_lap.mp4", [np.full((120, 160, 3), 10 * k, np.uint8) for k in range(LAP_FRAMES)], fps=10)
    other = run.parent / "other-small"
    other.mkdir()
    (other / "summary.json").write_text(json.dumps({"timings": {}, "wall_s": 900.0, "preset": "small", "workers": 2,
                                                    "lap": {"track": "lighthouse", "score": 960.5, "steps": 395, "end": "lap"}}))
    return run


def test_event_files_have_losses_images_cmaes_and_hparams(run: Path):
    assert sorted(p.name for p in (run / "tb").iterdir()) == ["evolve", "main", "train_mdn", "train_vae"]
    vae = accumulator(run, "train_vae")
    steps = [e.step for e in vae.Scalars("vae/step/loss")]
    n_batches = len(steps) // VAE_EPOCHS
    assert n_batches >= 1 and steps == list(range(VAE_EPOCHS * n_batches))  # every optimiser step, numbered across epochs
    for tag in ("vae/step/recon", "vae/step/kl"):
        assert len(vae.Scalars(tag)) == VAE_EPOCHS * n_batches
    ends = [e * n_batches - 1 for e in range(1, VAE_EPOCHS + 1)]  # the per-epoch rows sit at each epoch's last step
    for tag in ("vae/epoch/train_loss", "vae/epoch/val_loss", "vae/epoch/val_kl", "vae/epoch/frames_per_s"):
        assert [e.step for e in vae.Scalars(tag)] == ends, tag
    assert [e.value for e in vae.Scalars("vae/epoch/epoch")] == list(range(1, VAE_EPOCHS + 1))
    mdn = accumulator(run, "train_mdn")
    assert [e.step for e in mdn.Scalars("mdn/step/loss")] == list(range(MDN_EPOCHS * MDN_STEPS))
    assert [e.step for e in mdn.Scalars("mdn/epoch/val_nll")] == [e * MDN_STEPS - 1 for e in range(1, MDN_EPOCHS + 1)]
    assert all(np.isfinite(e.value) for e in mdn.Scalars("mdn/step/nll"))
    evo = accumulator(run, "evolve")
    for key in ("best", "mean", "worst", "sigma", "best_so_far"):
        assert [e.step for e in evo.Scalars(f"evolve/{key}")] == list(range(1, GENERATIONS + 1)), key
    best, worst = evo.Scalars("evolve/best"), evo.Scalars("evolve/worst")
    assert all(b.value >= w.value for b, w in zip(best, worst))
    main = accumulator(run, "main")
    assert main.Scalars("summary/lap_score")[0].value == pytest.approx(123.4)
    assert "_hparams_/experiment" in main.PluginTagToContent("hparams")

    images = vae.Images("vae/reconstruction")
    assert [i.step for i in images] == ends
    assert images[-1].encoded_image_string[:8] == b"\x89PNG\r\n\x1a\n" and images[-1].width == 8 * 64
    assert images[-1].height == 2 * 64

    for acc, stage in ((vae, "train_vae"), (mdn, "train_mdn"), (evo, "evolve")):
        assert f"config/{stage}/text_summary" in acc.Tags()["tensors"]
    text = vae.Tensors("config/train_vae/text_summary")[0].tensor_proto.string_val[0].decode()
    assert '"epochs": 2' in text


def served(run: Path, stage: str):
    """The reader TensorBoard's server uses (``plugin_event_accumulator``: every summary a tensor), on the stage's run."""
    from tensorboard.backend.event_processing import plugin_event_accumulator as pea

    acc = pea.EventAccumulator(str(records.folder(run, stage)), size_guidance=pea.STORE_EVERYTHING_SIZE_GUIDANCE)
    acc.Reload()
    return acc


def steps_of(acc) -> dict[str, list[int]]:
    """Every tag's steps, in the order the server's reader gives them."""
    return {t: [e.step for e in acc.Tensors(t)] for t in acc.Tags()["tensors"]}


def interrupted_and_resumed(last: list[Path], train) -> None:
    """``train(epochs)`` to 1, to 2, then as if killed in epoch 2 after its records were written but before its
    checkpoint (the ``last`` files of epoch 1 put back), to 2 again: the resume redoes epoch 2."""
    train(1)
    saved = [p.read_bytes() for p in last]
    train(2)
    for p, b in zip(last, saved):
        p.write_bytes(b)
    train(2)


def test_resumed_stages_write_each_step_once(tmp_path: Path):
    """train_vae, train_mdn and evolve resumed from a checkpoint older than their records: TensorBoard's reader gives
    each step of every tag once, the redone ones from the resumed run."""
    run, data = tmp_path / "run", tiny_collection(tmp_path / "data")
    model = VAEConfig(z_dim=8, channels=(8, 16, 16, 32))

    def vae(epochs: int) -> None:
        train_vae.train(train_vae.TrainVAEConfig(data=str(data), run=str(run), epochs=epochs, batch_size=32, val_fraction=0.25,
                                                 model=model, resume=(run / "vae.last.pt").exists()), progress=False)

    interrupted_and_resumed([run / "vae.last.pt", run / "vae.last.json"], vae)
    train_vae.encode(train_vae.TrainVAEConfig(data=str(data), run=str(run), val_fraction=0.25, model=model))

    def mdn(epochs: int) -> None:
        train_mdn.train(train_mdn.TrainMDNConfig(run=str(run), epochs=epochs, steps_per_epoch=MDN_STEPS, seq_len=8, batch_size=4,
                                                 model=MDNRNNConfig(z_dim=8, hidden=16, gaussians=2),
                                                 resume=(run / "mdn.last.pt").exists()), progress=False)

    interrupted_and_resumed([run / "mdn.last.pt", run / "mdn.last.json"], mdn)

    def cmaes(generations: int) -> None:
        evolve.evolve(evolve.EvolveConfig(run=str(run), dream=True, init="fit", eval_every=0, popsize=4, rollouts=2,
                                          dream_steps=10, generations=generations, workers=1,
                                          resume=(run / "controller" / "evolve.pt").exists()), progress=False)

    interrupted_and_resumed([run / "controller" / "evolve.pt"], cmaes)
    records.close(run)

    steps = steps_of(served(run, "train_vae"))
    n = len(steps["vae/step/loss"]) // 2
    assert steps["vae/step/loss"] == steps["vae/step/kl"] == list(range(2 * n))
    assert steps["vae/epoch/val_loss"] == steps["vae/reconstruction"] == [n - 1, 2 * n - 1]
    assert steps["config/train_vae/text_summary"] == [0, n]  # the fresh start and the (last) resume
    steps = steps_of(served(run, "train_mdn"))
    assert steps["mdn/step/loss"] == list(range(2 * MDN_STEPS))
    assert steps["mdn/epoch/val_loss"] == [MDN_STEPS - 1, 2 * MDN_STEPS - 1]
    assert steps["config/train_mdn/text_summary"] == [0, MDN_STEPS]
    evo = served(run, "evolve")
    steps = steps_of(evo)
    assert steps["evolve/best"] == steps["evolve/sigma"] == [1, 2]
    assert steps["config/evolve/text_summary"] == [0, 2]
    for stage in ("train_vae", "train_mdn", "evolve"):
        for tag, s in steps_of(served(run, stage)).items():
            assert len(s) == len(set(s)), (stage, tag)
    # Generation 2 is the last run's: written after that run started (its config, at step 2).
    assert evo.Tensors("evolve/best")[-1].wall_time >= evo.Tensors("config/evolve/text_summary")[-1].wall_time
    # The legacy reader (``EventAccumulator``) drops the stale scalars and images too (it keeps text tensors).
    legacy = accumulator(run, "train_vae")
    assert [e.step for e in legacy.Scalars("vae/step/loss")] == list(range(2 * n))
    assert [e.step for e in legacy.Images("vae/reconstruction")] == [n - 1, 2 * n - 1]


WRITE_ROWS = """
import sys
from vmc import records
run, last = sys.argv[1], int(sys.argv[2])
records.text(run, "config/main", "main job")
for k in range(1, last + 1):
    records.scalars(run, "iterate", {"real": 10.0 * k + last}, k)
"""


def test_a_stage_run_again_in_another_process_replaces_its_records(tmp_path: Path):
    """A stage without a resume step (iterate writes every round's row again, main its config) starts at step 0 in
    a new process: TensorBoard shows the last process's records only."""
    import subprocess
    import sys

    for last in (2, 3):
        subprocess.run([sys.executable, "-c", WRITE_ROWS, str(tmp_path), str(last)], check=True, timeout=300)
    from tensorboard.util.tensor_util import make_ndarray

    rows = served(tmp_path, "iterate").Tensors("iterate/real")
    assert [(e.step, make_ndarray(e.tensor_proto).item()) for e in rows] == [(1, 13.0), (2, 23.0), (3, 33.0)]
    assert [e.step for e in served(tmp_path, "main").Tensors("config/main/text_summary")] == [0]


def chromium_command(tmp: Path) -> list[str]:
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    if exe is None:
        pytest.skip("chromium is not installed (./run.sh setup installs the Debian package)")
    return [exe, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
            "--disable-component-update", "--disable-sync", f"--user-data-dir={tmp / 'chromium-profile'}"]


def chromium(*args: str, tmp: Path) -> subprocess.CompletedProcess:
    proc = subprocess.run([*chromium_command(tmp), *args], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc


def chromium_dom_once(url: str, ready: str, *args: str, tmp: Path) -> str:
    """The page's DOM once the JavaScript expression ``ready`` holds, asked through the DevTools protocol on a pipe
    (``--remote-debugging-pipe``: commands on the browser's fd 3, answers on its fd 4, each JSON ending in NUL).
    Videos decode in real time, which ``--virtual-time-budget`` does not wait for; this waits for the page itself,
    however slow the machine (the limit only stops a hang)."""
    import os
    import select
    import time

    to_browser, from_browser = os.pipe(), os.pipe()
    cmd = ["bash", "-c", f'exec "$@" 3<&{to_browser[0]} 4>&{from_browser[1]}', "chromium",
           *chromium_command(tmp), "--remote-debugging-pipe", *args, "about:blank"]
    proc = subprocess.Popen(cmd, pass_fds=(to_browser[0], from_browser[1]), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    os.close(to_browser[0])
    os.close(from_browser[1])
    buffer, ids, deadline = b"", iter(range(1, 100)), time.monotonic() + 900

    def send(method: str, session: str = "", **params) -> int:
        i = next(ids)
        msg = {"id": i, "method": method, "params": params, **({"sessionId": session} if session else {})}
        os.write(to_browser[1], json.dumps(msg).encode() + b"\0")
        return i

    def until(match) -> dict:
        nonlocal buffer
        while True:
            while b"\0" in buffer:
                raw, buffer = buffer.split(b"\0", 1)
                msg = json.loads(raw)
                if match(msg):
                    assert "error" not in msg, msg
                    return msg
            assert time.monotonic() < deadline and proc.poll() is None, "chromium hung or ended"
            if select.select([from_browser[0]], [], [], 1.0)[0]:
                buffer += os.read(from_browser[0], 1 << 20)

    try:
        i = send("Target.createTarget", url="about:blank")
        target = until(lambda m: m.get("id") == i)["result"]["targetId"]
        i = send("Target.attachToTarget", targetId=target, flatten=True)
        session = until(lambda m: m.get("id") == i)["result"]["sessionId"]
        i = send("Page.enable", session)
        until(lambda m: m.get("id") == i)
        send("Page.navigate", session, url=url)
        until(lambda m: m.get("method") == "Page.loadEventFired" and m.get("sessionId") == session)
        wait = ("new Promise(function (done) { (function poll() { if (" + ready + ") done(document.documentElement.outerHTML);"
                " else setTimeout(poll, 100); })(); })")
        i = send("Runtime.evaluate", session, expression=wait, awaitPromise=True, returnByValue=True)
        return until(lambda m: m.get("id") == i)["result"]["result"]["value"]
    finally:
        try:
            send("Browser.close")  # the browser ends its own helper processes
            proc.wait(timeout=60)
        except (OSError, subprocess.TimeoutExpired):
            proc.kill()
            proc.wait()
        os.close(to_browser[1])
        os.close(from_browser[0])


def test_report_renders_in_headless_chromium_with_every_picture(run: Path, tmp_path: Path):
    from PIL import Image

    page = write_report(run)
    assert page == run / "report.html"
    html = page.read_text()
    # Self-contained: every picture is a data URI; videos are linked beside the page.
    srcs = re.findall(r"<img [^>]*src=\"([^\"]+)\"", html)
    assert len(srcs) >= 5 and all(s.startswith("data:image/png;base64,") for s in srcs)  # 3 curves, 2 recon grids
    assert 'src="dream.mp4"' in html and 'src="best_lap.mp4"' in html
    assert "700.5 ± 10.0" in html and "959.8 (402 steps, lap)" in html
    assert "other-small" in html and re.search(r"960\.5 <span class=\"badge best\">best", html)
    assert re.search(r"123\.4 <span class=\"badge worst\">worst", html)

    dom = chromium("--virtual-time-budget=10000", "--dump-dom", page.as_uri(), tmp=tmp_path).stdout
    assert f"all images loaded: {len(srcs)}/{len(srcs)}" in dom, re.findall(r'id="vmc-images">([^<]*)', dom)
    widths = [int(w) for w in re.findall(r'data-natural-width="(\d+)"', dom)]
    assert len(widths) == len(srcs) and min(widths) > 0

    # The videos play in Chromium: loaded, seeked to the middle, and that frame decoded. Reading its pixels from a
    # file:// page needs --allow-file-access-from-files (the page says "unreadable" without it).
    dom = chromium_dom_once(page.as_uri(), 'document.getElementById("vmc-videos").textContent != "videos not checked"',
                            "--allow-file-access-from-files", tmp=tmp_path)
    assert "all videos play: 2/2" in dom, re.findall(r'id="vmc-videos">([^<]*)', dom)
    videos = {m.group(1): dict(re.findall(r'(data-[a-z-]+)="([^"]*)"', m.group(0)))
              for m in re.finditer(r'<video [^>]*src="([^"]+)"[^>]*>', dom)}
    assert set(videos) == {"dream.mp4", "best_lap.mp4"}, videos
    dream, lap = videos["dream.mp4"], videos["best_lap.mp4"]
    assert dream["data-plays"] == lap["data-plays"] == "yes"
    assert float(dream["data-duration"]) == pytest.approx((DREAM_STEPS + 1) / 10, abs=0.15)
    assert dream["data-size"] == "512x256"  # real | dream, 64x64 each, 4x
    assert float(dream["data-middle-mean"]) > 1  # a picture, not a black frame
    assert float(lap["data-duration"]) == pytest.approx(LAP_FRAMES / 10, abs=0.15) and lap["data-size"] == "160x120"
    assert abs(float(lap["data-middle-mean"]) - 10 * LAP_FRAMES / 2) <= 15  # the frame at 1 s: grey level 100

    shot = tmp_path / "report.png"
    chromium(f"--screenshot={shot}", "--window-size=1200,2000", page.as_uri(), tmp=tmp_path)
    pixels = np.asarray(Image.open(shot).convert("RGB"))
    assert pixels.shape == (2000, 1200, 3)
    assert pixels.std() > 20 and len(np.unique(pixels.reshape(-1, 3), axis=0)) > 2000  # text, tables and pictures, not blank
    shutil.copy(shot, run.parent / "report-screenshot.png")  # left for a look (pytest's tmp folders are kept a while)


@pytest.mark.game
def test_collect_and_evaluate_records(tiny_run: Path, tmp_path: Path):
    """Records of collect and evaluate; the evaluation's game worker logs into the stage's log file."""
    import logging

    from vmc.collect import CollectConfig, Collector
    from vmc.evaluate import EvaluateConfig, evaluate

    run = tmp_path / "run"
    Collector(CollectConfig(out=str(tmp_path / "data"), episodes=2, workers=1, max_steps=15)).run(progress=False, record_to=run)
    (run / "controller").mkdir(parents=True)
    shutil.copy(tiny_run / "run" / "controller" / "best.pt", run / "controller" / "best.pt")
    handler = logging.FileHandler(run / "log.txt")  # as the main job logs into its run folder
    handler.setFormatter(logging.Formatter("%(processName)s %(levelname)s %(name)s %(message)s"))
    logging.getLogger().addHandler(handler)
    try:
        evaluate(EvaluateConfig(controller=str(run / "controller" / "best.pt"), tracks=["lighthouse"], episodes=1,
                                max_steps=20, workers=1, video=False), progress=False)
    finally:
        logging.getLogger().removeHandler(handler)
        handler.close()
    records.close(run)
    lines = (run / "log.txt").read_text().splitlines()
    started = [x for x in lines if "game started" in x]  # one line from the one worker (vmc.racing), once
    assert len(started) == 1 and started[0].startswith("vmc-evaluate-0 INFO vmc.racing game started on lighthouse in "), lines
    acc = accumulator(run, "collect")
    fps = acc.Scalars("collect/frames_per_s")
    assert len(fps) == 2 and all(e.value > 0 for e in fps) and fps[-1].step == 30  # x axis: frames so far
    assert acc.Scalars("collect/run/steps")[0].value == 30
    acc = accumulator(run, "eval")
    assert len(acc.Scalars("eval/lighthouse/mean")) == 1
    table = acc.Tensors("eval/table/text_summary")[0].tensor_proto.string_val[0].decode()
    assert "| lighthouse |" in table
