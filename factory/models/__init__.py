"""Model engines and wrappers (OCR, CLIP, detection, sentence embeddings), the weights
they load, and in `demo/` the random-weight demo models.

torch, transformers and vllm are imported here, in train/ and in serve/, and only inside
the modules that run models: the light ones (engine.py, weights.py, placement.py) are
imported by drivers and configs.
"""
