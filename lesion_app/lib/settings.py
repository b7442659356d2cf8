"""The app's settings: every option a user can pass with ``--conf <name> <value>``, in one place.

``monailabel start_server --app lesion_app --studies sample-data --conf models unet --conf threads 2``

See the "Configuration" table in docs/server.md; it is generated from :data:`FIELDS_DOC` and must match.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, fields
from datetime import datetime
from pathlib import Path

from lesion_app.core.clicks import CLICK_BRS_ITERATIONS, CLICK_PRIOR, CLICK_PRIOR_SIGMA, CLICK_RADIUS, ClickEffect

#: The models that segment a photograph alone; the first served one is also the one whose uncertainty is measured.
AUTOMATIC_MODELS = ("unet", "deeplabv3", "ensemble")
#: The click-guided model (MONAI Label type ``deepedit``): the photograph plus the clinician's clicks.
CLICK_MODELS = ("deepedit",)
ALL_MODELS = AUTOMATIC_MODELS + CLICK_MODELS
#: The models with a train task (the ensemble learns through its members).
TRAINABLE_MODELS = ("unet", "deeplabv3", "deepedit")
#: The models the ensemble averages, each in its newest version.
ENSEMBLE_MEMBERS = ("unet", "deeplabv3")
#: Where the shipped weights ``pretrained_<model>.pt`` live (the default ``--conf pretrained_dir``).
SHIPPED_MODEL_DIR = Path(__file__).resolve().parents[1] / "model"


def shipped_model(name: str) -> Path:
    """The shipped weights of a model (``unet``, ``deeplabv3``): ``lesion_app/model/pretrained_<name>.pt``."""
    return SHIPPED_MODEL_DIR / f"pretrained_{name}.pt"


def shipped_models(name: str) -> list[Path]:
    """The shipped files a served model reads: its own, or each member's for the ensemble."""
    return [shipped_model(m) for m in (ENSEMBLE_MEMBERS if name == "ensemble" else (name,))]


FIELDS_DOC = {
    "models": "comma-separated models to serve: `unet`, `deeplabv3`, `ensemble` (the average of both), `deepedit` "
    "(click-guided correction) or `all`",
    "model_dir": "folder for models trained by the server (default: the app's `model/`)",
    "pretrained_dir": "folder of the shipped weights `pretrained_<model>.pt` (default: the app's `model/`)",
    "spatial_size": "side of the square network input photographs are resized to, in pixels (a multiple of 32)",
    "threads": "torch CPU threads for inference (0: every core but one, at least one)",
    "infer_tta": "average the four flips of each image by default (a request's `tta` overrides it)",
    "infer_postprocess": "keep the largest lesion region and fill its holes by default (request: `postprocess`)",
    "click_radius": "`deepedit`: the disk around each click that takes its label, pixels at the network's size "
    "(0: off; request: `click_radius`)",
    "click_prior": "`deepedit`: how strongly a click pulls the mask its way around it, logits added at a positive "
    "click and subtracted at a negative one (0: off; request: `click_prior`)",
    "click_prior_sigma": "`deepedit`: how far a click's prior reaches, the standard deviation of its Gaussian in "
    "pixels at the network's size (request: `click_prior_sigma`)",
    "click_brs_iterations": "`deepedit`: L-BFGS iterations per click of the backpropagating refinement (f-BRS) "
    "that makes the network agree with the clicks (0: off; request: `click_brs_iterations`)",
    "train_epochs": "epochs of one training run",
    "train_minutes": "time budget of one training run in minutes (0: none); the learning rate decays to fit it",
    "train_batch_size": "training batch size",
    "train_lr": "peak learning rate when fine-tuning the served model",
    "val_fraction": "share of the labelled images held out for validation (fixed seed)",
    "retrain_after_labels": "train again after this many new final labels since the last training (0: off)",
    "retrain_daily_at": "train again daily at this local time, `HH:MM`, if a label arrived since (empty: off)",
    "retrain_models": "comma-separated models the schedule trains (empty: every model with a trainer)",
    "retrain_poll_seconds": "how often the schedule checks the datastore and the clock, in seconds",
    "uncertainty_method": "how uncertainty is sampled: `dropout` (Monte Carlo dropout) or `tta` (the four flips)",
    "power_beta": "the `power` strategy draws an image with probability proportional to uncertainty ** power_beta",
    "uncertainty_samples": "Monte Carlo dropout passes per image for the uncertainty score and map (at least 2)",
    "max_image_pixels": "largest image or label accepted on upload, in pixels (width x height); larger: HTTP 413",
    "max_upload_mb": "largest image or label file accepted on upload, in MB; larger: HTTP 413 (a request body over "
    "twice this, plus 1 MB, is refused as it arrives, before anything is stored)",
    "read_only": "refuse every datastore write (add image, save label, delete) with HTTP 403; infer and listing work",
    "dicomweb_modality": "with a DICOMweb `--studies` URL: the modality whose series are the images (XC: photographs)",
    "dicomweb_cache_seconds": "with a DICOMweb `--studies` URL: how long series and SEG listings are reused (s)",
    "pixel_spacing_mm": "mm per pixel of the photographs, for measurements in mm (0: unknown, pixels only; a DICOM "
    "photograph's own calibration and a request's `pixel_spacing_mm` come first)",
}


