"""Views of the C++ blocks that run, and the overrides that make hooks and replacements count.

Each view (`CppModule`) holds its block's C++ parameters (the same TensorImpls, re-classed as
`nn.Parameter`), so state_dict, optimizers and `.to` reach C++. A view an assembly knows how to run is
callable (a Linear on a tensor here; the decoder's vision, abstractor and layers in decoder_blocks.py).

The model's forward stays the fused C++ one. A forward hook or pre-hook on a view, or a view replaced
from Python (setattr, PEFT's wrappers), changes a version counter (the views' hook and child dicts are
watched); the next forward or generate then walks the tree once (`Blocks.sync`) and installs a C++
override at each such point: the C++ forward calls back into Python there, through the module now at
that path (`module(x)`: its hooks fire with the block's real inputs, a returned value replaces the output,
a replacement runs instead). With no hook and no replacement the C++ forward pays one comparison per call.
Blocks that need a context (an attention's mask, positions and KV cache) hand it over in a `BlockCall`
(csrc/nn/overridable.h): their view, called from the override, runs the block with it. A hook on a view
the C++ forward cannot call back into (an embedding, the LM as a whole) raises at the forward, naming
the view, rather than being silently ignored."""
from __future__ import annotations

import re
import weakref
from collections import OrderedDict
from typing import Any, Callable, Iterator

import torch
from torch import nn

from vlmzoo.extension import _C

_VERSION = [0]  # bumped by every change to a view's hooks or children


def _changed() -> None:
    _VERSION[0] += 1


class _Watched(OrderedDict):
    """A hook or child dict whose changes bump the version (torch writes hooks with `d[id] = hook` and
    removes them with `del d[id]`; setattr of a module writes `_modules[name]`)."""

    def __setitem__(self, key: Any, value: Any) -> None:
        super().__setitem__(key, value)
        _changed()

    def __delitem__(self, key: Any) -> None:
        super().__delitem__(key)
        _changed()

    def pop(self, key: Any, *default: Any) -> Any:
        _changed()
        return super().pop(key, *default)

    def popitem(self, last: bool = True) -> Any:
        _changed()
        return super().popitem(last)

    def clear(self) -> None:
        super().clear()
        _changed()

    def update(self, *args: Any, **kwargs: Any) -> None:
        super().update(*args, **kwargs)
        _changed()

    def __reduce__(self) -> Any:
        return OrderedDict, (list(self.items()),)


def watch(module: nn.Module) -> None:
    """Makes changes to the module's hooks and children visible to Blocks.sync."""
    for name in ("_modules", "_forward_hooks", "_forward_pre_hooks"):
        current = module.__dict__[name]
        if not isinstance(current, _Watched):
            module.__dict__[name] = _Watched(current)


def _type_name(cpp_module: Any) -> str:
    # "vlmzoo::models::(anonymous namespace)::VitEncoder" -> "VitEncoder"; "...::LlamaLayerImpl" -> "LlamaLayer"
    first_line = str(cpp_module).splitlines()[0].replace("(anonymous namespace)", "")
    name = first_line.split("(", 1)[0].strip().split("::")[-1]
    return re.sub(r"Impl$", "", name) or "Module"


class CppModule(nn.Module):
    """A view of one C++ block: its parameters are the block's C++ tensors; its children are views too.
    `path` is its dotted name in the model; `blocks` the model's Blocks (how views reach the C++ model)."""

    def __init__(self, cpp_module: Any, path: str = "", blocks: "Blocks | None" = None):
        nn.Module.__init__(self)  # not super(): LinearView's next base is nn.Linear, whose __init__ allocates
        object.__setattr__(self, "_cpp", cpp_module)
        object.__setattr__(self, "_path", path)
        object.__setattr__(self, "_blocks", blocks)
        self._cpp_type = _type_name(cpp_module)
        watch(self)
        self.mirror(cpp_module)

    def mirror(self, cpp_module: Any) -> None:
        """(Re)reads the block's parameters from C++: at construction, and after quantize() repacked them."""
        self._parameters.clear()
        for name, tensor in cpp_module.named_parameters(recurse=False).items():
            if not isinstance(tensor, nn.Parameter):
                tensor.__class__ = nn.Parameter  # same TensorImpl, so gradients and optimizers reach C++
            self._parameters[name] = tensor
        for name, child in cpp_module.named_children().items():
            current = self._modules.get(name)
            if isinstance(current, CppModule):
                current.mirror(child)
            elif current is None:
                path = f"{self._path}.{name}" if self._path else name
                view = view_class(path, child, self._blocks)
                OrderedDict.__setitem__(self._modules, name, view(child, path, self._blocks))  # building: no change

    def _get_name(self) -> str:
        return self._cpp_type

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        raise RuntimeError(f"{self._path or self._cpp_type} ({self._cpp_type}) runs inside the model's C++ forward; "
                           f"the callable blocks are {callable_blocks(self._blocks)}")


