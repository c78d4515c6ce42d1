"""Detection / segmentation back end: safe model loading, YOLO detect at a chosen dtype, SAM box refinement.

No ComfyUI import anywhere in this package: node glue elsewhere calls it with plain torch tensors.
"""
