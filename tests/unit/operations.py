"""A recorder standing in for pyinfra's operations, for unit tests of deploy code's order and
arguments (what runs on hosts is proven by the topology tests)."""

from __future__ import annotations

from types import SimpleNamespace


class Ops:
    """Records every operation call, in order: (name, args, kwargs)."""

    def __init__(self):
        self.calls: list[tuple[str, tuple, dict]] = []

    def op(self, name: str):
        def record(*args, **kwargs):
            self.calls.append((name, args, kwargs))
            return SimpleNamespace(did_change=lambda: False)
        return record

    def module(self, prefix: str):
        ops = self

        class Module:
            def __getattr__(self, attr):
                return ops.op(f"{prefix}.{attr}")
        return Module()

    def index(self, name: str, match) -> int:
        """Position of the first call of `name` whose (args, kwargs) satisfy `match`."""
        return next(i for i, c in enumerate(self.calls) if c[0] == name and match(*c[1:]))

    def puts(self, name: str = "put") -> dict[str, tuple[str, str]]:
        """dest -> (content, mode) of every call of `name` (put, put_secret)."""
        return {args[0]: (args[1], args[2] if len(args) > 2 else kwargs.get("mode"))
                for n, args, kwargs in self.calls if n == name}
