"""IREE side: targets and flags, iree-compile, model export, the runtime."""
