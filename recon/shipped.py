"""The configs recon ships: ``configs/`` of the repository, installed with the package as ``recon/configs``.

``recon`` reads ``configs/default.yaml`` under every ``-c`` file; from a folder without one, it reads the copy
shipped here, so that ``recon fit`` trains the same recipe from any folder.
"""

from __future__ import annotations

from pathlib import Path

DEFAULT_CONFIG = "configs/default.yaml"  # the main job's recipe: the working folder's, else the one recon ships


def shipped_config(relative: str | Path) -> Path | None:
    """The file (or folder) ``configs/…`` (``relative``) as recon ships it, where it exists: installed with the
    package (``recon/configs``), or in the source checkout the package runs from (an editable install)."""
    name = Path(relative)
    if name.is_absolute() or name.parts[:1] != ("configs",):
        return None
    package = Path(__file__).resolve().parent
    checkout = package.parent
    for folder in (package, checkout if (checkout / "pyproject.toml").is_file() else None):
        if folder is not None and (folder / name).exists():
            return folder / name
    return None


def default_config() -> str:
    """The recipe ``recon`` reads under every ``-c`` file: ``configs/default.yaml`` of the working folder (the
    repository's root, or a project's own copy), else the one recon ships, so that ``recon fit`` trains the same
    recipe from any folder (its relative paths, ``data/`` and ``runs/``, stay relative to the working folder)."""
    if Path(DEFAULT_CONFIG).is_file():
        return DEFAULT_CONFIG
    shipped = shipped_config(DEFAULT_CONFIG)
    return str(shipped) if shipped else DEFAULT_CONFIG


def shipped_hint(path: str | Path) -> str:
    """For a ``configs/…`` file missing from the working folder that recon ships: where recon's copy is ("" if
    recon ships no such file)."""
    path = Path(path)
    try:
        relative = path.relative_to(Path.cwd()) if path.is_absolute() else path
    except ValueError:
        return ""
    shipped = shipped_config(relative)
    if not shipped:
        return ""
    return f"; recon ships {relative} as {shipped}: give that path, or run from the repository's root"
