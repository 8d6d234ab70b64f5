"""Fine-tuning with Ray Train: SFT (PEFT methods, DeepSpeed) and preference training
(DPO + normalised SFT + BCO) of the captioner on human-corrected caption pairs.

Heavy imports (torch, transformers, peft, ray.train) live in the submodules, never here.
"""
