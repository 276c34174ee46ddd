"""What a device computes natively: whether it has bf16 arithmetic (`native_bf16`), and the training precision
that follows from it (`default_precision`). Without native bf16, autocast emulates it and runs slower than fp32
(measured on a 2-core AVX2 CPU: 11-14x slower per organism training step)."""

from __future__ import annotations

from pathlib import Path

import torch

from lens_steer.errors import ModelError

# x86 CPU flags (Linux /proc/cpuinfo) of native bf16 arithmetic: AVX-512 BF16 dot products, AMX tiles
CPU_BF16_FLAGS: tuple[str, ...] = ("avx512_bf16", "amx_bf16")

CPUINFO = Path("/proc/cpuinfo")


def cpu_flags(cpuinfo: str) -> set[str]:
    """The flags of every processor in a /proc/cpuinfo text (x86 `flags` lines; empty when it has none)."""
    flags: set[str] = set()
    for line in cpuinfo.splitlines():
        name, sep, value = line.partition(":")
        if sep and name.strip() == "flags":
            flags |= set(value.split())
    return flags


def cpu_bf16_flags(cpuinfo: str) -> list[str]:
    """Which of `CPU_BF16_FLAGS` a /proc/cpuinfo text lists."""
    flags = cpu_flags(cpuinfo)
    return [f for f in CPU_BF16_FLAGS if f in flags]


def read_cpuinfo() -> str:
    """This machine's /proc/cpuinfo ("" where there is none: not Linux, or unreadable)."""
    try:
        return CPUINFO.read_text()
    except OSError:
        return ""


def bf16_support(device: str | torch.device, cpuinfo: str | None = None) -> tuple[bool, str]:
    """Whether `device` has native bf16 arithmetic, and a phrase saying why (for a card or a log line);
    `cpuinfo` stands in for this machine's /proc/cpuinfo."""
    try:
        device = torch.device(device)
    except (RuntimeError, TypeError):
        raise ModelError(f"unknown device {str(device)!r}; use cpu, cuda, cuda:N or mps") from None
    if device.type == "cpu":
        found = cpu_bf16_flags(read_cpuinfo() if cpuinfo is None else cpuinfo)
        if found:
            return True, f"this CPU has native bf16 ({'/'.join(found)})"
        return False, f"this CPU has no native bf16 (no {'/'.join(CPU_BF16_FLAGS)})"
    if device.type == "cuda":
        # emulated bf16 (pre-Ampere GPUs) counts as not native: it is slower than fp32 there too
        ok = torch.cuda.is_available() and torch.cuda.is_bf16_supported(including_emulation=False)
        return ok, "this GPU has native bf16" if ok else "this GPU has no native bf16"
    return False, f"no native bf16 is known for device type {device.type}"


def native_bf16(device: str | torch.device) -> bool:
    """Whether `device` computes bf16 natively (CPU: avx512_bf16 or amx_bf16 in /proc/cpuinfo; CUDA: torch says so
    without emulation; anything else: False)."""
    return bf16_support(device)[0]


def default_precision(device: str | torch.device) -> str:
    """The training precision for `device`: "bf16-mixed" (bf16 autocast over fp32 weights) where bf16 is native,
    else "fp32"."""
    return "bf16-mixed" if native_bf16(device) else "fp32"
