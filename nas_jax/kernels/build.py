"""Compiles the C++ CPU kernels once per machine and registers them with XLA.

The kernels (``depthwise.cc``, ``pointwise.cc``, ``fused.cc``, ``pool.cc``) are XLA FFI handlers. They are compiled with
the system C++ compiler against the FFI headers that ship with jaxlib
(``jax.ffi.include_dir()``), the first time they are needed, into a cache
directory; later processes load the cached library (a few milliseconds). The
cache key covers the source, the compiler and its flags, the jaxlib version
and the CPU's instruction-set flags, so a shared home directory on machines of
different kinds keeps one library per kind. ``make install`` builds it ahead of
time (``python -m nas_jax.kernels.build``).

Settings (environment):
  NAS_JAX_KERNELS=0        never build or load; ``available()`` is False.
  NAS_JAX_KERNEL_CACHE=DIR cache directory (default ``$XDG_CACHE_HOME/nas_jax/kernels``
                           or ``~/.cache/nas_jax/kernels``).
  CXX=PATH                 the compiler (default ``g++``, else ``c++``).

Without a compiler the library still works: ``available()`` is False,
``unavailable_reason()`` says why, and ``ops.depthwise_conv`` and
``ops.pointwise_conv`` stay on their pure-JAX implementations.

Example:
    >>> from nas_jax.kernels import build
    >>> build.available()        # compiles on first use (about 25 s on 2 cores), then cached
    True
"""
from __future__ import annotations

import ctypes
import hashlib
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

import jax
import jaxlib

HERE = Path(__file__).parent
SOURCES = (HERE / "depthwise.cc", HERE / "pointwise.cc", HERE / "fused.cc", HERE / "pool.cc")
HEADERS = (HERE / "nas_jax_kernels_common.h", HERE / "nas_jax_kernels_matmul.h",
           HERE / "nas_jax_kernels_depthwise_row.h")
# op -> ((map, FFI target name), ...); the handler symbol is the target in CamelCase.
TARGETS_BY_OP = {op: tuple((m, f"nas_jax_{op}_{m}") for m in ("forward", "input_grad", "weight_grad"))
                 for op in ("depthwise", "pointwise")}
TARGETS_BY_OP["fused"] = tuple((m, f"nas_jax_fused_{m}")
                               for m in ("depthwise_pointwise", "pointwise", "depthwise_pointwise_pick",
                                         "pointwise_slots", "depthwise_pointwise_backward", "pointwise_backward"))
TARGETS_BY_OP["pool"] = tuple((m, f"nas_jax_pool_{m}") for m in ("node_sum", "placeholder"))
TARGETS = tuple((target, "".join(w.capitalize() for w in target.split("_")))
                for maps in TARGETS_BY_OP.values() for _, target in maps)
FLAGS = ("-O3", "-march=native", "-std=c++20", "-shared", "-fPIC", "-w")
OPT_OUT_VAR = "NAS_JAX_KERNELS"
CACHE_VAR = "NAS_JAX_KERNEL_CACHE"

_lock = threading.Lock()
_state: dict[str, object] = {}  # "ok": bool, "reason": str, "path": Path


def cache_dir() -> Path:
  """Where compiled kernels are kept (see the module docstring)."""
  if os.environ.get(CACHE_VAR):
    return Path(os.environ[CACHE_VAR])
  base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
  return Path(base) / "nas_jax" / "kernels"


def compiler() -> str | None:
  """The C++ compiler to use, or None if there is none."""
  for name in (os.environ.get("CXX"), "g++", "c++"):
    if name and shutil.which(name):
      return shutil.which(name)
  return None


def _cpu_flags() -> str:
  try:
    with open("/proc/cpuinfo", encoding="utf-8") as f:
      for line in f:
        if line.startswith("flags"):
          return line
  except OSError:
    pass
  return platform.processor()


def library_path(cxx: str) -> Path:
  """The cached library's path for this source, compiler, jaxlib and CPU."""
  version = subprocess.run([cxx, "--version"], capture_output=True, text=True, check=False).stdout
  sources = [p.read_text() for p in (*SOURCES, *HEADERS)]
  key = hashlib.sha256("\0".join([*sources, cxx, version, " ".join(FLAGS), jaxlib.__version__,
                                  platform.machine(), _cpu_flags()]).encode()).hexdigest()[:16]
  return cache_dir() / f"nas_jax_kernels-{key}.so"


def _compile(cxx: str, out: Path) -> None:
  out.parent.mkdir(parents=True, exist_ok=True)
  # Compile to a private name, then rename: concurrent processes (pytest -n)
  # never load a half-written library.
  fd, tmp = tempfile.mkstemp(suffix=".so", dir=out.parent)
  os.close(fd)
  try:
    cmd = [cxx, *FLAGS, f"-I{jax.ffi.include_dir()}", f"-I{HERE}", *map(str, SOURCES), "-o", tmp]
    res = subprocess.run(cmd, capture_output=True, text=True, check=False, timeout=600)
    if res.returncode != 0:
      tail = " | ".join((res.stderr or res.stdout).strip().splitlines()[-3:])
      raise RuntimeError(f"{Path(cxx).name} failed ({res.returncode}): {tail}")
    os.replace(tmp, out)
  finally:
    if os.path.exists(tmp):
      os.unlink(tmp)


def _load() -> tuple[bool, str]:
  if os.environ.get(OPT_OUT_VAR, "1") == "0":
    return False, f"turned off by {OPT_OUT_VAR}=0"
  if sys.platform != "linux" and sys.platform != "darwin":
    return False, f"no kernel build for platform {sys.platform}"
  cxx = compiler()
  if cxx is None:
    return False, "no C++ compiler found (install g++ or set CXX)"
  try:
    path = library_path(cxx)
    if not path.exists():
      _compile(cxx, path)
    lib = ctypes.cdll.LoadLibrary(str(path))
    for target, symbol in TARGETS:
      jax.ffi.register_ffi_target(target, jax.ffi.pycapsule(getattr(lib, symbol)), platform="cpu")
  except (OSError, RuntimeError, subprocess.SubprocessError, AttributeError) as e:
    return False, f"kernel build failed: {e}"
  _state["path"] = path
  return True, ""


def available() -> bool:
  """Whether the CPU kernels are built and registered (builds them on first call)."""
  with _lock:
    if "ok" not in _state:
      _state["ok"], _state["reason"] = _load()
    return bool(_state["ok"])


def unavailable_reason() -> str:
  """Why ``available()`` is False ("" when it is True)."""
  available()
  return str(_state["reason"])


def _main() -> int:
  ok = available()
  print(f"nas_jax kernels: {'ready at ' + str(_state['path']) if ok else 'not available: ' + unavailable_reason()}")
  return 0


if __name__ == "__main__":
  sys.exit(_main())
