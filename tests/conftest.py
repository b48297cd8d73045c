"""What the tests share: fixtures of models and datasets, and the rule of the ``cuda`` marker.

Fixtures that need detectron2 import it when used (``needs_detectron2``), so that the tests of
the model math still run where it is missing.
"""

from __future__ import annotations

import pytest
import torch

from dyhead_d2.benchmark.tf32 import tf32

from . import needs_detectron2


def pytest_runtest_setup(item: pytest.Item) -> None:
    # Tests marked "cuda" need a CUDA device (tools/gpu_check.py runs them on one).
    if item.get_closest_marker("cuda") and not torch.cuda.is_available():
        pytest.skip("needs a CUDA device")


@pytest.fixture(scope="module")
def monkeypatch_module():
    """``monkeypatch`` for a module-scoped fixture."""
    with pytest.MonkeyPatch.context() as mp:
        yield mp


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    """The quickstart model shrunk for the tools, with lively random weights and a checkpoint
    (``tests.tiny_quickstart.TinyModel``); ``$DETECTRON2_DATASETS`` points at its synthetic data
    while it is in use."""
    needs_detectron2()
    from .tiny_quickstart import make_tiny_model

    yield from make_tiny_model(tmp_path_factory.mktemp("tiny_quickstart"))


@pytest.fixture(scope="module")
def tiny_mask_model(tmp_path_factory):
    """The mask quickstart model (Mask R-CNN + DyHead) shrunk like ``tiny_model``, with random
    weights that detect (``tests.tiny_quickstart.make_rcnn_lively``) and a checkpoint."""
    needs_detectron2()
    from .tiny_quickstart import MASK_QUICKSTART, make_rcnn_lively, make_tiny_model

    tmp = tmp_path_factory.mktemp("tiny_mask_quickstart")
    yield from make_tiny_model(tmp, MASK_QUICKSTART, make_rcnn_lively)


@pytest.fixture
def registry():
    """Forget the datasets a test registers with Detectron2 (registration is process-wide and
    would leak into the next test)."""
    needs_detectron2()
    from detectron2.data import DatasetCatalog, MetadataCatalog

    before = set(DatasetCatalog.list())
    yield
    for name in set(DatasetCatalog.list()) - before:
        DatasetCatalog.remove(name)
        if name in MetadataCatalog:
            MetadataCatalog.remove(name)


@pytest.fixture
def train_net_module(monkeypatch, tmp_path, registry):
    """``train_net.py`` imported as a module, run from the checkout with its data under
    ``tmp_path``."""
    from .tiny_quickstart import ROOT

    monkeypatch.setenv("DETECTRON2_DATASETS", str(tmp_path / "datasets"))
    monkeypatch.syspath_prepend(str(ROOT))
    monkeypatch.chdir(ROOT)
    import train_net

    return train_net


@pytest.fixture
def tf32_off():
    """Full float32 for cuDNN convolutions and CUDA matrix products during one test, PyTorch's
    flags restored after: a CUDA-vs-CPU float32 comparison measures our code, not TF32's
    rounding (tests/test_tf32.py shows TF32 alone exceeds those tolerances)."""
    with tf32(False):
        yield
