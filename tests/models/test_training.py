"""An MLP from build_model learns: scikit-learn's digits, full-batch Adam, a few hundred steps."""

from __future__ import annotations

import torch
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

from tunelab.models import MLPSpec, build_model


def test_mlp_fits_digits_training_part():
    features, labels = load_digits(return_X_y=True)
    x_train, _, y_train, _ = train_test_split(
        features, labels, test_size=0.3, stratify=labels, random_state=0
    )
    x = torch.as_tensor(x_train / 16.0, dtype=torch.float32)  # pixel intensities are 0..16
    y = torch.as_tensor(y_train)
    model = build_model(MLPSpec(hidden=[64], init="he_normal"), input_shape=(64,), output_dim=10, seed=0)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    accuracy_before = (model(x).argmax(dim=1) == y).float().mean().item()
    for _ in range(200):
        optimizer.zero_grad()
        loss = torch.nn.functional.cross_entropy(model(x), y)
        loss.backward()
        optimizer.step()
    model.eval()
    with torch.no_grad():
        accuracy = (model(x).argmax(dim=1) == y).float().mean().item()
    assert accuracy_before < 0.3
    assert accuracy > 0.9
