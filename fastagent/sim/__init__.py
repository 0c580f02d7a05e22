"""The simulated OpenAI-compatible endpoint: the benchmark's default model, in its own process.

Only :mod:`.launcher` (standard library) is ever imported by the measured process, to start
and stop the server; everything else here runs in the simulator's own interpreter.
"""
