"""What a model file may contain before anything in it runs, and a time limit on a user's forward.

TorchScript: every operator the archive's code calls (every method, `__setstate__` included) is
read from its serialised source before `torch.jit.load` runs anything, and again from the loaded
graphs; only tensor computation is allowed: ATen operators (`torch.NAME(...)` in the source) and
the `prim` / `quantized` namespaces, minus DENIED (files, serialisation, storage aliasing, threads).
Any other namespace (custom operator libraries, RPC, distributed) is refused, naming the operator.

torch.export: the archive's entries must be the standard ones (no native library, no AOTInductor
or custom-op payload); every graph node must call an ATen operator not in DENIED (read from the
archive's JSON before `torch.export.load`); every stored weight must fit in the bytes the archive
really holds for it, so a small file cannot declare a huge tensor.
"""
from __future__ import annotations

import functools
import json
import math
import re
import threading
import zipfile
from typing import Any, Callable, TypeVar

from compression.core.errors import ModelLoadError

T = TypeVar("T")

# ATen operators that touch files, serialise, alias raw storage or start threads: never allowed
DENIED = frozenset({"from_file", "save", "load", "_load", "set_", "set_data", "_set_item_storage", "wait",
                    "fork", "_fork", "record_stream", "_cufft_set_plan_cache_max_size", "pin_memory",
                    "_pin_memory", "_test_warn_in_autograd"})
PRIM_DENIED = frozenset({"PythonOp", "IgnoredPythonOp", "rpc_async", "rpc_sync", "rpc_remote", "fork",
                         "awaitable_nowait", "awaitable_wait", "profile", "profile_ivalue", "TimePoint"})
# graph nodes of TorchScript's own control flow and data structures (they have no operator schema)
PRIM_STRUCTURAL = frozenset({"Constant", "GetAttr", "SetAttr", "CallMethod", "CallFunction", "If", "Loop",
                             "ListConstruct", "ListUnpack", "TupleConstruct", "TupleUnpack", "TupleIndex",
                             "DictConstruct", "Return", "Param", "Uninitialized", "RaiseException",
                             "unchecked_cast", "isinstance", "CreateObject", "Enter", "Exit", "BailOut",
                             "TypeCheck", "NumToTensor", "device", "dtype", "min", "max", "abs"})
NAMESPACES = ("aten", "prim", "quantized")
CUSTOM_CLASSES = ("quantized",)  # torch.classes namespaces whose objects a quantized model holds
MAX_SOURCE_BYTES = 64 << 20
MAX_GRAPH_JSON = 256 << 20
EXPORT_ENTRIES = re.compile(r"^[^/]+/(data/weights/[\w.\-]+|data/constants/[\w.\-]+|data/sample_inputs/[\w.\-]+"
                            r"|models/[\w.\-]+\.json|archive_format|archive_version|version|byteorder"
                            r"|\.data/version|\.data/serialization_id|extra/[\w.\-]+)$")
# torch.export's serialised ScalarType codes -> bytes per element
EXPORT_DTYPE_BYTES = {1: 1, 2: 1, 3: 2, 4: 4, 5: 8, 6: 2, 7: 4, 8: 8, 9: 4, 10: 8, 11: 16, 12: 1, 13: 2,
                      28: 2, 29: 1, 30: 1, 31: 1, 32: 1, 33: 1, 34: 4, 35: 8}


@functools.lru_cache(maxsize=1)
def allowed_operators() -> dict[str, frozenset[str]]:
    """{namespace: operator names} of every registered operator in NAMESPACES, minus the denied."""
    import torch

    names: dict[str, set[str]] = {ns: set() for ns in NAMESPACES}
    for schema in torch._C._jit_get_all_schemas():
        ns, _, op = schema.name.partition("::")
        if ns in names:
            names[ns].add(op)
    names["aten"] -= DENIED
    names["prim"] = (names["prim"] | PRIM_STRUCTURAL) - PRIM_DENIED
    return {ns: frozenset(ops) for ns, ops in names.items()}


