"""The environment on the real game: rendering, determinism, Gymnasium API, reference drivers."""

import os
import subprocess
import sys
import textwrap

import gymnasium
import numpy as np
import pytest
from conftest import run_python
from gymnasium.utils.env_checker import check_env

import vmc
from vmc.sim.drivers import CentreLineDriver, GameAIDriver, run_episode
from vmc.sim.env import SuperTuxKartEnv, list_tracks

pytestmark = pytest.mark.game


def test_passes_gymnasium_check_env(lighthouse_env):
    check_env(lighthouse_env.unwrapped)
    assert lighthouse_env.observation_space.shape == (64, 64, 3)
    assert lighthouse_env.action_space.shape == (3,)


def test_frames_look_like_a_game_and_change_as_the_kart_moves(lighthouse_env):
    obs, info = lighthouse_env.reset(seed=0)
    assert obs.shape == (64, 64, 3) and obs.dtype == np.uint8
    assert obs.std() > 20, "frame is (nearly) blank"
    assert len(np.unique(obs.reshape(-1, 3), axis=0)) > 200
    frames = [obs]
    for _ in range(30):
        obs, reward, terminated, truncated, info = lighthouse_env.step(np.array([0.0, 1.0, 0.0], np.float32))
        frames.append(obs)
    assert info["speed"] > 5.0 and info["lap_fraction"] > 0.01
    assert info["lap_time"] == pytest.approx(3.0, abs=0.2)  # the race clock runs (30 steps of 0.1 s)
    diffs = [np.abs(a.astype(int) - b).mean() for a, b in zip(frames, frames[1:])]
    assert np.mean(diffs) > 2.0, "frames do not change while the kart drives"


def test_same_seed_same_frames(lighthouse_env):
    def episode():
        obs, _ = lighthouse_env.reset(seed=3)
        out = [obs]
        for t in range(20):
            obs, *_ = lighthouse_env.step(np.array([np.sin(t / 3), 1.0, 0.0], np.float32))
            out.append(obs)
        return np.stack(out)

    first, second = episode(), episode()
    np.testing.assert_array_equal(first[0], second[0])
    np.testing.assert_array_equal(first, second)


def test_long_episode_repeats_exactly_after_a_different_one(lighthouse_env):
    # Found with a controller: lighthouse's rotating beams (visible from about step 60) took their phase
    # from the renderer's clock at the previous race's end, so frames (and a pixel-driven agent) differed.
    env = lighthouse_env.unwrapped

    def drive(steps: int, wiggle: float) -> np.ndarray:
        obs, info = env.reset(seed=0)
        driver = CentreLineDriver()
        driver.reset(env.track)
        out = [obs]
        for t in range(steps):
            a = driver.act(obs, info)
            a[0] = np.clip(a[0] + wiggle * np.sin(t / 5), -1, 1)
            obs, _, terminated, truncated, info = env.step(a)
            out.append(obs)
            if terminated or truncated:
                break
        return np.stack(out)

    first = drive(150, 0.0)
    drive(37, 0.8)  # another race, of another length, in between
    np.testing.assert_array_equal(drive(150, 0.0), first)


@pytest.mark.parametrize("track", ["lighthouse", "zengarden", "lighthouse-reverse"])
def test_restarted_race_gives_the_frames_of_a_freshly_loaded_one(track):
    """Resets reuse the loaded track (vmc.sim.restart): after other episodes, the same actions must give the
    frames, distances and scores of the race's first episode, which loaded the track."""
    from vmc.sim.env import SuperTuxKartEnv

    rng = np.random.default_rng(0)
    actions = np.stack([np.sin(np.arange(120) / 7), np.full(120, 1.0), np.zeros(120)], 1).astype(np.float32)
    env = SuperTuxKartEnv(track=track)
    assert env._restart is not None

    def episode(acts):
        obs, info = env.reset(seed=0)
        frames, distance = [obs], [info["distance"]]
        for a in acts:
            obs, _, terminated, truncated, info = env.step(a)
            frames.append(obs)
            distance.append(info["distance"])
            if terminated or truncated:
                break
        return np.stack(frames), np.array(distance), info["score"]

    fresh = episode(actions)  # the first reset loads the track
    assert env._race is not None and not env._needs_new_race
    for other in (rng.uniform([-1, 0, 0], [1, 1, 1], (90, 3)).astype(np.float32), np.tile([0.0, 1.0, 0.0], (200, 1))):
        episode(other)  # another race in between, of another length
        again = episode(actions)  # a restart, not a load
        np.testing.assert_array_equal(again[0], fresh[0])
        np.testing.assert_array_equal(again[1], fresh[1])
        assert again[2] == fresh[2]
    env.close()


