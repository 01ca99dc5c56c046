"""Brendel–Bethge on both toolkits from the shared starting points: ART's port and Foolbox's original give the same
outputs, and those outputs sit on the decision boundary (the cause of success gaps between them). Slow to start:
both toolkits compile their solver with numba on first use (about 30 s each)."""

import torch

from advbridge.bridge import AttackSpec, crossval


def test_from_shared_starts_the_toolkits_agree_and_end_on_the_boundary(tiny, attack_set):
    x, y = attack_set[0][:6], attack_set[1][:6]
    report = crossval(tiny, x, y, AttackSpec("brendel_bethge", "linf", params={"steps": 20}), progress=False)
    art, foolbox = report.results["art"], report.results["foolbox"]
    assert float((art.x_adv - foolbox.x_adv).abs().max()) < 1e-6
    assert art.success.sum() >= 3 and (art.success == foolbox.success).all()
    with torch.no_grad():
        logits = tiny.pipeline(art.x_adv[torch.from_numpy(art.success)])
    true = logits.gather(1, y[torch.from_numpy(art.success)].view(-1, 1)).squeeze(1)
    others = logits.scatter(1, y[torch.from_numpy(art.success)].view(-1, 1), -1e9).max(1).values
    assert float((others - true).max()) < 1e-3  # adversarial by a hair: on the boundary
    assert not [f for f in report.flags if f.code == "success_gap"]
