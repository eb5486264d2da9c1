"""utils.training: the shared classifier loop learns, repeats itself exactly, and checks its input."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from utils.training import (
    accuracy,
    ramped_cosine_schedule,
    train_classifier,
    update,
    warmup_then_constant_schedule,
    warmup_then_cosine,
    warmup_then_cosine_schedule,
)


def toy_problem(n: int = 256) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(n, 1, 2, 2, generator=gen)
    y = (x.flatten(1).sum(1) > 0).long()  # linearly separable
    return x, y


def model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(4, 2))


def test_learns_a_separable_problem() -> None:
    x, y = toy_problem()
    net = model()
    before = accuracy(net, x, y)
    history = train_classifier(net, x, y, epochs=5, batch_size=32, lr=0.1, eval_data=(x, y), show_progress=False)
    assert history.eval_accuracy[-1] > 0.95 > before
    assert len(history.step_loss) == 5 * 8 and len(history.train_accuracy) == 5
    assert history.step_loss[-1] < history.step_loss[0]


def test_same_seed_same_weights() -> None:
    x, y = toy_problem()
    a, b = model(), model()
    train_classifier(a, x, y, epochs=2, seed=3, show_progress=False)
    train_classifier(b, x, y, epochs=2, seed=3, show_progress=False)
    for p, q in zip(a.parameters(), b.parameters()):
        assert torch.equal(p, q)


def test_schedule_warms_up_then_decays_to_zero() -> None:
    values = [warmup_then_cosine(s, total=100, warmup=10) for s in range(100)]
    assert values[0] == pytest.approx(0.1) and values[9] == pytest.approx(1.0)
    assert values[10] == pytest.approx(1.0) and values[-1] < 0.01
    assert all(a >= b for a, b in zip(values[10:], values[11:]))


def test_mismatched_lengths_are_refused() -> None:
    x, y = toy_problem()
    with pytest.raises(ValueError, match="256 images but 10 labels"):
        train_classifier(model(), x, y[:10], epochs=1, show_progress=False)


def multipliers(make_schedule, steps: int) -> list[float]:
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    schedule, values = make_schedule(optimizer), []
    for _ in range(steps):
        values.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        schedule.step()
    return values


def test_the_three_schedules_have_the_curves_their_names_say() -> None:
    then_cosine = multipliers(lambda o: warmup_then_cosine_schedule(o, 100, 10), 100)
    assert then_cosine == pytest.approx([warmup_then_cosine(s, 100, 10) for s in range(100)])
    ramped = multipliers(lambda o: ramped_cosine_schedule(o, 100), 100)  # warm-up over 5 steps, cosine from step 0
    assert ramped[0] == pytest.approx(0.2) and ramped[4] == pytest.approx(0.5 * (1 + math.cos(math.pi * 4 / 100)))
    assert ramped[10] < then_cosine[10] == pytest.approx(1.0) and ramped[-1] < 0.01
    constant = multipliers(lambda o: warmup_then_constant_schedule(o, 50), 200)
    assert constant[0] == pytest.approx(0.02) and constant[49:] == pytest.approx([1.0] * 151)


def test_update_is_the_usual_five_lines_and_clips() -> None:
    """training.update gives bit for bit the weights of the loop it replaced in the training scripts."""
    x, y = toy_problem()
    models = [model(), model()]
    optimizers = [torch.optim.AdamW(m.parameters(), lr=0.5) for m in models]
    schedules = [warmup_then_cosine_schedule(o, 20, 2) for o in optimizers]
    for step in range(20):
        batch = slice(8 * step, 8 * step + 8)
        a, b = (torch.nn.functional.cross_entropy(m(x[batch]) * 50, y[batch]) for m in models)  # big gradients
        optimizers[0].zero_grad(set_to_none=True)
        a.backward()
        torch.nn.utils.clip_grad_norm_(models[0].parameters(), 1.0)
        optimizers[0].step()
        schedules[0].step()
        update(optimizers[1], b, models[1].parameters(), schedules[1])
    for p, q in zip(models[0].parameters(), models[1].parameters()):
        assert torch.equal(p, q)
    assert schedules[0].get_last_lr() == schedules[1].get_last_lr()
    # the clip acts: with plain SGD at lr 1, a huge loss moves the weights by exactly the clipped norm
    m = model()
    sgd = torch.optim.SGD(m.parameters(), lr=1.0)
    before = [p.detach().clone() for p in m.parameters()]
    update(sgd, 1e6 * m(x).sum(), m.parameters(), max_grad_norm=0.5)
    moved = torch.cat([(p.detach() - q).flatten() for p, q in zip(m.parameters(), before)])
    assert moved.norm().item() == pytest.approx(0.5, rel=1e-4)

