"""Where and how a model trains: the device (checked to exist), mixed precision, memory format,
and the rank in a torchrun DDP group."""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from typing import Any

import torch

from kd_core.config import ConfigError

AMP_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "off": None}


@dataclass(frozen=True)
class Runtime:
    """Where and how the model runs: device, mixed precision, memory format, DDP rank."""

    device: torch.device
    amp_dtype: torch.dtype | None
    channels_last: bool
    rank: int = 0
    world_size: int = 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def autocast(self) -> contextlib.AbstractContextManager[Any]:
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.amp_dtype)

    def prepare(self, x: torch.Tensor) -> torch.Tensor:
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x


def check_device(device: str) -> torch.device:
    """``device`` ("auto", "cpu", "cuda", "cuda:N", "mps") as a torch device that exists here;
    ``ConfigError`` naming ``--device`` otherwise."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, ValueError):
        raise ConfigError(f"--device {device!r} is not a device; use auto, cpu, cuda or cuda:N"
                          ) from None
    if dev.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise ConfigError(f"--device {device}: no CUDA GPU is available here; use --device "
                              "cpu (or auto)")
        if dev.index is not None and dev.index >= count:
            raise ConfigError(f"--device {device}: this machine has {count} CUDA GPU(s), "
                              f"cuda:0 to cuda:{count - 1}")
    elif dev.type == "mps":
        if not torch.backends.mps.is_available():
            raise ConfigError(f"--device {device}: Apple MPS is not available here")
    elif dev.type != "cpu":
        raise ConfigError(f"--device {device}: unsupported device type; use auto, cpu or cuda")
    return dev


def amp_dtype(amp: str, dev: torch.device) -> torch.dtype | None:
    if amp == "auto":
        return torch.bfloat16 if dev.type == "cuda" else None
    if amp not in AMP_DTYPES:
        raise ConfigError(f"--amp must be auto, bf16, fp16 or off, got {amp!r}")
    if amp == "fp16" and dev.type != "cuda":
        raise ConfigError(f"--amp fp16 needs a CUDA device, not {dev}; use bf16 or off")
    return AMP_DTYPES[amp]


def resolve_runtime(device: str = "auto", amp: str = "auto", channels_last: bool = True) -> Runtime:
    """Pick and check the device (and join a torchrun DDP group when WORLD_SIZE > 1)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    dev = check_device(device)
    dtype = amp_dtype(amp, dev)
    if world > 1:
        import torch.distributed as dist

        local = int(os.environ.get("LOCAL_RANK", "0"))
        if dev.type == "cuda":
            dev = torch.device(f"cuda:{local}")
            torch.cuda.set_device(local)
        if not dist.is_initialized():
            dist.init_process_group("nccl" if dev.type == "cuda" else "gloo")
    if dev.type == "cuda":
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    return Runtime(dev, dtype, channels_last and dev.type == "cuda", rank, world)


def close_runtime() -> None:
    """Leave the DDP group, if one was joined."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
