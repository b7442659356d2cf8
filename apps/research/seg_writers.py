"""The app's DICOM SEG writer (highdicom, :func:`lesion_app.io.dicom.mask_to_seg`) beside dcmqi's
``itkimage2segimage`` (the writer before it): install size and the time to write one photograph's SEG.

    python -m apps.research.seg_writers sample-data/lesion_001.jpg --repeat 20

Prints the median write time of each over ``--repeat`` runs, alternated, and the installed size of each package
with the packages only it needs. dcmqi is timed only where its ``itkimage2segimage`` is on PATH or beside this
Python (``pip install dcmqi``); an empty mask is tried with both (dcmqi cannot write one).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from importlib import metadata
from pathlib import Path

import numpy as np
from pydicom import dcmread

from lesion_app.io.dicom import FrameGeometry, PhotoUids, mask_to_seg, photo_to_dicom


def installed_mb(*packages: str) -> float | None:
    """Megabytes the named distributions' files take on disk; None if one is not installed."""
    total = 0
    for name in packages:
        try:
            files = metadata.distribution(name).files or []
        except metadata.PackageNotFoundError:
            return None
        total += sum(p.locate().stat().st_size for p in files if p.locate().is_file())
    return total / 1e6


def dcmqi_binary() -> str | None:
    name = "itkimage2segimage"
    return shutil.which(name) or shutil.which(name, path=os.path.dirname(sys.executable))


def write_with_dcmqi(tool: str, mask: np.ndarray, source_dir: Path, dest: Path) -> None:
    """dcmqi's way: the mask as a one-slice NRRD on the frame, a JSON template, the converter run."""
    import itk

    geometry = FrameGeometry.of(dcmread(str(next(source_dir.glob("*.dcm"))), stop_before_pixels=True))
    segment = {
        "labelID": 1,
        "SegmentLabel": "lesion",
        "SegmentAlgorithmType": "SEMIAUTOMATIC",
        "SegmentAlgorithmName": "lesion_app",
        "SegmentedPropertyCategoryCodeSequence": {"CodeValue": "49755003", "CodingSchemeDesignator": "SCT",
                                                  "CodeMeaning": "Morphologically Altered Structure"},
        "SegmentedPropertyTypeCodeSequence": {"CodeValue": "52988006", "CodingSchemeDesignator": "SCT",
                                              "CodeMeaning": "Lesion"},
    }  # fmt: skip
    template = {"ContentCreatorName": "lesion_app", "SeriesDescription": "lesion", "SeriesNumber": "300",
                "InstanceNumber": "1", "segmentAttributes": [[segment]]}  # fmt: skip
    volume, meta = dest.with_suffix(".nrrd"), dest.with_suffix(".json")
    image = itk.image_from_array(np.ascontiguousarray(mask[None].astype(np.uint8)))
    itk.imwrite(geometry.apply(image, 3), str(volume), compression=True)
    meta.write_text(json.dumps(template))
    args = ["--inputImageList", str(volume), "--inputDICOMDirectory", str(source_dir), "--outputDICOM", str(dest)]
    run = subprocess.run([tool, *args, "--inputMetadata", str(meta)], capture_output=True, text=True, timeout=120)
    if run.returncode != 0:
        raise RuntimeError((run.stderr or run.stdout).strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("photo", type=Path, help="a photograph (JPEG or PNG)")
    parser.add_argument("--repeat", type=int, default=20)
    args = parser.parse_args(argv)
    tool = dcmqi_binary()
    with tempfile.TemporaryDirectory(prefix="seg_writers_") as tmp:
        source = Path(tmp) / "series"
        source.mkdir()
        ds = photo_to_dicom(args.photo, PhotoUids.from_key(str(args.photo)), "P^")
        ds.save_as(source / "photo.dcm", write_like_original=False)
        rows, columns = int(ds.Rows), int(ds.Columns)
        mask = np.zeros((rows, columns), np.uint8)
        mask[rows // 4 : 3 * rows // 4, columns // 4 : 3 * columns // 4] = 1
        writers = {"highdicom": lambda m, d: mask_to_seg(m, source, d)}
        if tool:
            writers["dcmqi"] = lambda m, d: write_with_dcmqi(tool, m, source, d)
        times: dict[str, list[float]] = {name: [] for name in writers}
        for k in range(args.repeat):
            for name, write in writers.items():  # alternated, so a slowing machine slows both
                start = time.perf_counter()
                write(mask, Path(tmp) / f"{name}{k}.dcm")
                times[name].append(time.perf_counter() - start)
        print(f"one SEG of a {columns}x{rows} photograph, median of {args.repeat} (alternated):")
        for name, found in times.items():
            print(f"  {name:10s} {statistics.median(found) * 1000:7.1f} ms")
        if not tool:
            print("  dcmqi      not installed (pip install dcmqi to compare)")
        for name, write in writers.items():
            try:
                write(np.zeros_like(mask), Path(tmp) / f"{name}_empty.dcm")
                print(f"  {name:10s} empty mask ('no lesion'): written")
            except (RuntimeError, ValueError) as e:
                print(f"  {name:10s} empty mask ('no lesion'): fails ({str(e)[:100]})")
    for label, packages in {"highdicom": ("highdicom", "pillow-jpls"), "dcmqi": ("dcmqi",)}.items():
        size = installed_mb(*packages)
        print(f"installed: {label:10s} {'-' if size is None else f'{size:.1f} MB'} ({', '.join(packages)})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
