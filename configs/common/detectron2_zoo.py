# Detectron2's own LazyConfig files (its configs/ folder), read from the installed detectron2
# package: pip installs that folder as detectron2/model_zoo/configs. Detectron2's
# model_zoo.get_config would find them too, but detectron2.model_zoo imports pkg_resources, which
# setuptools 81 and later no longer ship; loading the file by path needs only LazyConfig.
from pathlib import Path

import detectron2
from detectron2.config import LazyConfig


def detectron2_config(relative_path: str):
    """Detectron2's ``configs/<relative_path>`` (e.g. "common/models/retinanet.py"), loaded."""
    path = Path(detectron2.__file__).resolve().parent / "model_zoo" / "configs" / relative_path
    if not path.is_file():
        raise FileNotFoundError(
            f"Detectron2's config {relative_path!r} is not at {path}: this detectron2 install "
            "does not ship its configs/ folder (reinstall detectron2 with pip from its sources)"
        )
    return LazyConfig.load(str(path))
