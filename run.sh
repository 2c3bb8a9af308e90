#!/usr/bin/env bash
# vmc's one entry point. Each command first sets up what is missing (quick when nothing is):
#   Debian packages (the game's art, Xvfb, Mesa), a virtualenv in .venv, the game's asset folder.
#
#   ./run.sh [OPTIONS] the main job on the small built-in default (see `python -m vmc.main --help`), e.g.
#                      ./run.sh --preset debug, ./run.sh --tracks zengarden; `./run.sh main OPTIONS` is the same
#   ./run.sh test      ruff, then the test suite (what CI runs)
#   ./run.sh bench     the benchmarks (prints the README's tables; their history: docs/performance.md); ./run.sh bench NAME [ARGS]
#                      runs one of benchmarks/NAME.py (env_speed, cpu_scaling, collect_speed, dream_speed,
#                      dream_temperatures, dream_ends, race_speed, train_speed, cluster_overhead, readout_probe,
#                      track_scaling)
#   ./run.sh setup     set-up only
#   ./run.sh py ARGS   python inside the virtualenv, e.g. ./run.sh py -m vmc.collect --help
set -euo pipefail
cd "$(dirname "$0")"

APT_PACKAGES=(supertuxkart-data xvfb libgl1-mesa-dri libegl1 chromium)
VENV=.venv
# torch is pinned first so that pip does not pull a multi-GB CUDA build where a CPU wheel is at hand.
TORCH_SPEC="${VMC_TORCH_SPEC:-torch==2.13.0}"

say() { echo "vmc: $*" >&2; }

setup_apt() {
    local missing=()
    for p in "${APT_PACKAGES[@]}"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing+=("$p")
    done
    [ ${#missing[@]} -eq 0 ] && return 0
    local sudo=""
    if [ "$(id -u)" -ne 0 ]; then
        command -v sudo >/dev/null || { say "error: missing Debian packages ${missing[*]}: install them as root (apt-get install ${missing[*]})"; exit 1; }
        sudo="sudo"
    fi
    say "installing Debian packages: ${missing[*]}"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

setup_venv() {
    local stamp="$VENV/.vmc-installed" want
    want="$(cat pyproject.toml | sha256sum | cut -c1-16) $TORCH_SPEC"
    if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] && [ -x "$VENV/bin/python" ]; then return 0; fi
    say "installing the Python environment in $VENV"
    [ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
    "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check "$TORCH_SPEC" 2>&1 | grep -v "^WARNING: Location" || true
    "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check -e ".[dev,cluster]" 2>&1 | grep -v "^WARNING: Location" || true
    "$VENV/bin/python" -c "import pystk2, torch, gymnasium, cma, h5py, onnx, onnxruntime" || { say "error: Python packages failed to install (see pip output above)"; exit 1; }
    echo "$want" > "$stamp"
}

setup_assets() {
    "$VENV/bin/python" -m vmc.sim.assets >/dev/null
}

setup() { setup_apt; setup_venv; setup_assets; }

cmd="${1:-main}"
case "$cmd" in
    -*) cmd=main ;;  # options alone are the main job's: ./run.sh --preset debug
    *) [ $# -gt 0 ] && shift ;;
esac
case "$cmd" in
    setup) setup ;;
    main) setup; exec "$VENV/bin/python" -m vmc.main "$@" ;;
    test)
        setup
        "$VENV/bin/ruff" check . || { say "ruff found problems (above); fix them or run '$VENV/bin/ruff check --fix .'"; exit 1; }
        exec "$VENV/bin/python" -m pytest "$@" ;;
    bench)
        setup
        if [ $# -gt 0 ]; then  # one benchmark by name, with its own options
            name="$1"; shift
            [ -f "benchmarks/$name.py" ] || { say "unknown benchmark '$name': $(cd benchmarks && ls *.py | sed 's/\.py$//' | tr '\n' ' ')"; exit 2; }
            exec "$VENV/bin/python" "benchmarks/$name.py" "$@"
        fi
        "$VENV/bin/python" benchmarks/cpu_scaling.py
        "$VENV/bin/python" benchmarks/env_speed.py
        if [ -f runs/lighthouse-small/mdn.pt ]; then "$VENV/bin/python" benchmarks/dream_speed.py
        else say "skipping dream_speed: no runs/lighthouse-small/mdn.pt (run ./run.sh first)"; fi ;;
    py) setup; exec "$VENV/bin/python" "$@" ;;
    *) say "unknown command '$cmd': use main, test, bench, setup or py"; exit 2 ;;
esac
