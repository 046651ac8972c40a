"""Entry point: registers every command module on the app."""
from __future__ import annotations

from atss_bench.cli import (  # noqa: F401  (importing a module registers its commands)
    check_cmd, check_rule_cmd, data_cmd, diff_cmd, inspect_cmd, recipes_cmd, report_cmd, runs_cmd,
    submit_cmd,
)
from atss_bench.cli.app import app


def main() -> None:
    app()


if __name__ == "__main__":
    main()
