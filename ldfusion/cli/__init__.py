"""Command-line entry points. Each command is ``main(argv) -> int``; ``ldfusion.cli.main`` dispatches."""
