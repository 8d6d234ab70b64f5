"""GPU energy for the metrics summary, from NVML's cumulative energy counter.

NVML (nvidia-ml-py) reports the millijoules a GPU has drawn since the driver loaded
(Volta and newer); the difference over an epoch is that epoch's energy, with no sampling
gaps that polling the power draw would leave. No GPU, no NVML library, or a GPU without
the counter: the meter says so (`available` is False) and the summary leaves energy out.
"""

from __future__ import annotations

from typing import Any


class GpuEnergyMeter:
    """Joules drawn by the GPU a torch CUDA device runs on, read between two points."""

    def __init__(self, device: Any) -> None:
        self._handle = None
        self.unavailable_reason = ""
        if device.type != "cuda":
            self.unavailable_reason = "not a CUDA device"
            return
        try:
            import pynvml
        except ImportError:
            self.unavailable_reason = "nvidia-ml-py is not installed"
            return
        try:
            pynvml.nvmlInit()
            handle = pynvml.nvmlDeviceGetHandleByPciBusId(_pci_bus_id(device))
            pynvml.nvmlDeviceGetTotalEnergyConsumption(handle)
        except pynvml.NVMLError as error:
            self.unavailable_reason = f"NVML: {error}"
            return
        self._handle = handle

    @property
    def available(self) -> bool:
        return self._handle is not None

    def joules(self) -> float:
        """The counter now, in joules (compare two readings; the origin is arbitrary)."""
        import pynvml

        if self._handle is None:
            raise RuntimeError(f"no GPU energy counter: {self.unavailable_reason}")
        return pynvml.nvmlDeviceGetTotalEnergyConsumption(self._handle) / 1000.0


def _pci_bus_id(device: Any) -> str:
    # NVML numbers every GPU on the host, CUDA only the visible ones (Ray sets
    # CUDA_VISIBLE_DEVICES per worker): the PCI address names the same card in both.
    import torch

    props = torch.cuda.get_device_properties(device)
    return f"{props.pci_domain_id:08x}:{props.pci_bus_id:02x}:{props.pci_device_id:02x}.0"
