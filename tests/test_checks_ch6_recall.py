"""Chapter 6's emergent-retrieval checker passes the worked answer, waits for the stub and names
the planted mistakes."""

from __future__ import annotations

import torch

from utils import checks
from utils.checks.ch6 import check_caption_recall


def recall(similarity, query_captions, gallery_captions, k):
    top = similarity.argsort(dim=1, descending=True)[:, :k]  # (Q, k)
    hits = [any(gallery_captions[j] == q for j in row) for q, row in zip(query_captions, top.tolist())]
    return sum(hits) / len(query_captions)


def stub(similarity, query_captions, gallery_captions, k):
    raise NotImplementedError


def diagonal_only(similarity, query_captions, gallery_captions, k):
    top = similarity.topk(k, dim=1).indices
    return (top == torch.arange(len(similarity))[:, None]).any(dim=1).float().mean().item()


def hit_rate(top, query_captions, gallery_captions):
    return sum(any(gallery_captions[j] == q for j in row) for q, row in zip(query_captions, top.tolist())) / len(top)


def ascending(similarity, query_captions, gallery_captions, k):
    top = similarity.argsort(dim=1)[:, :k]  # the lowest similarities: argmin instead of argmax
    return hit_rate(top, query_captions, gallery_captions)


def one_too_many(similarity, query_captions, gallery_captions, k):
    return recall(similarity, query_captions, gallery_captions, k + 1)


def one_too_few(similarity, query_captions, gallery_captions, k):
    top = similarity.argsort(dim=1, descending=True)[:, :k - 1]
    return hit_rate(top, query_captions, gallery_captions)


def over_the_gallery(similarity, query_captions, gallery_captions, k):
    top = similarity.topk(k, dim=1).indices
    hits = [any(gallery_captions[j] == q for j in row) for q, row in zip(query_captions, top.tolist())]
    return sum(hits) / len(gallery_captions)


def precision(similarity, query_captions, gallery_captions, k):
    top = similarity.topk(k, dim=1).indices
    shares = [sum(gallery_captions[j] == q for j in row) / k for q, row in zip(query_captions, top.tolist())]
    return sum(shares) / len(query_captions)


def test_reference_passes_and_matches_the_library() -> None:
    from utils.clip import caption_recall_at_k

    assert check_caption_recall(recall, quiet=True).passed
    assert check_caption_recall(caption_recall_at_k, quiet=True).passed
    as_tensor = lambda *a: torch.tensor(caption_recall_at_k(*a))  # noqa: E731  (a 0-d tensor is fine)
    assert check_caption_recall(as_tensor, quiet=True).passed


def test_stub_is_not_attempted() -> None:
    assert check_caption_recall(stub, quiet=True).status == checks.NOT_ATTEMPTED


def test_planted_mistakes_are_named() -> None:
    for wrong, phrase in ((diagonal_only, "not only the item with the query's own index"),
                          (ascending, "from the highest similarity down"),
                          (one_too_many, "off by one"), (one_too_few, "off by one"),
                          (over_the_gallery, "average over the queries"),
                          (precision, "not the share of its k items")):
        verdict = check_caption_recall(wrong, quiet=True)
        assert verdict.status == checks.WRONG and phrase in verdict.message, (wrong.__name__, verdict)


def test_other_wrong_answers_get_the_general_hint_and_never_raise(capsys) -> None:
    verdict = check_caption_recall(lambda *a: 0.123)
    assert verdict.status == checks.WRONG and "average the hits over the queries" in verdict.message
    assert "Exercise 6.4" in capsys.readouterr().out
    verdict = check_caption_recall(lambda *a: [0.5], quiet=True)
    assert verdict.status == checks.WRONG and "one number" in verdict.message
    verdict = check_caption_recall(lambda *a: 1 / 0, quiet=True)
    assert verdict.status == checks.WRONG and "ZeroDivisionError" in verdict.message
