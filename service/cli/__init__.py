"""The ``humwatch`` command line, one module per group of commands.

Commands that talk to the database or run locally say so in their help; others call the API.
Command modules stay light (their work is imported when the command runs), so ``--help`` and
the API commands start fast.
"""

from service.cli import (  # noqa: F401  (registers commands)
    demo,
    evaluate,
    evaluate_events,
    fleet,
    local,
    machines,
    models,
    serve,
    stream,
)
from service.cli.common import app, fail

__all__ = ["app", "fail"]
