"""Command line: ``desra-fast COMMAND ...`` (also ``python -m desra_fast COMMAND ...``).

Each sub-command is one module of this package that defines

- ``NAME``: the command word (``"detect"``), ``HELP``: its one-line help;
- ``add_arguments(parser)``: fills the ``argparse`` sub-parser (``description`` may be set on it);
- ``run(args, parser) -> int``: runs it and returns the exit code.

Modules are found by name (no registry to edit): adding ``desra_fast/cli/foo.py`` adds
``desra-fast foo``. Modules whose name starts with ``_`` are helpers.

Exit codes: 0 everything succeeded; 1 some inputs failed (listed in the summary and, for folder
jobs, in OUT_DIR/manifest.jsonl) or the job could not run; 2 usage errors; 130 interrupted.
See docs/cli.md.
"""
from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys
from typing import List, Optional

# Listed first in --help, in this order; other commands follow alphabetically.
_ORDER = ("detect", "eval", "sr", "convert", "segment", "calibrate", "run", "select", "export",
          "finetune", "evaluate-finetune")


def _command_modules():
    mods = []
    for info in pkgutil.iter_modules(__path__):
        if info.name.startswith("_"):
            continue
        mod = importlib.import_module(f"{__name__}.{info.name}")
        if hasattr(mod, "NAME") and hasattr(mod, "run"):
            mods.append(mod)
    rank = {n: i for i, n in enumerate(_ORDER)}
    return sorted(mods, key=lambda m: (rank.get(m.NAME, len(rank)), m.NAME))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="desra-fast",
        description="DeSRA for GAN super-resolution: detect the artifacts a GAN-SR model invents "
                    "(against its MSE-SR model) and fine-tune them away.")
    mods = _command_modules()
    sub = parser.add_subparsers(dest="command", metavar="{" + ",".join(m.NAME for m in mods) + "}")
    sub.required = True
    for mod in mods:
        p = sub.add_parser(mod.NAME, help=mod.HELP, description=getattr(mod, "DESCRIPTION", None))
        mod.add_arguments(p)
        p.set_defaults(_run=mod.run, _parser=p)
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args._run(args, args._parser))
    except KeyboardInterrupt:
        print(f"desra-fast {args.command}: interrupted; run the same command again to resume",
              file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