def test_frames_do_not_depend_on_what_c_rand_drew_before_the_race(monkeypatch):
    """The game draws from C ``rand()`` while it loads a race (the wheels' angles), and how much it has drawn by then
    changed with the machine's load: a loaded race must give the same frames whatever ``rand()``'s state."""
    import ctypes

    import vmc.sim.env as env_module

    libc = ctypes.CDLL(None)
    actions = np.stack([np.sin(np.arange(15) / 5), np.full(15, 1.0), np.zeros(15)], 1).astype(np.float32)

    def frames(seed: int) -> np.ndarray:
        monkeypatch.setattr(env_module, "_LIBC", type("Libc", (), {"srand": staticmethod(lambda _: libc.srand(seed))}))
        env = SuperTuxKartEnv(track="lighthouse")
        out = [env.reset(seed=0)[0]] + [env.step(a)[0] for a in actions]
        env.close()
        return np.stack(out)

    np.testing.assert_array_equal(frames(777), frames(0))


def test_objects_colours_do_not_depend_on_the_process_or_what_it_loaded_before():
    """Loading scotland draws each sheep's hue from STK's generator, which each process seeded from
    ``std::random_device`` and which went on from wherever earlier loads left it: the sheep 41 steps into the
    centre-line driver's race came out in another colour in each process, and the agent drove another lap. Same
    frames now whether scotland is a process's first track or comes after two others."""
    code = """
        import hashlib, os
        from vmc.sim.drivers import CentreLineDriver
        from vmc.sim.env import EnvConfig, env_for
        env = None
        for track in os.environ["VMC_TEST_TRACKS"].split():
            env = env_for(env, EnvConfig(track=track))
            obs, info = env.reset(seed=0)  # loads the track
        driver = CentreLineDriver()
        driver.reset(env.track, seed=0)
        digest = hashlib.md5(obs.tobytes())
        for _ in range(45):
            obs, _, terminated, truncated, info = env.step(driver.act(obs, info))
            digest.update(obs.tobytes())
        print(digest.hexdigest())
    """

    def frames(*tracks: str) -> str:
        return run_python(code, env={"VMC_TEST_TRACKS": " ".join(tracks)}).stdout.split()[-1]

    first = frames("scotland")
    assert frames("scotland") == first
    assert frames("lighthouse", "zengarden", "scotland") == first


def test_stuck_and_step_limit_end_episodes():
    env = SuperTuxKartEnv(track="lighthouse", stuck_steps=15)
    try:
        env.reset(seed=0)
        for _ in range(40):
            _, _, terminated, truncated, info = env.step(np.zeros(3, np.float32))  # never accelerates
            if terminated or truncated:
                break
        assert terminated and not truncated and info["end"] == "stuck" and info["steps"] == 15
        assert info["score"] == pytest.approx(-0.1 * 15)
    finally:
        env.close()
    env = SuperTuxKartEnv(track="lighthouse", max_steps=12)
    try:
        env.reset(seed=0)
        for _ in range(12):
            _, _, terminated, truncated, info = env.step(np.array([0, 1, 0], np.float32))
        assert truncated and not terminated and info["end"] == "max_steps"
    finally:
        env.close()


