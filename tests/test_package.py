"""The package imports without detectron2 and explains how to get it when a part needs it."""

import subprocess
import sys
import textwrap

# Runs in a fresh interpreter where importing detectron2 fails, as on a machine without it.
_WITHOUT_DETECTRON2 = textwrap.dedent(
    """
    import sys
    sys.modules["detectron2"] = None  # makes `import detectron2` raise ImportError
    import dyhead_d2
    from dyhead_d2 import DyHead, DyHeadBlock, DyReLU
    import dyhead_d2.layers
    assert not any(m.startswith("detectron2") and sys.modules[m] for m in sys.modules)
    for attempt in ("dyhead_d2.ATSS", "import dyhead_d2.modeling"):
        try:
            exec(attempt if attempt.startswith("import") else "x = " + attempt)
        except ImportError as e:
            msg = str(e)
            assert "detectron2" in msg and "pip install" in msg, msg
        else:
            raise AssertionError(attempt + " should need detectron2")
    print("ok")
    """
)


def test_imports_without_detectron2():
    out = subprocess.run(
        [sys.executable, "-c", _WITHOUT_DETECTRON2], capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"


def test_unknown_attribute():
    import pytest

    import dyhead_d2

    with pytest.raises(AttributeError, match="no attribute 'Nope'"):
        dyhead_d2.Nope  # noqa: B018


def test_install_hint_is_a_command_that_works():
    """detectron2's setup.py imports torch: pip's isolated build environment has none, so the
    install command must turn build isolation off (as detectron2's install guide does)."""
    code = (
        "import sys\n"
        "sys.modules['detectron2'] = None\n"
        "from dyhead_d2._detectron2 import require_detectron2\n"
        "try:\n"
        "    require_detectron2('the feature')\n"
        "except ImportError as e:\n"
        "    print(e)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    message = out.stdout.strip()
    assert message.startswith("the feature needs detectron2, which is not installed.")
    assert (
        "python -m pip install --no-build-isolation "
        "'git+https://github.com/facebookresearch/detectron2.git'" in message
    ), message