def _refuse(op: str, where: str) -> ModelLoadError:
    why = "it reads or writes files, serialises, aliases memory or starts threads" \
        if op.rsplit("::", 1)[-1] in DENIED | PRIM_DENIED else "it is not a tensor operator this project allows"
    return ModelLoadError(f"Refused: the {where} calls operator {op!r}, which is never run ({why}). Only "
                          "tensor computation (ATen operators) is allowed in a model file.")


def _check_op(ns: str, op: str, where: str) -> None:
    allowed = allowed_operators()
    if ns not in allowed or op not in allowed[ns]:
        raise _refuse(f"{ns}::{op}", where)


# ---- TorchScript ---------------------------------------------------------------------------------

_ATEN_CALL = re.compile(r"(?<![\w.])torch\.([A-Za-z_]\w*)\s*\(")
_DOTTED_TORCH = re.compile(r"(?<![\w.])torch\.((?!classes\.)[A-Za-z_]\w*)\.([\w.]+)")
_OPS_CALL = re.compile(r"(?<![\w.])ops\.(\w+)\.(\w+)")
_CLASSES = re.compile(r"torch\.classes\.(\w+)\.")
_BUILTIN_CALL = re.compile(r"(?<![\w.])(fork|wait|rpc_async|rpc_sync|rpc_remote)\s*\(")


def check_torchscript_source(zf: zipfile.ZipFile) -> None:
    """Refuse a TorchScript archive whose serialised code calls anything outside the allow-list.
    Runs before torch.jit.load, which would run `__setstate__` methods."""
    total = 0
    for info in zf.infolist():
        if "/code/" not in info.filename or not info.filename.endswith(".py"):
            continue
        total += info.file_size
        if total > MAX_SOURCE_BYTES:
            raise ModelLoadError("Refused: the TorchScript archive holds more than 64 MiB of code.")
        source = zf.read(info).decode("utf-8", errors="replace")
        for op in _ATEN_CALL.findall(source):
            _check_op("aten", op, "TorchScript code")
        for ns, op in _OPS_CALL.findall(source):
            _check_op(ns, op, "TorchScript code")
        for ns, rest in _DOTTED_TORCH.findall(source):
            if ns != "ops":
                raise _refuse(f"torch.{ns}.{rest}", "TorchScript code")
        for ns in _CLASSES.findall(source):
            if ns not in CUSTOM_CLASSES:
                raise _refuse(f"torch.classes.{ns}", "TorchScript code")
        for name in _BUILTIN_CALL.findall(source):
            raise _refuse(name, "TorchScript code")


def _graph_ops(graph) -> set[str]:
    kinds, blocks = set(), [graph]
    while blocks:
        block = blocks.pop()
        for node in block.nodes():
            kinds.add(node.kind())
            blocks.extend(node.blocks())
    return kinds


# operators that turn a tensor's values into a Python scalar: a loop bounded by one can run forever
TENSOR_TO_SCALAR = frozenset({"aten::Int", "aten::Float", "aten::Bool", "aten::item", "aten::is_nonzero",
                              "aten::IntImplicit", "aten::FloatImplicit", "aten::ScalarImplicit", "aten::tolist",
                              "prim::tolist", "aten::equal", "aten::allclose", "aten::__contains__"})


def _depends_on_values(start, loop_of: dict) -> str | None:
    """The tensor-to-scalar operator (if any) that `start`, a scalar of the graph, is computed from.
    Walks producers backwards, through the blocks of If/Loop nodes and loop-carried values."""
    seen, todo = set(), [start]
    while todo:
        value = todo.pop()
        if value.unique() in seen:
            continue
        seen.add(value.unique())
        node = value.node()
        if node.kind() in TENSOR_TO_SCALAR:
            return node.kind()
        if node.kind() == "prim::Param":            # a block's input: a loop counter or a carried value
            owner = loop_of.get(id(node))
            if owner is not None:
                loop, block = owner
                todo.extend(list(loop.inputs()))
                todo.extend(list(block.outputs()))
            continue
        todo.extend(node.inputs())
        for block in node.blocks():
            todo.extend(block.outputs())
    return None


