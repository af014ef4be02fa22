"""Running a compiled VMFB on an IREE runtime device, with torch tensors in and out."""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass
from typing import Mapping, Sequence

import iree.runtime as rt
import numpy as np
import torch
import torch.utils.dlpack
from iree.turbine.support.conversions import DTYPE_TO_ELEMENT_TYPE, torch_dtype_to_numpy

from . import entry, flags
from .importer import PARAMETER_SCOPE
from .targets import HOST_DRIVERS
from .vulkan import vulkan_devices

_ELEMENT_TYPE_TO_DTYPE = {int(v): k for k, v in DTYPE_TO_ELEMENT_TYPE.items() if k not in (torch.qint8, torch.quint8)}
# modules return integers as signless element types
_ELEMENT_TYPE_TO_DTYPE.update({int(rt.HalElementType.INT_8): torch.int8, int(rt.HalElementType.INT_16): torch.int16,
                               int(rt.HalElementType.INT_32): torch.int32, int(rt.HalElementType.INT_64): torch.int64})


class DeviceUnavailableError(RuntimeError):
    """The requested IREE driver or device is not present on this machine."""


def available_devices() -> dict[str, list[str]]:
    """IREE runtime drivers on this machine and the devices each one can see."""
    found: dict[str, list[str]] = {}
    for name in sorted(rt.query_available_drivers()):
        try:
            devices = rt.get_driver(name).query_available_devices()
            found[name] = [str(d.get("name", d.get("path", "?"))) for d in devices]
        except Exception as e:  # a driver whose library or hardware is missing
            found[name] = [f"<unavailable: {str(e).splitlines()[0]}>"]
    for dev in vulkan_devices():
        if dev.is_software:
            found.setdefault("vulkan", []).append(f"{dev.name} (software; vulkan://{dev.uuid})")
    return found


@dataclass
class OpenedDevice:
    hal: rt.HalDevice
    uri: str  # what was opened, e.g. "local-task" or "vulkan://6d657361-..."
    description: str
    software_vulkan: bool = False


# IREE's caching allocator reuses freed device buffers: without it every call maps fresh pages for its
# results and transients, and page faults dominate large softmaxes (measured: 4096x16384 f32 split,
# 2 threads, 295 ms -> 59 ms). It is what IREE's tools give with --device_allocator=caching.
ALLOCATORS = ["caching"]


def open_device(driver: str) -> OpenedDevice:
    """The first device of `driver` ("local-task", "cuda", "vulkan", or a device URI), with IREE's caching
    allocator. For "vulkan" with no device IREE lists, Mesa's software device (llvmpipe) is opened by its
    UUID. Raises DeviceUnavailableError naming the drivers and devices that were found."""
    try:
        return OpenedDevice(_create(driver), driver, driver)
    except Exception as e:
        error = str(e).splitlines()[0]
    if driver == "vulkan":
        for dev in vulkan_devices():
            if dev.is_software:
                uri = f"vulkan://{dev.uuid}"
                return OpenedDevice(_create(uri), uri, f"{dev.name} (software Vulkan, opened by UUID)", True)
    found = "; ".join(f"{k}: {', '.join(v) or 'no devices'}" for k, v in available_devices().items())
    raise DeviceUnavailableError(f"IREE driver {driver!r} has no usable device here ({error}). Found: {found}")


_DEVICES: dict[str, rt.HalDevice] = {}


def _create(uri: str) -> rt.HalDevice:
    if uri not in _DEVICES:
        if uri.startswith("local-task") and not any(u.startswith("local-task") for u in _DEVICES):
            rt.flags.parse_flags(*flags.local_task_workers(physical_cores()))  # read when the driver is made
        _DEVICES[uri] = rt.get_driver(uri).create_device_by_uri(uri, allocators=ALLOCATORS)
    return _DEVICES[uri]


