"""Plans, presets and per-site overrides: parsing, validation and the errors users see."""

import pytest

from fxsoftmax.core.policy import FUSED, PRESETS, PolicyMap, parse_plan, parse_policy


@pytest.mark.parametrize(
    "preset, text, dispatches, exps, stored",
    [
        ("remat", "1|2'3|2'4", 3, 2, (1, 3)),
        ("split", "12|34", 2, 1, (2,)),
        ("split-sum", "123|4", 2, 1, (2, 3)),
        ("per-step", "1|2|3|4", 4, 1, (1, 2, 3)),
    ],
)
def test_presets_are_the_design_plans(preset, text, dispatches, exps, stored):
    plan = parse_policy(preset)
    assert plan.text == text and plan.label == preset
    assert plan.dispatches == dispatches
    assert plan.exps_per_element == exps
    assert plan.stored() == stored


def test_fused_is_left_to_iree():
    assert parse_policy("fused") is FUSED
    assert FUSED.is_fused and FUSED.dispatches == 1 and FUSED.exps_per_element == 2


def test_plan_string_names_its_preset_and_accepts_new_plans():
    assert parse_policy(" 12 | 34 ").label == "split"
    custom = parse_policy("1|2'34")
    assert custom.name is None and custom.text == "1|2'34" and custom.stored() == (1,)
    assert parse_policy("1234").dispatches == 1
    assert parse_policy("1|2|3'4").stored() == (1, 2)


def test_online_plan_grammar():
    plan = parse_policy("online")
    assert plan.text == "(13)|2'4" and plan.dispatches == 2 and plan.stored() == (1, 3)
    assert plan.exps_per_element == 3  # the online pass evaluates exp twice per element, step 2' once
    assert parse_policy("(13)|2'4").label == "online"
    assert parse_policy("(13)|2|4").stored() == (1, 2, 3)
    with pytest.raises(ValueError, match="computed in group 1 and again"):
        parse_policy("1|(13)|2'4")


def test_auto_is_resolved_by_the_chooser():
    site = _Site("softmax", "")
    pm = PolicyMap("auto", chooser=lambda s: (parse_policy("remat"), f"auto: picked for {s.name}"))
    plan, why = pm.plan_for(site)
    assert plan.label == "remat" and why == "auto: picked for softmax"


@pytest.mark.parametrize(
    "bad, needle",
    [
        ("bogus", "unknown policy"),
        ("12|3", "missing"),  # step 4 missing
        ("1|2|3", "missing"),
        ("21|34", "comes after it in the same group"),  # group order cannot compute
        ("2|1|34", "only computed later"),  # stored step used before it exists
        ("1|3|24", "only computed later"),
        ("1|23'|4", "not used in that group"),
        ("1|2|4|3", "step 4 (the output)"),
        ("12|2'34", "already stores"),
        ("12|34|4", "computed in group 2 and again"),
        ("1|2|34|", "empty group"),
        ("1|2'|34", "not used in that group"),
        ("123|4'", "step 4 (the output)"),
        ("1x|234", "unknown policy"),
        ("", "empty plan"),
    ],
)
def test_invalid_plans_raise_value_error_listing_presets(bad, needle):
    with pytest.raises(ValueError) as e:
        parse_policy(bad)
    msg = str(e.value)
    assert needle in msg
    for preset in PRESETS:
        assert f"'{preset}'" in msg


def test_recomputed_step_must_be_used_in_its_group():
    with pytest.raises(ValueError, match="not used in that group"):
        parse_plan("1|2'|2'34")


def test_non_string_policy():
    with pytest.raises(ValueError, match="must be a string"):
        parse_policy(3)


class _Site:
    def __init__(self, name, module_path=""):
        self.name, self.module_path = name, module_path


def test_overrides_by_glob_regex_and_callable():
    sites = [_Site("softmax", "encoder.layer.0.attn"), _Site("softmax_1", "encoder.layer.1.attn"), _Site("softmax_2", "")]
    pm = PolicyMap("split", {"encoder.layer.1.*": "remat", "re:softmax_2": "per-step"})
    pm.check_matched(sites)
    assert [pm.plan_for(s)[0].label for s in sites] == ["split", "remat", "per-step"]

    pm = PolicyMap("split", lambda s: "fused" if s.name.endswith("_1") else None)
    assert [pm.plan_for(s)[0].label for s in sites] == ["split", "fused", "split"]

    pm = PolicyMap("split", lambda s: "nonsense")
    with pytest.raises(ValueError, match="override callable returned an invalid policy for site 'softmax'"):
        pm.plan_for(sites[0])


@pytest.mark.parametrize(
    "overrides, needle",
    [
        ({"": "remat"}, "not a non-empty string"),
        ({"re:(": "remat"}, "not a valid regular expression"),
        ({"layer[0": "remat"}, "unbalanced"),
        ({"decoder.*": "remat"}, "matched no softmax site"),
        ({"encoder.*": "bogus"}, "unknown policy"),
        ([("a", "b")], "must be a mapping"),
    ],
)
def test_invalid_overrides(overrides, needle):
    sites = [_Site("softmax", "encoder.layer.0.attn")]
    with pytest.raises(ValueError, match=needle):
        PolicyMap("split", overrides).check_matched(sites)
