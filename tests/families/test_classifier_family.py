"""The classifier family: label responses, one forward per image, and PPO-lite numbers equal to the label-only formula."""

import torch
import torch.nn.functional as F

from prefalign.families.classifier import ClassifierFamily
from prefalign.models import SeedCNN
from prefalign.objectives import PPOLite, exact_kl, group_advantages


def test_rollout_samples_k_labels_per_image_from_the_policy():
    torch.manual_seed(0)
    model, x, y = SeedCNN(channels=2), torch.rand(5, 1, 28, 28), torch.arange(5)
    torch.manual_seed(7)
    rollout = ClassifierFamily().rollout(model, {"x": x, "y": y}, k=6)
    full = F.log_softmax(model(x), dim=1)
    torch.manual_seed(7)
    expected = torch.multinomial(full.exp(), 6, replacement=True)
    assert rollout.responses.shape == (5, 6, 1) and torch.equal(rollout.responses[..., 0], expected)
    assert rollout.mask.all() and torch.allclose(rollout.old_logps[..., 0], full.gather(1, expected))
    assert torch.equal(rollout.batch["y"], y)


def test_ppo_loss_on_labels_equals_the_label_formula():
    """Mean clipped surrogate over the B·k samples plus kl_coef × mean exact KL per image (the pre-seam formula)."""
    torch.manual_seed(0)
    policy, reference = SeedCNN(channels=2), SeedCNN(channels=2)
    x, y = torch.rand(4, 1, 28, 28), torch.tensor([0, 1, 2, 3])
    family, ppo = ClassifierFamily(), PPOLite(k=5, clip_eps=0.2, kl_coef=0.3)
    rollout = family.rollout(reference, {"x": x, "y": y}, ppo.k)  # sampled by another model: ratios != 1
    adv = group_advantages(ppo.reward(rollout))
    new, ref = family.response_logps(policy, rollout), family.response_logps(reference, rollout)
    out = ppo.loss(new.tokens, rollout.old_logps, adv, rollout.mask, ref.tokens, exact_kl(new.dist, ref.dist))

    full_new, full_ref = F.log_softmax(policy(x), 1), F.log_softmax(reference(x), 1)
    ratio = (full_new.gather(1, rollout.responses[..., 0]) - rollout.old_logps[..., 0]).exp()
    surrogate = torch.min(ratio * adv, ratio.clamp(0.8, 1.2) * adv).mean()
    kl_per_image = (full_new.exp() * (full_new - full_ref)).sum(1)
    expected = -surrogate + 0.3 * kl_per_image.mean()
    torch.testing.assert_close(out.loss, expected, rtol=1e-5, atol=1e-6)
    assert (ratio - 1).abs().max() > 0.01  # the check above is not the trivial on-policy case
