"""Entry point: registers every command module on the app."""
from __future__ import annotations

from atss_bench.cli import recipes_cmd  # noqa: F401  (registers commands)
from atss_bench.cli.app import app


def main() -> None:
    app()


if __name__ == "__main__":
    main()
