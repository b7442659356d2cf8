"""The 3D Slicer round trip against the real server, with MONAI Label's own client and the plugin's parameters.

The Slicer plugin (``monailabel/plugins/slicer/MONAILabel/MONAILabel.py`` of the monailabel 0.8.5 wheel, which
vendors ``monailabel.client.client`` as ``MONAILabelLib/client.py``) loads a JPEG/PNG through ITK as a
single-slice volume, asks for ``.nrrd`` results (``result_extension=".nrrd"``, ``result_dtype="uint8"`` on
top of the model's ``config`` from ``/info``) and saves corrections as ``.nii.gz`` (its default
``MONAILabel/fileExtension``), ``.nrrd`` or ``.seg.nrrd`` with ``params={"label_info": [...]}``. Here every
file is written or read as ITK does, on the geometry ITK gives the photograph, and an off-centre lesion in
a non-square photograph shows that nothing is flipped or transposed on the way.
"""

from __future__ import annotations

import gzip
from collections.abc import Iterator
from pathlib import Path

import itk
import numpy as np
import pytest
from monailabel.client import MONAILabelClient
from monailabel.client.client import MONAILabelClientException
from PIL import Image

from apps.make_sample_data import draw_study
from apps.research.local_server import running_server
from tests.support.servers import NO_SCORING

pytestmark = pytest.mark.server

SHAPE = (240, 360)  # (H, W) of the photographs: non-square
CLIENT_ID = "user-xyz"  # the plugin's default Client/User-ID
LABEL_INFO = [{"name": "lesion", "idx": 1}]  # what onSaveLabel sends for the one segment of info["labels"]
#: Sources as a user may have them: a JPEG with a 300 dpi JFIF header (ITK: 0.0847 mm spacing), a PNG
#: (unit spacing) and a JPEG stored sideways with EXIF orientation 6 (ITK and Slicer ignore EXIF).
SOURCES = {"slicer_dpi": ".jpg", "slicer_png": ".png", "slicer_exif": ".jpg"}


