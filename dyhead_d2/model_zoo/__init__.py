"""The project's LazyConfig files, found wherever the package is: :func:`get_config_file` and
:func:`get_config`, like Detectron2's ``detectron2.model_zoo``."""

from .model_zoo import configs_root, get_config, get_config_file

__all__ = ["configs_root", "get_config", "get_config_file"]