def physical_cores() -> int:
    """Physical cores this process may run on (SMT siblings count once): the local-task device's workers.
    IREE's own topology detection gives a single worker on some VMs (measured: a 2-core Xeon VM, IREE 3.9:
    4096x16384 f32 `fused` 79.5 ms with its default, 41.5 ms with one worker per core)."""
    cores = set()
    for cpu in os.sched_getaffinity(0):
        try:
            with open(f"/sys/devices/system/cpu/cpu{cpu}/topology/core_cpus_list") as f:
                cores.add(f.read().strip())
        except OSError:
            cores.add(str(cpu))
    return max(1, len(cores))


HOST_ALIGNMENT = 64  # IREE imports host memory aligned to this many bytes (measured: 4 is refused)
DLPACK_CPU = 1  # kDLCPU


def parameter_index(parameters: Mapping[str, torch.Tensor] | str) -> rt.ParameterIndex:
    """An IREE parameter index over named tensors (no copy) or a .irpa file."""
    index = rt.ParameterIndex()
    if isinstance(parameters, str):
        index.load(parameters)
        return index
    for name, t in parameters.items():
        index.add_buffer(name, t.detach().contiguous().reshape(-1).view(torch.uint8).numpy())
    return index


class IreeRunner:
    """One VMFB loaded on one device; tensors are placed on the device, then invoked. `parameters` (named
    tensors or a .irpa path) serve the module's externalized parameters, scope "model". A module compiled
    to take its transient memory from the caller (`external_transients`) gets one buffer, kept and reused.
    `stored[i]`: the output-storage entry point (fxsoftmax.backends.entry) writes result i into storage.
    `written`: positions of the tensor arguments the module may write into (entry.written_inputs), copied."""

    def __init__(self, vmfb: bytes, driver: str = "local-task", function: str = entry.MAIN,
                 parameters: Mapping[str, torch.Tensor] | str | None = None, external_transients: bool = False,
                 stored: Sequence[bool] = (), written: Sequence[int] = ()):
        self.opened = open_device(driver)
        self.device = self.opened.hal
        self.instance = rt.VmInstance()
        self.module = rt.VmModule.copy_buffer(self.instance, vmfb)
        modules = [rt.create_hal_module(self.instance, self.device)]
        if parameters:
            self.parameters = parameter_index(parameters)  # kept: the provider reads from it
            provider = self.parameters.create_provider(scope=PARAMETER_SCOPE)
            modules.append(rt.create_io_parameters_module(self.instance, provider))
        self.context = rt.VmContext(self.instance, modules=[*modules, self.module])
        self.function = self.module.lookup_function(function)
        if self.function is None:
            raise ValueError(f"the module has no function {function!r}")
        # results into caller-provided storage: host memory only, and the module's main entry point only
        self.out_function = self.module.lookup_function(entry.OUT) if function == entry.MAIN and self.shares_host_memory else None
        self.stored, self.written = list(stored), set(written)
        self.transients = _Transients(self, function) if external_transients else None
        self.storage = _ResultStorage()
        self._lock = threading.Lock()  # one call at a time: calls share the transient buffer

    @property
    def shares_host_memory(self) -> bool:
        return self.opened.uri in HOST_DRIVERS

    def put(self, t: torch.Tensor) -> rt.HalBufferView:
        """The tensor on the device: on a CPU driver the tensor's own memory (DLPack, no copy) when it is
        contiguous and 64-byte aligned, else a copy."""
        t = t.detach()
        if self.shares_host_memory and t.device.type == "cpu" and t.is_contiguous() and t.data_ptr() % HOST_ALIGNMENT == 0:
            return self.device.from_dlpack_capsule(torch.utils.dlpack.to_dlpack(t))
        t = t.contiguous().cpu()
        element_type = DTYPE_TO_ELEMENT_TYPE[t.dtype]
        if t.dtype == torch.bfloat16:
            t = t.view(torch.int16)
        return self.device.allocator.allocate_buffer_copy(
            memory_type=rt.MemoryType.DEVICE_LOCAL,
            allowed_usage=rt.BufferUsage.DEFAULT,
            device=self.device,
            buffer=t.numpy(),
            element_type=element_type,
        )

    def allocate(self, nbytes: int) -> rt.HalBuffer:
        """Device memory of at least `nbytes` (and 64), for storage a function is given."""
        return self.device.allocator.allocate_buffer(memory_type=rt.MemoryType.DEVICE_LOCAL, allowed_usage=rt.BufferUsage.DEFAULT,
                                                     allocation_size=max(nbytes, 64))

    def invoke(self, args: Sequence[rt.HalBufferView], storage: Sequence[rt.HalBufferView] = ()) -> list[rt.HalBufferView]:
        """Run the function on device-resident arguments; returns when results are ready. With `storage`
        (one buffer view per stored result), the output-storage entry point writes them there."""
        function, call_args = self.out_function if storage else self.function, [*args, *storage]
        with self._lock:
            if self.transients:
                call_args.append(self.transients.buffer(function.name, call_args))
            arg_list = rt.VmVariantList(len(call_args))
            for a in call_args:
                arg_list.push_ref(a)
            ret_list = rt.VmVariantList(1)
            self.context.invoke(function, arg_list, ret_list)
        return [ret_list.get_as_object(i, rt.HalBufferView) for i in range(len(ret_list))]

    def fetch(self, bv: rt.HalBufferView) -> torch.Tensor:
        """A device result as a torch tensor: on a CPU driver the result's own memory (DLPack, no copy),
        else a copy."""
        if self.shares_host_memory:
            return torch.utils.dlpack.from_dlpack(self.device.create_dlpack_capsule(bv, DLPACK_CPU, 0))
        dtype = _ELEMENT_TYPE_TO_DTYPE[int(bv.element_type)]
        buffer = bv.get_buffer()
        if not buffer.memory_type() & int(rt.MemoryType.HOST_VISIBLE):
            host = self.device.allocator.allocate_buffer(
                memory_type=rt.MemoryType.HOST_LOCAL | rt.MemoryType.DEVICE_VISIBLE,
                allowed_usage=rt.BufferUsage.TRANSFER_TARGET | rt.BufferUsage.MAPPING_SCOPED,
                allocation_size=buffer.byte_length(),
            )
            sem = self.device.create_semaphore(0)
            self.device.queue_copy(
                buffer, host, wait_semaphores=rt.HalFence.create_at(sem, 0), signal_semaphores=rt.HalFence.create_at(sem, 1)
            )
            rt.HalFence.create_at(sem, 1).wait()
            buffer = host
        arr = buffer.map().asarray(list(bv.shape), torch_dtype_to_numpy(dtype))
        out = torch.from_numpy(np.array(arr))  # copy: the mapping dies with the buffer
        return out.view(dtype) if dtype == torch.bfloat16 else out

    def put_arg(self, i: int, t: torch.Tensor, placed: rt.HalBufferView | None = None) -> rt.HalBufferView:
        """Tensor argument `i` for one call: a fresh copy where the module may write into it (`written`),
        else `placed` (the tensor placed earlier) or the tensor placed now."""
        if i in self.written:
            return self.put(t.clone())
        return placed if placed is not None else self.put(t)

    def __call__(self, *tensors: torch.Tensor, out: Sequence[torch.Tensor] = (),
                 results: Sequence[tuple[Sequence[int], torch.dtype]] | None = None) -> list[torch.Tensor]:
        """The function on `tensors` (see `call`)."""
        return self.call([self.put_arg(i, t) for i, t in enumerate(tensors)], out=out, results=results)

    def call(self, args: Sequence[rt.HalBufferView], *, out: Sequence[torch.Tensor] = (),
             results: Sequence[tuple[Sequence[int], torch.dtype]] | None = None) -> list[torch.Tensor]:
        """The function on device-resident `args`, results as torch tensors. With `out`, results are written
        into those tensors (in place where the module can: host drivers, results marked `stored`; else
        copied). Given the `results`' shapes and dtypes, stored results go into memory this runner reuses
        once the caller no longer holds it (no fresh pages per call); the others are IREE's own."""
        if self.out_function is None or not (out or results is not None):
            found = [self.fetch(r) for r in self.invoke(args)]
            return [o.copy_(r) for o, r in zip(out, found)] if out else found
        held = list(zip(out, out)) if out else [self.storage.take(s, d) if keep else (None, None)
                                                for (s, d), keep in zip(results, self.stored)]
        returned = iter(self.invoke(args, [self.put(base) for (base, _), keep in zip(held, self.stored) if keep]))
        final = []
        for (base, handed), keep in zip(held, self.stored):
            if keep:
                final.append(handed)
            else:
                r = self.fetch(next(returned))
                final.append(handed.copy_(r) if handed is not None else r)
        return final


