"""lens_steer.model.hardware: native bf16 read from /proc/cpuinfo texts (fake ones, and this machine's read another
way), and the precision that follows."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from lens_steer.errors import ModelError
from lens_steer.model.hardware import bf16_support, cpu_bf16_flags, cpu_flags, default_precision, native_bf16

# two processors of an AVX2-only x86 CPU (this development machine's kind), abridged
AVX2 = """processor\t: 0
vendor_id\t: AuthenticAMD
model name\t: AMD EPYC 7B12
flags\t\t: fpu vme sse sse2 avx avx2 fma bmi2 avx512bw_not_a_flag
bogomips\t: 4499.99

processor\t: 1
vendor_id\t: AuthenticAMD
flags\t\t: fpu vme sse sse2 avx avx2 fma bmi2
"""

SAPPHIRE_RAPIDS = AVX2.replace("bmi2\n", "bmi2 avx512f avx512_bf16 amx_bf16 amx_tile\n")


def test_flags_are_the_words_of_the_flags_lines() -> None:
    assert cpu_flags(AVX2) == {"fpu", "vme", "sse", "sse2", "avx", "avx2", "fma", "bmi2", "avx512bw_not_a_flag"}
    assert cpu_flags("") == set() and cpu_flags("processor\t: 0\nmodel name\t: flags in a name\n") == set()


def test_native_bf16_needs_avx512_bf16_or_amx_bf16() -> None:
    assert cpu_bf16_flags(AVX2) == [] and cpu_bf16_flags(SAPPHIRE_RAPIDS) == ["avx512_bf16", "amx_bf16"]
    assert bf16_support("cpu", AVX2) == (False, "this CPU has no native bf16 (no avx512_bf16/amx_bf16)")
    assert bf16_support("cpu", SAPPHIRE_RAPIDS) == (True, "this CPU has native bf16 (avx512_bf16/amx_bf16)")
    amx_only = AVX2.replace("bmi2\n", "bmi2 amx_bf16\n")  # on the second processor's line only: still listed
    assert bf16_support("cpu", amx_only) == (True, "this CPU has native bf16 (amx_bf16)")
    # a flag that merely contains the name, or an ARM `Features` line (not read: x86 flags only), is not native bf16
    assert not bf16_support("cpu", AVX2.replace("bmi2\n", "bmi2 avx512_bf16x\n"))[0]
    assert not bf16_support("cpu", "processor\t: 0\nFeatures\t: fp asimd bf16\n")[0]


def test_this_machine_and_other_devices() -> None:
    cpuinfo = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").is_file() else ""
    words = cpuinfo.split()  # another way to read it: any whitespace-separated word
    native = "avx512_bf16" in words or "amx_bf16" in words
    assert native_bf16("cpu") == native and native_bf16(torch.device("cpu")) == native
    assert default_precision("cpu") == ("bf16-mixed" if native else "fp32")
    assert not native_bf16("meta") and default_precision("meta") == "fp32"
    if not torch.cuda.is_available():
        assert not native_bf16("cuda") and default_precision("cuda") == "fp32"
    else:
        assert native_bf16("cuda") == torch.cuda.is_bf16_supported(including_emulation=False)


def test_a_bad_device_name_is_refused() -> None:
    with pytest.raises(ModelError, match="unknown device 'gpu0'; use cpu, cuda"):
        native_bf16("gpu0")
