"""Settings: one typed, documented, validated home for every option, shared by every front end."""

from __future__ import annotations

import math
import subprocess
import sys
from dataclasses import fields, replace

import pytest

from photostyle import cli
from photostyle.errors import InputError
from photostyle.settings import CHOICES, PRESETS, TransferConfig, from_preset, setting_of


def test_every_field_is_documented_and_its_default_valid():
    config = TransferConfig()
    for f in fields(TransferConfig):
        setting = setting_of(f)
        assert setting.help, f.name
        setting.check(f.name, getattr(config, f.name))


@pytest.mark.parametrize("values, fragment", [
    (dict(detail=7), "detail (--detail) must be a number in [0, 1] but received 7"),
    (dict(lr=-1), "lr (--lr) must be a number in (0, 1]"),
    (dict(lr=0.0), "lr (--lr) must be a number in (0, 1]"),
    (dict(critic="musiq"), "critic (--quality-critic) must be one of auto, nima, brisque, niqe, none"),
    (dict(size=3), "size (--size) must be an integer >= 32 but received 3"),
    (dict(size=320.5), "must be an integer"),
    (dict(iterations=True), "must be an integer"),
    (dict(semantic_threshold=math.nan), "semantic_threshold (--semantic-threshold) must be a number >= 0"),
    (dict(seed=2**40), "seed (--seed) must be an integer in [0, 4294967295]"),
    (dict(style_layers=()), "style_layers must be a non-empty tuple of strings"),
    (dict(weights=3), "weights (--weights) must be a string"),
])
def test_a_config_out_of_range_cannot_be_made(values, fragment):
    with pytest.raises(InputError) as info:
        TransferConfig(**values)
    assert fragment in str(info.value)
    with pytest.raises(InputError):
        replace(TransferConfig(), **values)  # replace validates too


def test_steps_per_level():
    assert TransferConfig(iterations=50, levels=1, fine_iterations=7).level_steps == (50,)
    assert TransferConfig(iterations=60, levels=3).level_steps == (60, 30, 30)  # finer levels: half
    config = TransferConfig(iterations=50, levels=3, fine_iterations=10)
    assert config.level_steps == (50, 10, 10) and config.total_steps == 70


def test_presets():
    assert from_preset("fast").size < from_preset("balanced").size <= from_preset("best").size
    assert from_preset("fast").total_steps < from_preset("balanced").total_steps < from_preset("best").total_steps
    # a larger working size keeps less of the photo's local structure: more photorealism weight
    assert from_preset("fast").photo_weight < from_preset("balanced").photo_weight < from_preset("best").photo_weight
    assert from_preset("balanced") == TransferConfig()
    assert from_preset("best", iterations=3).iterations == 3
    with pytest.raises(InputError, match="choose one of: fast, balanced, best"):
        from_preset("ultra")
    assert set(PRESETS) == {"fast", "balanced", "best"}


def test_choices_agree_with_the_registries():
    from photostyle.critic import available_critics
    from photostyle.grouping import METRICS

    assert set(CHOICES["critic"]) - {"auto"} == set(available_critics())
    assert set(CHOICES["similarity_metric"]) == set(METRICS)


def test_the_command_line_is_built_from_the_settings():
    parser = cli.build_parser()
    options = {a.dest: a for a in parser._subparsers._group_actions[0].choices["transfer"]._actions}
    for f in fields(TransferConfig):
        setting = setting_of(f)
        if setting.flags:
            assert options[f.name].option_strings == list(setting.flags)
            assert options[f.name].default is None  # the preset's or the config's default applies
            assert setting.help in options[f.name].help
    args = parser.parse_args(["transfer", "a.png", "b.png", "-o", "c.png", "--preset", "fast", "--detail", "0.5"])
    assert cli.config_from_args(args) == from_preset("fast", detail=0.5)
    best = parser.parse_args(["transfer", "a.png", "b.png", "-o", "c.png", "--preset", "best"])
    assert cli.config_from_args(best).level_steps == (60, PRESETS["best"]["fine_iterations"])
    assert PRESETS["best"]["fine_iterations"] > TransferConfig().level_steps[1]
    given = parser.parse_args(["transfer", "a.png", "b.png", "-o", "c.png", "--preset", "best", "--photo-weight", "50"])
    assert cli.config_from_args(given).photo_weight == 50  # what the user gives wins over the preset
    assert "from --preset" in options["photo_weight"].help and "--photo-weight" in options["preset"].help
    segment = parser.parse_args(["segment", "a.png", "-o", "out", "--min-fraction", "0.2"])
    assert cli.config_from_args(segment).min_segment == 0.2


def test_help_imports_no_torch():
    code = "import sys; from photostyle import cli; cli.build_parser(); print('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip() == "False"
