"""Class imbalance: on a deliberately imbalanced split, class weights and the balanced
sampler raise the recall of the rare class."""

import torch

import imgcls
from imgcls.data.sources import Source, load_source
from imgcls.metrics import classification_report

FAST = dict(precision="fp32", channels_last="no", progress=False, log=lambda _: None,
            epochs=3, batch_size=64, val_split=0.0, data="imbalanced-digits",
            model="seed_torch_cnn")
RARE = 3


def imbalanced_source():
    d = load_source("digits")
    keep = torch.ones(len(d.train), dtype=torch.bool)
    rare = torch.nonzero(d.train.labels == RARE).flatten()
    keep[rare[6:]] = False  # 6 images of the rare class against about 145 of every other
    return Source("imbalanced-digits", d.train.subset(torch.nonzero(keep).flatten()), d.test)


def rare_recall(run):
    clf = imgcls.load(run.path)
    test = load_source("digits").test
    x = clf.preprocess.normalize(test.images)
    with torch.no_grad():
        logits = clf.model(x)
    return classification_report(logits, test.labels, clf.classes)["per_class"][RARE]["recall"]


def test_class_weights_and_balanced_sampler_raise_rare_recall(tmp_path):
    plain = rare_recall(imgcls.train(source=imbalanced_source(), out=str(tmp_path),
                                     class_weights="none", **FAST))
    weighted = rare_recall(imgcls.train(source=imbalanced_source(), out=str(tmp_path),
                                        class_weights="auto", **FAST))
    balanced = rare_recall(imgcls.train(source=imbalanced_source(), out=str(tmp_path),
                                        class_weights="none", sampler="balanced", **FAST))
    assert weighted > plain + 0.1, (plain, weighted)
    assert balanced > plain + 0.1, (plain, balanced)


def test_data_info_warns_about_imbalance():
    from imgcls.data.info import describe

    info = describe(imbalanced_source())
    assert info["imbalance_ratio"] > 20 and "class imbalance" in info["warning"]