def test_driving_off_the_track_terminates():
    env = SuperTuxKartEnv(track="lighthouse", offtrack_steps=10, stuck_steps=0, max_steps=300)
    try:
        env.reset(seed=0)
        for _ in range(300):
            _, _, terminated, truncated, info = env.step(np.array([1.0, 1.0, 0.0], np.float32))  # circles
            if terminated or truncated:
                break
        assert info["end"] == "off_track" and info["off_track"]
    finally:
        env.close()


@pytest.mark.parametrize("controller,driver", [("player", CentreLineDriver()), ("ai", GameAIDriver())],
                         ids=["centre-line", "game-ai"])
def test_reference_drivers_finish_a_lap_of_lighthouse(controller, driver):
    env = gymnasium.make(vmc.ENV_ID, track="lighthouse", controller=controller)
    try:
        result = run_episode(env, driver, seed=0)
    finally:
        env.close()
    assert result.end == "lap" and result.lap_fraction == 1.0
    assert result.score > 900


def test_reverse_track_is_raced_the_other_way_round():
    """``<track>-reverse`` is the game's reverse mode: the kart sets off the opposite way and the centre-line
    driver laps it with the same progress rules."""
    moves = {}
    for track in ("lighthouse", "lighthouse-reverse"):
        env = SuperTuxKartEnv(track=track)
        try:
            env.reset(seed=0)
            start = env.unwrapped._kart_state()[1].location.copy()
            for _ in range(20):
                env.step(np.array([0.0, 1.0, 0.0], np.float32))
            moves[track] = env.unwrapped._kart_state()[1].location - start
            if track.endswith("-reverse"):
                result = run_episode(env, CentreLineDriver(), seed=0)
                assert result.end == "lap" and result.score > 900
        finally:
            env.close()
    assert np.dot(moves["lighthouse"], moves["lighthouse-reverse"]) < 0


def test_game_ai_reports_its_actions(tmp_path):
    """In a fresh interpreter: the AI's race is then the process's first, whose thrown-away load steps a race that
    takes no actions."""
    run_python(f"""
        import numpy as np
        from vmc.sim.env import SuperTuxKartEnv
        env = SuperTuxKartEnv(track="zengarden", controller="ai", max_steps=60)
        env.reset(seed=0)
        np.save({str(tmp_path / "actions.npy")!r}, np.stack([env.step(np.zeros(3, np.float32))[4]["action"] for _ in range(60)]))
        env.close()
    """)
    actions = np.load(tmp_path / "actions.npy")
    assert actions[:, 1].max() > 0.5  # the AI accelerates
    assert np.abs(actions[:, 0]).max() > 0.05  # and steers


def test_unknown_track_lists_the_real_ones():
    with pytest.raises(ValueError, match="lighthouse") as err:
        gymnasium.make(vmc.ENV_ID, track="lighthose")
    assert "zengarden" in str(err.value)
    with pytest.raises(ValueError, match="race tracks are: abyss.*add -reverse"):
        gymnasium.make(vmc.ENV_ID, track="lighthose-reverse")


def test_track_list_matches_the_game():
    import pystk2

    SuperTuxKartEnv(track="lighthouse").close()  # the game is initialised from here on
    assert list_tracks() == sorted(pystk2.list_tracks(pystk2.RaceConfig.RaceMode.NORMAL_RACE))


def test_second_env_takes_the_race_and_the_first_says_so():
    a = SuperTuxKartEnv(track="lighthouse")
    b = SuperTuxKartEnv(track="zengarden")
    try:
        a.reset(seed=0)
        b.reset(seed=0)
        with pytest.raises(RuntimeError, match="took the game's only race"):
            a.step(np.zeros(3, np.float32))
        obs, *_ = a.reset(seed=0)  # and takes it back
        assert obs.std() > 20
    finally:
        a.close()
        b.close()


