"""Exercise checkers: run the learner's code, print a clear verdict, never raise.

An exercise in a chapter is a stub that raises ``NotImplementedError`` until the learner fills
it in, followed by a call such as ``checks.check_patchify(patchify)``. The checker prints one of

    ✅ Exercise 1.1 (patchify): passed
    ⏳ Exercise 1.1 (patchify): not attempted yet -- replace the `raise NotImplementedError` ...
    ❌ Exercise 1.1 (patchify): wrong -- <what differs, and a hint>

and returns a :class:`Verdict`, so the chapter runs top to bottom (and under nbval) with the
stub still in place. Chapter-specific checkers build on :func:`run_check` and :func:`expect`.

The checkers live one module per chapter (``ch0`` ... ``ch7``) on the machinery of ``core``;
every checker is importable from ``utils.checks`` itself.
"""

from utils.checks.core import (
    PASSED, NOT_ATTEMPTED, WRONG, Wrong, Verdict, expect, expect_close, run_check,
)
from utils.checks.ch0 import (
    check_relation_from_boxes, check_blind_baseline, check_weight_gib,
)
from utils.checks.ch1 import (
    check_patchify, check_layer_norm, check_attention, check_vit_parameter_count, check_shuffle_patches,
    check_permute_positions, check_vit_flops,
)
from utils.checks.ch2 import (
    check_clip_loss, check_siglip_loss, check_zero_shot_classify, check_recall_at_k, check_siglip_loss_chunked,
    check_clip_loss_floor, check_ensemble_class_embeddings,
)
from utils.checks.ch3 import (
    check_itg_mask, check_build_prompt, check_cross_attention, check_itc_similarity, check_splice_prompts,
)
from utils.checks.ch4 import (
    check_spatial_questions, check_mask_labels, REGION_PATTERN, check_region_checker, _mask_reference,
    _region_claim, check_sub_images, check_ablated_answers,
)
from utils.checks.ch5 import (
    check_q_sample, check_cosine_alpha_bars, check_posterior_mean, check_guided_eps, check_cfg_sample,
    check_v_prediction,
)
from utils.checks.ch6 import (
    check_loc_tokens, check_prefix_lm_mask, check_iou, check_min_bins, check_caption_recall,
)
from utils.checks.ch7 import (
    check_vqa_accuracy, check_read_option, check_circular_accuracy, check_bootstrap_ci, check_separated_share,
)
