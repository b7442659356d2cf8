"""A DICOMweb server (Orthanc, a PACS) as the app's datastore: listing (:mod:`.listing`) and datastore."""

from lesion_app.server.dicomweb.datastore import LesionDicomWebDatastore, dicomweb_datastore

__all__ = ["LesionDicomWebDatastore", "dicomweb_datastore"]