def test_engine_settings_are_applied():
    import ctypes

    import pystk2

    from vmc.sim import engine

    env = SuperTuxKartEnv(track="lighthouse")
    try:
        lib = ctypes.CDLL(pystk2.__file__)
        param = ctypes.addressof(ctypes.c_char.in_dll(lib, engine._ANISOTROPIC))
        assert ctypes.c_int32.from_address(param + engine._INT_PARAM_VALUE_OFFSET).value == 0
        assert env._clock.available
        assert os.environ["GALLIUM_DRIVER"] == "llvmpipe" and os.environ["LP_NUM_THREADS"] == "0"
    finally:
        env.close()


def test_other_renderer_in_the_same_process_is_refused():
    SuperTuxKartEnv(track="lighthouse").close()
    with pytest.raises(RuntimeError, match="another process"):
        SuperTuxKartEnv(track="lighthouse", width=96)


def test_processes_without_display_start_their_own_xvfb():
    code = """
        import os, numpy as np
        from vmc.sim.env import SuperTuxKartEnv
        assert 'DISPLAY' not in os.environ
        env = SuperTuxKartEnv(track='zengarden')
        obs, _ = env.reset(seed=0)
        for _ in range(5):
            obs, *_ = env.step(np.array([0, 1, 0], np.float32))
        print(os.environ['DISPLAY'], obs.std())
    """
    env = {k: v for k, v in os.environ.items() if k != "DISPLAY"}
    procs = [subprocess.Popen([sys.executable, "-c", textwrap.dedent(code)], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(2)]
    outs = [p.communicate(timeout=300) for p in procs]
    for p, (_, err) in zip(procs, outs):
        assert p.returncode == 0, err[-2000:]
    displays = [out.split()[-2] for out, _ in outs]
    assert all(float(out.split()[-1]) > 20 for out, _ in outs)
    assert displays[0] != displays[1]


def test_mines_renders_through_its_billboards():
    # pystk2 0.7.4 segfaulted here within the countdown (fade-out billboards, no active camera)
    proc = run_python("""
        import numpy as np
        from vmc.sim.env import EnvConfig, SuperTuxKartEnv
        env = SuperTuxKartEnv(config=EnvConfig(track="mines"))
        obs, _ = env.reset(seed=0)
        frames = [obs]
        for _ in range(40):
            obs, *_ = env.step(np.array([0.0, 1.0, 0.0], np.float32))
            frames.append(obs)
        print(len(frames), int(np.abs(frames[-1].astype(int) - frames[0]).sum() > 0))
    """)
    assert proc.stdout.split()[-2:] == ["41", "1"]


def test_physics_only_renderer_runs_a_lap():
    proc = run_python("""
        from vmc.sim.env import SuperTuxKartEnv
        from vmc.sim.drivers import CentreLineDriver, run_episode
        env = SuperTuxKartEnv(track='lighthouse', renderer='none')
        r = run_episode(env, CentreLineDriver(), seed=0)
        print(r.end, r.score, env.observation_space.shape)
    """)
    end, score, *_ = proc.stdout.strip().splitlines()[-1].split()
    assert end == "lap" and float(score) > 900


def test_softpipe_renders_the_same_scene():
    proc = run_python("""
        import numpy as np
        from vmc.sim.env import SuperTuxKartEnv
        env = SuperTuxKartEnv(track='lighthouse', renderer='softpipe')
        obs, _ = env.reset(seed=0)
        for _ in range(10):
            obs, *_ = env.step(np.array([0, 1, 0], np.float32))
        print(float(obs.std()), float(obs.mean()))
    """)
    std, mean = map(float, proc.stdout.strip().splitlines()[-1].split())
    assert std > 20 and 40 < mean < 220


def test_smaller_textures_render_the_same_scene(lighthouse_env, tmp_path):
    obs, _ = lighthouse_env.reset(seed=0)
    for _ in range(10):
        obs, *_ = lighthouse_env.step(np.array([0, 1, 0], np.float32))
    run_python(f"""
        import numpy as np
        from vmc.sim.env import SuperTuxKartEnv
        env = SuperTuxKartEnv(track='lighthouse', max_texture_size=64)
        obs, _ = env.reset(seed=0)
        for _ in range(10):
            obs, *_ = env.step(np.array([0, 1, 0], np.float32))
        np.save({str(tmp_path / "small.npy")!r}, obs)
    """)
    small = np.load(tmp_path / "small.npy")
    assert small.shape == obs.shape and small.std() > 20
    diff = np.abs(small.astype(int) - obs).mean()
    assert 0 < diff < 30  # the same view (kart, road, sky), with other texels


def test_action_repeat_holds_the_action_for_longer_steps():
    env = SuperTuxKartEnv(track="lighthouse", action_repeat=3)
    try:
        obs, info = env.reset(seed=0)
        for _ in range(10):
            obs, reward, terminated, truncated, info = env.step(np.array([0.0, 1.0, 0.0], np.float32))
        assert info["lap_time"] == pytest.approx(3.0, abs=0.31)  # 10 steps of 0.3 s
        assert info["steps"] == 10 and info["speed"] > 10 and obs.std() > 20
    finally:
        env.close()


def test_race_started_mid_track_counts_from_there_and_leaves_later_races_as_they_were(lighthouse_env):
    env = lighthouse_env.unwrapped
    first, _ = env.reset(seed=0)
    line_frames = [first] + [env.step(np.array([0.0, 1.0, 0.0], np.float32))[0] for _ in range(20)]
    starts = []
    result = run_episode(env, CentreLineDriver(), seed=0, options={"start": 0.75},
                         on_reset=lambda obs, info: starts.append((obs, info)))
    (obs, info), length = starts[0], env.track.length
    assert info["lap_fraction"] == pytest.approx(0.75, abs=0.01) and abs(info["distance"] - 0.75 * length) < 16
    assert info["score"] == 0.0 and info["lateral"] < 2.0
    assert np.abs(obs.astype(int) - first).mean() > 10, "the first frame is the start line's"
    assert result.end == "lap" and result.steps < 200  # the line is a quarter of the lap ahead (a lap: about 390)
    assert result.score == pytest.approx(250 - 0.1 * result.steps, abs=10)
    first_again, _ = env.reset(seed=0)
    again = [first_again] + [env.step(np.array([0.0, 1.0, 0.0], np.float32))[0] for _ in range(20)]
    assert all(np.array_equal(a, b) for a, b in zip(line_frames, again)), "a race from the line changed after a mid-track one"
    mid = [[env.reset(seed=0, options={"start": 0.4})[0]] + [env.step(np.array([0.3, 1.0, 0.0], np.float32))[0]
                                                             for _ in range(10)] for _ in range(2)]
    assert all(np.array_equal(a, b) for a, b in zip(*mid)), "two races from the same place differ"


def test_mid_track_starts_refuse_what_they_cannot_do(lighthouse_env):
    env = lighthouse_env.unwrapped
    for options, message in (({"start": 1.2}, "lap fraction"), ({"begin": 0.5}, "unknown reset options")):
        with pytest.raises(ValueError, match=message):
            env.reset(seed=0, options=options)
    code = """
        import pytest
        from vmc.sim.env import StartError, SuperTuxKartEnv
        env = SuperTuxKartEnv(track="cocoa_temple", renderer="none")
        with pytest.raises(StartError, match="cannot start 434 m down the track"):
            env.reset(options={"start": 0.3})  # the hops there pass the cannon, which flies the kart on
        with pytest.raises(RuntimeError, match="call reset"):
            env.step([0.0, 1.0, 0.0])
        _, info = env.reset(options={"start": 0.75})
        assert abs(info["distance"] - 0.75 * env.track.length) < 16
        print("ok")
    """
    assert run_python(code).stdout.strip().endswith("ok")
