"""The env classes behind the registered ids (see ``k15_envs.registration``).

Modules are imported by Gymnasium through string entry points, so importing
``k15_envs`` stays light (no pyarrow, reasoning-gym or math-verify until an env is made).
"""
