"""Where scenes live on disk, and the one error type for a user's bad dataset.

A scene name is looked up under one data root: the ``--data-dir`` flag (``data_dir``), else
``$TAICHI_NERF_DATA``, else ``./data``. Under that root both ``<root>/<scene>`` and
``<root>/nerf_synthetic/<scene>`` are tried, so pointing the root at the folder that holds the
unzipped ``nerf_synthetic`` works, and so does pointing it at ``nerf_synthetic`` itself. The
scene ``demo`` is generated on first use under ``<root>/demo``.

Three layouts are recognised (``scene_format``): Blender (``transforms_train.json``),
instant-ngp / nerfstudio (one ``transforms.json``) and COLMAP (``sparse/0/`` or ``sparse/``
holding a model, images under ``images/``).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

__all__ = [
    "DatasetError",
    "DATA_ENV_VAR",
    "NERF_SYNTHETIC_URL",
    "NERF_EXAMPLE_DATA_URL",
    "data_root",
    "find_scene",
    "read_json",
    "scene_format",
    "colmap_model_dir",
]

#: Environment variable naming the data root when ``--data-dir`` is not given.
DATA_ENV_VAR = "TAICHI_NERF_DATA"
#: The NeRF authors' Google Drive folder; ``nerf_synthetic.zip`` holds all eight Blender scenes.
NERF_SYNTHETIC_URL = "https://drive.google.com/drive/folders/128yBriW1IG_3NJ5Rp7APSTZsJqdJdfc1"
#: Smaller archive from the NeRF project page with ``nerf_synthetic/lego`` (and LLFF fern).
NERF_EXAMPLE_DATA_URL = (
    "http://cseweb.ucsd.edu/~viscomp/projects/LF/papers/ECCV20/nerf/nerf_example_data.zip"
)

BLENDER_MARKER = "transforms_train.json"
TRANSFORMS_MARKER = "transforms.json"
#: Where a COLMAP model is looked for, in order: the mapper's first model, then the folder
#: ``colmap image_undistorter`` writes.
COLMAP_MODEL_DIRS = ("sparse/0", "sparse")
COLMAP_IMAGES_DIR = "images"


class DatasetError(ValueError):
    """A dataset on disk is missing or malformed; the message names the file and the problem."""


def data_root(data_dir: str | os.PathLike | None = None) -> Path:
    """The data root: ``data_dir`` if given, else ``$TAICHI_NERF_DATA``, else ``./data``."""
    if data_dir is not None and str(data_dir) != "":
        return Path(data_dir).expanduser()
    env = os.environ.get(DATA_ENV_VAR, "")
    if env:
        return Path(env).expanduser()
    return Path("data")


def colmap_model_dir(scene_dir: Path) -> Path | None:
    """The COLMAP model folder of a capture (``sparse/0`` or ``sparse`` with a ``cameras.bin``
    or ``cameras.txt``), or None."""
    for name in COLMAP_MODEL_DIRS:
        folder = Path(scene_dir) / name
        if (folder / "cameras.bin").is_file() or (folder / "cameras.txt").is_file():
            return folder
    return None


def scene_format(scene_dir: Path) -> str | None:
    """``"blender"`` (``transforms_train.json``), ``"transforms"`` (``transforms.json``),
    ``"colmap"`` (a ``sparse/`` or ``images/`` folder: a COLMAP capture, maybe incomplete, which
    the COLMAP loader then explains) or None."""
    scene_dir = Path(scene_dir)
    if (scene_dir / BLENDER_MARKER).is_file():
        return "blender"
    if (scene_dir / TRANSFORMS_MARKER).is_file():
        return "transforms"
    if (scene_dir / "sparse").is_dir() or (scene_dir / COLMAP_IMAGES_DIR).is_dir():
        return "colmap"
    return None


def _looks_like_path(scene: str) -> bool:
    return os.path.isabs(scene) or "/" in scene or os.sep in scene or scene.startswith(("~", "."))


def find_scene(scene: str, data_dir: str | os.PathLike | None = None) -> Path:
    """Folder of a scene, by name under the data root or by path.

    Args:
        scene: a scene name (``lego``, ``demo``, or a folder under the root), or a path to a
            scene folder (anything with a ``/``, absolute, or starting with ``.`` or ``~``).
        data_dir: the data root (the ``--data-dir`` flag); None falls back to
            ``$TAICHI_NERF_DATA`` and then ``./data``.

    Returns:
        The scene folder: it holds ``transforms_train.json`` (Blender layout), a single
        ``transforms.json`` (instant-ngp / nerfstudio layout) or a COLMAP ``sparse/`` model
        with ``images/``.

    Raises:
        DatasetError: the scene is not found; the message lists every folder tried and how to
            get the dataset and point at it.
    """
    root = data_root(data_dir)
    if scene == "demo":
        from taichi_nerf.data.demo import ensure_demo_scene

        return Path(ensure_demo_scene(root))

    if _looks_like_path(scene):
        candidates = [Path(scene).expanduser()]
    else:
        candidates = [root / scene, root / "nerf_synthetic" / scene]
    tried = []
    for candidate in (c.absolute() for c in candidates):
        if candidate.is_dir() and scene_format(candidate) is not None:
            return candidate
        if candidate.is_dir():
            tried.append(
                f"{candidate} (exists, but has no {BLENDER_MARKER}, {TRANSFORMS_MARKER} or "
                "COLMAP sparse/0)"
            )
        else:
            tried.append(f"{candidate} (no such folder)")

    if data_dir is not None and str(data_dir) != "":
        root_from = "--data-dir"
    elif os.environ.get(DATA_ENV_VAR):
        root_from = f"${DATA_ENV_VAR}"
    else:
        root_from = "the default ./data"
    raise DatasetError(
        f"scene {scene!r} not found; looked in: {'; '.join(tried)} "
        f"(data root {root.absolute()} from {root_from}). "
        f"Get nerf_synthetic from {NERF_SYNTHETIC_URL} (nerf_synthetic.zip) or lego alone from "
        f"{NERF_EXAMPLE_DATA_URL}, unzip it, then pass --data-dir /path/to/folder_with_"
        f"nerf_synthetic or set {DATA_ENV_VAR}=/path/to/folder_with_nerf_synthetic; "
        "or use the built-in scene 'demo'."
    )


def read_json(path: Path) -> dict[str, Any]:
    """Parse a JSON object from ``path``; any problem is a ``DatasetError`` naming the file."""
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"{path}: file not found")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise DatasetError(f"{path}: cannot read ({exc})") from None
    try:
        meta = json.loads(text)
    except json.JSONDecodeError as exc:
        raise DatasetError(
            f"{path}: malformed JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}"
        ) from None
    if not isinstance(meta, dict):
        raise DatasetError(
            f"{path}: expected a JSON object at the top level, got {type(meta).__name__}"
        )
    return meta
