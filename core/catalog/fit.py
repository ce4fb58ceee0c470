"""Will this model run here? A memory estimate from GGUF metadata against free RAM (and VRAM).

need = weights (the GGUF's tensor data, mmapped by llama.cpp)
     + KV cache (2 x layers x kv_heads x head_dim x n_ctx x 2 bytes, f16 as llama.cpp's default)
     + overhead (compute buffers and runtime: 256 MiB + 10 % of the weights; a heuristic)

Verdict, CPU: "fits" when need <= 90 % of the RAM available now; "slow" when it only fits in
90 % of total RAM (other programs' memory must be paged out first, so loading and the first
tokens crawl); "won't fit" otherwise. With a GPU build of llama.cpp and a known VRAM size:
"fits" when need <= 90 % of VRAM, "slow" when it must be split between VRAM and RAM.

These are estimates to warn before a load, not guarantees; pure functions apart from
`machine_memory()` / `gpu_memory()`, which read psutil / nvidia-smi. Any thread may call them.
"""

from __future__ import annotations

import logging
import shutil
import subprocess
from dataclasses import asdict, dataclass
from pathlib import Path

from core.catalog.catalog import CatalogEntry

log = logging.getLogger(__name__)

FITS, SLOW, WONT_FIT = "fits", "slow", "won't fit"
HEADROOM = 0.9
BASE_OVERHEAD = 256 << 20
DEFAULT_CTX = 4096


@dataclass(frozen=True)
class FitEstimate:
    verdict: str
    weights_bytes: int
    kv_bytes: int
    overhead_bytes: int
    n_ctx: int
    available_ram: int
    total_ram: int
    vram_bytes: int | None = None
    gpu_offload: bool = False

    @property
    def need_bytes(self) -> int:
        return self.weights_bytes + self.kv_bytes + self.overhead_bytes

    def summary(self) -> str:
        """One line for people, e.g. "fits: needs 1.2 GB (weights 0.9 GB, ...) of 14.1 GB free"."""
        from core.llm.gguf_info import human_size as hs

        where = f"{hs(self.available_ram)} free RAM of {hs(self.total_ram)}"
        if self.gpu_offload and self.vram_bytes:
            where += f", {hs(self.vram_bytes)} VRAM"
        return (f"{self.verdict}: needs about {hs(self.need_bytes)} (weights {hs(self.weights_bytes)}, "
                f"context {self.n_ctx} tokens {hs(self.kv_bytes)}, runtime {hs(self.overhead_bytes)}) "
                f"with {where}")

    def to_dict(self) -> dict:
        return asdict(self) | {"need_bytes": self.need_bytes, "summary": self.summary()}


def machine_memory() -> tuple[int, int]:
    """(available, total) bytes of RAM now."""
    import psutil

    vm = psutil.virtual_memory()
    return int(vm.available), int(vm.total)


def gpu_memory() -> tuple[bool, int | None]:
    """(llama.cpp was built with GPU offload, total VRAM in bytes or None when unknown).

    VRAM is asked of `nvidia-smi` (2 s timeout); other GPUs report None, and the estimate
    then treats the machine as CPU-only. Imports llama_cpp: call from a worker thread.
    """
    try:
        import llama_cpp

        offload = bool(llama_cpp.llama_supports_gpu_offload())
    except Exception as exc:  # no llama_cpp or an old one: CPU estimate
        log.debug("llama_cpp GPU query failed: %s", exc)
        return False, None
    if not offload or shutil.which("nvidia-smi") is None:
        return offload, None
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=memory.total", "--format=csv,noheader,nounits"],
            capture_output=True, text=True, timeout=2, check=True).stdout
        return True, max(int(line) for line in out.split() if line.strip().isdigit()) << 20
    except (OSError, ValueError, subprocess.SubprocessError):
        return True, None


def overhead_for(weights_bytes: int) -> int:
    return BASE_OVERHEAD + weights_bytes // 10


def verdict_for(need: int, available_ram: int, total_ram: int, vram: int | None = None,
                gpu_offload: bool = False) -> str:
    """The rule stated in the module docstring.

    >>> verdict_for(1 << 30, 8 << 30, 16 << 30)
    'fits'
    >>> verdict_for(10 << 30, 8 << 30, 16 << 30)
    'slow'
    >>> verdict_for(20 << 30, 8 << 30, 16 << 30)
    "won't fit"
    """
    if gpu_offload and vram:
        if need <= vram * HEADROOM:
            return FITS
        if need <= vram * HEADROOM + available_ram * HEADROOM:
            return SLOW
    if need <= available_ram * HEADROOM:
        return FITS
    if need <= total_ram * HEADROOM:
        return SLOW
    return WONT_FIT


def estimate_fit(weights_bytes: int, kv_bytes_per_token: int, n_ctx: int, *,
                 available_ram: int | None = None, total_ram: int | None = None,
                 vram_bytes: int | None = None, gpu_offload: bool | None = None) -> FitEstimate:
    """The estimate for given sizes; machine figures are measured when not passed."""
    if available_ram is None or total_ram is None:
        avail, total = machine_memory()
        available_ram = avail if available_ram is None else available_ram
        total_ram = total if total_ram is None else total_ram
    if gpu_offload is None:
        gpu_offload, measured = gpu_memory()
        vram_bytes = measured if vram_bytes is None else vram_bytes
    kv = kv_bytes_per_token * n_ctx
    overhead = overhead_for(weights_bytes)
    verdict = verdict_for(weights_bytes + kv + overhead, available_ram, total_ram, vram_bytes,
                          gpu_offload)
    return FitEstimate(verdict, weights_bytes, kv, overhead, n_ctx, available_ram, total_ram,
                       vram_bytes, gpu_offload)


def fit_for_gguf(path_or_info, n_ctx: int | None = None, **machine) -> FitEstimate:
    """From a GGUF on disk (header only). `n_ctx` defaults to min(4096, the model's context)."""
    from core.llm.gguf_info import GGUFInfo, read_gguf_info

    info = path_or_info if isinstance(path_or_info, GGUFInfo) else read_gguf_info(Path(path_or_info))
    n_ctx = n_ctx or min(DEFAULT_CTX, info.context_length or DEFAULT_CTX)
    weights = max(info.tensor_data_end - info.data_offset, 0) or info.file_size
    return estimate_fit(weights, info.kv_bytes_per_token(), n_ctx, **machine)


def fit_for_entry(entry: CatalogEntry, n_ctx: int | None = None, **machine) -> FitEstimate | None:
    """Before download, from the catalog's size and KV shape; None when the size is unknown."""
    size = entry.planning_size
    if not size:
        return None
    n_ctx = n_ctx or min(DEFAULT_CTX, entry.context_length or DEFAULT_CTX)
    per_token = entry.kv.bytes_per_token() if entry.kv else 0
    return estimate_fit(size, per_token, n_ctx, **machine)