def off_centre_study() -> tuple[np.ndarray, np.ndarray]:
    """A drawn photograph of SHAPE whose lesion sits in the top-right part (rows 18-127, columns 198-307)."""
    img, mask = draw_study(np.random.default_rng(21), (360, 480))
    ys, xs = np.nonzero(mask)
    top, left = round(ys.mean() - 0.3 * SHAPE[0]), round(xs.mean() - 0.7 * SHAPE[1])
    img, mask = img[top : top + SHAPE[0], left : left + SHAPE[1]], mask[top : top + SHAPE[0], left : left + SHAPE[1]]
    assert mask.sum() > 5000 and not mask[:, : SHAPE[1] // 2].any() and not mask[SHAPE[0] * 2 // 3 :].any()
    return np.ascontiguousarray(img), mask.astype(np.uint8)


def write_source(name: str, img: np.ndarray, folder: Path) -> Path:
    path = folder / f"{name}{SOURCES[name]}"
    if name == "slicer_dpi":
        Image.fromarray(img).save(path, quality=95, dpi=(300, 300))
    elif name == "slicer_png":
        Image.fromarray(img).save(path)
    else:  # stored turned a quarter, EXIF orientation 6 turns it upright again (as phones write)
        exif = Image.Exif()
        exif[0x0112] = 6
        Image.fromarray(img).transpose(Image.Transpose.ROTATE_90).save(path, quality=95, exif=exif.tobytes())
    return path


def stored_grid(mask: np.ndarray, name: str) -> np.ndarray:
    """An upright (H, W) mask on the photograph's stored pixel grid, as ITK and Slicer show it."""
    return np.rot90(mask, 1) if name == "slicer_exif" else mask


def geometry(image: itk.Image) -> tuple[tuple[int, ...], np.ndarray, np.ndarray, np.ndarray]:
    size = tuple(int(s) for s in image.GetLargestPossibleRegion().GetSize())
    return size, np.array(image.GetSpacing()), np.array(image.GetOrigin()), np.asarray(image.GetDirection())


def read_as_volume(path: Path | str, pixel: type) -> itk.Image:
    """A file read the way Slicer reads it: as a 3D volume (a 2D file becomes one slice)."""
    reader = itk.ImageFileReader[itk.Image[pixel, 3]].New(FileName=str(path))
    reader.Update()
    return reader.GetOutput()


def assert_same_geometry(a: tuple, b: tuple) -> None:
    assert a[0] == b[0], f"size {a[0]} != {b[0]}"
    for what, x, y in zip(("spacing", "origin", "direction"), a[1:], b[1:]):
        assert np.allclose(x, y, rtol=1e-6, atol=1e-9), f"{what} {x.tolist()} != {y.tolist()}"


def iou(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.astype(bool), b.astype(bool)
    return float((a & b).sum() / max((a | b).sum(), 1))


def square(mask: np.ndarray) -> np.ndarray:
    """Zero-padded to a square, so a mask and its transpose can be compared."""
    side = max(mask.shape)
    out = np.zeros((side, side), mask.dtype)
    out[: mask.shape[0], : mask.shape[1]] = mask
    return out


def slicer_label(mask_hw: np.ndarray, source: Path) -> itk.Image:
    """A labelmap as Slicer exports it on the reference volume: a (1, H, W) array on the volume's geometry."""
    reference = read_as_volume(source, itk.RGBPixel[itk.UC])
    label = itk.image_from_array(np.ascontiguousarray(mask_hw[None].astype(np.uint8)))
    label.SetSpacing(reference.GetSpacing())
    label.SetOrigin(reference.GetOrigin())
    label.SetDirection(reference.GetDirection())
    return label


def write_seg_nrrd(mask_hw: np.ndarray, source: Path, dest: Path) -> None:
    """A ``.seg.nrrd`` as Slicer's segmentation storage writes it: a 3D gzip NRRD with ``Segment0_*`` fields.

    ITK's writer cannot add Slicer's ``key:=value`` fields, so the header is written by hand.
    """
    size, spacing, origin, direction = geometry(read_as_volume(source, itk.RGBPixel[itk.UC]))
    columns = [direction[:, j] * spacing[j] for j in range(3)]
    ys, xs = np.nonzero(mask_hw)
    extent = f"{xs.min()} {xs.max()} {ys.min()} {ys.max()} 0 0"
    vector = lambda v: "(" + ",".join(f"{x:.17g}" for x in v) + ")"  # noqa: E731
    header = [
        "NRRD0004",
        "# Complete NRRD file format specification at:",
        "# http://teem.sourceforge.net/nrrd/format.html",
        "type: unsigned char",
        "dimension: 3",
        "space: left-posterior-superior",
        f"sizes: {size[0]} {size[1]} {size[2]}",
        "space directions: " + " ".join(vector(c) for c in columns),
        "kinds: domain domain domain",
        "encoding: gzip",
        f"space origin: {vector(origin)}",
        "measurement frame: (1,0,0) (0,1,0) (0,0,1)",
        "Segment0_Color:=0.501961 0.682353 0.501961",
        "Segment0_ColorAutoGenerated:=0",
        f"Segment0_Extent:={extent}",
        "Segment0_ID:=lesion",
        "Segment0_LabelValue:=1",
        "Segment0_Layer:=0",
        "Segment0_Name:=lesion",
        "Segment0_NameAutoGenerated:=0",
        "Segment0_Tags:=Segmentation.Status:inprogress|",
        "Segmentation_ContainedRepresentationNames:=Binary labelmap|",
        "Segmentation_ConversionParameters:=",
        "Segmentation_MasterRepresentation:=Binary labelmap",
        "Segmentation_ReferenceImageExtentOffset:=0 0 0",
    ]
    data = gzip.compress(np.ascontiguousarray(mask_hw.astype(np.uint8)).tobytes())  # x fastest: rows of W
    dest.write_bytes(("\n".join(header) + "\n\n").encode() + data)


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("slicer")


@pytest.fixture(scope="module")
def truth() -> np.ndarray:
    return off_centre_study()[1]


@pytest.fixture(scope="module")
def client(workdir: Path) -> Iterator[MONAILabelClient]:
    """One server (unet only) with the three sources uploaded as Slicer's File > Add Data + upload would."""
    img, _ = off_centre_study()
    (workdir / "sources").mkdir()
    with running_server(workdir, {"models": "unet"}, env=NO_SCORING) as url:
        client = MONAILabelClient(url, tmpdir=str(workdir / "client"), client_id=CLIENT_ID)
        for name in SOURCES:
            assert (
                client.upload_image(str(write_source(name, img, workdir / "sources")), image_id=name)["image"] == name
            )
        yield client


def plugin_infer_params(client: MONAILabelClient, model: str) -> dict:
    """What MONAILabelWidget.onClickSegmentation + MONAILabelLogic.infer send (client_id is the client's)."""
    config = client.info()["models"][model].get("config", {})
    params = {k: v[0] if isinstance(v, list) else v for k, v in config.items()}  # getParamsFromConfig
    params["result_extension"] = ".nrrd"
    params["result_dtype"] = "uint8"
    return params


def stored_source(workdir: Path, name: str) -> Path:
    return workdir / "studies" / f"{name}{SOURCES[name]}"


@pytest.mark.parametrize("name", list(SOURCES))
def test_nrrd_result_lies_on_the_lesion_in_slicer(
    client: MONAILabelClient, workdir: Path, truth: np.ndarray, name: str
) -> None:
    source = stored_source(workdir, name)
    result_file, result = client.infer("unet", name, plugin_infer_params(client, "unet"))
    assert result_file.endswith(".nrrd") and result["image_size"] == list(SHAPE)

    mask2d, image2d = itk.imread(result_file), itk.imread(str(source))  # ITK: a 2D mask, a 2D RGB image
    assert_same_geometry(geometry(mask2d), geometry(image2d))
    assert_same_geometry(
        geometry(read_as_volume(result_file, itk.UC)), geometry(read_as_volume(source, itk.RGBPixel[itk.UC]))
    )
    pred = itk.array_from_image(mask2d)
    expected = stored_grid(truth, name)
    assert pred.dtype == np.uint8 and set(np.unique(pred)) <= {0, 1}
    assert iou(pred, expected) > 0.8, f"IoU {iou(pred, expected):.3f} at the right place"
    for wrong, flipped in [("left-right", pred[:, ::-1]), ("up-down", pred[::-1]), ("rot180", pred[::-1, ::-1])]:
        assert iou(flipped, expected) < 0.15, f"{wrong} flip also fits: the test image is not asymmetric enough"
    assert pred.shape == expected.shape != expected.shape[::-1]  # a transposed mask would not even fit
    if name == "slicer_exif":  # the mask left upright (as the app sees the photo) would miss the lesion in Slicer
        assert iou(square(pred), square(truth)) < 0.15
    else:
        assert iou(square(pred).T, square(expected)) < 0.15

    png_file, _ = client.infer("unet", name, {**plugin_infer_params(client, "unet"), "result_extension": ".png"})
    with Image.open(png_file) as png:  # the PNG is upright, as the app and photo viewers show the photograph
        assert np.array_equal(stored_grid(np.asarray(png), name), pred)


def test_nifti_result_has_the_same_geometry(client: MONAILabelClient, workdir: Path, truth: np.ndarray) -> None:
    source = stored_source(workdir, "slicer_dpi")
    params = {**plugin_infer_params(client, "unet"), "result_extension": ".nii.gz"}
    result_file, _ = client.infer("unet", "slicer_dpi", params)
    assert result_file.endswith(".nii.gz")
    assert_same_geometry(
        geometry(read_as_volume(result_file, itk.UC)), geometry(read_as_volume(source, itk.RGBPixel[itk.UC]))
    )
    assert iou(itk.array_from_image(itk.imread(result_file)), truth) > 0.8


@pytest.mark.parametrize(
    ("name", "fmt"),
    [
        ("slicer_dpi", ".nii.gz"),
        ("slicer_dpi", ".nrrd"),
        ("slicer_dpi", ".seg.nrrd"),
        ("slicer_png", ".nii.gz"),
        ("slicer_exif", ".nii.gz"),
        ("slicer_exif", ".seg.nrrd"),
    ],
)
def test_slicer_label_is_stored_as_the_upright_png(
    client: MONAILabelClient, workdir: Path, truth: np.ndarray, name: str, fmt: str
) -> None:
    source = stored_source(workdir, name)
    corrected = truth.copy()
    corrected[30:60, 200:230] = 1  # a correction the model did not make: the stored label is what was sent
    corrected[100:128, 280:310] = 0
    on_grid = stored_grid(corrected, name)
    label = workdir / f"{name}_label{fmt}"
    if fmt == ".seg.nrrd":
        write_seg_nrrd(on_grid, source, label)
    else:
        itk.imwrite(slicer_label(on_grid, source), str(label), compression=True)
    assert itk.array_from_image(itk.imread(str(label))).shape == (1, *on_grid.shape)  # one slice, as Slicer's

    client.save_label(name, str(label), params={"label_info": LABEL_INFO})  # the plugin's Submit Label
    stored = workdir / "studies" / "labels" / "final" / f"{name}.png"
    with Image.open(stored) as png:
        assert png.mode == "L" and np.array_equal(np.asarray(png), corrected)
    info = client.datastore()["objects"][name]["labels"]["final"]["info"]
    assert info["label_info"] == LABEL_INFO and info["client_id"] == CLIENT_ID


def _refused(client: MONAILabelClient, label: Path, name: str) -> str:
    with pytest.raises(MONAILabelClientException) as e:
        client.save_label(name, str(label), params={"label_info": LABEL_INFO})
    assert "Status: 400" in e.value.msg, e.value.msg
    return e.value.msg


def test_labels_that_do_not_fit_are_refused(client: MONAILabelClient, workdir: Path, truth: np.ndarray) -> None:
    name = "slicer_png"
    source = stored_source(workdir, name)
    stored = workdir / "studies" / "labels" / "final" / f"{name}.png"
    before = stored.read_bytes() if stored.exists() else None

    transposed = slicer_label(square(truth).T[: SHAPE[1], : SHAPE[0]], source)
    transposed.SetSpacing([1.0, 1.0, 1.0])
    itk.imwrite(transposed, str(workdir / "transposed.nii.gz"))
    assert "transposed" in _refused(client, workdir / "transposed.nii.gz", name)

    itk.imwrite(slicer_label(truth[:, :-1], source), str(workdir / "narrow.nrrd"))
    assert "359x240 (width x height)" in _refused(client, workdir / "narrow.nrrd", name)

    flipped = slicer_label(truth, source)
    flipped.SetDirection(itk.matrix_from_array(np.diag([-1.0, 1.0, 1.0])))
    itk.imwrite(flipped, str(workdir / "flipped.nrrd"))
    assert "flipped, transposed or tilted" in _refused(client, workdir / "flipped.nrrd", name)

    itk.imwrite(itk.image_from_array(np.zeros((2, *SHAPE), np.uint8)), str(workdir / "volume.nii.gz"))
    assert "one 2D slice" in _refused(client, workdir / "volume.nii.gz", name)

    assert (stored.read_bytes() if stored.exists() else None) == before