class LinearView(CppModule, nn.Linear):
    """A C++ Linear: y = x W^T + b over the C++ weight (any weight format). An `nn.Linear`, so PEFT's
    LoRA wraps it; hooked or wrapped, the C++ forward calls back into Python in its place."""

    def __init__(self, cpp_module: Any, path: str = "", blocks: "Blocks | None" = None):
        super().__init__(cpp_module, path, blocks)
        weight = self._parameters.get("weight")
        if weight is not None:
            self.out_features, self.in_features = weight.shape
        else:  # packed (quantised): the bias or the scales know the output width only
            self.out_features = self.in_features = -1

    def mirror(self, cpp_module: Any) -> None:
        super().mirror(cpp_module)
        if "bias" not in self._parameters:
            self._parameters["bias"] = None  # nn.Linear's habit: bias=None when there is none

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        return _C.linear_forward(self._cpp, input)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}"


class BlockView(CppModule):
    """A C++ block that can call back into Python (csrc/nn/overridable.h: a norm, an attention, an MLP, ...).
    Called alone it runs the block on its inputs (an attention: unmasked, without positions, unless its
    assembly's view says otherwise). Inside the model's forward or generate (a hook or a replacement
    called it) it runs the forward's own call: the same inputs' mask, positions and caches."""

    def __init__(self, cpp_module: Any, path: str = "", blocks: "Blocks | None" = None):
        super().__init__(cpp_module, path, blocks)
        object.__setattr__(self, "_calls", [])  # the C++ calls running this view now (innermost last)

    def forward(self, *inputs: torch.Tensor | None) -> torch.Tensor:
        if self._calls:
            return self._calls[-1](list(inputs))
        return self.run_alone(*inputs)

    def run_alone(self, *inputs: torch.Tensor | None) -> torch.Tensor:
        return _C.run_block(self._cpp, list(inputs))


class ModuleListView(CppModule):
    """A C++ ModuleList: indexable, iterable, sized, as torch's."""

    def __getitem__(self, index: int | slice) -> Any:
        items = list(self._modules.values())
        return items[index]

    def __setitem__(self, index: int, module: nn.Module) -> None:
        setattr(self, list(self._modules)[index], module)  # a replaced layer runs in the C++ forward

    def __len__(self) -> int:
        return len(self._modules)

    def __iter__(self) -> Iterator[nn.Module]:
        return iter(self._modules.values())


# Views by path pattern (an assembly's callable blocks), then by C++ type, then any block that can call back.
VIEWS_BY_TYPE: dict[str, type[CppModule]] = {"Linear": LinearView, "ModuleList": ModuleListView}


def view_class(path: str, cpp_module: Any, blocks: "Blocks | None") -> type[CppModule]:
    if blocks is not None:
        for pattern, cls in blocks.VIEWS.items():
            if re.fullmatch(pattern, path):
                return cls
    cls = VIEWS_BY_TYPE.get(_type_name(cpp_module))
    if cls is None:
        cls = BlockView if _C.is_overridable(cpp_module) else CppModule
    return cls


def callable_blocks(blocks: "Blocks | None") -> str:
    names = [name for pattern, name in blocks.POINTS.items()] if blocks is not None else []
    names += ["every Linear"] if blocks is None or blocks.LINEARS else []
    names += ["every norm, attention and MLP"] if blocks is None or blocks.BLOCK_VIEWS else []
    return ", ".join(names) or "none (in this assembly)"