#: Options that were renamed: a server started with the old name stops and says the new one.
RENAMED = {"roi_size": "spatial_size"}


def _to_bool(value: str) -> bool:
    v = value.strip().lower()
    if v in ("1", "true", "yes", "on"):
        return True
    if v in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"not a boolean: {value!r}")


@dataclass(frozen=True)
class LesionSettings:
    """Every ``--conf`` option of the app, typed and checked (:meth:`from_conf`); :data:`FIELDS_DOC` says what
    each means and docs/server.md's Configuration table lists them."""

    models: tuple[str, ...] = ALL_MODELS
    model_dir: str = ""
    pretrained_dir: str = ""
    spatial_size: int = 256
    threads: int = 0
    infer_tta: bool = False
    infer_postprocess: bool = True
    click_radius: float = CLICK_RADIUS
    click_prior: float = CLICK_PRIOR
    click_prior_sigma: float = CLICK_PRIOR_SIGMA
    click_brs_iterations: int = CLICK_BRS_ITERATIONS
    train_epochs: int = 10
    train_minutes: float = 0.0
    train_batch_size: int = 8
    train_lr: float = 5e-4
    val_fraction: float = 0.2
    retrain_after_labels: int = 0
    retrain_daily_at: str = ""
    retrain_models: tuple[str, ...] = ()
    retrain_poll_seconds: float = 10.0
    uncertainty_method: str = "tta"
    uncertainty_samples: int = 8
    power_beta: float = 1.0
    max_image_pixels: int = 40_000_000
    max_upload_mb: float = 50.0
    read_only: bool = False
    dicomweb_modality: str = "XC"
    dicomweb_cache_seconds: float = 30.0
    pixel_spacing_mm: float = 0.0

    @classmethod
    def from_conf(cls, conf: Mapping[str, str], app_dir: str | os.PathLike) -> LesionSettings:
        """Parses the ``--conf`` pairs that are ours; other keys belong to MONAI Label and are ignored.

        Raises:
            ValueError: a value of ours does not parse or is out of range (the message names the option).
        """
        for old, new in RENAMED.items():
            if old in conf:
                raise ValueError(f"--conf {old} was renamed {new} (MONAI's name for a resize target): use --conf {new}")
        default_dir = str(Path(app_dir) / "model")
        values: dict[str, object] = {"model_dir": default_dir, "pretrained_dir": default_dir}
        for f in fields(cls):
            raw = conf.get(f.name)
            if raw is None or raw == "":
                continue
            try:
                if f.name == "models":
                    names = tuple(m.strip() for m in str(raw).split(",") if m.strip())
                    names = ALL_MODELS if "all" in names else names
                    unknown = sorted(set(names) - set(ALL_MODELS))
                    if unknown or not names:
                        raise ValueError(f"unknown model(s) {unknown}; choose from all, {', '.join(ALL_MODELS)}")
                    values[f.name] = names
                elif f.name == "retrain_models":
                    names = tuple(m.strip() for m in str(raw).split(",") if m.strip())
                    unknown = sorted(set(names) - set(TRAINABLE_MODELS))
                    if unknown:
                        raise ValueError(f"unknown model(s) {unknown}; choose from {', '.join(TRAINABLE_MODELS)}")
                    values[f.name] = names
                elif f.type in ("int", int):
                    values[f.name] = int(raw)
                elif f.type in ("float", float):
                    values[f.name] = float(raw)
                elif f.type in ("bool", bool):
                    values[f.name] = _to_bool(str(raw))
                elif f.name in ("model_dir", "pretrained_dir"):
                    values[f.name] = str(Path(str(raw)).expanduser().resolve())  # the train process may run elsewhere
                else:
                    values[f.name] = str(raw)
            except ValueError as e:
                raise ValueError(f"--conf {f.name} {raw!r}: {e}") from None
        settings = cls(**values)  # type: ignore[arg-type]
        if settings.spatial_size % 32 or settings.spatial_size < 32:
            raise ValueError(f"--conf spatial_size must be a positive multiple of 32, got {settings.spatial_size}")
        try:
            ClickEffect.of(settings.click_options)
        except ValueError as e:
            raise ValueError(f"--conf {e}") from None
        if not 0.0 < settings.val_fraction < 1.0:
            raise ValueError(f"--conf val_fraction must lie in (0, 1), got {settings.val_fraction}")
        if settings.retrain_after_labels < 0:
            raise ValueError(f"--conf retrain_after_labels must be 0 or more, got {settings.retrain_after_labels}")
        if settings.retrain_daily_at:
            try:
                datetime.strptime(settings.retrain_daily_at, "%H:%M")
            except ValueError:
                raise ValueError(f"--conf retrain_daily_at must be HH:MM, got {settings.retrain_daily_at!r}") from None
        if settings.retrain_poll_seconds <= 0:
            raise ValueError(f"--conf retrain_poll_seconds must be positive, got {settings.retrain_poll_seconds}")
        if settings.uncertainty_method not in ("dropout", "tta"):
            raise ValueError(f"--conf uncertainty_method must be dropout or tta, got {settings.uncertainty_method!r}")
        if settings.uncertainty_samples < 2:
            raise ValueError(f"--conf uncertainty_samples must be at least 2, got {settings.uncertainty_samples}")
        if settings.max_image_pixels < 1:
            raise ValueError(f"--conf max_image_pixels must be positive, got {settings.max_image_pixels}")
        if settings.power_beta < 0:
            raise ValueError(f"--conf power_beta must be >= 0, got {settings.power_beta}")
        if settings.max_upload_mb <= 0:
            raise ValueError(f"--conf max_upload_mb must be positive, got {settings.max_upload_mb}")
        if not settings.dicomweb_modality.isalnum():
            raise ValueError(f"--conf dicomweb_modality must be a modality code, got {settings.dicomweb_modality!r}")
        if settings.dicomweb_cache_seconds < 0:
            raise ValueError(f"--conf dicomweb_cache_seconds must be >= 0, got {settings.dicomweb_cache_seconds}")
        if not settings.pixel_spacing_mm >= 0 or settings.pixel_spacing_mm == float("inf"):
            raise ValueError(
                f"--conf pixel_spacing_mm must be 0 (unknown) or a positive number of mm per pixel, got "
                f"{settings.pixel_spacing_mm}"
            )
        return settings

    @property
    def torch_threads(self) -> int:
        """The torch CPU threads the app uses: ``threads``, or with 0 every core this process may run on but one
        (at least one). A core is left for a browser, Orthanc and the server's own work on the same machine: on
        2 cores, with torch on both, a click took 0.7 to 1.6 s (median) of inference beside headless Chromium's
        software rendering, against 0.22 s on one (docs/ohif.md, Speed)."""
        if self.threads:
            return self.threads
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
        return max(1, cores - 1)

    @property
    def spatial(self) -> tuple[int, int]:
        """The network input (h, w) photographs are resized to."""
        return (self.spatial_size, self.spatial_size)

    @property
    def click_options(self) -> dict[str, float]:
        """What a click does (:class:`lesion_app.core.clicks.ClickEffect`), under the option names a request uses: the
        ones the config sets (``click_zoom`` is a request's alone)."""
        names = (f"click_{f.name}" for f in fields(ClickEffect))
        return {name: getattr(self, name) for name in names if hasattr(self, name)}

    def pretrained_path(self, name: str) -> str:
        """The shipped weights of a model: ``<pretrained_dir>/pretrained_<name>.pt``."""
        return str(Path(self.pretrained_dir) / f"pretrained_{name}.pt")

    def quality_path(self, name: str) -> str:
        """The shipped quality estimate of a model (predicted IoU, review flag): ``quality_<name>.json``."""
        return str(Path(self.pretrained_dir) / f"quality_{name}.json")

    def published_path(self, name: str) -> str:
        """Where the server publishes a model it trained: ``<model_dir>/<name>.pt`` (served once it exists)."""
        return str(Path(self.model_dir) / f"{name}.pt")
