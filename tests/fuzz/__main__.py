"""``python -m fuzz TARGET [libFuzzer flags...]`` runs one target under atheris (with
``PYTHONPATH=tests:src``; scripts/fuzz.sh sets up the corpus and crash directories);
``python -m fuzz seeds`` rebuilds the seed corpus; ``python -m fuzz replay TARGET FILE...``
runs inputs once without atheris (to reproduce a finding)."""

from __future__ import annotations

import sys

from fuzz import TARGETS, load


def main(argv: list[str]) -> None:
    if not argv or argv[0] in ("-h", "--help"):
        raise SystemExit(__doc__ + "\ntargets: " + ", ".join(TARGETS))
    if argv[0] == "seeds":
        from fuzz.seeds import build

        build()
        return
    if argv[0] == "replay":
        from pathlib import Path

        module = load(argv[1])
        for path in argv[2:]:
            module.TestOneInput(Path(path).read_bytes())
            print(f"{path}: ok")
        return
    import atheris

    with atheris.instrument_imports(include=["difs"]):
        module = load(argv[0])
    atheris.Setup([sys.argv[0], *argv[1:]], module.TestOneInput)
    atheris.Fuzz()


if __name__ == "__main__":
    main(sys.argv[1:])
