"""tools/compare_resize.py: per-image Pillow vs OpenCV pixel differences."""

import numpy as np
import pytest

from . import needs_detectron2  # noqa: E402

needs_detectron2()

from PIL import Image  # noqa: E402

from .tool_entry import load_tool  # noqa: E402


@pytest.fixture(scope="module")
def tool():
    return load_tool("compare_resize")


def test_prints_each_image_and_size(tool, tmp_path, capsys):
    # Columns 0, 0, 100, 100 shrunk to half: OpenCV gives 0 / 100, Pillow 14 / 86 (see
    # test_cv2_resize): every value differs by 14. Enlarged x2 they differ by at most 1.
    img = np.array([[0, 0, 100, 100]] * 4, dtype=np.uint8)[:, :, None].repeat(3, axis=2)
    path = tmp_path / "steps.png"
    Image.fromarray(img).save(path)
    assert tool.main(["--images", str(path), "--short-edge", "2", "8"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["image", "size", "short_edge", "scale", "max", "mean", ">1", ">4"]
    shrink = lines[1].split()
    assert shrink[:5] == ["steps.png", "4x4", "2", "0.500", "14"]
    assert shrink[5:] == ["14.000", "100.00%", "100.000%"]
    enlarge = lines[2].split()
    assert enlarge[:4] == ["steps.png", "4x4", "8", "2.000"] and int(enlarge[4]) <= 1


def test_needs_something_to_do(tool):
    with pytest.raises(SystemExit):
        tool.main([])
