"""OHIF's ``app-config.js``, written by the app: one DICOMweb data source, the server's own proxy of ``--studies``.

The data source's QIDO, WADO and STOW roots are ``<page origin><prefix>/dicom-web``: the same origin as the
viewer, so the browser needs no CORS from the DICOMweb server, and every request passes the server's access
rules (:mod:`.proxy`). Settings that differ from OHIF's defaults, and why:

- ``investigationalUseDialog: never``: the worklist says the app is research software; OHIF's banner would
  return in every new tab (it is kept in ``sessionStorage``);
- ``disableConfirmationPrompts``: a SEG named in the URL (the worklist's links) loads without "Do you want to
  open this Segmentation?";
- ``maxNumberOfWebWorkers: 2``: photographs are small; the server's cores are for inference.
"""

from __future__ import annotations

import json


def app_config(prefix: str = "/ohif", name: str = "lesion_app") -> str:
    """The JavaScript that sets ``window.config`` for OHIF 3.13 served under ``prefix``."""
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
        "})();\n"
    )
