"""Reading results after the fact: ``fastagent report`` and ``fastagent sweep``.

One job per module:

* :mod:`.summaries` reads any ``*_summary.json`` (this stack's schema 2 or 1, another
  stack's keys) into one canonical view through one mapping table, ``METRICS``;
* :mod:`.tables` renders plain-text and Markdown tables and their cells;
* :mod:`.plots` draws the charts: the one module that imports matplotlib;
* :mod:`.children` runs ``python -m fastagent bench`` as a child process (its environment,
  interrupts forwarded as SIGINT, the summary it wrote), for the sweep, the bench scripts
  and the tests;
* :mod:`.report` and :mod:`.sweep` are the commands (``add_arguments``, ``main``).

Never imported by ``fastagent bench``'s process; nothing is imported here.
"""