class Blocks:
    """One model's override points and their state. An assembly subclasses it: VIEWS (path pattern ->
    view class), POINTS (path pattern -> description, the non-Linear blocks it can call back into) and
    install_point (sets or clears the C++ override at one path)."""

    VIEWS: dict[str, type[CppModule]] = {}
    POINTS: dict[str, str] = {}
    LINEARS = True  # whether every C++ Linear runs through Linear::forward (where the override lives)
    BLOCK_VIEWS = True  # whether the blocks of BlockViews run through their forward (nn/overridable.h)

    def __init__(self, model: nn.Module):
        self._model = weakref.ref(model)  # weak: C++ holds the callbacks that hold this
        self.synced = _VERSION[0]
        self.installed: dict[str, CppModule] = {}  # path -> the original view whose C++ block is overridden
        self.views: dict[str, CppModule] = {}
        self.active: list[Any] = []  # decoder contexts of the hooked layers running now

    @property
    def cpp(self) -> Any:
        return self._model()._module.cpp_module  # torch's ModuleWrapper holds the pybind11 object

    def register_views(self) -> None:
        """Remembers the original view at each path (a replaced one is found by comparing)."""
        self.views = {name: m for name, m in self._model().named_modules() if isinstance(m, CppModule)}
        self.synced = _VERSION[0]

    def module_at(self, path: str) -> nn.Module:
        module = self._model()
        for part in path.split("."):
            module = module._modules[part]
        return module

    def sync(self) -> None:
        """Installs or clears the C++ overrides so that the tree's hooks and replacements run; free when
        nothing changed since the last call."""
        if self.synced == _VERSION[0]:
            return
        wanted: dict[str, CppModule] = {}
        self._walk(self._model(), "", wanted)
        for path in [p for p in self.installed if p not in wanted]:
            self._install(path, self.installed.pop(path), on=False)
        for path, view in wanted.items():
            if path not in self.installed:
                self._install(path, view, on=True)
                self.installed[path] = view
        self.after_install()
        self.synced = _VERSION[0]

    def _walk(self, module: nn.Module, prefix: str, wanted: dict[str, CppModule]) -> None:
        for name, child in module._modules.items():
            path = f"{prefix}.{name}" if prefix else name
            original = self.views.get(path)
            if original is None:
                continue  # not a C++ block (inside a replacement)
            if child is not original:
                wanted[path] = self._point(path, original, "replaced")
                continue
            if child._forward_hooks or child._forward_pre_hooks:
                wanted[path] = self._point(path, original, "hooked")
            self._walk(child, path, wanted)

    def _is_point(self, path: str) -> bool:
        return any(re.fullmatch(p, path) for p in self.POINTS)

    def _point(self, path: str, view: CppModule, why: str) -> CppModule:
        if (self.LINEARS and isinstance(view, LinearView)) or (self.BLOCK_VIEWS and isinstance(view, BlockView)) \
                or self._is_point(path):
            return view
        raise NotImplementedError(f"{path} ({view._cpp_type}) is {why}, but it runs inside the C++ forward, which "
                                  f"can call back into Python only at {callable_blocks(self)}; put the hook or "
                                  f"replacement on one of those")

    def _install(self, path: str, view: CppModule, on: bool) -> None:
        if self._is_point(path):
            self.install_point(path, on)
        elif isinstance(view, LinearView):
            _C.set_linear_override(view._cpp, self._calling(path) if on else None)
        else:
            _C.set_override(view._cpp, self._calling_block(path) if on else None)

    def _calling(self, path: str) -> Callable[..., torch.Tensor]:
        blocks = weakref.ref(self)  # weak: C++ keeps the callback, and this object keeps the views

        def call(*args: Any) -> torch.Tensor:
            return blocks().module_at(path)(*args)
        return call

    def _calling_block(self, path: str) -> Callable[[Any], torch.Tensor]:
        blocks = weakref.ref(self)

        def call(block_call: Any) -> torch.Tensor:
            # The module now at path runs (a replacement, or the original view with its hooks); the original
            # view, wherever it is called from, runs this C++ call's own computation.
            original = blocks().views[path]
            original._calls.append(block_call)
            try:
                out = blocks().module_at(path)(*block_call.inputs)
            finally:
                original._calls.pop()
            if not isinstance(out, torch.Tensor):
                raise TypeError(f"{path}: its hooks or replacement returned {type(out).__name__}; the C++ forward "
                                f"takes a tensor from it")
            return out
        return call

    def install_point(self, path: str, on: bool) -> None:
        raise NotImplementedError(path)

    def after_install(self) -> None:
        """What the assembly derives from the installed set (the decoder: whether vision runs Python)."""
