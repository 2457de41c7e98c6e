"""Print the wheels in a folder whose distribution this Python does not have installed, one path a
line (scripts/gpu-check.sh installs those offline, with --no-deps, so that it never shadows the
image's own numpy, packaging or tqdm).

    python3 scripts/missing_wheels.py offline/wheels
"""

from __future__ import annotations

import sys
from importlib import metadata
from pathlib import Path


def dist_name(wheel: Path) -> str:
    """The distribution a wheel file holds (PEP 427: ``{name}-{version}-...whl``)."""
    return wheel.name.split("-")[0]


def missing(folder: Path) -> list[Path]:
    out = []
    for wheel in sorted(folder.glob("*.whl")):
        try:
            metadata.distribution(dist_name(wheel))
        except metadata.PackageNotFoundError:
            out.append(wheel)
    return out


if __name__ == "__main__":
    for path in missing(Path(sys.argv[1])):
        print(path)
