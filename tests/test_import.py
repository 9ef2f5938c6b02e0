"""`import flaxtrain` is cheap and changes nothing."""

import subprocess
import sys
import time


def test_import_is_light_and_fast():
    code = (
        "import sys, time; t = time.perf_counter(); import flaxtrain; t = time.perf_counter() - t; "
        "print(t, 'tensorflow' in sys.modules, 'jax' in sys.modules)"
    )
    start = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out[1] == "False", "import flaxtrain imported TensorFlow"
    assert float(out[0]) < 2.0
    assert time.perf_counter() - start < 10


def test_text_namespace_does_not_import_tensorflow():
    code = "import sys, flaxtrain.text; print('tensorflow' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out[-1] == "False"
