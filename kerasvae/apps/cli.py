"""Subcommands of `kerasvae` for the applications; `kerasvae.cli.build_parser` calls `add_commands`."""


def add_commands(commands):
    """Adds the application subcommands to the `kerasvae` argparse subparsers `commands`."""
