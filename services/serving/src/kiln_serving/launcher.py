"""Where the tritonserver binary comes from and how it is launched: the nvidia-pytriton wheel's
binary with the Python backend stub of this interpreter.

Serving's managed Triton (``managed://``) and ``kiln infra up`` both launch it this way; the
command loads this module by name, so it needs nothing beyond the standard library.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import sys
import sysconfig
from pathlib import Path


class TritonNotInstalled(RuntimeError):
    """The environment cannot run tritonserver (the wheel or one of its parts is missing)."""


def distribution() -> tuple[Path, Path]:
    """(pytriton's tritonserver dir, the wheel's bundled shared libraries dir)."""
    spec = importlib.util.find_spec("pytriton")
    if spec is None or spec.origin is None:
        raise TritonNotInstalled(
            "triton: the nvidia-pytriton package is not installed in this Python environment "
            f"({sys.prefix}); run `uv sync --frozen` in the repository"
        )
    package = Path(spec.origin).parent
    return package / "tritonserver", package.parent / "nvidia_pytriton.libs"


def server_binary() -> Path:
    return distribution()[0] / "bin" / "tritonserver"


def install_backends(backends: Path) -> None:
    """Copy the Python backend (with this interpreter's stub) into ``backends/python``."""
    dist, libs = distribution()
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    stub = dist / "python_backend_stubs" / version / "triton_python_backend_stub"
    backend = dist / "backends" / "python"
    sources = {
        backend / "libtriton_python.so": "libtriton_python.so",
        backend / "triton_python_backend_utils.py": "triton_python_backend_utils.py",
        # The Python backend runs models in this stub, which embeds libpython: it must match
        # the interpreter whose packages (numpy, kiln) the models import.
        stub: "triton_python_backend_stub",
    }
    for source in (dist / "bin" / "tritonserver", libs, *sources):
        if not source.exists():
            raise TritonNotInstalled(
                f"triton: {source} is missing from the nvidia-pytriton wheel "
                f"(reinstall it with `uv sync --frozen --reinstall-package "
                f"nvidia-pytriton`)"
            )
    if not (Path(sys.executable).parent / "python3").exists():
        raise TritonNotInstalled(
            f"triton: {Path(sys.executable).parent} has no `python3`; the Python backend "
            "stub finds its environment through it (run kiln from the project's .venv)"
        )
    if importlib.util.find_spec("numpy") is None:
        raise TritonNotInstalled(
            "triton: numpy must be installed in the environment: Python-backend "
            "models get their tensors as numpy arrays"
        )
    # Copies rather than symlinks: the backend resolves the stub next to its own .so, and a
    # copy keeps working if the venv is rebuilt under a running server.
    target = backends / "python"
    target.mkdir(parents=True, exist_ok=True)
    for source, name in sources.items():
        dest = target / name
        stat = source.stat()
        if dest.exists() and (dest.stat().st_size, int(dest.stat().st_mtime)) == (
            stat.st_size,
            int(stat.st_mtime),
        ):
            continue
        shutil.copy2(source, dest.with_suffix(dest.suffix + ".tmp"))
        dest.with_suffix(dest.suffix + ".tmp").replace(dest)


def server_env() -> dict[str, str]:
    """The environment tritonserver and its Python stubs need."""
    _, libs = distribution()
    env = dict(os.environ)
    # tritonserver's own libraries ship in the wheel; the stub links libpython3.11.so.1.0 and
    # must load the one of *this* interpreter (pyenv), not whatever /usr/lib has, or stdlib
    # and compiled extensions (numpy) come from different Python builds.
    lib_dirs = [str(libs)]
    py_libdir = sysconfig.get_config_var("LIBDIR")
    py_soname = sysconfig.get_config_var("INSTSONAME")
    if py_libdir and py_soname and (Path(py_libdir) / py_soname).is_file():
        lib_dirs.insert(0, py_libdir)
    if env.get("LD_LIBRARY_PATH"):
        lib_dirs.append(env["LD_LIBRARY_PATH"])
    env["LD_LIBRARY_PATH"] = os.pathsep.join(lib_dirs)
    # The stub's embedded interpreter ignores PYTHONPATH (checked: it never reaches its
    # sys.path) and locates its prefix by looking `python3` up on PATH. Putting
    # this interpreter's bin dir first makes it resolve the venv itself (pyvenv.cfg and the
    # .pth files of the editable kiln packages), so models import numpy and kiln like we do.
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    env.pop("PYTHONHOME", None)  # defensively: a stray one would pick another stdlib
    # CPU only: there is no GPU on these boxes and CUDA probing only adds noise to the log.
    env.setdefault("CUDA_VISIBLE_DEVICES", "")
    return env
