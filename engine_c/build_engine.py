"""cffi build script (API mode) for the C engine, run by setup.py's cffi_modules.

The public header is the cdef: one source of truth for the C API. The
extension is compiled with -O3 but no -march flag: SIMD files pick their own
instruction sets with `#pragma GCC target`, and the kernel table is chosen at
load time by CPU detection, so one wheel runs on any x86-64 or aarch64.
-ffp-contract=off: the scalar reference's float operations stay exactly as
written (no fused multiply-adds the compiler chose), so the SIMD kernels can
reproduce them bit for bit whatever the compiler or its mode.
"""
from __future__ import annotations

import pathlib
import re

from cffi import FFI

HERE = pathlib.Path(__file__).resolve().parent


def _cdef_text() -> str:
    """The header minus preprocessor lines, which cffi's parser does not take."""
    text = (HERE / "rs_engine.h").read_text()
    text = re.sub(r"/\*.*?\*/", "", text, flags=re.S)
    lines = [ln for ln in text.splitlines() if not ln.lstrip().startswith("#")]
    return "\n".join(lines)


def _sources() -> list[str]:
    root = HERE.parent
    return sorted(str(p.relative_to(root)) for p in HERE.glob("*.c"))


ffibuilder = FFI()
ffibuilder.cdef(_cdef_text())
ffibuilder.set_source(
    "radixserve._engine",
    '#include "rs_engine.h"',
    sources=_sources(),
    include_dirs=["engine_c"],
    # -falign-functions=64: a kernel's loops then sit at the same offsets from a
    # cache-line boundary whatever the code linked before it. Without it, a
    # change to attention.c that left the kernels untouched moved them by
    # 0xe0 bytes and made decode over 4,096 positions 8 % slower (Zen 4).
    extra_compile_args=["-std=c11", "-O3", "-Wall", "-Wextra", "-Werror", "-fno-math-errno", "-ffp-contract=off",
                        "-falign-functions=64"],
    libraries=["m", "pthread"],
)

if __name__ == "__main__":
    ffibuilder.compile(verbose=True)
