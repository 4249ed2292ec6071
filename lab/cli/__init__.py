"""The command line: invoke tasks (one module per namespace) and the `fentry-lab` program.

Module imports stay light (invoke and lab.errors only): `--list`, `--help` and every TAB
press import nothing else; each task imports the library it needs when it runs.
"""
