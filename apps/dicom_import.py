"""Wrap dermoscopic JPG/PNG photographs as DICOM and upload them to a DICOMweb server (STOW-RS).

Each photograph becomes one RGB Secondary Capture image (modality XC) in a study of its own, with the Image
Plane attributes DICOM SEG needs, so MONAI Label can serve it to OHIF and save labels back as SEG. UIDs come
from the file name (and patient id), so running the import again sends the same UIDs and the server keeps one
copy; the mapping from file name to UIDs is written to a CSV. Nothing in the source folder is changed::

    lesion-dicom-import sample-data --stow http://127.0.0.1:8042/dicom-web --mapping uids.csv
    lesion-dicom-import photo.jpg --out dicom/ --patient-id P0001      # files only, no upload
    lesion-dicom-import sample-data --stow http://127.0.0.1:8042/dicom-web --labels    # with labels/final as SEGs

With ``--labels`` a photograph's label in the app's studies layout (``labels/final/<name>.png`` beside it) goes
along as a DICOM SEG (its ContentCreatorName the folder's name), so the server takes it as the photograph's label.
"""

from __future__ import annotations

import argparse
import csv
import sys
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from lesion_app.core.measurements import check_spacing
from lesion_app.io.dicom import MODALITY, PhotoUids, mask_to_seg, photo_to_dicom
from lesion_app.io.images import read_mask
from lesion_app.io.layout import label_file_name
from lesion_app.server.checks import IMAGE_EXTENSIONS


@dataclass
class Imported:
    file: str
    patient_id: str
    study_uid: str
    series_uid: str
    instance_uid: str
    rows: int
    columns: int


def photographs(sources: Sequence[str]) -> list[Path]:
    """The photographs named, or found (not recursively) in the folders named, sorted by name."""
    found: list[Path] = []
    for source in map(Path, sources):
        if source.is_dir():
            found += sorted(p for p in source.iterdir() if p.is_file() and p.name.lower().endswith(IMAGE_EXTENSIONS))
        elif source.is_file():
            found.append(source)
        else:
            raise FileNotFoundError(f"{source} does not exist")
    return found


def read_mapping(path: Path) -> dict[str, dict[str, str]]:
    if not path.is_file():
        return {}
    with path.open(newline="") as f:
        return {row["file"]: row for row in csv.DictReader(f)}


def write_mapping(path: Path, rows: Iterable[dict[str, str]]) -> None:
    rows = list(rows)
    tmp = path.with_name(f".{path.name}.tmp")
    with tmp.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(Imported.__dataclass_fields__))
        writer.writeheader()
        writer.writerows(rows)
    tmp.replace(path)


def check_server(url: str, timeout: float = 10.0) -> None:
    """Fails at once when the DICOMweb server does not answer (its client would retry for half a minute)."""
    import requests

    try:
        requests.get(f"{url.rstrip('/')}/studies", params={"limit": 1}, timeout=timeout).raise_for_status()
    except requests.RequestException as e:
        raise ConnectionError(f"no DICOMweb server answers at {url} ({type(e).__name__})") from None


def import_photographs(
    files: Sequence[Path],
    stow: str | None = None,
    out: Path | None = None,
    patient_id: str | None = None,
    spacing_mm: float | None = None,
    modality: str = MODALITY,
    progress: bool = True,
    labels: bool = False,
) -> list[Imported]:
    """Converts (and uploads or writes) every photograph, with ``labels`` its final label as a SEG too; one that
    cannot be read stops the run, named."""
    client = None
    if stow:
        from dicomweb_client import DICOMwebClient

        check_server(stow)
        client = DICOMwebClient(url=stow.rstrip("/"))
    done = []
    for i, path in enumerate(files, 1):
        patient = patient_id or path.stem
        uids = PhotoUids.from_key(f"{patient}/{path.name}")
        try:
            ds = photo_to_dicom(path, uids, patient, spacing_mm=spacing_mm, modality=modality)
        except Exception as e:
            raise ValueError(f"{path}: not a readable photograph ({type(e).__name__}: {e})") from None
        if out is not None:
            out.mkdir(parents=True, exist_ok=True)
            ds.save_as(str(out / f"{path.stem}.dcm"), write_like_original=False)
        segs = [label_seg(path, ds)] if labels and label_path(path).is_file() else []
        if out is not None:
            for seg in segs:
                seg.save_as(str(out / f"{path.stem}_label.dcm"))
        if client is not None:
            client.store_instances([ds, *segs])
        done.append(Imported(path.name, patient, uids.study, uids.series, uids.instance, ds.Rows, ds.Columns))
        if progress:
            print(f"  [{i}/{len(files)}] {path.name} -> series {uids.series}", file=sys.stderr, flush=True)
    return done


def label_path(photo: Path) -> Path:
    """Where the app's studies layout keeps a photograph's final label."""
    return photo.parent / "labels" / "final" / label_file_name(photo.stem)


def label_seg(photo: Path, ds: Any) -> Any:
    """The photograph's final label as a SEG on its DICOM instance ``ds``, created by the folder's name."""
    import tempfile

    with tempfile.TemporaryDirectory(prefix="lesion_import_") as tmp:
        ds.save_as(str(Path(tmp) / "photo.dcm"), write_like_original=False)
        mask = read_mask(label_path(photo)).astype("uint8")
        return mask_to_seg(mask, tmp, Path(tmp) / "seg.dcm", "lesion", creator=photo.parent.name)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="lesion-dicom-import", description=__doc__.splitlines()[0])
    p.add_argument("sources", nargs="+", help="photographs, or folders of them (JPG, PNG, TIFF, BMP)")
    p.add_argument("--stow", help="DICOMweb base URL to upload to, e.g. http://127.0.0.1:8042/dicom-web")
    p.add_argument("--out", type=Path, help="also write the DICOM files into this folder")
    p.add_argument("--mapping", type=Path, default=Path("dicom_uids.csv"), help="CSV: file name -> UIDs")
    p.add_argument("--patient-id", help="one patient for every photograph (default: each file's name)")
    p.add_argument(
        "--pixel-spacing",
        type=float,
        help="mm per pixel, if calibrated (default: unknown, written as a 1 mm placeholder marked as uncalibrated)",
    )
    p.add_argument("--modality", default=MODALITY, help="DICOM modality (the app lists XC by default)")
    p.add_argument("--labels", action="store_true", help="also each photograph's labels/final/<name>.png as a SEG")
    args = p.parse_args(argv)
    if not args.stow and not args.out:
        p.error("give --stow URL, --out DIR, or both")
    try:
        check_spacing(args.pixel_spacing)
    except ValueError as e:
        p.error(f"--pixel-spacing: {e}")
    try:
        files = photographs(args.sources)
        if not files:
            raise FileNotFoundError(f"no photographs in {' '.join(args.sources)}")
        done = import_photographs(
            files, args.stow, args.out, args.patient_id, args.pixel_spacing, args.modality, labels=args.labels
        )
    except (FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except Exception as e:  # the DICOMweb server refused or could not be reached
        print(f"error: upload to {args.stow} failed: {type(e).__name__}: {e}", file=sys.stderr)
        return 1
    mapping = read_mapping(args.mapping)
    mapping.update({d.file: {k: str(x) for k, x in asdict(d).items()} for d in done})
    write_mapping(args.mapping, mapping.values())
    where = [f"uploaded to {args.stow}"] if args.stow else []
    where += [f"written to {args.out}"] if args.out else []
    print(f"{len(done)} photograph(s) {' and '.join(where)}; UIDs in {args.mapping}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
