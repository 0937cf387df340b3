"""The ``cjledger`` command: operators' entry point (Typer + Rich).

Every sub-command lives in its own module and registers itself on ``app``; this module
is the one error boundary (``infrastructure.cli.errors``): usage and configuration errors
exit 2, failures at run time exit 1, each as one redacted line, never a traceback.

Command modules import only what their signatures need at module level (the rest inside
the command), so ``cjledger --help`` starts without numpy, networkx or psycopg.
"""

from __future__ import annotations

import sys

try:  # Typer >= 0.20 vendors click; older releases use the click package itself.
    from typer._click import exceptions as click_errors
except ImportError:  # pragma: no cover
    from click import exceptions as click_errors  # type: ignore[no-redef]

from infrastructure.cli import (  # noqa: F401  (each module registers its commands)
    demo_cmd,
    erase_cmd,
    history,
    projections_cmd,
    read_cmd,
    run_cmd,
    service_cmd,
    verify_cmd,
)
from infrastructure.cli.app import app
from infrastructure.cli.errors import (
    RUNTIME_EXIT,
    USAGE_EXIT,
    ConfigError,
    one_line,
    redact,
)


def _error(message: str, code: int) -> None:
    print(f"error: {redact(message)}", file=sys.stderr)
    sys.exit(code)


def main(argv: list[str] | None = None) -> None:
    try:
        result = app(args=argv, prog_name="cjledger", standalone_mode=False)
    except click_errors.NoArgsIsHelpError:
        sys.exit(0)
    except click_errors.UsageError as error:
        command = f"{error.ctx.command_path}: " if error.ctx else ""
        _error(f"{command}{error.format_message()}", USAGE_EXIT)
    except click_errors.ClickException as error:
        _error(error.format_message(), error.exit_code or RUNTIME_EXIT)
    except (click_errors.Abort, KeyboardInterrupt):
        print("aborted", file=sys.stderr)
        sys.exit(130)
    except click_errors.Exit as done:
        sys.exit(done.exit_code)
    except ConfigError as error:
        _error(one_line(error), USAGE_EXIT)
    except Exception as error:
        from infrastructure.persistence.store import BadDatabaseUrl

        if isinstance(error, BadDatabaseUrl):
            _error(one_line(error), USAGE_EXIT)
        _error(one_line(error), RUNTIME_EXIT)
    sys.exit(result if isinstance(result, int) else 0)


if __name__ == "__main__":
    main()