def _unbounded_loop(graph) -> str | None:
    """Where a loop's trip count or condition comes from tensor values ('while x.sum() > 0'):
    such a forward may never return on some input however it behaved on the check batch."""
    loops, blocks = [], [graph]
    while blocks:
        for node in blocks.pop().nodes():
            if node.kind() == "prim::Loop":
                loops.append(node)
            blocks.extend(node.blocks())
    loop_of = {}
    for loop in loops:
        block = next(loop.blocks())
        loop_of[id(block.paramNode())] = (loop, block)
    for loop in loops:
        block = next(loop.blocks())
        for value in (loop.inputsAt(0), loop.inputsAt(1), next(block.outputs())):
            op = _depends_on_values(value, loop_of)
            if op is not None:
                lines = [ln.strip() for ln in loop.sourceRange().splitlines()]
                where = next((ln for ln in lines if ln.startswith(("while ", "for "))), "a loop")
                return f"'{where[:100]}' (bounded by {op})"
    return None


def check_torchscript_module(module) -> None:
    """The loaded module's graphs, every method of every submodule: the same allow-list (a second
    look, from what the compiler built rather than from the source text), and no loop whose length
    depends on tensor values: with only loops bounded by sizes and constants, a forward that
    returned on the check batch returns on any batch of the same shape."""
    for sub in module.modules():
        for name in sub._c._method_names():
            loop = _unbounded_loop(sub._c._get_method(name).inlined_graph)
            if loop is not None:
                raise ModelLoadError(f"Refused: the TorchScript method {name!r} has a loop whose length depends on "
                                     f"tensor values, so it may never return on some input: {loop}. Bound it by a "
                                     "size or a constant (for i in range(N)).")
            for kind in _graph_ops(sub._c._get_method(name).graph):
                ns, _, op = kind.partition("::")
                if ns in ("aten", "prim", "quantized"):
                    _check_op(ns, op, "TorchScript code")
                elif ns not in ("onnx",):  # onnx:: marks only appear after export passes
                    raise _refuse(kind, "TorchScript code")


# ---- torch.export --------------------------------------------------------------------------------

def _json_entry(zf: zipfile.ZipFile, info: zipfile.ZipInfo) -> Any:
    if info.file_size > MAX_GRAPH_JSON:
        raise ModelLoadError(f"Refused: the program's {info.filename.split('/')[-1]} is over 256 MiB.")
    try:
        return json.loads(zf.read(info))
    except (ValueError, RecursionError, UnicodeDecodeError):
        raise ModelLoadError(f"The program's {info.filename.split('/')[-1]} is not valid JSON "
                             "(or nested too deeply).") from None


def _nodes(graph_module: dict) -> list[dict]:
    graph = graph_module.get("graph") if isinstance(graph_module, dict) else None
    nodes = graph.get("nodes") if isinstance(graph, dict) else None
    if not isinstance(nodes, list):
        raise ModelLoadError("The program's graph is malformed (no node list).")
    return nodes


def _check_export_nodes(model_json: Any) -> None:
    if not isinstance(model_json, dict):
        raise ModelLoadError("The program's model.json is malformed.")
    for node in _nodes(model_json.get("graph_module")):
        target = node.get("target") if isinstance(node, dict) else None
        if target == "_operator.getitem":
            continue
        parts = target.split(".") if isinstance(target, str) else []
        if len(parts) < 4 or parts[:3] != ["torch", "ops", "aten"]:
            raise _refuse(str(target)[:120], "exported graph")
        _check_op("aten", parts[3], "exported graph")


