"""The command line: one module per command group, drawn by :mod:`lockgate.cli.render`;
the root group and the entry point are :func:`lockgate.cli.main.main`."""
