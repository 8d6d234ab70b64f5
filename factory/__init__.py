"""The caption factory: museum images in, captions and lineage out.

Importing this package must stay light (no torch, transformers, vllm or ray.data);
heavy modules load inside the stages and engines that use them.
"""

__version__ = "0.1.0"
