"""The browser side: OHIF 3.13 at ``/ohif/`` over the ``--studies`` DICOMweb server, and the worklist.

:func:`install` (called from the app's ``on_init_complete``) puts the routes in front of MONAI Label's own;
:mod:`.routes` lists them and their access rules.
"""

from lesion_app.server.viewer.routes import install

__all__ = ["install"]
