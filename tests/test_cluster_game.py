"""Game workers on Ray (``vmc.cluster``): a local Ray gives the local pool's results (evolve, collect), faults are
survived (a killed actor, a hung task, a killed worker on a two-node cluster), bugs surface, logs come back.

Every Ray process these tests start lives under a temp dir of its own (short: Ray's socket paths have a length
limit) and is ended by pid at the end (``ray stop`` would end every Ray on the machine)."""

import csv
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import h5py
import numpy as np
import pytest

ray = pytest.importorskip("ray")

from vmc import evolve  # noqa: E402
from vmc.checkpoints import load_controller  # noqa: E402
from vmc.collect import CollectConfig, Collector  # noqa: E402
from vmc.data import RolloutDataset, shard_paths  # noqa: E402
from vmc.racing import racing_pool  # noqa: E402
from vmc.sim.env import EnvConfig  # noqa: E402

pytestmark = pytest.mark.game
TESTS = Path(__file__).parent
RAY = str(Path(sys.executable).with_name("ray"))
# Explicit, for the head, the nodes and this driver alike (Ray 2.60 decides per process otherwise, from ~/.ray).
RAY_ENV = {"RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0"}


def _processes() -> dict[int, tuple[int, str, str]]:
    out = {}
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                cmd = (d / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
                state, ppid = (d / "stat").read_text().rsplit(")", 1)[1].split()[:2]
            except (OSError, ValueError):
                continue
            out[int(d.name)] = (int(ppid), cmd, state)
    return out


def ray_processes(marks: list[str]) -> set[int]:
    """Live processes whose command line names one of ``marks`` (our temp dirs), and their descendants."""
    ps = _processes()
    pids = {p for p, (_, cmd, _) in ps.items() if any(m in cmd for m in marks)}
    while True:
        more = {p for p, (pp, _, _) in ps.items() if pp in pids} - pids
        if not more:
            break
        pids |= more
    return {p for p in pids if ps[p][2] != "Z" and p != os.getpid()}


def end_processes(marks: list[str]) -> set[int]:
    """SIGTERM, then SIGKILL, the processes of :func:`ray_processes`; returns those still alive (none, we hope)."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for p in ray_processes(marks):
            try:
                os.kill(p, sig)
            except ProcessLookupError:
                pass
        end = time.monotonic() + 5
        while time.monotonic() < end and ray_processes(marks):
            time.sleep(0.2)
    return ray_processes(marks)


def short_tmp() -> str:
    return tempfile.mkdtemp(prefix="r", dir="/tmp")


@pytest.fixture(scope="module")
def local_ray():
    """``ray.init(num_cpus=2)`` in this process, with tests/ importable by the actors; ended at the module's end."""
    tmp = short_tmp()
    with pytest.MonkeyPatch.context() as mp:
        for k, v in RAY_ENV.items():
            mp.setenv(k, v)
        ray.init(num_cpus=2, include_dashboard=False, _temp_dir=tmp, log_to_driver=True,
                 runtime_env={"env_vars": {"PYTHONPATH": str(TESTS)}})
        try:
            yield tmp
        finally:
            ray.shutdown()
            left = end_processes([tmp])
            shutil.rmtree(tmp, ignore_errors=True)
            assert not left, f"Ray processes left behind: {left}"


def test_raypool_order_faults_bugs_and_logs(local_ray, tmp_path: Path, caplog):
    sys.path.insert(0, str(TESTS))
    from helpers_cluster import setup_square

    from vmc.cluster import RayPool

    with caplog.at_level("INFO"), RayPool(2, setup_square, (str(tmp_path),), task_timeout=5, name="sq") as pool:
        got = []
        assert pool.map([1, 2, 3, 4, 5], on_result=lambda i, r: got.append(i)) == [1, 4, 9, 16, 25]
        assert sorted(got) == [0, 1, 2, 3, 4]
        assert pool.map([6, "crash-once", 7, "hang-once", 8]) == [36, "survived", 49, "survived", 64]
        assert pool.restarts == 2
        assert pool.map([9]) == [81]  # the replacements work
        with pytest.raises(RuntimeError, match=r"(?s)sq \d failed.*helpers_cluster.py.*ValueError: a bug in the task"):
            pool.map(["bug"])
    assert "died (ActorDiedError" in caplog.text and "hung (silent for 5 s) on task 3, which runs again" in caplog.text
    remote = [r for r in caplog.records if r.name == "vmc.tests.cluster" and r.getMessage() == "squared 9"]
    assert remote and remote[0].processName.startswith("sq-")  # a worker's record, in this process's logging


def _fitness_rows(run: Path) -> list[dict]:
    with open(run / "controller" / "log.csv") as f:
        return [{k: row[k] for k in ("generation", "best", "mean", "worst", "ended")} for row in csv.DictReader(f)]


def test_evolve_generation_on_ray_equals_local_pool(local_ray, tiny_run: Path, tmp_path: Path):
    # tiny_run's controller comes from this very config on the local pool (conftest); the same on Ray.
    run = tmp_path / "run"
    shutil.copytree(tiny_run / "run", run)
    evolve.evolve(evolve.EvolveConfig(run=str(run), workers=2, popsize=4, rollouts=1, generations=1, max_steps=20,
                                      eval_every=0, init="fit", force=True, cluster="ray"), progress=False)
    assert _fitness_rows(run) == _fitness_rows(tiny_run / "run")
    ours, theirs = load_controller(run / "controller" / "best.pt")[0], load_controller(tiny_run / "run" / "controller" / "best.pt")[0]
    np.testing.assert_array_equal(ours["params"], theirs["params"])


def _episodes(folder: Path) -> dict[int, dict]:
    out = {}
    with RolloutDataset(folder) as ds:
        for ref in ds.episodes:
            with h5py.File(ref.shard) as f:
                g = f[ref.name]
                out[ref.index] = {"attrs": dict(g.attrs), **{k: (g[k].dtype, g[k][()]) for k in g}}
    return out


def test_collection_on_ray_equals_local_pool(local_ray, tiny_run: Path, tmp_path: Path):
    # tiny_run's data/ was collected with this config by two local workers (conftest).
    m = Collector(CollectConfig(out=str(tmp_path), episodes=4, workers=2, max_steps=30, cluster="ray")).run(progress=False)
    assert m["episodes"] == 4 and m["seeds"] == [0, 1, 2, 3]
    assert [p.name.endswith("-ray.h5") for p in shard_paths(tmp_path)] == [True]  # the head's own shard
    ours, theirs = _episodes(tmp_path), _episodes(tiny_run / "data")
    assert sorted(ours) == sorted(theirs) == [0, 1, 2, 3]
    for i in ours:
        assert ours[i].keys() == theirs[i].keys()
        for k in ours[i]:
            if k == "attrs":
                assert ours[i][k] == theirs[i][k]
            else:
                assert ours[i][k][0] == theirs[i][k][0], k
                np.testing.assert_array_equal(ours[i][k][1], theirs[i][k][1], err_msg=f"episode {i} {k}")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ray_start(*args: str) -> None:
    proc = subprocess.run([RAY, "start", "--disable-usage-stats", *args], capture_output=True, text=True, timeout=120,
                          env={**os.environ, **RAY_ENV})
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]


