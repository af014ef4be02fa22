"""Vulkan physical devices as the Vulkan loader sees them (name, type, UUID), via ctypes.

IREE 3.9's Vulkan driver hides any device whose name starts with "llvmpipe" (Mesa's software Vulkan,
runtime/src/iree/hal/drivers/vulkan/vulkan_driver.cc, iree_hal_vulkan_is_device_visible) from its
device list, but still opens a device named by its UUID ("vulkan://<uuid>"). This finds that UUID.
"""

from __future__ import annotations

import ctypes
import ctypes.util
from dataclasses import dataclass

# Modules for llvmpipe must be compiled for this generic profile: with GPU targets (rdna3, ampere, ...)
# IREE's reductions assume subgroups of 16-64 lanes, llvmpipe has 8, and results are silently wrong.
SOFTWARE_VULKAN_ARCH = "vp_android_baseline_2022"
_TYPES = {0: "other", 1: "integrated-gpu", 2: "discrete-gpu", 3: "virtual-gpu", 4: "cpu"}


@dataclass(frozen=True)
class VulkanDevice:
    name: str
    kind: str  # integrated-gpu, discrete-gpu, virtual-gpu, cpu, other
    uuid: str  # 8-4-4-4-12 hex, as IREE's vulkan://<uuid> device path takes it

    @property
    def is_software(self) -> bool:
        return self.kind == "cpu" or self.name.startswith("llvmpipe")


class _AppInfo(ctypes.Structure):
    _fields_ = [("sType", ctypes.c_int), ("pNext", ctypes.c_void_p), ("pApplicationName", ctypes.c_char_p),
                ("applicationVersion", ctypes.c_uint32), ("pEngineName", ctypes.c_char_p),
                ("engineVersion", ctypes.c_uint32), ("apiVersion", ctypes.c_uint32)]


class _InstanceInfo(ctypes.Structure):
    _fields_ = [("sType", ctypes.c_int), ("pNext", ctypes.c_void_p), ("flags", ctypes.c_uint32),
                ("pApplicationInfo", ctypes.POINTER(_AppInfo)), ("enabledLayerCount", ctypes.c_uint32),
                ("ppEnabledLayerNames", ctypes.c_void_p), ("enabledExtensionCount", ctypes.c_uint32),
                ("ppEnabledExtensionNames", ctypes.c_void_p)]


class _IdProperties(ctypes.Structure):  # VkPhysicalDeviceIDProperties
    _fields_ = [("sType", ctypes.c_int), ("pNext", ctypes.c_void_p), ("deviceUUID", ctypes.c_ubyte * 16),
                ("driverUUID", ctypes.c_ubyte * 16), ("deviceLUID", ctypes.c_ubyte * 8),
                ("deviceNodeMask", ctypes.c_uint32), ("deviceLUIDValid", ctypes.c_uint32)]


class _Properties2(ctypes.Structure):  # VkPhysicalDeviceProperties2 with VkPhysicalDeviceProperties as bytes
    _fields_ = [("sType", ctypes.c_int), ("pNext", ctypes.c_void_p), ("properties", ctypes.c_ubyte * 1024)]


_STYPE_APP_INFO, _STYPE_INSTANCE_INFO = 0, 1
_STYPE_PROPERTIES2, _STYPE_ID_PROPERTIES = 1000059001, 1000071004


def vulkan_devices() -> list[VulkanDevice]:
    """Every physical device the Vulkan loader reports ([] if there is no loader or no device)."""
    path = ctypes.util.find_library("vulkan") or "libvulkan.so.1"
    try:
        vk = ctypes.CDLL(path)
    except OSError:
        return []
    app = _AppInfo(_STYPE_APP_INFO, None, b"fxsoftmax", 0, b"fxsoftmax", 0, (1 << 22) | (1 << 12))  # Vulkan 1.1
    info = _InstanceInfo(_STYPE_INSTANCE_INFO, None, 0, ctypes.pointer(app), 0, None, 0, None)
    instance = ctypes.c_void_p()
    if vk.vkCreateInstance(ctypes.byref(info), None, ctypes.byref(instance)) != 0:
        return []
    try:
        count = ctypes.c_uint32()
        vk.vkEnumeratePhysicalDevices(instance, ctypes.byref(count), None)
        handles = (ctypes.c_void_p * count.value)()
        vk.vkEnumeratePhysicalDevices(instance, ctypes.byref(count), handles)
        found = []
        for handle in handles[: count.value]:
            ids = _IdProperties(_STYPE_ID_PROPERTIES, None)
            props = _Properties2(_STYPE_PROPERTIES2, ctypes.cast(ctypes.pointer(ids), ctypes.c_void_p))
            vk.vkGetPhysicalDeviceProperties2(ctypes.c_void_p(handle), ctypes.byref(props))
            raw = bytes(props.properties)
            kind = _TYPES.get(int.from_bytes(raw[16:20], "little"), "other")  # after apiVersion..deviceID
            name = raw[20:276].split(b"\0", 1)[0].decode(errors="replace")
            h = bytes(ids.deviceUUID).hex()
            found.append(VulkanDevice(name, kind, f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"))
        return found
    finally:
        vk.vkDestroyInstance(instance, None)
