#!/usr/bin/env python3
"""Download and unpack ModelNet10 or the manually aligned ModelNet40 (the original download_data.py).

Run with no flags in a terminal to be asked (as the original script did); or, e.g.:
    python tools/download_data.py --dataset modelnet10 -y
which makes ./ModelNet10/ (the default training data of tools/train.py is ModelNet10/chair/train).
An interrupted download resumes from <dest>/<archive>.part on the next run; a downloaded archive that
fails its checks is deleted (the error line says so), and --url always wins over an earlier run's archive.
"""
from __future__ import annotations

import argparse
import sys

from tf3dgan.cli import HelpFormatter, run_tool
from tf3dgan.data.modelnet import DATASETS, Dataset, needs_download, prepare
from tf3dgan.errors import Tf3dganError

MENU = {"1": "modelnet10", "2": "modelnet40-aligned"}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description="Download ModelNet10 or the manually aligned ModelNet40, check the "
                                            "archive and unpack it (resumable, atomic; asks when run with no flags).",
                                formatter_class=HelpFormatter)
    p.add_argument("--dataset", choices=list(DATASETS), default=None,
                   help="which dataset [default: ask; required when not run in a terminal]")
    p.add_argument("-y", "--yes", action="store_true", help="download without asking to confirm the size")
    p.add_argument("--dest", default=".", help="folder to put the dataset folder (ModelNet10/ or ModelNet40/) in")
    p.add_argument("--url", default=None,
                   help="download from this URL (a mirror) instead, even when an archive from an earlier run is in "
                        "--dest, or use this local archive (a path or file:// URL; never deleted)")
    p.add_argument("--keep-archive", action="store_true", help="keep the downloaded archive after unpacking")
    p.add_argument("--timeout", type=float, default=60.0, help="network timeout in seconds")
    p.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bar")
    return p


def _ask(prompt: str, answers: dict[str, object]) -> object:
    """Ask until the first letter of the reply is one of ``answers``; end of input cancels."""
    while True:
        try:
            reply = input(prompt).strip().lower()
        except EOFError:
            print()
            raise Tf3dganError("no answer (end of input): download cancelled") from None
        if reply and reply[0] in answers:
            return answers[reply[0]]
        print(f"please reply with {' or '.join(answers)}")


def choose_dataset() -> Dataset:
    key = _ask("Choose dataset, ModelNet10 (1) or manually aligned subset of the ModelNet40 (2): ", MENU)
    return DATASETS[key]


def confirm(ds: Dataset, dest: str) -> bool:
    return bool(_ask(f"The {ds.archive} file is {ds.size} ({ds.unpacked} unpacked). Download it into {dest}? (y/n): ",
                     {"y": True, "n": False}))


def run(args: argparse.Namespace) -> None:
    interactive = sys.stdin is not None and sys.stdin.isatty()
    if args.dataset is None:
        if not interactive:
            raise Tf3dganError("no dataset chosen and no terminal to ask on: pass --dataset modelnet10 "
                               "(or --dataset modelnet40-aligned) and -y/--yes")
        ds = choose_dataset()
    else:
        ds = DATASETS[args.dataset]
    if needs_download(ds, args.dest, args.url) and not args.yes:
        if not interactive:
            raise Tf3dganError(f"downloading {ds.archive} ({ds.size}) needs a confirmation and there is no terminal "
                               "to ask on: pass -y/--yes")
        if not confirm(ds, args.dest):
            print("download cancelled; nothing was written")
            return
    log = lambda msg: print(msg, flush=True)   # noqa: E731
    print(prepare(ds, args.dest, url=args.url, keep_archive=args.keep_archive, progress=None if args.progress else False,
                  timeout=args.timeout, log=log).summary())


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return run_tool(lambda: run(args), needs_tensorflow=False)


if __name__ == "__main__":
    sys.exit(main())
