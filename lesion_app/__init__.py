"""MONAI Label app for skin-lesion segmentation in dermoscopic photographs."""
