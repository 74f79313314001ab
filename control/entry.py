"""The `sluice` command's entry point.

For `sluice run` it starts the BPF compile (sensor/kernel/precompile.py)
before importing the CLI: the compile is most of the start, and the
imports, the configuration and the rest of the setup then happen while it
runs. Every other command goes straight to the CLI.
"""

from __future__ import annotations

import sys

# `sluice run`'s other options that take a value (control/commands/run.py)
_VALUED = ("-o", "--output", "--format", "--metrics", "-b", "--baseline")


def config_arg(argv: list[str]) -> str | None:
    """The --config/-c value of `sluice run` as click will read it (the last
    one given wins), or None when none is given. A guess is enough: the
    early compile is used only if it matches what the configuration typer
    loads asks for."""
    found = None
    i = 0
    while i < len(argv):
        a = argv[i]
        if a == "--":
            break
        if a in ("-c", "--config"):
            if i + 1 < len(argv):
                found = argv[i + 1]
            i += 2
            continue
        if a in _VALUED:  # its value is not an option, whatever it looks like
            i += 2
            continue
        if a.startswith("--config="):
            found = a.partition("=")[2]
        elif a.startswith("-c") and not a.startswith("--"):
            found = a[2:]
        i += 1
    return found


def main() -> None:
    argv = sys.argv[1:]
    if argv[:1] == ["run"] and "--help" not in argv:
        from sensor.kernel import precompile

        precompile.begin(config_arg(argv[1:]))
    from control.cli import main as cli_main

    cli_main()


if __name__ == "__main__":
    main()
