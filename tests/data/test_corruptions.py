import torch

from prefalign.data.corruptions import GaussianNoise, NoCorruption, gaussian_noise


def test_noise_is_a_function_of_seed_and_index_only():
    full = gaussian_noise(torch.arange(50), (1, 28, 28), seed=3)
    subset = gaussian_noise(torch.tensor([41, 7, 7]), (1, 28, 28), seed=3)
    assert torch.equal(subset[0], full[41]) and torch.equal(subset[1], full[7]) and torch.equal(subset[2], full[7])
    assert not torch.equal(gaussian_noise(torch.arange(50), (1, 28, 28), seed=4), full)
    assert not torch.equal(full[0], full[1])


def test_noise_is_standard_normal():
    z = gaussian_noise(torch.arange(2000), (1, 28, 28), seed=0)
    assert abs(z.mean().item()) < 0.01
    assert abs(z.std().item() - 1.0) < 0.01
    assert 0.002 < (z.abs() > 3).float().mean().item() < 0.0035  # two-sided 3-sigma tail ≈ 0.0027


def test_seed_recipe_adds_scaled_noise_and_clips():
    images = torch.full((4, 1, 28, 28), 0.5)
    keys = torch.arange(4)
    noisy = GaussianNoise(factor=0.5, seed=1).corrupt(images, keys)
    expected = (images + 0.5 * gaussian_noise(keys, (1, 28, 28), 1)).clamp(0, 1)
    assert torch.equal(noisy, expected)
    assert noisy.min() >= 0 and noisy.max() <= 1
    assert torch.equal(GaussianNoise(factor=0.0).corrupt(images, keys), images)
    assert torch.equal(NoCorruption().corrupt(images, keys), images)


def test_fingerprint_changes_with_parameters():
    assert GaussianNoise(0.5, 0).fingerprint() != GaussianNoise(0.5, 1).fingerprint()
    assert GaussianNoise(0.5, 0).fingerprint() != GaussianNoise(0.4, 0).fingerprint()
