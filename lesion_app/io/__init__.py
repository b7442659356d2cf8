"""File and format I/O: atomic files, images (EXIF, ITK geometry, masks), file layouts, DICOM, importers."""