def test_two_node_cluster_survives_a_killed_worker(tiny_run: Path):
    if ray.is_initialized():
        ray.shutdown()  # this driver joins the two-node cluster below instead
    head, node = short_tmp(), short_tmp()
    port = _free_port()
    try:
        with pytest.MonkeyPatch.context() as mp:
            for k, v in RAY_ENV.items():
                mp.setenv(k, v)
            _ray_start("--head", "--num-cpus", "1", "--port", str(port), "--temp-dir", head, "--include-dashboard", "false")
            _ray_start("--address", f"127.0.0.1:{port}", "--num-cpus", "1", "--temp-dir", node)
            _, models = load_controller(tiny_run / "run" / "controller" / "best.pt")
            cfg = evolve.EvolveConfig(run=str(tiny_run / "run"), popsize=4, rollouts=2, max_steps=40, eval_every=0, init="fit")
            solutions = np.random.default_rng(0).normal(0, 0.5, (4, models.n_params()))
            with racing_pool(0, models, EnvConfig(max_steps=cfg.max_steps), cfg.action_noise, task_timeout=120,
                             name="vmc-evolve-worker", cluster=f"127.0.0.1:{port}") as pool:
                assert len(ray.nodes()) == 2 and len(pool.slots) == 2  # --workers 0: the cluster's CPUs
                clean = evolve.score_generation(cfg, solutions, 1, pool, None)[0]

                def kill_a_busy_worker() -> None:
                    while True:
                        busy = [s for s in list(pool.slots.values()) if s.task is not None and s.pid]
                        if busy:
                            time.sleep(0.3)  # in the middle of its race
                            os.kill(busy[-1].pid, signal.SIGKILL)
                            return
                        time.sleep(0.05)

                killer = threading.Thread(target=kill_a_busy_worker, daemon=True)
                killer.start()
                faulty = evolve.score_generation(cfg, solutions, 1, pool, None)[0]
                killer.join(5)
                assert pool.restarts == 1
            assert faulty.shape == (4, 2) and np.isfinite(faulty).all()  # every candidate scored...
            np.testing.assert_array_equal(faulty, clean)  # ...as without the fault
    finally:
        if ray.is_initialized():
            ray.shutdown()
        left = end_processes([head, node])
        shutil.rmtree(head, ignore_errors=True)
        shutil.rmtree(node, ignore_errors=True)
    assert not left, f"Ray processes left behind: {left}"
