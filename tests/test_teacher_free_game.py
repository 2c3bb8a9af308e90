"""The teacher-free recipe (``vmc.main --teacher-free``) on the real game, on the debug preset's tiny budget:
random driving first, two rounds of the controller's own races and CMA-ES from zeros in the dream; killed
after its first round, it resumes and finishes without redoing that round."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from vmc.checkpoints import load_checkpoint
from vmc.data import RolloutDataset
from vmc.latents import latents_info

ROOT = Path(__file__).resolve().parents[1]


def start(tmp_path: Path, *more: str) -> subprocess.Popen:
    args = ["-m", "vmc.main", "--preset", "debug", "--teacher-free", "--runs", str(tmp_path / "runs"),
            "--data", str(tmp_path / "data"), "--workers", "2", *more]
    log = open(tmp_path / "main.log", "a")
    return subprocess.Popen([sys.executable, *args], cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)  # its own process group: the kill takes its game workers too


def test_teacher_free_recipe_runs_two_rounds_and_resumes_after_kill(tmp_path: Path):
    run = tmp_path / "runs" / "lighthouse-debug-teacher-free"
    first_round = run / "iterate" / "round-1" / "round.json"
    proc = start(tmp_path)
    try:
        while not first_round.exists():
            assert proc.poll() is None, (tmp_path / "main.log").read_text()[-3000:]
            time.sleep(0.5)
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert not (run / "summary.json").exists()
    round1 = first_round.read_text()

    proc = start(tmp_path)
    assert proc.wait(timeout=800) == 0, (tmp_path / "main.log").read_text()[-3000:]
    assert first_round.read_text() == round1  # round 1 was not redone
    summary = json.loads((run / "summary.json").read_text())
    rows = [json.loads((run / "iterate" / f"round-{k}" / "round.json").read_text()) for k in (1, 2)]
    assert rows[1]["episodes"] == rows[0]["episodes"] + 2 and rows[1]["steps"] > rows[0]["steps"]
    assert all(r["points"] and r["seconds"] > 0 for r in rows)  # dream-vs-real points and wall time per round
    # The kept controller's dream score again on draws that did not pick it.
    assert all(isinstance(r["dream_check"], float) and r["dream_check_std"] >= 0 for r in rows)
    assert (run / "iterate" / "rounds.csv").read_text().count("\n") == 3  # header + 2 rounds
    # Round 2 fine-tuned the VAE on the grown collection and encoded it with that VAE.
    vae2 = load_checkpoint(Path(rows[1]["vae"]), "vae")
    assert Path(rows[1]["vae"]) == run / "iterate" / "round-2" / "vae.pt" and vae2["config"]["init"] == str(run / "vae.pt")
    assert vae2["fingerprint"] != load_checkpoint(run / "vae.pt", "vae")["fingerprint"]
    assert latents_info(Path(rows[1]["latents"]))["vae"] == vae2["fingerprint"]
    assert (run / "iterate" / "dream_vs_real.png").stat().st_size > 0
    assert summary["lap"]["steps"] > 0 and (run / "best_lap.mp4").stat().st_size > 0

    # No privileged driver anywhere: random driving, then the controller's own races.
    with RolloutDataset(tmp_path / "data", "all") as base, RolloutDataset(run / "iterate" / "data", "all") as grown:
        assert {e.policy for e in base.episodes} == {"brownian"}
        assert {e.policy for e in grown.episodes} == {"brownian", "controller"}
    evolve_cfg = load_checkpoint(run / "iterate" / "round-1" / "controller" / "evolve.pt", "evolve")["config"]
    assert evolve_cfg["init"] == "zeros" and evolve_cfg["dream"]

    # The finished recipe started again with more rounds goes on from its last round.
    round2 = (run / "iterate" / "round-2" / "round.json").read_text()
    proc = start(tmp_path, "--rounds", "3")
    assert proc.wait(timeout=800) == 0, (tmp_path / "main.log").read_text()[-3000:]
    assert first_round.read_text() == round1 and (run / "iterate" / "round-2" / "round.json").read_text() == round2
    row3 = json.loads((run / "iterate" / "round-3" / "round.json").read_text())
    assert row3["episodes"] == rows[1]["episodes"] + 2
    # The lap is played again with round 3's controller, and with round 2's when the run is looked at with 2 rounds.
    assert json.loads((run / "best_lap.json").read_text())["controller"] == row3["controller"]
    proc = start(tmp_path, "--rounds", "2")
    assert proc.wait(timeout=800) == 0, (tmp_path / "main.log").read_text()[-3000:]
    assert json.loads((run / "best_lap.json").read_text())["controller"] == rows[1]["controller"]
