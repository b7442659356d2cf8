"""What a lesion mask measures: size, shape asymmetry, border irregularity and colour, in pixels and (when the pixel
spacing is known) in millimetres.

One function, :func:`measure`, takes a (H, W) 0/1 mask at the photograph's size (upright, as the app reads it), the
spacing in mm per pixel or None, and optionally the (H, W, 3) uint8 RGB photograph for the colour values, and
returns a flat dict whose keys are :data:`COLUMNS` (name -> unit and meaning). Every region of the mask is measured
together as one lesion; ``regions`` says how many separate (8-connected) regions it has.

Where each value comes from:

- area, equivalent-circle diameter, maximum Feret diameter, solidity, centroid and principal axes: scikit-image's
  :func:`skimage.measure.regionprops`. The maximum Feret (caliper) diameter is measured between the points of the
  convex hull's 0.5-level contour, so for a digital disc it is about one pixel longer than the analytic diameter.
- perimeter: scikit-image's ``perimeter_crofton`` (Crofton's formula over 4 directions; Lehmann and Legland,
  "Efficient N-dimensional surface estimation using Crofton formula and run-length encoding", Insight Journal
  2012): within 1% of 2 pi r for discs of radius 50 px, where the 4-neighbour ``perimeter`` is 4% long.
- minimum Feret diameter (by hand: scikit-image has the maximum only): the smallest width of the same convex hull
  over the directions of its edges (rotating calipers; Toussaint, "Solving geometric problems with the rotating
  calipers", IEEE MELECON 1983: the minimum width is attained with a caliper flush with a hull edge).
- shape asymmetry (by hand): the share of the lesion's area that does not overlap its mirror image about each of
  its two principal axes through its centroid, 0 for a symmetric lesion (Stoecker et al., "Automatic detection of
  asymmetry in skin tumors", Comput Med Imaging Graph 16(3), 1992; the "A" of the ABCD rule, Stolz et al. 1994).
  The mirror image is sampled bilinearly (:func:`scipy.ndimage.map_coordinates`).
- compactness: perimeter^2 / (4 pi area), 1 for a disc and larger for a ragged border (the compactness index of
  Golston et al., "Automatic detection of irregular borders in melanoma and other skin tumors", Comput Med Imaging
  Graph 16(3), 1992).
- colour: the mean and standard deviation of the lesion's pixels in CIELAB (:func:`skimage.color.rgb2lab`, D65),
  and the colour contrast with the skin around it: the CIE76 colour difference (Delta E*ab, the Euclidean distance
  in CIELAB) between the lesion's mean and the mean of a ring of skin outside it, as the "outer periphery" of
  Celebi et al., "A methodological approach to the classification of dermoscopy images", Comput Med Imaging Graph
  31(6), 2007. The ring here is :data:`RING_FRACTION` of the equivalent diameter wide (at least
  :data:`RING_MIN_PX` pixels), within the photograph.

Millimetre values appear only with a real spacing; without one they are absent and ``spacing`` says ``unknown``.
"""

from __future__ import annotations

import math
import os

import numpy as np
from scipy import ndimage
from scipy.spatial import ConvexHull, QhullError
from skimage.color import rgb2lab
from skimage.measure import find_contours, regionprops

#: Width of the ring of skin the colour contrast is measured against, as a share of the equivalent diameter.
RING_FRACTION = 0.1
#: The ring's smallest width in pixels.
RING_MIN_PX = 3
#: What ``spacing`` says when no calibration is known (mm values are then absent).
SPACING_UNKNOWN = "unknown"

