"""The simulated OpenAI-compatible endpoint: the benchmark's default model, in its own process.

Only :mod:`.launcher` (standard library) is ever imported by the measured process, to start
and stop the server; everything else here runs in the simulator's own interpreter, so this
package imports nothing. One job per module:

- :mod:`.launcher`: start ``fastagent sim`` as a child process and wait for its ready line;
- :mod:`.server`: the ``fastagent sim`` command (``--workers``), ``start_sim`` for in-process use;
- :mod:`.profile`: :class:`~.profile.SimProfile` (accuracy, speed, faults) and its text form;
- :mod:`.faults`: the fault kinds, the table of what each does, and which request meets which;
- :mod:`.counters`: request numbers and fault counts, one process's or every worker's;
- :mod:`.data`: the tasks, solutions, plan, task index and pre-encoded replies;
- :mod:`.conn`: the lean HTTP/1.1 server side of a connection (httptools), and routing;
- :mod:`.app`: :class:`~.app.SimApp`, its routes and handlers;
- :mod:`.pacer`: the one timer that wakes every response's next step;
- :mod:`.stream` and :mod:`.body`: the streamed and the non-streamed completion writers;
- :mod:`.wire`: the OpenAI JSON shapes, event bytes and ``fastagent_timing``.
"""
