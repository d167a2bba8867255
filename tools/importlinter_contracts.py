"""tunelab's own import-linter contract type, registered in pyproject.toml (`[tool.importlinter]`).

`lint-imports` puts the working directory on `sys.path`, so run it from the repository root (`make lint`).
"""

from __future__ import annotations

from typing import Any

import grimp
from importlinter import Contract, ContractCheck, fields, output


def _is_private(name: str) -> bool:
    """`_name` is private; a dunder name (`__main__`) is not."""
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


class PrivateRoomsContract(Contract):
    """A private module is imported only from within its room.

    The rooms are the children of each container: for the container `tunelab`, `tunelab.search`,
    `tunelab.train`, `tunelab.cli`, ... A module is private to its room when a component of its name below the
    room starts with an underscore: `tunelab.search._study`, `tunelab.search.space._parse`,
    `tunelab.search._study.x`. Any module of the room may import it, at any depth (`tunelab.search._study` may
    import `tunelab.search.space._parse`); no module outside the room may, at all (`tunelab.fused._loss` may
    not import `tunelab.train._losses`; it imports `tunelab.train` instead). Only direct imports count: an
    indirect one is a chain of direct ones, each checked. The import-linter built-in `private_modules` is
    stricter: a private module is private to its parent package, not to its room.

    Options:
        - containers: the packages whose children are rooms.
    """

    type_name = "private_rooms"

    containers = fields.ListField(subfield=fields.StringField())

    def check(self, graph: grimp.ImportGraph, verbose: bool) -> ContractCheck:
        illegal: list[dict[str, Any]] = []
        for container in self.containers:  # type: ignore[attr-defined]
            if container not in graph.modules:
                raise ValueError(f"Container '{container}' does not exist.")
            depth = container.count(".") + 1
            for imported in sorted(graph.find_descendants(container)):
                parts = imported.split(".")
                room = ".".join(parts[: depth + 1])
                if not any(_is_private(part) for part in parts[depth + 1 :]):
                    continue
                for importer in sorted(graph.find_modules_that_directly_import(imported)):
                    if importer == room or importer.startswith(room + "."):
                        continue
                    details = graph.get_import_details(importer=importer, imported=imported)
                    illegal.append(
                        {
                            "importer": importer,
                            "imported": imported,
                            "room": room,
                            "line_numbers": tuple(detail["line_number"] for detail in details),
                        }
                    )
        illegal.sort(key=lambda link: (link["importer"], link["imported"]))
        return ContractCheck(kept=not illegal, metadata={"illegal_imports": illegal})

    def render_broken_contract(self, check: ContractCheck) -> None:
        output.print_error("A private module may only be imported from within its room:", bold=False)
        output.new_line()
        for link in check.metadata["illegal_imports"]:
            lines = ", ".join(f"l.{number}" for number in link["line_numbers"])
            output.print_error(
                f"- {link['importer']} -> {link['imported']} ({lines}): private to {link['room']}", bold=False
            )
            output.new_line()
