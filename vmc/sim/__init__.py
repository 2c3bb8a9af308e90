"""The simulator layer: the game (pystk2 under Xvfb), its env, track geometry and reference drivers.

Nothing here knows about the World Models; the stages build on it.
"""
