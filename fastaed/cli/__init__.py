"""Thin command-line layer: flags -> dataclasses -> one library call per subcommand."""
