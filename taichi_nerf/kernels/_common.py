"""Helpers shared by the kernel modules: dtype mapping, input checks, output allocation.

Every public op validates its tensors here (clear ``ValueError`` naming the argument), starts
Taichi for their device through :func:`prepare`, and hands Taichi *detached, contiguous* tensors.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from taichi_nerf.runtime import ensure_initialized

__all__ = [
    "FLOAT_DTYPES",
    "ti_dtype",
    "check_tensor",
    "check_same_device",
    "prepare",
    "for_kernel",
    "empty_like_poisoned",
    "placeholder",
    "check_index_size",
]

#: Float dtypes every op accepts (kernels are compiled per dtype).
FLOAT_DTYPES = (torch.float32, torch.float64)

#: Allocate op outputs filled with NaN instead of uninitialised memory, so an element a kernel
#: forgets to write shows up as NaN. Tests switch it on; it costs one fill per output.
POISON_OUTPUTS = False


def ti_dtype(torch_dtype: torch.dtype):
    """The Taichi primitive type for a torch dtype (``torch.float32`` -> ``ti.f32``, ...).

    Pass the result to a kernel's ``dt: ti.template()`` argument so local accumulators take the
    tensors' precision (a bare ``0.0`` in a kernel is always ``default_fp`` = f32).
    """
    import taichi as ti

    table = {
        torch.float32: ti.f32,
        torch.float64: ti.f64,
        torch.int32: ti.i32,
        torch.int64: ti.i64,
        torch.uint8: ti.u8,
        torch.bool: ti.u8,
    }
    if torch_dtype not in table:
        raise ValueError(f"taichi_nerf: no Taichi type for torch dtype {torch_dtype}")
    return table[torch_dtype]


def check_tensor(
    name: str,
    tensor,
    *,
    op: str,
    shape: Sequence[int | None] | None = None,
    dtypes: Sequence[torch.dtype] | None = FLOAT_DTYPES,
) -> torch.Tensor:
    """Check one argument; raise ``ValueError`` naming ``op`` and ``name`` on any mismatch.

    Args:
        name: argument name used in the message.
        tensor: the value to check; must be a ``torch.Tensor``.
        op: the public op's name, for the message.
        shape: expected shape, ``None`` entries are free (``(None, 3)`` means ``[N, 3]``).
        dtypes: allowed dtypes, or ``None`` for any.
    """
    if not isinstance(tensor, torch.Tensor):
        raise ValueError(f"{op}: {name} must be a torch.Tensor, got {type(tensor).__name__}")
    if shape is not None:
        ok = tensor.dim() == len(shape) and all(
            want is None or got == want for got, want in zip(tensor.shape, shape)
        )
        if not ok:
            want = "[" + ", ".join("N" if s is None else str(s) for s in shape) + "]"
            raise ValueError(f"{op}: {name} must have shape {want}, got {list(tensor.shape)}")
    if dtypes is not None and tensor.dtype not in dtypes:
        allowed = " or ".join(str(d).replace("torch.", "") for d in dtypes)
        raise ValueError(
            f"{op}: {name} must be {allowed}, got {str(tensor.dtype).replace('torch.', '')}"
        )
    if tensor.device.type not in ("cpu", "cuda"):
        raise ValueError(f"{op}: {name} is on {tensor.device}; only cpu and cuda are supported")
    return tensor


def check_same_device(op: str, **tensors: torch.Tensor) -> torch.device:
    """All named tensors on one device (and, where given, one dtype is checked separately)."""
    items = list(tensors.items())
    first_name, first = items[0]
    for name, t in items[1:]:
        if t.device != first.device:
            raise ValueError(
                f"{op}: {name} is on {t.device} but {first_name} is on {first.device}; "
                "move them to one device"
            )
    return first.device


def prepare(op: str, **tensors: torch.Tensor) -> torch.device:
    """Check the tensors share a device, start Taichi for it, and check the backend takes it.

    Raises :class:`~taichi_nerf.runtime.DeviceMismatchError` for CPU tensors on the CUDA backend
    (Taichi would copy them host -> device -> host on every launch) and for CUDA tensors on the
    CPU backend; on CUDA, also when torch is not on its default stream (Taichi launches on the
    legacy default stream, so work queued on another torch stream would not be ordered).
    """
    device = check_same_device(op, **tensors)
    ensure_initialized(device, op=op)
    if device.type == "cuda" and torch.cuda.current_stream(device) != torch.cuda.default_stream(
        device
    ):
        raise ValueError(
            f"{op}: torch is on a non-default CUDA stream; Taichi kernels run on the default "
            "stream, so call taichi_nerf ops outside `with torch.cuda.stream(...)`"
        )
    return device


def check_index_size(op: str, **sizes: int) -> None:
    """Raise ``ValueError`` when an array the kernels index with int32 has 2^31 elements or more.

    Args:
        op: the public op's name, for the message.
        sizes: ``name=element count`` of each array (e.g. ``out=N * L * F``).
    """
    for name, size in sizes.items():
        if size >= 2**31:
            raise ValueError(
                f"{op}: {name} would hold {size} elements, past the 2^31 - 1 that the kernels' "
                "int32 indices reach; pass fewer points per call (a smaller chunk)"
            )


def for_kernel(tensor: torch.Tensor) -> torch.Tensor:
    """A detached, contiguous view (copy only when needed) safe to pass as a Taichi ndarray."""
    tensor = tensor.detach()
    return tensor if tensor.is_contiguous() else tensor.contiguous()


def empty_like_poisoned(shape, *, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """An output buffer the kernel fully overwrites: NaN-filled when POISON_OUTPUTS is on."""
    if POISON_OUTPUTS and dtype.is_floating_point:
        return torch.full(shape, float("nan"), dtype=dtype, device=device)
    return torch.empty(shape, dtype=dtype, device=device)


_PLACEHOLDERS: dict[tuple, torch.Tensor] = {}


def placeholder(shape, *, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """A small zeroed tensor standing in for an array argument a kernel variant never touches.

    Cached per (shape, dtype, device), so a launch allocates nothing for it. Kernels must not
    write into it (the flags that select the variant make sure of that).
    """
    key = (tuple(shape), dtype, str(device))
    tensor = _PLACEHOLDERS.get(key)
    if tensor is None:
        tensor = torch.zeros(shape, dtype=dtype, device=device)
        _PLACEHOLDERS[key] = tensor
    return tensor
