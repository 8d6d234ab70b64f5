"""Training on a CUDA GPU: bfloat16 bases under float32 adapters, and the energy counter.

Marked gpu (deselected by default): `pytest -m gpu tests/train/test_gpu.py` on a GPU host.
"""

from __future__ import annotations

import pytest

from factory.train.methods import MethodConfig, load_for_training
from factory.train.train_config import TrainConfig

pytestmark = pytest.mark.gpu


@pytest.fixture
def cuda():
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    return torch.device("cuda:0")


def test_energy_meter_counts_the_joules_of_a_matmul_burst(cuda):
    import torch

    from factory.train.energy import GpuEnergyMeter

    meter = GpuEnergyMeter(cuda)
    assert meter.available, meter.unavailable_reason
    start = meter.joules()
    a = torch.randn(8192, 8192, device=cuda, dtype=torch.bfloat16)
    for _ in range(200):
        a = (a @ a).clamp_(-1, 1)
    torch.cuda.synchronize()
    assert meter.joules() > start


@pytest.mark.parametrize("method", ["lora", "qlora"])
def test_adapter_trains_in_float32_on_a_bfloat16_base(method, cuda, tmp_path):
    import torch

    config = TrainConfig.model_validate(
        {"data": {"kind": "caption", "source": "unused"}, "method": {"method": method}}
    )
    dtype = config.load_dtype("cuda")
    assert dtype == "bfloat16"
    trainable = load_for_training(
        "builtin://tiny-llava",
        "llava",
        "caption",
        MethodConfig(method=method),
        dtype=dtype,
        device=str(cuda),
        cache_dir=str(tmp_path),
    )
    model = trainable.model
    trained = [p for p in model.parameters() if p.requires_grad]
    assert trained and all(p.dtype == torch.float32 and p.is_cuda for p in trained)
    frozen = {p.dtype for p in model.parameters() if not p.requires_grad}
    # nothing frozen is upcast to float32: the base is bfloat16, QLoRA's linears 4-bit
    assert frozen == ({torch.bfloat16, torch.uint8} if method == "qlora" else {torch.bfloat16})
