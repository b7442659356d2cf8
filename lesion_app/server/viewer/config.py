"""OHIF's ``app-config.js``, written by the app: one DICOMweb data source, the server's own proxy of ``--studies``.

The data source's QIDO, WADO and STOW roots are ``<page origin><prefix>/dicom-web``: the same origin as the
viewer, so the browser needs no CORS from the DICOMweb server, and every request passes the server's access
rules (:mod:`.proxy`). Settings that differ from OHIF's defaults, and why:

- ``investigationalUseDialog: never``: the worklist says the app is research software; OHIF's banner would
  return in every new tab (it is kept in ``sessionStorage``);
- ``disableConfirmationPrompts``: a SEG named in the URL (the worklist's links) loads without "Do you want to
  open this Segmentation?";
- ``maxNumberOfWebWorkers: 2``: photographs are small; the server's cores are for inference.

The app's lesion mode (``/ohif/lesion?StudyInstanceUIDs=...``) is plain JavaScript in :data:`LESION_MODE`'s
files, appended to this script in their order: OHIF 3.13 loads mode and extension objects placed in
``window.config.modes``/``extensions`` as if they were built in. ``window.config.lesionApp`` tells it the served
models (``segmentModel``: the worklist's, the first of ``--conf models``; ``clickModel``: ``deepedit``).
"""

from __future__ import annotations

import json
from pathlib import Path

#: The lesion mode's files, in the order they must run (each adds to ``window.lesionApp``).
LESION_MODE_FILES = ("api.js", "session.js", "ui.js", "markers.js", "mode.js")
LESION_MODE = [Path(__file__).parent / "lesion_mode" / name for name in LESION_MODE_FILES]


def app_config(
    prefix: str = "/ohif", name: str = "lesion_app", segment_model: str = "unet", click_model: str = "deepedit"
) -> str:
    """The JavaScript that sets ``window.config`` for OHIF 3.13 served under ``prefix``, then the lesion mode's."""
    root = "/" + prefix.strip("/")
    source = {
        "friendlyName": f"{name} (DICOMweb)",
        "name": "lesion_app",
        "qidoSupportsIncludeField": True,
        "supportsReject": False,
        "supportsStow": True,
        "imageRendering": "wadors",
        "thumbnailRendering": "wadors",
        "enableStudyLazyLoad": True,
        "supportsFuzzyMatching": False,
        "supportsWildcard": True,
        "staticWado": False,
        "singlepart": "bulkdata,video",
        "omitQuotationForMultipartRequest": True,
        "bulkDataURI": {"enabled": True, "relativeResolution": "studies"},
    }
    config = {
        "name": name,
        "routerBasename": root,
        "extensions": [],
        "modes": [],
        "customizationService": {},
        "lesionApp": {"segmentModel": segment_model, "clickModel": click_model},
        "showStudyList": True,
        "maxNumberOfWebWorkers": 2,
        "showWarningMessageForCrossOrigin": False,
        "showCPUFallbackMessage": True,
        "showLoadingIndicator": True,
        "strictZSpacingForVolumeViewport": True,
        "investigationalUseDialog": {"option": "never"},
        "disableConfirmationPrompts": True,
        "maxNumRequests": {"interaction": 100, "thumbnail": 5, "prefetch": 10},
        "showErrorDetails": "always",
        "defaultDataSourceName": "lesion_app",
        "dataSources": [
            {
                "namespace": "@ohif/extension-default.dataSourcesModule.dicomweb",
                "sourceName": "lesion_app",
                "configuration": source,
            }
        ],
    }
    return (
        f"/* written by lesion_app (lesion_app/server/viewer/config.py); DICOMweb: this server's {root}/dicom-web */\n"
        "(function () {\n"
        f"  var dicomweb = window.location.origin + {json.dumps(root + '/dicom-web')};\n"
        f"  var config = {json.dumps(config, indent=2)};\n"
        "  var source = config.dataSources[0].configuration;\n"
        "  source.qidoRoot = source.wadoRoot = source.wadoUriRoot = dicomweb;\n"
        "  window.config = config;\n"
        "})();\n" + "".join(f"\n/* {path.name} */\n{path.read_text(encoding='utf-8')}" for path in LESION_MODE)
    )
