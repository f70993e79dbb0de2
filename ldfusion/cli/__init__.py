"""The library's own commands (`fuse`, `eval`) and what commands share; ``ldfusion_cli.main`` dispatches."""
