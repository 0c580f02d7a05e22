"""Reading results after the fact: ``fastagent report`` and ``fastagent sweep``.

Never imported by ``fastagent bench``'s process.
"""
