"""Import existing annotations into a MONAI Label datastore that ``lesion_app`` serves.

Three sources: an ISIC challenge download (``isic``), any folder of photographs and masks matched by name
(``folder``), and LabelMe JSON files (``labelme``). DEST receives the photographs, copied byte for byte,
and ``labels/final/<id>.png`` masks (single channel, 0 skin / 1 lesion, at the photograph's size), which
``monailabel start_server --app lesion_app --studies DEST`` then serves as finished labels; photographs
without a mask are imported unlabelled, so they are offered for annotation (``--labelled-only`` leaves them
out). Nothing in SOURCE is changed. Files already in DEST are kept unless ``--overwrite``.

A problem with one file (a mask of the wrong size, a JSON without lesion shapes, a missing image) is
printed with the file's name and that file is skipped; the exit status is then 1. Exit status 2: nothing
was imported (SOURCE missing, DEST inside SOURCE).

Example::

    lesion-import isic ISIC2018_Task1-2_Training_Input studies --masks ISIC2018_Task1_Training_GroundTruth
    lesion-import isic ../shared/data/isic studies --labelled-only
    lesion-import folder photos/ studies --masks photos/annotations
    lesion-import labelme labelme_project/ studies --labels lesion,melanoma,nevus
    monailabel start_server --app lesion_app --studies studies
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from lesion_app.io.importers import (
    DEFAULT_IGNORE_LABELS,
    FOLDER_MASK_TAILS,
    ISIC_IGNORE_TAILS,
    ISIC_MASK_TAILS,
    Report,
    import_items,
    labelme_items,
    pair_items,
)
from lesion_app.io.layout import discover_pairs

PROG = "lesion-import"


class UsageError(Exception):
    """Nothing can be imported; the program exits with status 2."""


def _csv(text: str) -> list[str]:
    return [x.strip() for x in text.split(",") if x.strip()]


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("source", type=Path, help="folder to import from (never modified)")
    common.add_argument("dest", type=Path, help="MONAI Label studies folder to import into (created if needed)")
    common.add_argument("--overwrite", action="store_true", help="replace images and labels already in DEST")
    common.add_argument("--labelled-only", action="store_true", help="leave out images that have no annotation")
    common.add_argument("--dry-run", action="store_true", help="check everything and report, but write nothing")
    common.add_argument("--quiet", action="store_true", help="print only errors and the summary")

    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Import ISIC data, folders of masks or LabelMe JSON files into a MONAI Label datastore "
        "(DEST/<id>.jpg + DEST/labels/final/<id>.png, 0/1) that lesion_app serves.",
        epilog="Example:\n" + __doc__.split("Example::\n")[1],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="{isic,folder,labelme}")
    isic = sub.add_parser(
        "isic",
        parents=[common],
        help="ISIC challenge data: ISIC_x.jpg + ISIC_x_segmentation.png, or images/ + masks/",
        description="ISIC_x.jpg with ISIC_x_segmentation.png beside it, in --masks, or images/ + masks/. "
        "A download folder holding exactly one *_Input and one *_GroundTruth folder is also understood.",
    )
    isic.add_argument("--masks", type=Path, metavar="MASKDIR", help="folder of the masks (ISIC's GroundTruth)")
    folder = sub.add_parser(
        "folder",
        parents=[common],
        help="any folder of images and masks matched by stem",
        description="Images with masks named <stem>_mask.png, <stem>_segmentation.png or <stem>_lesion.png "
        "beside them, <stem>.png in masks/ or --masks, or a datastore's labels/final.",
    )
    folder.add_argument("--masks", type=Path, metavar="MASKDIR", help="folder of the masks")
    labelme = sub.add_parser(
        "labelme",
        parents=[common],
        help="LabelMe JSON files (polygons, polylines, rectangles, circles)",
        description="Every *.json under SOURCE; the mask is the union of its lesion shapes.",
    )
    labelme.add_argument(
        "--labels", type=_csv, metavar="A,B", help="only shapes with these labels are lesion (case-insensitive)"
    )
    labelme.add_argument(
        "--ignore-labels",
        type=_csv,
        default=list(DEFAULT_IGNORE_LABELS),
        metavar="A,B",
        help=f"without --labels, every shape is lesion except these (default: {','.join(DEFAULT_IGNORE_LABELS)})",
    )
    return parser


def _check_paths(source: Path, dest: Path, masks: Path | None) -> None:
    for what, path in (("SOURCE", source), ("MASKDIR", masks)):
        if path is None:
            continue
        if not path.is_dir():
            raise UsageError(f"{what} {path} is not a folder")
        if dest.resolve().is_relative_to(path.resolve()):
            raise UsageError(f"DEST {dest} lies inside {what} {path}; {PROG} never writes into its source")
    if dest.exists() and not dest.is_dir():
        raise UsageError(f"DEST {dest} exists and is not a folder")


def isic_folders(source: Path, masks: Path | None) -> tuple[Path, Path | None]:
    """``source`` and ``masks``, or a download folder's one ``*_Input`` and one ``*_GroundTruth`` folder."""
    if masks is not None or (source / "images").is_dir():
        return source, masks
    if any(p.is_file() and p.name.upper().startswith("ISIC") for p in source.iterdir()):
        return source, masks
    inputs = sorted(p for p in source.iterdir() if p.is_dir() and p.name.endswith("_Input"))
    truths = sorted(p for p in source.iterdir() if p.is_dir() and p.name.endswith("_GroundTruth"))
    if len(inputs) == 1 and len(truths) <= 1:
        return inputs[0], truths[0] if truths else None
    if inputs:
        raise UsageError(
            f"{source} holds several ISIC folders ({', '.join(p.name for p in inputs + truths)}); "
            "give one *_Input folder as SOURCE and its *_GroundTruth folder as --masks"
        )
    return source, masks