#: Every value :func:`measure` can give, with its unit and meaning (the program's ``--help`` prints these).
COLUMNS: dict[str, str] = {
    "spacing": "`known` or `unknown`: whether the pixel spacing is known (mm values appear only when it is)",
    "spacing_mm": "pixel spacing, mm per pixel (square pixels)",
    "regions": "number of separate (8-connected) lesion regions, a count",
    "area_px": "lesion area, pixels",
    "area_mm2": "lesion area, mm^2",
    "perimeter_px": "perimeter (Crofton), pixels",
    "perimeter_mm": "perimeter (Crofton), mm",
    "feret_max_px": "maximum Feret (caliper) diameter, pixels",
    "feret_max_mm": "maximum Feret (caliper) diameter, mm",
    "feret_min_px": "minimum Feret (caliper) diameter, pixels",
    "feret_min_mm": "minimum Feret (caliper) diameter, mm",
    "equivalent_diameter_px": "diameter of the disc of the same area, pixels",
    "equivalent_diameter_mm": "diameter of the disc of the same area, mm",
    "asymmetry_major": "share of the area not overlapping its mirror image about the major axis, 0 (symmetric) to 1",
    "asymmetry_minor": "share of the area not overlapping its mirror image about the minor axis, 0 (symmetric) to 1",
    "compactness": "perimeter^2 / (4 pi area), 1 for a disc, larger for a ragged border (no unit)",
    "solidity": "area / area of the convex hull, 1 for a convex lesion (no unit)",
    "colour_L_mean": "mean CIELAB lightness L* in the lesion, 0-100",
    "colour_a_mean": "mean CIELAB a* (green-red) in the lesion",
    "colour_b_mean": "mean CIELAB b* (blue-yellow) in the lesion",
    "colour_L_std": "standard deviation of L* in the lesion",
    "colour_a_std": "standard deviation of a* in the lesion",
    "colour_b_std": "standard deviation of b* in the lesion",
    "colour_contrast": "CIE76 Delta E*ab between the lesion's mean colour and a ring of skin around it",
}
#: The length columns, measured in pixels and converted by the spacing.
LENGTHS = ("perimeter", "feret_max", "feret_min", "equivalent_diameter")


def check_spacing(spacing_mm: object) -> float | None:
    """A pixel spacing as a positive finite number of mm per pixel, or None (unknown).

    Raises:
        ValueError: the spacing is zero, negative, not finite or not a number (the message quotes it).
    """
    if spacing_mm is None:
        return None
    if isinstance(spacing_mm, bool):
        raise ValueError(f"pixel spacing must be a positive number of mm per pixel, got {spacing_mm!r}")
    try:
        value = float(spacing_mm)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise ValueError(f"pixel spacing must be a positive number of mm per pixel, got {spacing_mm!r}") from None
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"pixel spacing must be a positive number of mm per pixel, got {spacing_mm!r}")
    return value


def hull_points(convex_image: np.ndarray) -> np.ndarray:
    """(n, 2) points of the 0.5-level contour of a convex image (padded by 2), as scikit-image's
    ``feret_diameter_max`` takes them."""
    padded = np.pad(convex_image, 2, mode="constant", constant_values=0)
    return np.vstack(find_contours(padded.astype(np.float64), 0.5, fully_connected="high"))


def min_caliper_width(points: np.ndarray) -> float:
    """The smallest width of the convex hull of (n, 2) points, in their unit (rotating calipers: the minimum lies
    with a caliper flush with one hull edge); 0 for collinear points."""
    try:
        hull = points[ConvexHull(points).vertices]
    except (QhullError, ValueError):
        return 0.0
    edges = np.roll(hull, -1, axis=0) - hull
    lengths = np.hypot(edges[:, 0], edges[:, 1])
    keep = lengths > 0
    normals = np.stack([-edges[keep, 1], edges[keep, 0]], axis=1) / lengths[keep, None]
    # each edge's width: the farthest hull point from the line through it
    distances = np.abs(np.einsum("ekd,ed->ek", hull[None, :, :] - hull[keep][:, None, :], normals))
    widths = distances.max(axis=1)
    return float(widths.min()) if widths.size else 0.0


def mirror_asymmetry(mask: np.ndarray, centroid: tuple[float, float], orientation: float) -> tuple[float, float]:
    """The share of a (H, W) mask's area that does not overlap its mirror image about the major and the minor axis.

    ``orientation`` is scikit-image's: the angle in radians between the rows axis and the major axis. Each lesion
    pixel is mirrored about the axis through ``centroid`` and the mask is sampled there bilinearly (outside the grid
    counts as skin); the overlap is the sum of those samples.
    """
    rows, cols = np.nonzero(mask)
    if rows.size == 0:
        return 0.0, 0.0
    major = np.array([math.cos(orientation), math.sin(orientation)])  # (row, col) direction of the major axis
    centre = np.asarray(centroid, dtype=np.float64)
    offset = np.stack([rows, cols], axis=1) - centre
    shares = []
    for axis in (major, np.array([-major[1], major[0]])):
        # mirror about the line through the centre along ``axis``: keep the component along it, flip the rest
        component = (offset @ axis)[:, None] * axis
        mirrored = centre + 2 * component - offset
        sampled = ndimage.map_coordinates(mask.astype(np.float32), mirrored.T, order=1, mode="constant", cval=0.0)
        shares.append(float(1.0 - sampled.sum() / rows.size))
    return max(shares[0], 0.0), max(shares[1], 0.0)