def _declared_bytes(meta: Any) -> int:
    """Bytes a serialised tensor_meta needs (storage offset and strides included)."""
    try:
        sizes = [int(d["as_int"]) for d in meta["sizes"]]
        strides = [int(d["as_int"]) for d in meta["strides"]]
        offset = int(meta["storage_offset"]["as_int"])
        itemsize = EXPORT_DTYPE_BYTES[int(meta["dtype"])]
    except (KeyError, TypeError, ValueError):
        raise ModelLoadError("A stored weight of the program has a malformed or symbolic shape.") from None
    if min(sizes + strides + [offset], default=0) < 0:
        raise ModelLoadError("A stored weight of the program declares a negative size.")
    if math.prod(sizes) == 0:
        return 0
    return (offset + sum((s - 1) * st for s, st in zip(sizes, strides)) + 1) * itemsize


def _check_weights(zf: zipfile.ZipFile, config_info: zipfile.ZipInfo, folder: str) -> None:
    config = _json_entry(zf, config_info)
    entries = config.get("config") if isinstance(config, dict) else None
    if not isinstance(entries, dict):
        raise ModelLoadError("The program's weights config is malformed.")
    stored = {i.filename.rsplit("/", 1)[-1]: i.file_size for i in zf.infolist() if f"/data/{folder}/" in i.filename}
    for name, entry in entries.items():
        if not isinstance(entry, dict) or entry.get("path_name") not in stored:
            raise ModelLoadError(f"The program's {folder} entry {str(name)[:60]!r} is malformed or missing.")
        if entry.get("use_pickle") or "tensor_meta" not in entry:
            raise ModelLoadError(f"Refused: the program stores {str(name)[:60]!r} as a pickled object, not a tensor.")
        need, have = _declared_bytes(entry["tensor_meta"]), stored[entry["path_name"]]
        if need > have:
            raise ModelLoadError(f"Refused: the program declares {str(name)[:60]!r} as {need:,} bytes but holds "
                                 f"only {have:,}: a damaged or hostile file.")


def check_export_archive(zf: zipfile.ZipFile) -> None:
    """Refuse a torch.export archive with entries beyond the standard ones (a native library, an
    AOTInductor or custom-op payload), graph nodes outside the allowed ATen operators, pickled
    weights or weights larger than the bytes stored for them. Runs before torch.export.load."""
    for info in zf.infolist():
        if not EXPORT_ENTRIES.match(info.filename):
            raise ModelLoadError(f"Refused: the program archive holds {info.filename.split('/', 1)[-1][:120]!r}, "
                                 "which is not part of a plain torch.export program (native libraries and "
                                 "compiled or custom-operator payloads are never opened).")
    for info in zf.infolist():
        tail = info.filename.split("/", 1)[-1]
        if tail.startswith("models/") and tail.endswith(".json"):
            _check_export_nodes(_json_entry(zf, info))
        elif tail in ("data/weights/model_weights_config.json", "data/constants/model_constants_config.json"):
            _check_weights(zf, info, tail.split("/")[1])


# ---- time limits ---------------------------------------------------------------------------------

def run_with_time_limit(fn: Callable[[], T], seconds: float, what: str) -> T:
    """fn() in a daemon thread; ModelLoadError when it has not returned within `seconds`.
    (The thread cannot be stopped: a process that exits ends it; in the app it idles in the
    background while the refusal keeps the model out of use.)"""
    result: dict[str, Any] = {}

    def target() -> None:
        try:
            result["value"] = fn()
        except BaseException as exc:  # handed to the caller
            result["error"] = exc

    worker = threading.Thread(target=target, daemon=True, name="user-forward")
    worker.start()
    worker.join(seconds)
    if worker.is_alive():
        raise ModelLoadError(f"Refused: {what} did not return within {seconds:g} s.")
    if "error" in result:
        raise result["error"]
    return result["value"]
