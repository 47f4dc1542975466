"""Devices and precision: one resolver (rank-aware under torchrun), one synchronisation, one dtype rule."""

from __future__ import annotations

import os

import torch


def resolve_device(choice: str) -> torch.device:
    """``auto`` | ``cpu`` | ``cuda`` | ``cuda:N`` (or any torch device string) -> a device.

    ``auto`` takes CUDA when there is one. A bare ``cuda`` means this process's GPU: ``LOCAL_RANK`` under
    torchrun (one GPU per rank), else GPU 0. Asking for CUDA without one is an error here, not at the first
    allocation.
    """
    if choice == "auto":
        choice = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(choice)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise RuntimeError(f"device {choice!r} asked for, but no CUDA device is available")
        if device.index is None:
            device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
    return device


def synchronize(device: torch.device) -> None:
    """Wait for queued kernels (CUDA) so a wall-clock timer measures the work; a no-op on CPU."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def default_dtype(device: torch.device) -> torch.dtype:
    """The precision rule for training and inference: bf16 on CUDA, fp32 elsewhere (CPU bf16 is slow)."""
    return torch.bfloat16 if device.type == "cuda" else torch.float32


def resolve_dtype(choice: str, device: torch.device) -> torch.dtype:
    """``auto`` (the rule above) | ``bf16`` | ``fp32``."""
    if choice == "auto":
        return default_dtype(device)
    return {"bf16": torch.bfloat16, "fp32": torch.float32}[choice]
