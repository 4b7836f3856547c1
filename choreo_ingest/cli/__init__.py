"""The command line: parse, call, render, exit."""


def main() -> None:
    raise SystemExit("not yet")
