"""A user's own data: tensors and map-style Datasets held in memory, DataLoaders streamed, image_size."""
from __future__ import annotations

import logging

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, Dataset, TensorDataset

from gradnas.config import resolve_config
from gradnas.data import StreamLoader, as_image_dataset, stream_data
from gradnas.models.saved import read_model
from gradnas.errors import GradnasError
from gradnas.search.loop import Searcher, search, search_data
from gradnas.train import resolve_train_config, train

PIXELS = torch.randint(0, 256, (40, 3, 8, 8), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
LABELS = torch.arange(40) % 4


class FloatImages(Dataset):
    """torchvision-style: (float C×H×W in [0, 1], int label) samples and a ``classes`` list."""
    classes = ["a", "b", "c", "d", "e", "f"]

    def __len__(self):
        return len(LABELS)

    def __getitem__(self, i):
        return PIXELS[i].float() / 255, int(LABELS[i])


def config(tmp_path, **kw):
    return resolve_config({"space": "nb201", "channels": 4, "layers": 1, "epochs": 1, "batch_size": 8,
                           "steps_per_epoch": 2, "progress": False, "out": str(tmp_path / "run"), **kw})


def test_datasets_and_tensors_are_held_in_memory_exactly():
    d = as_image_dataset(FloatImages())
    held = torch.arange(40) % 5 == 4  # every fifth sample is the test split
    assert torch.equal(d.x_train, PIXELS[~held]) and torch.equal(d.x_test, PIXELS[held])
    assert torch.equal(d.y_train, LABELS[~held]) and d.num_classes == 6  # from .classes
    t = as_image_dataset((PIXELS, LABELS), test=TensorDataset(PIXELS[:8], LABELS[:8]))
    assert torch.equal(t.x_train, PIXELS) and torch.equal(t.x_test, PIXELS[:8]) and t.num_classes == 4  # labels 0..3
    assert as_image_dataset(TensorDataset(PIXELS, LABELS), num_classes=10).num_classes == 10
    with pytest.raises(GradnasError, match="3 classes, but labels go up to 3"):
        as_image_dataset((PIXELS, LABELS), num_classes=3)
    with pytest.raises(GradnasError, match=r"float images must lie in \[0, 1\]"):
        as_image_dataset((PIXELS.float(), LABELS))


def test_search_and_train_on_a_tensor_dataset(tmp_path):
    result = search(config(tmp_path), dataset=TensorDataset(PIXELS, LABELS))
    assert result.model.net.classifier.out_features == 4
    trained = train(resolve_train_config({"genotype": str(tmp_path / "run"), "channels": 4, "layers": 1,
                                          "epochs": 1, "batch_size": 8, "progress": False,
                                          "out": str(tmp_path / "t")}), dataset=FloatImages())
    assert trained.model.classifier.out_features == 6 and trained.metrics["images"] == 8


def test_search_streams_a_dataloader(tmp_path):
    x = (PIXELS.float() - 128) / 64  # normalised by the user's own transform
    loader = DataLoader(TensorDataset(x, LABELS), batch_size=5)
    with pytest.raises(GradnasError, match="pass num_classes"):
        search_data(loader)
    searcher = Searcher(config(tmp_path), dataset=search_data(loader, num_classes=4))
    train_loader, val_loader = searcher.train_loader, searcher.val_loader
    assert isinstance(train_loader, StreamLoader) and len(train_loader) == len(val_loader) == 20 // 8
    seen = [torch.cat([b[0] for b in loader_]) for loader_ in (train_loader, val_loader)]
    rows = {tuple(r.flatten().tolist()) for r in x}
    assert all(tuple(r.flatten().tolist()) in rows for s in seen for r in s)  # the samples as given, unaugmented
    assert not {tuple(r.flatten().tolist()) for r in seen[0]} & {tuple(r.flatten().tolist()) for r in seen[1]}
    state = train_loader.state_dict()
    first = next(iter(train_loader))[1]
    train_loader.load_state_dict(state)
    assert torch.equal(next(iter(train_loader))[1], first)  # a resumed loader draws the same order
    history = searcher.run().history
    assert np.isfinite(history[-1]["train_loss"]) and np.isfinite(history[-1]["val_loss"])


def test_train_streams_a_dataloader_with_its_test_split(tmp_path):
    x = (PIXELS.float() - 128) / 64
    loader, test = DataLoader(TensorDataset(x, LABELS), batch_size=5), DataLoader(TensorDataset(x[:6], LABELS[:6]))
    c = resolve_train_config({"genotype": "nb201_is_darts", "channels": 4, "layers": 1, "epochs": 1, "batch_size": 8,
                              "steps_per_epoch": 2, "progress": False, "out": str(tmp_path / "t")})
    with pytest.raises(GradnasError, match="needs a test split"):
        train(c, dataset=stream_data(loader, 4))
    result = train(c, dataset=stream_data(loader, 4, test=test))
    assert result.metrics["images"] == 6 and np.isfinite(result.metrics["test_loss"])
    assert read_model(tmp_path / "t").meta["std"] == [1.0, 1.0, 1.0]  # inputs as the dataset's transform gives them


def test_image_folder_size_is_an_option_and_mixed_sizes_are_reported(tmp_path, caplog):
    from PIL import Image
    for c in range(2):
        (tmp_path / "f" / f"c{c}").mkdir(parents=True)
        for i in range(5):
            Image.new("RGB", (12 + i, 10), (40 * i, 0, 0)).save(tmp_path / "f" / f"c{c}" / f"{i}.png")
    with caplog.at_level(logging.WARNING, logger="gradnas"):
        assert Searcher(config(tmp_path, data=str(tmp_path / "f"), batch_size=2), claim=False).data.image_size == 64
    assert "images of 5 sizes (e.g. 12×10) resized to 64×64; set image_size" in caplog.text
    caplog.clear()
    searcher = Searcher(config(tmp_path, data=str(tmp_path / "f"), batch_size=2, image_size=16), claim=False)
    assert searcher.data.x_train.shape[1:] == (3, 16, 16) and "resized to 64" not in caplog.text
