"""Host/device split: parse a kernel's source once and rewrite its host part.

Every ``for ... in ts.tile(...)`` / ``ts.grid(...)`` statement of the host code (not nested in
another such loop) is a *launch site*. The function's AST is rewritten so that each site becomes
``__ts_ctx.L[i]((<tile args>), <block_size>, (<captured host values>))`` and calls of
``ts.register_block_size`` / ``ts.register_tunable`` go through ``__ts_ctx`` (so the config
chooses their values); everything else stays plain Python and runs as is.

Example:
    >>> import torch
    >>> import torchship.kernels.language as tsl
    >>> def k(x):
    ...     out = torch.empty_like(x)
    ...     for t in tsl.tile(x.size(0)):
    ...         out[t] = x[t] + 1
    ...     return out
    >>> p = parse_kernel(k)
    >>> [s.captured for s in p.sites]
    [['out', 'x']]
"""

from __future__ import annotations

import ast
import builtins
import contextlib
import inspect
import textwrap
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from torchship.kernels import language
from torchship.kernels.errors import KernelSyntaxError
from torchship.kernels.ir import Loc

__all__ = ["ParsedKernel", "Site", "parse_kernel", "resolve_static"]


@dataclass
class Site:
    """One launch site: the ``for`` statement, its loop kind, captured host names."""

    index: int
    node: ast.For
    kind: str  # "tile" | "grid"
    captured: list[str]
    loc: Loc


@dataclass
class ParsedKernel:
    """The parsed kernel: source, AST, launch sites and the rewritten host function."""

    fn: Callable[..., Any]
    filename: str
    first_line: int
    lines: list[str]
    tree: ast.FunctionDef
    sites: list[Site]
    host: Callable[..., Any]  # host(__ts_ctx, *args, **kwargs)
    globals: dict[str, Any] = field(default_factory=dict)
    inlined: dict[str, str] = field(default_factory=dict)  # helper name -> source (inline.py)

    def loc(self, node: ast.AST) -> Loc:
        """Location of an AST node in the user's file."""
        lineno = getattr(node, "lineno", 1)
        text = self.lines[lineno - 1].strip() if 0 < lineno <= len(self.lines) else ""
        return Loc(self.filename, lineno + self.first_line - 1, text)

    def error(self, cls: type, node: ast.AST, message: str, hint: str | None = None) -> Exception:
        """Build an error of ``cls`` located at ``node``."""
        loc = self.loc(node)
        return cls(message, filename=loc.filename, lineno=loc.lineno, source_line=loc.source,
                   hint=hint)

    def lookup(self, name: str) -> Any:
        """Resolve a global/closure/builtin name of the kernel (KeyError when unknown)."""
        if name in self.globals:
            return self.globals[name]
        if hasattr(builtins, name):
            return getattr(builtins, name)
        raise KeyError(name)


_MISSING = object()


def resolve_static(expr: ast.AST, lookup: Callable[[str], Any]) -> Any:
    """The object a ``Name``/``Attribute`` chain refers to, or a sentinel when it is not static.

    Example:
        >>> import math
        >>> resolve_static(ast.parse("math.pi", mode="eval").body, {"math": math}.__getitem__)
        3.141592653589793
    """
    if isinstance(expr, ast.Name):
        try:
            return lookup(expr.id)
        except KeyError:
            return _MISSING
    if isinstance(expr, ast.Attribute):
        base = resolve_static(expr.value, lookup)
        if base is _MISSING:
            return _MISSING
        return getattr(base, expr.attr, _MISSING)
    return _MISSING


def is_missing(value: Any) -> bool:
    return value is _MISSING


def _loaded_names(node: ast.AST) -> set[str]:
    return {n.id for n in ast.walk(node) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Load)}


class _Rewriter(ast.NodeTransformer):
    def __init__(self, parsed: ParsedKernel, site_nodes: dict[int, Site]) -> None:
        self.parsed = parsed
        self.site_nodes = site_nodes
        self.n_syms = 0

    def visit_For(self, node: ast.For) -> Any:
        site = self.site_nodes.get(id(node))
        if site is None:
            return self.generic_visit(node)
        call = node.iter
        assert isinstance(call, ast.Call)
        bs = ast.Constant(None)
        for kw in call.keywords:
            if kw.arg == "block_size":
                bs = self.visit(kw.value)
            else:
                raise self.parsed.error(
                    KernelSyntaxError, kw, f"ts.{site.kind}() got an unexpected keyword "
                    f"argument {kw.arg!r}", hint="only block_size= is accepted")
        args = ast.Tuple([self.visit(a) for a in call.args], ast.Load())
        caps = ast.Tuple([ast.Name(n, ast.Load()) for n in site.captured], ast.Load())
        hook = ast.Subscript(
            ast.Attribute(ast.Name("__ts_ctx", ast.Load()), "L", ast.Load()),
            ast.Constant(site.index), ast.Load())
        new = ast.Expr(ast.Call(hook, [args, bs, caps], []))
        return ast.copy_location(new, node)

    def visit_Call(self, node: ast.Call) -> Any:
        target = resolve_static(node.func, self.parsed.lookup)
        node = self.generic_visit(node)
        if target is language.register_block_size:
            node.func = ast.Attribute(ast.Name("__ts_ctx", ast.Load()), "block_size", ast.Load())
            node.args.insert(0, ast.Constant(self.n_syms))
            self.n_syms += 1
        elif target is language.register_tunable:
            node.func = ast.Attribute(ast.Name("__ts_ctx", ast.Load()), "tunable", ast.Load())
        return node


