"""Chapter 0's exercise checker: a spatial relation from two boxes."""

from __future__ import annotations

from typing import Callable


from utils.checks.core import Verdict, Wrong, expect, run_check


def check_relation_from_boxes(relation_from_boxes: Callable, quiet: bool = False) -> Verdict:
    """Exercise 0.1: where is box ``a`` relative to box ``b`` -- left, right, above or below?"""
    from utils.shapes import RELATION_WORD, make_scene, relation

    def test() -> None:
        checked = 0
        for i in range(200):
            scene = make_scene(i, seed=123, min_objects=2, max_objects=3)
            for a in scene.objects:
                for b in scene.objects:
                    if a is b:
                        continue
                    answer = relation_from_boxes(a.box, b.box)
                    truth = RELATION_WORD[relation(a, b)]
                    expect(answer in ("left", "right", "above", "below"),
                           f"return one of 'left', 'right', 'above', 'below'; got {answer!r}")
                    if answer != truth:
                        box_a = tuple(round(v, 2) for v in a.box)
                        box_b = tuple(round(v, 2) for v in b.box)
                        hint = "y grows downwards in images, so a smaller y is higher up" if {answer, truth} == {"above", "below"} \
                            else "compare box centres, along the axis where they are further apart"
                        raise Wrong(f"for a={box_a}, b={box_b} you said {answer!r} but a is {truth!r} of b; {hint}")
                    checked += 1
        expect(checked > 0, "no pairs were checked")

    return run_check("0.1 (relation_from_boxes)", test, quiet=quiet)
