"""Run the provider stub as a process: ``python -m tests.stubs.anthropic_stub --port N``.

The same server answers both APIs; this entry point exists so the command names the API
it is used for.
"""

from tests.stubs.server import main

if __name__ == "__main__":
    main()
