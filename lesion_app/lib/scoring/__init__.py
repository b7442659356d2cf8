"""Scoring methods run by MONAI Label in the background: uncertainty per unlabelled image, Dice per corrected one."""
