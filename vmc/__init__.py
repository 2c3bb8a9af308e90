"""vmc: World Models (Vision, Memory, Controller) that drive SuperTuxKart from pixels."""

from importlib.metadata import PackageNotFoundError, version

import gymnasium

try:
    __version__ = version("vmc")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.0.0+src"

ENV_ID = "vmc/SuperTuxKart-v0"

if ENV_ID not in gymnasium.registry:
    # Truncation is the env's own (EnvConfig.max_steps), so no TimeLimit wrapper is added.
    gymnasium.register(id=ENV_ID, entry_point="vmc.sim.env:SuperTuxKartEnv", max_episode_steps=None)

__all__ = ["ENV_ID", "__version__"]
