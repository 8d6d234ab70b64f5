"""Model engines and builders: the only modules that import torch/transformers/vllm."""
