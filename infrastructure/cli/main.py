"""The ``cjledger`` command: operators' entry point (Typer + Rich).

Every sub-command lives in its own module and registers itself on ``app``; this module
only turns usage errors into one clear line and a non-zero exit, never a traceback.
"""

from __future__ import annotations

import sys

try:  # Typer >= 0.20 vendors click; older releases use the click package itself.
    from typer._click import exceptions as click_errors
except ImportError:  # pragma: no cover
    from click import exceptions as click_errors  # type: ignore[no-redef]

from infrastructure.cli import (  # noqa: F401  (each module registers its commands)
    demo_cmd,
    history,
    projections_cmd,
    service_cmd,
)
from infrastructure.cli.app import app


def main(argv: list[str] | None = None) -> None:
    try:
        result = app(args=argv, standalone_mode=False)
    except click_errors.NoArgsIsHelpError:
        sys.exit(0)
    except click_errors.UsageError as error:
        command = f"{error.ctx.command_path}: " if error.ctx else ""
        print(f"error: {command}{error.format_message()}", file=sys.stderr)
        sys.exit(2)
    except click_errors.ClickException as error:
        print(f"error: {error.format_message()}", file=sys.stderr)
        sys.exit(error.exit_code or 1)
    except click_errors.Abort:
        print("aborted", file=sys.stderr)
        sys.exit(130)
    except click_errors.Exit as done:
        sys.exit(done.exit_code)
    sys.exit(result if isinstance(result, int) else 0)


if __name__ == "__main__":
    main()