class _Transients:
    """The transient buffer of a module compiled with externalized transients: sized from the module's
    reflection (a constant, or a function of the arguments), allocated once and grown when needed."""

    SIZE, SIZE_FUNCTION = "iree.abi.transients.size.constant", "iree.abi.transients.size"

    def __init__(self, runner: IreeRunner, function: str):
        self.runner, self.held, self.sizes = runner, None, {}
        for name in (function, entry.OUT):
            found = runner.module.lookup_function(f"{name}$async")
            self.sizes[name] = dict(found.reflection) if found is not None else {}

    def _size(self, function: str, args: Sequence[rt.HalBufferView]) -> int:
        reflection = self.sizes[function]
        if self.SIZE in reflection:
            return int(reflection[self.SIZE])
        if self.SIZE_FUNCTION not in reflection:
            return 0
        device = self.runner.device
        sem = device.create_semaphore(0)
        arg_list = rt.VmVariantList(len(args) + 3)
        for a in [*args, self.runner.allocate(64), rt.HalFence.create_at(sem, 0), rt.HalFence.create_at(sem, 1)]:
            arg_list.push_ref(a)
        ret_list = rt.VmVariantList(1)
        self.runner.context.invoke(self.runner.module.lookup_function(reflection[self.SIZE_FUNCTION]), arg_list, ret_list)
        return int(ret_list.get_variant(0))

    def buffer(self, function: str, args: Sequence[rt.HalBufferView]) -> rt.HalBuffer:
        """A buffer at least as large as `function` needs for `args`, kept for later calls."""
        size = self._size(function, args)
        if self.held is None or self.held.byte_length() < size:
            self.held = self.runner.allocate(size)
        return self.held


class _ResultStorage:
    """Tensors results are written into, kept across calls: each call hands the caller a tensor sharing a
    kept tensor's memory, and that memory is reused once nothing of the caller's (the tensor, a view of it)
    refers to it any more."""

    KEPT = 4  # per shape and dtype; beyond that, results the caller holds get fresh memory not kept

    def __init__(self) -> None:
        self.kept: dict[tuple, list[torch.Tensor]] = {}

    @staticmethod
    def _free(base: torch.Tensor) -> bool:
        count = getattr(torch._C, "_storage_Use_Count", None)
        # the kept tensor and the temporary storage object are the only users (a missing API: never reuse)
        return count is not None and count(base.untyped_storage()._cdata) <= 2

    def take(self, shape: Sequence[int], dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        """(kept tensor to write into, the tensor to hand the caller over the same memory)."""
        kept = self.kept.setdefault((tuple(shape), dtype), [])
        base = next((b for b in kept if self._free(b)), None)
        if base is None:
            base = torch.empty(tuple(shape), dtype=dtype)
            if len(kept) < self.KEPT:
                kept.append(base)
        handed = torch.empty((0,), dtype=dtype).set_(base.untyped_storage(), 0, base.shape, base.stride())
        return base, handed
