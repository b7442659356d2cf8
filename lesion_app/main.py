"""LesionApp: MONAI Label app for skin-lesion segmentation in dermoscopic photographs.

Serve it with ``monailabel start_server --app lesion_app --studies <folder or DICOMweb URL> [--conf models unet]``.
Every option is a field of :class:`lesion_app.lib.settings.LesionSettings`. This module only wires the parts:
the datastore (:mod:`lesion_app.server`), the task configs by model name (:mod:`lesion_app.lib.configs`), which
give the infer and train tasks, strategies and scoring, and the retraining schedule.
"""

from __future__ import annotations

import logging
from typing import Any

import torch
from monailabel.interfaces.app import MONAILabelApp
from monailabel.interfaces.datastore import Datastore
from monailabel.interfaces.tasks.infer_v2 import InferTask
from monailabel.interfaces.tasks.scoring import ScoringMethod
from monailabel.interfaces.tasks.strategy import Strategy
from monailabel.interfaces.tasks.train import TrainTask

from lesion_app.lib.activelearning.first import First
from lesion_app.lib.activelearning.random import Random
from lesion_app.lib.configs import CONFIGS
from lesion_app.lib.infers.segmentation import LABELS
from lesion_app.lib.scoring.dice import DiceScoring
from lesion_app.lib.settings import AUTOMATIC_MODELS, LesionSettings
from lesion_app.server import lifetime, patches
from lesion_app.server.datastore import local_datastore
from lesion_app.server.dicomweb import dicomweb_datastore
from lesion_app.server.schedule import RetrainScheduler, start_scheduler

logger = logging.getLogger(__name__)

patches.install()

__version__ = "0.1.0"


def _by_name(name: str, tasks: Any) -> dict[str, Any]:
    """A config's tasks as a dict (a config may give one task or several by name)."""
    if tasks is None:
        return {}
    return dict(tasks) if isinstance(tasks, dict) else {name: tasks}


class LesionApp(patches.MONAILabelFixes, MONAILabelApp):
    """The app: its settings from ``--conf``, one task config per served model, the datastore by ``--studies``."""

    def __init__(self, app_dir: str, studies: str, conf: dict[str, str]) -> None:
        lifetime.end_with_server()  # a training or scoring subprocess ends when its server does
        try:
            self.settings = LesionSettings.from_conf(conf, app_dir)
        except ValueError as e:  # a bad --conf value: its one line, not the server's traceback of its start
            lifetime.exit_with_message(f"lesion_app: {e}", 2)
        self.max_upload_mb = self.settings.max_upload_mb
        torch.set_num_threads(self.settings.torch_threads)
        self.configs = {}
        # the first served automatic model is the one whose uncertainty the app measures
        measured = next((m for m in self.settings.models if m in AUTOMATIC_MODELS), None)
        for name in self.settings.models:
            config = CONFIGS[name]()
            config.init(name, self.settings.model_dir, conf, None, settings=self.settings, uncertainty=name == measured)
            self.configs[name] = config
        self.scheduler: RetrainScheduler | None = None  # started in on_init_complete
        logger.info(f"lesion_app models: {list(self.configs)}; settings: {self.settings}")
        super().__init__(
            app_dir=app_dir,
            studies=studies,
            conf=conf,
            name="Lesion segmentation (dermoscopy)",
            description="U-Net and DeepLabV3 with spatial attention for skin lesions in dermoscopic photographs",
            version=__version__,
            labels=LABELS,
        )

    def on_init_complete(self) -> None:
        """Runs in the server process only (train subprocesses build the app too), so the schedule starts once.
        A training left running by a server that ended is stopped first: one training per model at a time."""
        lifetime.mark_server()
        lifetime.stop_on_signals()
        for trainer in self._trainers.values():
            trainer.stop_leftover()
        super().on_init_complete()
        self.scheduler = start_scheduler(self.settings, self._trainers, self.datastore())

    def init_datastore(self) -> Datastore:
        if self.studies.startswith(("http://", "https://")):
            self.studies = self.studies.rstrip("/").strip()
            return dicomweb_datastore(self.studies, self.settings)
        return local_datastore(self.studies, self.settings)

    def init_infers(self) -> dict[str, InferTask]:
        return {k: v for name, c in self.configs.items() for k, v in _by_name(name, c.infer()).items()}

    def init_trainers(self) -> dict[str, TrainTask]:
        return {k: v for name, c in self.configs.items() for k, v in _by_name(name, c.trainer()).items()}

    def init_strategies(self) -> dict[str, Strategy]:
        strategies: dict[str, Strategy] = {"random": Random(), "first": First()}
        for name, config in self.configs.items():
            strategies.update(_by_name(name, config.strategy()))
        return strategies

    def init_scoring_methods(self) -> dict[str, ScoringMethod]:
        # MONAI Label runs every method at start-up, after each training and after each next-sample request,
        # in a background process; uncertainty first: after a training only the first request is accepted.
        methods: dict[str, ScoringMethod] = {}
        for name, config in self.configs.items():
            methods.update(_by_name(name, config.scoring_method()))
        return {**methods, "dice": DiceScoring()}