def _closure_globals(fn: Callable[..., Any]) -> dict[str, Any]:
    env = dict(fn.__globals__)
    code = fn.__code__
    if fn.__closure__:
        for name, cell in zip(code.co_freevars, fn.__closure__):
            with contextlib.suppress(ValueError):  # an empty cell
                env[name] = cell.cell_contents
    return env


def parse_kernel(fn: Callable[..., Any]) -> ParsedKernel:
    """Parse ``fn``'s source, find its launch sites and build the rewritten host function.

    Raises :class:`KernelSyntaxError` when the source is unavailable or a site is malformed.
    """
    try:
        lines, first = inspect.getsourcelines(fn)
        filename = inspect.getsourcefile(fn) or "<unknown>"
    except (OSError, TypeError) as exc:
        raise KernelSyntaxError(
            f"cannot read the source of {getattr(fn, '__qualname__', fn)!r}: {exc}",
            hint="define kernels in a .py file (not in an interactive prompt or exec string)",
        ) from exc
    src = textwrap.dedent("".join(lines))
    module = ast.parse(src)
    func = module.body[0]
    if not isinstance(func, ast.FunctionDef):
        raise KernelSyntaxError(f"{fn!r} is not a plain `def` function", filename=filename,
                                lineno=first)
    func.decorator_list = []
    parsed = ParsedKernel(fn, filename, first, src.splitlines(), func, [], fn,
                          _closure_globals(fn))
    arg_names = {a.arg for a in func.args.args + func.args.kwonlyargs + func.args.posonlyargs}
    if func.args.vararg:
        arg_names.add(func.args.vararg.arg)
    if func.args.kwarg:
        arg_names.add(func.args.kwarg.arg)

    sites: list[Site] = []
    site_nodes: dict[int, Site] = {}

    def visit(stmts: list[ast.stmt]) -> None:
        for stmt in stmts:
            if isinstance(stmt, ast.For) and isinstance(stmt.iter, ast.Call):
                target = resolve_static(stmt.iter.func, parsed.lookup)
                if target is language.tile or target is language.grid:
                    kind = "tile" if target is language.tile else "grid"
                    if stmt.orelse:
                        raise parsed.error(KernelSyntaxError, stmt, "`for ... else` is not "
                                           "supported on a tile loop", hint="remove the else")
                    site = Site(len(sites), stmt, kind, [], parsed.loc(stmt))
                    sites.append(site)
                    site_nodes[id(stmt)] = site
                    continue
            for fld in ("body", "orelse", "finalbody", "handlers"):
                sub = getattr(stmt, fld, None)
                if isinstance(sub, list):
                    visit([s for s in sub if isinstance(s, ast.stmt)])
                    for h in sub:
                        if isinstance(h, ast.ExceptHandler):
                            visit(h.body)

    visit(func.body)
    site_stmts = {id(s.node) for s in sites}
    host_locals = set(arg_names)

    def collect(node: ast.AST) -> None:
        if id(node) in site_stmts:
            return
        if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            host_locals.add(node.id)
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) and \
                node is not func:
            host_locals.add(node.name)
            return
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            for a in node.names:
                host_locals.add((a.asname or a.name).split(".")[0])
        for child in ast.iter_child_nodes(node):
            collect(child)

    collect(func)
    for site in sites:
        used = _loaded_names(site.node)
        site.captured = sorted(used & host_locals)
    parsed.sites = sites

    rewritten = _Rewriter(parsed, site_nodes).visit(func)
    rewritten.name = f"__ts_host_{fn.__name__}"
    rewritten.args.args.insert(0, ast.arg("__ts_ctx"))
    rewritten.returns = None
    for a in rewritten.args.args + rewritten.args.kwonlyargs:
        a.annotation = None
    mod = ast.Module([rewritten], type_ignores=[])
    ast.fix_missing_locations(mod)
    ast.increment_lineno(mod, first - 1)
    code = compile(mod, filename, "exec")
    ns: dict[str, Any] = {}
    exec(code, parsed.globals, ns)  # our own rewritten AST of the user's function
    parsed.host = ns[rewritten.name]
    return parsed
