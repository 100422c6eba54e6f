"""Finding the image groups of a fusion test set: folder layouts and manifests.

Folder layouts (those of the authors' release, ``datasets/`` of IFCNN's ``Code``),
recognised by file name in every folder, recursively:

* ``NAME-A.ext``, ``NAME-B.ext`` [, ``NAME-C.ext`` ...]: one group ``NAME``, sources in
  letter order (CMFDataset's Lytro pairs and its ``Triple Series``).
* ``NAME_Vis.ext`` and ``NAME_IR.ext``: one group ``NAME``, visible first, as the
  authors' demo fuses them (IVDataset).
* ``NAME_1.ext``, ``NAME_2.ext`` [...]: one group ``NAME`` in number order (MDDataset's
  ``cNN_1.tif``/``cNN_2.tif``). Images that fit no pattern beside such groups, like
  MDDataset's ``010_CT.tif`` slices, are skipped and listed in ``ImageSet.skipped``.
* A folder holding only unpatterned images is one group named after the folder, its
  images sorted by name with numbers in numeric order (MEDataset's sequences).

Group names are relative to the root (``Triple Series/lytro-01``; with the
``datasets`` folder as root, ``CMFDataset/lytro-01``), so they are unique and say where
a fused result goes: :func:`fused_image_path` reads ``FUSED_DIR/<name>.<ext>``.

The task of a group comes from the nearest folder named like a release set
(CMFDataset: multifocus, IVDataset: infrared, MDDataset: medical, MEDataset: exposure),
else from its pattern (``-A/-B``: multifocus, ``_Vis/_IR``: infrared), else it is
unknown (``None``), and an explicit task overrides all.

Manifests (``manifest.csv`` or ``manifest.json`` in the folder, or the file itself)
list groups explicitly; paths are relative to the manifest's folder:

* CSV with a header row: ``name``, ``task``, ``source1``, ``source2``, ... (any column
  whose name starts with ``source``, in the header's order), ``fused``, ``reference``.
  Only two source columns are required; empty cells are ignored; ``name`` defaults to
  the first source's file stem.
* JSON: ``{"groups": [{"name": ..., "task": ..., "sources": [...], "fused": ...,
  "reference": ...}, ...]}`` (or the bare list), with the same optional keys.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import re
from collections import defaultdict
from collections.abc import Iterable
from pathlib import Path

from ifcnn_jax.errors import IFCNNError
from ifcnn_jax.io.images import IMAGE_SUFFIXES, is_image_path
from ifcnn_jax.tasks import TASKS

TASK_BY_FOLDER: dict[str, str] = {
    "CMFDataset": "multifocus",
    "IVDataset": "infrared",
    "MDDataset": "medical",
    "MEDataset": "exposure",
}
MANIFEST_NAMES: tuple[str, ...] = ("manifest.json", "manifest.csv")

_LETTERED = re.compile(r"^(?P<name>.+)-(?P<tag>[A-Za-z])$")
_VISIBLE_INFRARED = re.compile(r"^(?P<name>.+)_(?P<tag>vis|ir)$", re.IGNORECASE)
_NUMBERED = re.compile(r"^(?P<name>.+)_(?P<tag>\d+)$")


@dataclasses.dataclass(frozen=True)
class ImageGroup:
    """Registered source images fused together, with optional fused/ground-truth files.

    ``name``: unique within the set, '/'-separated; ``task``: one of ``TASKS`` or None
    (unknown); ``collection``: the folder (relative to the root) the group came from,
    used to split reports ("" for the root itself).
    """

    name: str
    sources: tuple[Path, ...]
    task: str | None = None
    collection: str = ""
    fused: Path | None = None
    reference: Path | None = None


@dataclasses.dataclass(frozen=True)
class ImageSet:
    """The groups of a test set, in a stable order, and the images that fit no group."""

    root: Path
    groups: tuple[ImageGroup, ...]
    skipped: tuple[Path, ...] = ()

    def collections(self) -> list[str]:
        """Collection names in order of first appearance."""
        return list(dict.fromkeys(g.collection for g in self.groups))


def natural_key(text: str) -> list:
    """Sort key with digit runs compared as numbers: ``img2`` before ``img10``."""
    return [int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", text)]


def find_groups(root: str | Path, task: str | None = None) -> ImageSet:
    """Finds the image groups under ``root`` (a folder or a manifest file).

    ``task`` overrides the task of every group. Raises ``IFCNNError`` for a missing
    root, an incomplete group (``NAME-A`` without ``NAME-B``, ``NAME_Vis`` without
    ``NAME_IR``), a bad manifest, or a root with no groups.
    """
    if task is not None and task not in TASKS:
        raise IFCNNError(f"unknown task {task!r}; choose one of {', '.join(TASKS)}")
    root = Path(root)
    if not root.exists():
        raise IFCNNError(f"{root}: no such test-set folder or manifest")
    if root.is_file():
        return read_manifest(root, task)
    for name in MANIFEST_NAMES:
        if (root / name).is_file():
            return read_manifest(root / name, task)
    groups: list[ImageGroup] = []
    skipped: list[Path] = []
    # A sequence folder inside MEDataset is still exposure: look at the parents too.
    inherited = next(
        (
            TASK_BY_FOLDER[p.name]
            for p in [root.resolve(), *root.resolve().parents]
            if p.name in TASK_BY_FOLDER
        ),
        None,
    )
    _scan(root, root, inherited, groups, skipped)
    if not groups:
        raise IFCNNError(
            f"{root}: found no image groups (NAME-A/NAME-B, NAME_Vis/NAME_IR, "
            "NAME_1/NAME_2, or a folder per sequence; or a manifest.csv/json)"
        )
    if task is not None:
        groups = [dataclasses.replace(g, task=task) for g in groups]
    return ImageSet(root, tuple(groups), tuple(skipped))


def _images_in(folder: Path) -> list[Path]:
    return sorted(
        (p for p in folder.iterdir() if p.is_file() and not p.name.startswith(".") and is_image_path(p)),
        key=lambda p: natural_key(p.name),
    )


def _scan(
    root: Path, folder: Path, folder_task: str | None, groups: list[ImageGroup], skipped: list[Path]
) -> None:
    collection = folder.relative_to(root).as_posix()
    collection = "" if collection == "." else collection
    images = _images_in(folder)
    subfolders = sorted(
        (p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")),
        key=lambda p: natural_key(p.name),
    )
    found, leftovers = _pattern_groups(images)
    if found:
        for name, (pattern_task, paths) in found.items():
            full_name = f"{collection}/{name}" if collection else name
            groups.append(ImageGroup(full_name, tuple(paths), folder_task or pattern_task, collection))
        skipped.extend(leftovers)
    elif len(images) >= 2 and not subfolders:
        # A folder of unpatterned images is one sequence (an exposure stack).
        name = collection or folder.name
        parent = Path(collection).parent.as_posix() if collection else ""
        groups.append(ImageGroup(name, tuple(images), folder_task, "" if parent == "." else parent))
    else:
        skipped.extend(images)
    for sub in subfolders:
        _scan(root, sub, TASK_BY_FOLDER.get(sub.name, folder_task), groups, skipped)


def _pattern_groups(images: list[Path]) -> tuple[dict[str, tuple[str | None, list[Path]]], list[Path]]:
    """Groups files by the three naming patterns; returns (groups, leftover files)."""
    lettered: dict[str, dict[str, Path]] = defaultdict(dict)
    visible_infrared: dict[str, dict[str, Path]] = defaultdict(dict)
    numbered: dict[str, dict[int, Path]] = defaultdict(dict)
    leftovers: list[Path] = []
    for path in images:
        stem = path.stem
        for pattern, table, tag_of in (
            (_LETTERED, lettered, str.upper),
            (_VISIBLE_INFRARED, visible_infrared, str.lower),
            (_NUMBERED, numbered, int),
        ):
            match = pattern.match(stem)
            if match:
                tag = tag_of(match.group("tag"))
                if tag in table[match.group("name")]:
                    raise IFCNNError(
                        f"{path}: two source files for {match.group('name')!r} "
                        f"with tag {match.group('tag')!r} "
                        f"({table[match.group('name')][tag].name} and {path.name})"
                    )
                table[match.group("name")][tag] = path
                break
        else:
            leftovers.append(path)

    groups: dict[str, tuple[str | None, list[Path]]] = {}
    for name, members in lettered.items():
        tags = sorted(members)
        # Letters must run A, B, ... without a gap, and there must be at least two.
        wanted = [chr(ord("A") + i) for i in range(max(len(tags), 2))]
        missing = [t for t in wanted if t not in members]
        if missing:
            raise IFCNNError(
                f"{members[tags[0]]}: no matching {name}-{missing[0]}.* beside it "
                "(sources are NAME-A, NAME-B, ...)"
            )
        groups[name] = ("multifocus", [members[t] for t in tags])
    for name, members in visible_infrared.items():
        for needed in ("vis", "ir"):
            if needed not in members:
                other = next(iter(members.values()))
                raise IFCNNError(
                    f"{other}: no matching {name}_{'Vis' if needed == 'vis' else 'IR'}"
                    ".* beside it (pairs are NAME_Vis and NAME_IR)"
                )
        groups[_unique(name, groups)] = ("infrared", [members["vis"], members["ir"]])
    for name, members in numbered.items():
        if len(members) < 2:
            leftovers.extend(members.values())  # a lone NAME_1 is not a group
            continue
        groups[_unique(name, groups)] = (None, [members[i] for i in sorted(members)])
    leftovers.sort(key=lambda p: natural_key(p.name))
    return dict(sorted(groups.items(), key=lambda item: natural_key(item[0]))), leftovers


def _unique(name: str, taken: Iterable[str]) -> str:
    if name in taken:
        raise IFCNNError(f"two groups named {name!r} in one folder (different naming patterns)")
    return name


def read_manifest(path: Path, task: str | None = None) -> ImageSet:
    """Reads a CSV or JSON manifest (see the module docstring)."""
    if path.suffix.lower() == ".json":
        entries = _json_entries(path)
    elif path.suffix.lower() == ".csv":
        entries = _csv_entries(path)
    else:
        raise IFCNNError(f"{path}: a manifest must be .csv or .json")
    base = path.parent
    groups: list[ImageGroup] = []
    seen: dict[str, str] = {}
    for where, entry in entries:
        sources = [_manifest_path(base, s, where) for s in entry.get("sources", []) if s]
        if len(sources) < 2:
            raise IFCNNError(f"{where}: a group needs at least 2 sources, got {len(sources)}")
        name = (entry.get("name") or "").strip() or sources[0].stem
        parts = name.replace("\\", "/").split("/")
        if name.startswith("/") or any(part in ("", ".", "..") for part in parts):
            # Names become output paths (OUT/fused/<name>.png): none may leave OUT.
            raise IFCNNError(
                f"{where}: group name {name!r} must be a relative name without '.', '..' or empty parts"
            )
        if name in seen:
            raise IFCNNError(f"{where}: group name {name!r} already used at {seen[name]}")
        seen[name] = where
        group_task = task or (entry.get("task") or "").strip() or None
        if group_task is not None and group_task not in TASKS:
            raise IFCNNError(f"{where}: unknown task {group_task!r}; choose one of {', '.join(TASKS)}")
        fused = entry.get("fused")
        reference = entry.get("reference")
        groups.append(
            ImageGroup(
                name,
                tuple(sources),
                group_task,
                "",
                _manifest_path(base, fused, where) if fused else None,
                _manifest_path(base, reference, where) if reference else None,
            )
        )
    if not groups:
        raise IFCNNError(f"{path}: the manifest lists no groups")
    return ImageSet(base, tuple(groups))


def _manifest_path(base: Path, value: object, where: str) -> Path:
    if not isinstance(value, str):
        raise IFCNNError(f"{where}: paths must be strings, got {value!r}")
    path = Path(value.strip())
    path = path if path.is_absolute() else base / path
    if not path.is_file():
        raise IFCNNError(f"{where}: {path}: no such file")
    return path


def _json_entries(path: Path) -> list[tuple[str, dict]]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise IFCNNError(f"{path}: not a readable JSON manifest ({exc})") from exc
    groups = data.get("groups") if isinstance(data, dict) else data
    if not isinstance(groups, list):
        raise IFCNNError(f'{path}: expected {{"groups": [...]}} or a list of groups')
    entries = []
    for i, entry in enumerate(groups):
        where = f"{path} group {i + 1}"
        if not isinstance(entry, dict):
            raise IFCNNError(f'{where}: each group must be an object with "sources"')
        unknown = set(entry) - {"name", "task", "sources", "fused", "reference"}
        if unknown:
            raise IFCNNError(f"{where}: unknown keys {', '.join(sorted(unknown))}")
        if not isinstance(entry.get("sources"), list):
            raise IFCNNError(f'{where}: "sources" must be a list of paths')
        entries.append((where, entry))
    return entries


def _csv_entries(path: Path) -> list[tuple[str, dict]]:
    try:
        with path.open(newline="", encoding="utf-8") as f:
            rows = list(csv.reader(f))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise IFCNNError(f"{path}: not a readable CSV manifest ({exc})") from exc
    if not rows:
        raise IFCNNError(f"{path}: empty manifest")
    header = [h.strip().lower() for h in rows[0]]
    source_columns = [i for i, h in enumerate(header) if h.startswith("source")]
    known = {"name", "task", "fused", "reference"}
    unknown = [h for h in header if h not in known and not h.startswith("source")]
    if unknown:
        raise IFCNNError(
            f"{path}: unknown columns {', '.join(unknown)} (use name, task, "
            "source1, source2, ..., fused, reference)"
        )
    if len(source_columns) < 2:
        raise IFCNNError(f"{path}: the header needs at least two source columns (source1, source2)")
    entries = []
    for line, row in enumerate(rows[1:], start=2):
        if not any(cell.strip() for cell in row):
            continue
        where = f"{path} line {line}"
        if len(row) > len(header):
            raise IFCNNError(f"{where}: {len(row)} cells but the header has {len(header)}")
        cells = {h: (row[i].strip() if i < len(row) else "") for i, h in enumerate(header)}
        entry = {key: cells.get(key, "") for key in known}
        entry["sources"] = [row[i].strip() for i in source_columns if i < len(row) and row[i].strip()]
        entries.append((where, entry))
    return entries


def fused_image_path(fused_dir: str | Path, group: ImageGroup) -> Path:
    """The fused result of ``group`` in ``fused_dir``: ``<fused_dir>/<group.name>.<ext>``.

    Any image suffix this package reads is accepted (``.png`` first). Raises
    ``IFCNNError`` naming the expected file when there is none, or when two files
    (say ``.png`` and ``.jpg``) would both match.
    """
    base = Path(fused_dir) / group.name
    found = [
        base.with_name(base.name + suffix)
        for suffix in IMAGE_SUFFIXES
        if base.with_name(base.name + suffix).is_file()
    ]
    if not found:
        raise IFCNNError(
            f"no fused image for group {group.name!r}: expected "
            f"{base}.png (or {', '.join(s for s in IMAGE_SUFFIXES[1:4])}, ...)"
        )
    if len(found) > 1:
        raise IFCNNError(
            f"several fused images for group {group.name!r}: {', '.join(p.name for p in found)}; keep one"
        )
    return found[0]