def run(args: argparse.Namespace) -> Report:
    source, dest = args.source, args.dest
    masks = getattr(args, "masks", None)
    _check_paths(source, dest, masks)
    report = Report()
    if args.command == "labelme":
        items = labelme_items(source, report, args.labels, args.ignore_labels, with_unlabelled=not args.labelled_only)
    else:
        if args.command == "isic":
            source, masks = isic_folders(source, masks)
            _check_paths(source, dest, masks)
            tails, ignore = ISIC_MASK_TAILS, ISIC_IGNORE_TAILS
        else:
            tails, ignore = FOLDER_MASK_TAILS, ()
        pairs, problems = discover_pairs(source, masks, tails, ignore)
        report.errors.extend(problems)
        items = pair_items(pairs, report)
    if not items and not report.errors:
        raise UsageError(f"nothing to import from {source}")
    if not args.quiet:
        labelled = sum(item.make_mask is not None for item in items)
        print(f"{PROG}: {len(items)} images ({labelled} with annotations) from {source} into {dest}", flush=True)

    def progress(done: int, total: int) -> None:
        if not args.quiet:
            print(f"  {done}/{total} files", flush=True)

    if not args.dry_run:
        dest.mkdir(parents=True, exist_ok=True)
    import_items(
        items,
        dest,
        report,
        overwrite=args.overwrite,
        labelled_only=args.labelled_only,
        dry_run=args.dry_run,
        progress=progress,
    )
    return report


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        report = run(args)
    except UsageError as e:
        print(f"{PROG}: error: {e}", file=sys.stderr)
        return 2
    if not args.quiet:
        for line in report.warnings:
            print(f"warning: {line}", file=sys.stderr)
        for line in report.skipped:
            print(f"skipped: {line}")
    for line in report.errors:
        print(f"error: {line}", file=sys.stderr)
    print(f"{'(dry run) ' if args.dry_run else ''}{report.summary()}")
    return 1 if report.errors else 0


if __name__ == "__main__":
    sys.exit(main())
