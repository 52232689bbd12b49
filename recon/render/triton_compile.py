"""Compile the Triton kernels for NVIDIA GPUs on a machine without one: ``python -m recon.render.triton_compile``.

Triton's compiler and NVIDIA's assembler (``ptxas``) come in Triton's wheel, so every kernel of
:mod:`recon.render.triton_kernels` compiles to GPU machine code here with no GPU and no driver. That checks what
Triton's interpreter, in which the tests run the kernels, cannot: that the GPU compiler accepts them, and how many
registers each uses and whether it spills some to memory (slow). The kernels are compiled with the signatures
their launches in :mod:`recon.render.triton_path` give them: pointers of the input's dtype, int32 boxes, int32
sizes. Prints one row per kernel, variant, architecture and dtype (``--json``: a JSON list); exit status 1 if any
fails to compile.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import re
import sys
import tempfile
import time
from typing import Any

from recon.render.triton_path import BACKWARD_BLOCK, BLOCK, FMA

ARCHS = (80, 90)  # Ampere (A100), Hopper (H100)
DTYPES = ("fp32", "fp64")


def _variants(dtype: str) -> list[tuple[str, dict[str, str], dict[str, Any]]]:
    """(kernel, signature of its runtime arguments, compile-time constants) for every launch of triton_path."""
    p = "*" + dtype
    ints = {"faces": "i32", "size": "i32"}
    rgba = {"face_stride": "i32", "corner_stride": "i32", "double_sided": "i32"}
    out = []
    for surface, depth in ((False, False), (False, True), (True, True)):
        out.append(("face_frames", {"fv": p, "frames": p, "boxes": "*i32", "params": p, "n": "i32", "dims": "i32",
                                    "size": "i32"}, {"SURFACE": surface, "HAS_DEPTH": depth}))
    for prod in (True, False):
        out += [
            ("forward", {"frames": p, "boxes": "*i32", "acc": p, "params": p, **ints}, {"PROD": prod}),
            ("backward", {"frames": p, "boxes": "*i32", "per_pixel": p, "grad": p, "params": p, **ints,
                          "dims": "i32"}, {"PROD": prod}),
            ("rgba_forward", {"frames": p, "boxes": "*i32", "colors": p, "out": p, "acc": p, "shift": p, "den": p,
                              "params": p, **ints, **rgba}, {"PROD": prod}),
            ("rgba_backward", {"frames": p, "boxes": "*i32", "colors": p, "pixels": p, "grad_fv": p,
                               "grad_colors": p, "params": p, **ints, **rgba}, {"PROD": prod}),
        ]
    return out


def compile_kernels(archs: tuple[int, ...] = ARCHS, dtypes: tuple[str, ...] = DTYPES) -> list[dict[str, Any]]:
    """Compile every kernel variant for each architecture (compute capability × 10) and dtype: one dict per
    compile with its registers per thread, spill stores in bytes and ``error`` ("" when it compiled)."""
    os.environ.pop("TRITON_INTERPRET", None)  # the kernels must be made for the compiler, not the interpreter
    import triton
    from triton import knobs
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    from recon.render import triton_kernels

    if not isinstance(triton_kernels.forward, triton.runtime.JITFunction):
        raise RuntimeError("the Triton kernels were imported for the interpreter (TRITON_INTERPRET=1): compile "
                           "them in a process without it")

    saved = knobs.nvidia.dump_ptxas_log, knobs.cache.dir
    rows = []
    with tempfile.TemporaryDirectory() as cache, contextlib.ExitStack() as restore:
        restore.callback(_set, knobs, *saved)
        # ptxas's -v report, printed: registers and spills; a compile every time, the user's cache left alone
        _set(knobs, True, cache)
        for arch in archs:
            for dtype in dtypes:
                for name, signature, constants in _variants(dtype):
                    constants = {**constants, "BLOCK": BACKWARD_BLOCK if name.endswith("backward") else BLOCK}
                    source = ASTSource(fn=getattr(triton_kernels, name),
                                       signature={**signature, **dict.fromkeys(constants, "constexpr")},
                                       constexprs=constants)
                    log, started, error = io.StringIO(), time.perf_counter(), ""
                    try:
                        with contextlib.redirect_stdout(log):
                            triton.compile(source, target=GPUTarget("cuda", arch, 32), options=dict(FMA))
                    except Exception as exc:  # noqa: BLE001 (reported, and the exit status says so)
                        error = f"{type(exc).__name__}: {(str(exc).strip() or '?').splitlines()[0][:200]}"
                    report = log.getvalue()
                    registers = re.search(r"Used (\d+) registers", report)
                    spills = re.search(r"(\d+) bytes spill stores", report)
                    rows.append({"kernel": name, "arch": f"sm_{arch}", "dtype": dtype,
                                 "variant": ", ".join(f"{k}={v}" for k, v in constants.items() if k != "BLOCK"),
                                 "registers": int(registers[1]) if registers else None,
                                 "spill_bytes": int(spills[1]) if spills else None,
                                 "seconds": round(time.perf_counter() - started, 2), "error": error})
    return rows


def _set(knobs: Any, dump_ptxas_log: bool, cache_dir: str) -> None:
    knobs.nvidia.dump_ptxas_log, knobs.cache.dir = dump_ptxas_log, cache_dir


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--arch", type=int, nargs="+", default=list(ARCHS),
                        help="compute capabilities × 10 (default: 80 90)")
    parser.add_argument("--dtype", nargs="+", choices=DTYPES, default=list(DTYPES))
    parser.add_argument("--json", action="store_true", help="print the rows as a JSON list")
    args = parser.parse_args(argv)
    try:
        rows = compile_kernels(tuple(args.arch), tuple(args.dtype))
    except ImportError as exc:
        print(f"error: Triton is not installed ({exc}); it comes with the dev extra: pip install -e '.[dev]'",
              file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(rows))
    else:
        for row in rows:
            what = (f"{row['registers']} registers, {row['spill_bytes']} bytes spilled" if not row["error"]
                    else f"FAILED: {row['error']}")
            print(f"{row['arch']}  {row['dtype']}  {row['kernel']:<14} {row['variant']:<28} {what}")
    return 1 if any(row["error"] for row in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