def colour_values(rgb: np.ndarray, mask: np.ndarray, ring_px: int) -> dict[str, float]:
    """The lesion's CIELAB mean and spread and its contrast with a ring of ``ring_px`` pixels of skin around it,
    computed on the lesion's bounding box grown by the ring (the rest of the photograph is not converted)."""
    rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
    r0, r1 = max(rows[0] - ring_px, 0), min(rows[-1] + ring_px + 1, mask.shape[0])
    c0, c1 = max(cols[0] - ring_px, 0), min(cols[-1] + ring_px + 1, mask.shape[1])
    box = mask[r0:r1, c0:c1].astype(bool)
    lab = rgb2lab(np.asarray(rgb[r0:r1, c0:c1, :3], dtype=np.uint8))
    inside = lab[box]
    ring = ndimage.distance_transform_edt(~box) if (~box).any() else np.zeros(box.shape)
    skin = lab[(ring > 0) & (ring <= ring_px)]
    values = {f"colour_{c}_mean": float(inside[:, i].mean()) for i, c in enumerate("Lab")}
    values.update({f"colour_{c}_std": float(inside[:, i].std()) for i, c in enumerate("Lab")})
    if len(skin):
        values["colour_contrast"] = float(np.linalg.norm(inside.mean(0) - skin.mean(0)))
    return values


def photograph_rgb(path: str | os.PathLike) -> np.ndarray:
    """(H, W, 3) uint8 RGB of a photograph exactly as the app's loader reads it (upright by EXIF, 16-bit brought to
    8, the DICOMweb datastore's NRRD included): what the colour values are measured on, in the server and the
    program alike.

    Raises:
        OSError, ValueError: the file is not an image the app reads.
    """
    from lesion_app.core.transforms import PhotoReader
    from lesion_app.io.images import to_rgb

    return np.asarray(PhotoReader(converter=to_rgb, reverse_indexing=False).read(str(path)), dtype=np.uint8)


def measure(mask: np.ndarray, spacing_mm: float | None = None, rgb: np.ndarray | None = None) -> dict[str, object]:
    """The measurements of a (H, W) 0/1 lesion mask, keys from :data:`COLUMNS`.

    Args:
        mask: (H, W), nonzero is lesion, upright at the photograph's size.
        spacing_mm: mm per pixel (square pixels), or None when unknown: then no ``*_mm`` value is given.
        rgb: the (H, W, 3) uint8 photograph for the colour values (absent without it).

    Returns:
        ``spacing`` and ``regions`` always; an empty mask gives ``area_px`` 0 and nothing else (no error).

    Raises:
        ValueError: the mask is not 2D, the photograph's size differs, or the spacing is not a positive number.
    """
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise ValueError(f"a mask is one (H, W) plane, got shape {mask.shape}")
    if rgb is not None and tuple(np.shape(rgb)[:2]) != mask.shape:
        raise ValueError(f"the photograph is {np.shape(rgb)[:2]} but the mask {mask.shape} (H, W)")
    spacing = check_spacing(spacing_mm)
    binary = mask > 0
    out: dict[str, object] = {"spacing": "known" if spacing else SPACING_UNKNOWN}
    if spacing:
        out["spacing_mm"] = spacing
    _, regions = ndimage.label(binary, structure=np.ones((3, 3), bool))
    out["regions"] = int(regions)
    if not regions:
        out["area_px"] = 0
        return out
    props = regionprops(binary.astype(np.uint8))[0]
    area = float(props.area)
    perimeter = float(props.perimeter_crofton)
    out.update(
        {
            "area_px": int(area),
            "perimeter_px": perimeter,
            "feret_max_px": float(props.feret_diameter_max),
            "feret_min_px": min_caliper_width(hull_points(props.image_convex)),
            "equivalent_diameter_px": float(props.equivalent_diameter_area),
        }
    )
    major, minor = mirror_asymmetry(binary, props.centroid, float(props.orientation))
    out["asymmetry_major"], out["asymmetry_minor"] = major, minor
    out["compactness"] = perimeter**2 / (4 * math.pi * area)
    out["solidity"] = float(props.solidity)
    if spacing:
        out["area_mm2"] = area * spacing**2
        for name in LENGTHS:
            out[f"{name}_mm"] = float(out[f"{name}_px"]) * spacing  # type: ignore[arg-type]
    if rgb is not None:
        ring = max(RING_MIN_PX, round(RING_FRACTION * float(out["equivalent_diameter_px"])))  # type: ignore[arg-type]
        out.update(colour_values(np.asarray(rgb), binary, ring))
    return {name: out[name] for name in COLUMNS if name in out}
